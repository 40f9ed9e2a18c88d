"""``stentor-hub quickstart``: :func:`stentor_hub.quickstart.run_quickstart`."""

from __future__ import annotations

import os

from stentor_hub.commands.args import positive_int
from stentor_hub.quickstart import DEFAULT_BLIMP_LIMIT, DEFAULT_PROMPT, DEFAULT_WORKDIR, HUB_CORPUS


def quickstart(args) -> int:
    from stentor_hub.quickstart import run_quickstart

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_quickstart(workdir=args.workdir, corpus=args.corpus, vocab=args.vocab, blimp=args.blimp, repo_id=args.repo_id,
                   push=args.push, max_steps=args.max_steps, blimp_limit=args.blimp_limit, prompt=args.prompt,
                   overrides=args.set, threads=args.threads)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quickstart", help="train the tiny recipe, evaluate, write the card, stage (and optionally push) the repository",
        description="Raw text in, a loadable repository with a complete model card out: train the tiny-cpu recipe, "
                    "evaluate perplexity and a BLiMP subset, render the card, stage the repository (push it with --push), "
                    "reload it with the Auto classes and sample. Under 10 minutes on 2 CPU cores.",
    )
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR, metavar="DIR",
                        help=f"where everything goes (default ./{DEFAULT_WORKDIR}; a previous quickstart's folder is replaced)")
    parser.add_argument("--corpus", metavar="PATH",
                        help=f"training text: .txt (blank lines between documents), .jsonl/.parquet ('text'), a glob, or a Hub "
                             f"dataset id (default: ../shared/corpora Gutenberg text, else {HUB_CORPUS}); validation is "
                             "held out from its first documents")
    parser.add_argument("--vocab", metavar="PATH_OR_NAME",
                        help="TokenMonster vocabulary file or name (default english-8000-strict-nocapcode-v1, looked up "
                             "locally, then on the Hub)")
    parser.add_argument("--blimp", metavar="PATH",
                        help="folder of BLiMP *.jsonl files or the Hub dataset nyu-mll/blimp (default ../shared/blimp if present)")
    parser.add_argument("--repo-id", metavar="OWNER/NAME", help="Hub repository named in the card (and pushed to with --push)")
    parser.add_argument("--push", action="store_true",
                        help="push the staged repository to --repo-id in one commit (token: HF_TOKEN or `hf auth login`)")
    parser.add_argument("--max-steps", type=positive_int, metavar="N",
                        help="train at most N steps (default: the recipe's rules, 2 epochs and at most 400 steps); "
                             "evaluation, checkpoints and the lr schedule scale with it")
    parser.add_argument("--blimp-limit", type=positive_int, default=DEFAULT_BLIMP_LIMIT, metavar="N",
                        help=f"BLiMP pairs per task, the first N of each of the 67 (default {DEFAULT_BLIMP_LIMIT}; 1000 is all)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"prompt of the sample (default {DEFAULT_PROMPT!r})")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="torch CPU threads (default: torch's, or 1 when other processes keep every core busy)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other tiny-cpu recipe override, e.g. --set data.cache_dir=/tmp/tokens (repeatable)")
    parser.set_defaults(func=quickstart)
