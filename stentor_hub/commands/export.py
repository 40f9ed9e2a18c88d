"""``stentor-hub export onnx MODEL --out DIR``: :func:`stentor_hub.onnx_export.export_onnx`."""

from __future__ import annotations


def export_onnx(args) -> int:
    from stentor_hub.onnx_export import export_onnx

    report = export_onnx(args.model, args.out, atol=args.atol)
    print(f"wrote {report.out_dir}: {', '.join(report.files)}")
    print(f"checked: logits within {report.max_abs_logit_diff:.2g} of PyTorch (tolerance {report.atol:g}) on "
          f"{len(report.prompts)} prompts; greedy generation of {report.greedy_new_tokens} tokens identical")
    return 0


def register(subparsers) -> None:
    from stentor_hub.onnx_export import DEFAULT_ATOL

    parser = subparsers.add_parser("export", help="export a model to another format")
    formats = parser.add_subparsers(dest="export_format", metavar="FORMAT", required=True)
    onnx = formats.add_parser("onnx", help="ONNX for text-generation-with-past, with the tokenizer and a check against PyTorch")
    onnx.add_argument("model", help="model folder or Hub id")
    onnx.add_argument("--out", required=True, help="output folder (new or empty)")
    onnx.add_argument("--atol", type=float, default=DEFAULT_ATOL, help=f"largest allowed logit difference (default {DEFAULT_ATOL:g})")
    onnx.set_defaults(func=export_onnx)
