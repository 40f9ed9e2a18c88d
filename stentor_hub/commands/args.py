"""argparse types and argument groups that several commands share."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type for counts: a clear message instead of a traceback for 0, -1 or 'ten'."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_card_arguments(parser: argparse.ArgumentParser) -> None:
    """What ``card`` and ``publish`` share: the run, its BLiMP results, the card's config and templates."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="training output folder (final/, best/, tokenizer/, ...)")
    parser.add_argument("--blimp", metavar="FILE", help="blimp_results.json from `stentor-hub eval blimp`")
    parser.add_argument("--card-config", metavar="FILE", help="card config (YAML or Markdown): metadata and prose")
    parser.add_argument("--template", metavar="DIR", help="folder of Jinja templates overriding cards/ by name")
    parser.add_argument("--checkpoint", choices=("best", "final"), default="best",
                        help="weights to publish (default: best, the lowest eval loss)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="RUN_DIR_OR_CARD_FACTS",
                        help="earlier models to set side by side in the card: run folders, or YAML/JSON files of "
                             "their figures (name, vocab_size, hidden_size, parameters, best_perplexity, ...)")
