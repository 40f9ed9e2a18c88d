"""``stentor-hub publish RUN_DIR --repo-id OWNER/NAME``: :func:`stentor_hub.publish.publish_run`.

The token comes from ``HF_TOKEN`` or the huggingface_hub login, the endpoint from ``HF_ENDPOINT``,
as for ``hf upload``; it is never printed."""

from __future__ import annotations

from pathlib import Path

from stentor_hub.commands.args import add_card_arguments


def publish(args) -> int:
    from stentor_hub.publish import publish_run

    def list_files(folder: Path, files: list[Path]) -> None:
        print(f"staged {len(files)} files in {folder}{'' if args.staging else ' (temporary)'}:")
        for path in files:
            print(f"  {path.relative_to(folder).as_posix():<28} {path.stat().st_size:>12,} bytes")

    def show_checks(check) -> None:
        print(f"checks passed: {check.tensors} tensors, {check.parameters:,} parameters, card metadata with "
              f"{check.card_results} results, fresh-process load generated {check.generated_text!r}")
        for block in check.code_blocks:
            status = f"ran in {block.seconds:.1f} s" if block.ran else f"not run: {block.reason}"
            print(f"  card code, line {block.line} ({block.first_line[:48]}): {status}")

    report = publish_run(args.run_dir, args.repo_id, blimp=args.blimp, card_config=args.card_config,
                         template_dir=args.template, checkpoint=args.checkpoint, compare=args.compare, staging=args.staging,
                         dry_run=args.dry_run, private=args.private, revision=args.revision,
                         commit_message=args.commit_message, space_id=args.space,
                         on_staged=list_files, on_checked=show_checks)
    if report.space_check is not None:
        print(f"staged and checked the Space {args.space} '{report.space_check.title}' (gradio {report.space_check.sdk_version})")
    if report.push is not None and report.push.made_private:
        print(f"{args.repo_id} was public; made it private (--private)")
    if report.push is None:
        also = "" if args.space is None else f" and the Space {args.space}"
        print(f"dry run: nothing was sent to the Hub (would push to {args.repo_id}{also})")
        return 0
    if report.push.created_commit:
        print(f"pushed {args.repo_id}: {report.push.commit_url}")
    else:
        print(f"{args.repo_id} already has this content; no commit made ({report.push.commit_url})")
    if report.space_push is not None:
        space = report.space_push
        print(f"pushed the Space {args.space}: {space.commit_url}" if space.created_commit
              else f"the Space {args.space} already has this content; no commit made ({space.commit_url})")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("publish", help="stage, check and push a training run to the Hub in one commit")
    add_card_arguments(parser)
    parser.add_argument("--repo-id", required=True, metavar="OWNER/NAME", help="Hub repository (created if needed)")
    parser.add_argument("--staging", metavar="DIR", help="keep the staged repository here (default: a temporary folder)")
    parser.add_argument("--dry-run", action="store_true", help="stage and check only; no network request at all")
    parser.add_argument("--private", action="store_true", help="create the repository as private, or make an existing public one private")
    parser.add_argument("--revision", metavar="BRANCH", help="branch to commit to (created if needed; default main)")
    parser.add_argument("--commit-message", metavar="MSG", help="commit title")
    parser.add_argument("--space", metavar="OWNER/NAME",
                        help="also push a demo Space of the model (stentor-hub space) and link it from the card")
    parser.set_defaults(func=publish)
