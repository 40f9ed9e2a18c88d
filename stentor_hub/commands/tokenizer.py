"""``stentor-hub tokenizer export``: :func:`stentor_hub.tokenizer.export_tokenizer`."""

from __future__ import annotations

from stentor_hub.tokenizer import DEFAULT_VOCAB, export_tokenizer


def export(args) -> int:
    tokenizer = export_tokenizer(args.vocab, args.out)
    sample = "Hello world"
    ids = tokenizer.encode(sample)
    print(f"wrote {args.out}: {len(tokenizer)} ids ({tokenizer.vocab_size} TokenMonster + specials)")
    print(f"{sample!r} -> {ids} -> {tokenizer.decode(ids)!r}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("tokenizer", help="tokenizer tools")
    sub = parser.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    parser_export = sub.add_parser("export", help="write a tokenizer folder that AutoTokenizer loads")
    parser_export.add_argument("--vocab", default=DEFAULT_VOCAB, help=f"path or name of a .vocab file (default {DEFAULT_VOCAB})")
    parser_export.add_argument("--out", required=True, help="output folder")
    parser_export.set_defaults(func=export)
