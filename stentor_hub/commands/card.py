"""``stentor-hub card RUN_DIR --out README.md``: :func:`stentor_hub.card.write_card`."""

from __future__ import annotations

from stentor_hub.card import write_card
from stentor_hub.commands.args import add_card_arguments


def card(args) -> int:
    out = write_card(args.run_dir, args.out, blimp=args.blimp, card_config=args.card_config, repo_id=args.repo_id,
                     checkpoint=args.checkpoint, template_dir=args.template, compare=args.compare)
    print(f"wrote {out}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("card", help="render the model card of a training run")
    add_card_arguments(parser)
    parser.add_argument("--repo-id", metavar="OWNER/NAME", help="repository the usage example loads from")
    parser.add_argument("--out", required=True, metavar="README.md", help="output file")
    parser.set_defaults(func=card)
