"""``stentor-hub train`` and ``python -m stentor_hub.recipes.train`` (the same flags):
:func:`stentor_hub.recipes.config.load_recipe` then :func:`stentor_hub.recipes.train.train`.

    stentor-hub train --config recipes/tiny-cpu.yaml --output-dir runs/tiny [key=value ...] [--resume]
"""

from __future__ import annotations

import argparse
import logging
import os

MODULE_PROG = "python -m stentor_hub.recipes.train"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="recipe YAML path or shipped name (tiny-cpu, stentor2-30m)")
    parser.add_argument("--output-dir", default=None, help="run directory (default runs/<recipe name>)")
    parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")


def train(args) -> int:
    from stentor_hub.recipes.config import load_recipe
    from stentor_hub.recipes.train import train as train_recipe

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = load_recipe(args.config, args.overrides)
    output_dir = args.output_dir or os.path.join("runs", str(config.get("name", "run")))
    train_recipe(config, output_dir, resume=args.resume)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a recipe (as python -m stentor_hub.recipes.train)",
                                   description="Train a Stentor2 model from a recipe YAML with the transformers Trainer.")
    add_arguments(parser)
    parser.set_defaults(func=train)


def main(argv: list[str] | None = None) -> int:
    """``python -m stentor_hub.recipes.train``: the ``train`` command under the launchers' module name."""
    from stentor_hub.cli import run_command

    parser = argparse.ArgumentParser(prog=MODULE_PROG, description="Train a Stentor2 model from a recipe YAML "
                                                                   "with the transformers Trainer.")
    add_arguments(parser)
    return run_command(train, parser.parse_args(argv), MODULE_PROG)
