"""``stentor-hub eval blimp|perplexity MODEL``: :func:`stentor_hub.evaluation.run_blimp` and
:func:`stentor_hub.evaluation.run_perplexity`."""

from __future__ import annotations

from stentor_hub.commands.args import positive_int
from stentor_hub.errors import EvaluationError
from stentor_hub.evaluation import BLIMP_HUB_DATASET, DEFAULT_BATCH_SIZE


def blimp(args) -> int:
    from stentor_hub.evaluation import run_blimp

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    results = run_blimp(
        args.model, args.data, out=args.out, tasks=tasks, limit=args.limit, batch_size=args.batch_size,
        device=args.device, dtype=args.dtype, tokenizer=args.tokenizer, prefix_token_id=args.prefix_token_id,
        progress=not args.no_progress,
    )
    width = max(len(uid) for uid in results["tasks"])
    for uid, task in results["tasks"].items():
        print(f"{uid:<{width}}  {task['accuracy']:6.2f}  ({task['correct']}/{task['total']})")
    print(
        f"BLiMP overall {results['overall']:.2f}% over {results['num_tasks']} tasks, {results['num_pairs']} pairs "
        f"in {results['seconds']:.1f}s; wrote {args.out}"
    )
    return 0


def parse_source_arg(text: str) -> str | dict:
    """``--data``: a path, glob or Hub id, or an inline YAML mapping written as in the recipe's
    ``data.eval_sources`` (``'{path: val.txt, max_doc_chars: 25000}'``)."""
    if not text.lstrip().startswith("{"):
        return text
    import yaml

    try:
        source = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise EvaluationError(f"--data {text!r} is not a valid YAML mapping ({e}); write it as '{{path: FILE, max_chars: N}}'") from None
    if not isinstance(source, dict) or "path" not in source:
        raise EvaluationError(f"--data {text!r}: a mapping needs a 'path' key, as in the recipe's data.eval_sources")
    return source


def perplexity(args) -> int:
    from stentor_hub.evaluation import run_perplexity

    results = run_perplexity(
        args.model, parse_source_arg(args.data), out=args.out, block_size=args.block_size, max_samples=args.max_samples,
        batch_size=args.batch_size, device=args.device, dtype=args.dtype, tokenizer=args.tokenizer,
        progress=not args.no_progress,
    )
    print(
        f"eval_loss {results['eval_loss']:.4f}  perplexity {results['eval_ppl']:.2f}  over {results['tokens']} tokens "
        f"({results['blocks']} blocks of {results['block_size']}); wrote {args.out}"
    )
    return 0


def _add_model_args(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model folder (e.g. RUN_DIR/final) or Hub id")
    parser.add_argument("--tokenizer", help="tokenizer folder or Hub id (default: MODEL, else MODEL/../tokenizer)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a model: BLiMP accuracy, perplexity")
    sub = parser.add_subparsers(dest="eval_command", metavar="BENCHMARK", required=True)

    parser_blimp = sub.add_parser("blimp", help="BLiMP accuracy, scored as lm-evaluation-harness's blimp tasks")
    _add_model_args(parser_blimp)
    parser_blimp.add_argument("--data", required=True, help=f"folder of BLiMP *.jsonl files, or the Hub dataset {BLIMP_HUB_DATASET}")
    parser_blimp.add_argument("--out", default="blimp_results.json", help="results file (default blimp_results.json)")
    parser_blimp.add_argument("--tasks", help="comma-separated task UIDs (default: all)")
    parser_blimp.add_argument("--limit", type=positive_int, help="first N pairs of each task")
    parser_blimp.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE)
    parser_blimp.add_argument(
        "--prefix-token-id", type=int,
        help="context token id (default: the tokenizer's BOS, else EOS, as lm-eval; lm-eval's prefix_token_id)",
    )
    parser_blimp.set_defaults(func=blimp)

    parser_ppl = sub.add_parser("perplexity", help="mean token loss and perplexity, as the training recipe's eval_loss")
    _add_model_args(parser_ppl)
    parser_ppl.add_argument(
        "--data", required=True,
        help="text file, glob, or Hub dataset id; or a source as in the recipe YAML: '{path: val.txt, max_doc_chars: 25000}'",
    )
    parser_ppl.add_argument("--out", default="ppl.json", help="results file (default ppl.json)")
    parser_ppl.add_argument("--block-size", type=positive_int, help="tokens per block (default: the training run's, else the model's window)")
    parser_ppl.add_argument("--max-samples", type=positive_int, help="use only the first N blocks (the recipe's max_eval_samples)")
    parser_ppl.add_argument("--batch-size", type=positive_int, default=8)
    parser_ppl.set_defaults(func=perplexity)
