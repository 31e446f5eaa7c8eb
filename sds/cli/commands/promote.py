"""`sds promote`: make a version (or what is live in another environment) live in an
environment, after its gates pass; the copy between registries shows as an upload bar."""

from __future__ import annotations

import argparse

from sds.cli.arguments import Commands, env_option, version_argument, workspace
from sds.cli.render import print_json
from sds.config import EnvironmentConfig
from sds.kernel.errors import UsageError


def register(commands: Commands) -> None:
    parser = commands.add(
        "promote",
        run,
        "make a version live in an environment (gates checked first)",
        [
            'sds promote 3 --to dev --reason "better PR AUC"',
            'sds promote --from dev --to staging --reason "passed dev checks"',
            'sds --aws promote --from staging --to prod --reason "release 2026-11"',
            'sds promote --shadow --to prod --reason "beat v12 in shadow on 40k payments"',
        ],
    )
    version_argument(parser, "version", nargs="?")
    env_option(parser, "--to", required=True, help="target environment")
    env_option(parser, "--from", dest="from_env", help="promote what is live in this environment")
    parser.add_argument(
        "--shadow",
        action="store_true",
        help="promote the version shadowing in the target environment (the pin moves from "
        "shadow to live in one change)",
    )
    parser.add_argument("--reason", default="", help="why (recorded in the audit trail)")
    parser.add_argument("--quiet", action="store_true", help="no progress display for the copy")


def run(args: argparse.Namespace) -> int:
    from sds.ops.promotion import promote
    from sds.progress import Progress

    to: EnvironmentConfig = args.to
    source: EnvironmentConfig | None = args.from_env
    if args.shadow:
        if args.version is not None or source is not None:
            raise UsageError("--shadow promotes the shadow's version: name no VERSION or --from")
        what = f"the shadow of {to.name}"
    elif args.version is not None:
        what = f"version {args.version}"
    elif source is not None:
        what = f"what is live in {source.name}"
    else:
        raise UsageError("say which version: sds promote VERSION --to ENV, or --from ENV")
    ws = workspace(args)
    progress = Progress(0, enabled=not args.quiet)
    with progress.uploading(f"copying {what} into {to.name}'s registry") as on_upload:
        change = promote(
            ws,
            to_env=to.name,
            version=args.version,
            from_env=None if source is None else source.name,
            reason=args.reason,
            on_upload=on_upload,
            shadow=args.shadow,
        )
    if args.json:
        print_json(change.to_dict())
    elif not change.changed:
        print(f"{to.name} already serves version {change.version}; nothing to do")
    else:
        before = "nothing" if change.previous is None else f"version {change.previous}"
        copied = f", copied from {change.copied_from}" if change.copied_from else ""
        print(f"{to.name}: {before} -> version {change.version}{copied}")
        for gate in change.gates:
            print(f"  gate {gate.gate}: passed ({gate.detail})")
        print(f"  pin written to {ws.lock_path.name}: deploy with: cdk deploy '{to.name}/*'")
    return 0
