"""stentor-hub: train, evaluate and publish small Stentor2 language models.

The command line: each subcommand's arguments live in :mod:`stentor_hub.commands` and call one
library function. A :class:`~stentor_hub.errors.StentorError` (bad input: the message says what
to change) is printed in one line with exit status 2; any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

from stentor_hub.commands import COMMAND_MODULES
from stentor_hub.errors import StentorError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stentor-hub", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"stentor_hub.commands.{name}").register(subparsers)
    return parser


def run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace, name: str) -> int:
    """Call a command function; known errors become one line on stderr and exit status 2."""
    try:
        result = func(args)
    except StentorError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C: one line (what was interrupted, how to go on), no traceback
        print(f"{name}: {e}" if str(e) else "interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args, f"stentor-hub {args.command}")


if __name__ == "__main__":
    sys.exit(main())
