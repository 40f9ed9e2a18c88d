"""stentor-hub: train, evaluate and publish small Stentor2 language models.

A thin command line over the library. Each feature module registers its own subcommand through ``register_cli(subparsers)`` and
keeps heavy imports (torch, transformers) inside the command function, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module -> registers one or more subcommands
_COMMAND_MODULES = [
    "stentor_hub.tokenizer",
    "stentor_hub.evaluation",
    "stentor_hub.publish",
    "stentor_hub.quickstart",
    "stentor_hub.space",
]


def positive_int(text: str) -> int:
    """argparse type for counts: a clear message instead of a traceback for 0, -1 or 'ten'."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


class CLIError(Exception):
    """An error the CLI prints as one clear message (no traceback) and exits 2 on."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stentor-hub", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # feature not built yet
                continue
            raise
        module.register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (CLIError, OSError, ValueError) as e:
        print(f"stentor-hub {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
