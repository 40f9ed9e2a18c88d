"""``stentor-hub space MODEL_DIR_OR_REPO ... --out DIR [--push OWNER/NAME]``:
:func:`stentor_hub.space.stage_space`, :func:`~stentor_hub.space.check_space`,
:func:`~stentor_hub.space.push_space`."""

from __future__ import annotations

from pathlib import Path


def print_staged_space(folder: Path, check) -> None:
    from stentor_hub.space import SPACE_FILES

    print(f"staged the Space '{check.title}' in {folder} (gradio {check.sdk_version}), models: "
          + ", ".join(m.source for m in check.models))
    for name in SPACE_FILES:
        print(f"  {name:<28} {(folder / name).stat().st_size:>12,} bytes")


def space(args) -> int:
    from stentor_hub.errors import PublishError
    from stentor_hub.helpers import check_repo_id
    from stentor_hub.space import APP_FILE, check_space, push_space, stage_space

    if args.push is not None:
        check_repo_id(args.push, PublishError, "--push")
    folder = stage_space(args.models, args.out, title=args.title, short_description=args.short_description)
    check = check_space(folder, for_push=args.push is not None)
    print_staged_space(folder, check)
    if args.push is None:
        print(f"run it here: pip install 'stentor-hub[space]' && python {folder / APP_FILE}")
        return 0
    if args.dry_run:
        print(f"dry run: nothing was sent to the Hub (would push the Space {args.push})")
        return 0
    result = push_space(folder, args.push, private=args.private, commit_message=args.commit_message)
    print(f"pushed the Space {args.push}: {result.commit_url}" if result.created_commit
          else f"the Space {args.push} already has this content; no commit made ({result.commit_url})")
    return 0


def register(subparsers) -> None:
    limit = 60  # stentor_hub.space.SHORT_DESCRIPTION_LIMIT, without its imports for --help
    parser = subparsers.add_parser("space", help="stage (and push) a Gradio Space that demos one or more models")
    parser.add_argument("models", nargs="+", metavar="MODEL_DIR_OR_REPO",
                        help="a model folder (a staged repository) or a Hub repo id OWNER/NAME; two or more add head to head")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to stage the Space in")
    parser.add_argument("--title", help="the Space's title (default: from the first model)")
    parser.add_argument("--short-description", metavar="TEXT",
                        help=f"one line for the Space's card, at most {limit} characters")
    parser.add_argument("--push", metavar="OWNER/NAME", help="push the staged Space to this Space repository in one commit")
    parser.add_argument("--dry-run", action="store_true", help="with --push: stage and check only; no network request")
    parser.add_argument("--private", action="store_true", help="with --push: create the Space as private")
    parser.add_argument("--commit-message", metavar="MSG", help="with --push: commit title")
    parser.set_defaults(func=space)
