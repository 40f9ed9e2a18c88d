"""``stentor-hub data prepare --config RECIPE [key=value ...]``:
:func:`stentor_hub.recipes.prepare.prepare_recipe_data`."""

from __future__ import annotations

import time

from stentor_hub.commands.args import positive_int

DEFAULT_SHARD_TOKENS = 1 << 24  # stentor_hub.recipes.prepare.DEFAULT_SHARD_TOKENS, without importing numpy for --help


def prepare(args) -> int:
    from stentor_hub.recipes.config import load_recipe
    from stentor_hub.recipes.prepare import default_workers, prepare_recipe_data
    from stentor_hub.tokenizer import load_vocab_tokenizer, resolve_vocab

    config = load_recipe(args.config, args.overrides)
    tokenizer = load_vocab_tokenizer(resolve_vocab(config["tokenizer"]["vocab"]))
    workers = args.workers or default_workers()
    started = time.perf_counter()
    shards = prepare_recipe_data(config, tokenizer, workers=workers, out_dir=args.out, shard_tokens=args.shard_tokens,
                                 progress=not args.no_progress)
    seconds = time.perf_counter() - started
    n_train, n_eval = len(shards.train), len(shards.eval)
    if shards.prepared_now:
        print(f"prepared {n_train:,} train + {n_eval:,} eval tokens with {workers} worker(s) in {seconds:.1f}s "
              f"({(n_train + n_eval) / max(seconds, 1e-9):,.0f} tokens/s, {shards.bytes_read / 1e6 / max(seconds, 1e-9):.1f} MB/s "
              "of text this session)")
    else:
        print(f"already prepared: {n_train:,} train + {n_eval:,} eval tokens")
    print(f"wrote {shards.folder} ({len(shards.index['splits']['train']['shards'])} train shards); "
          f"train from it with: data.shards_dir={shards.folder}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="prepare a recipe's data as token shards")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    prep = actions.add_parser("prepare", help="tokenize a recipe's train and eval sources into token shards, on every core")
    prep.add_argument("--config", required=True, help="recipe YAML path or shipped name (tiny-cpu, stentor2-30m)")
    prep.add_argument("--workers", type=positive_int, default=None, help="tokenizing processes (default: all CPU cores)")
    prep.add_argument("--out", default=None, help="output folder (default: data.shards_dir, else the token cache)")
    prep.add_argument("--shard-tokens", type=positive_int, default=DEFAULT_SHARD_TOKENS,
                      help=f"tokens per shard file (default {DEFAULT_SHARD_TOKENS:,})")
    prep.add_argument("--no-progress", action="store_true", help="no progress bar")
    prep.add_argument("overrides", nargs="*", metavar="key=value", help="dotted recipe overrides")
    prep.set_defaults(func=prepare)
