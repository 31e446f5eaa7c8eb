"""`sds promote`: make a version (or what is live in another environment) live in an
environment, after its gates pass; the copy between registries shows as an upload bar."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from sds.cli.arguments import Commands, env_option, version_argument, workspace
from sds.cli.render import print_json
from sds.config import EnvironmentConfig
from sds.kernel.errors import UsageError

if TYPE_CHECKING:
    from sds.ops.promotion import AliasChange


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
    version_argument(
        parser,
        "version",
        nargs="?",
        help="the version to make live (3 or v3); or name it with --from or --shadow",
    )
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
        if source.name == to.name:
            raise UsageError(_into_itself(args, to))
        what = f"what is live in {source.name}"
    else:
        usage = workspace(args).command("promote VERSION --to ENV")
        raise UsageError(f"say which version: {usage}, or --from ENV")
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
        return 0
    lock, deploy = change.lock, f"deploy with: cdk deploy '{to.name}/*'"
    if not change.changed:
        # The alias was already there; the lock file may still have been behind it (a stale or
        # missing pin, a shadow pin of the live version): say what the re-run rewrote.
        if lock is None or not lock.changed:
            print(f"{to.name} already serves version {change.version}; nothing to do")
            return 0
        print(f"{to.name} already serves version {change.version}")
    else:
        before = "nothing" if change.previous is None else f"version {change.previous}"
        print(f"{to.name}: {before} -> version {change.version}{copied_phrase(change)}")
        for gate in change.gates:
            print(f"  gate {gate.gate}: passed ({gate.detail})")
    print_lock_change(change, ws.lock_path, deploy)
    return 0


def _into_itself(args: argparse.Namespace, env: EnvironmentConfig) -> str:
    """`--from ENV --to ENV`: what is live in ENV is live there already. Say where a version
    comes to ENV from instead: the environment before it in the chain, or, at the chain's start,
    its own registry (where training registers versions)."""
    problem = f"--from and --to are both {env.name}: an environment is not promoted into itself"
    ws = workspace(args)
    if env.promote_from is None:
        return (
            f"{problem}; {env.name} starts the promotion chain (it has no promote_from in "
            f"cdk.json): make a version registered there live with "
            f"{ws.command(f'promote VERSION --to {env.name}')}"
        )
    return (
        f"{problem}; promote from the environment before it in the chain ({env.promote_from}, "
        f"its promote_from in cdk.json): "
        f"{ws.command(f'promote --from {env.promote_from} --to {env.name}')}"
    )


def copied_phrase(change: AliasChange) -> str:
    """Where the version came from, as the end of the headline: copied from the environment
    below, or found already in the target's registry (promoted back after a rollback)."""
    if change.copied:
        return f", copied from {change.from_env}"
    if change.from_env is not None:
        return f", already in {change.env}'s registry (nothing copied)"
    return ""


def print_lock_change(change: AliasChange, lock_file: Path, deploy: str) -> None:
    """What a promotion or rollback did to `lock_file` (named by its resolved path, as every
    command names it: it may be anywhere, through SDS_LOCK_FILE), as the lines under its
    headline: the shadow pin it removed, and the pin it wrote, saying what the pin was whenever
    that is not simply the version the alias moved from (a stale or missing pin the write
    brought back in line with the alias)."""
    lock = change.lock
    if lock is None:
        print(f"  pin written to {lock_file}: {deploy}")
        return
    shadow = lock.shadow_phrase()
    if shadow is not None:
        print(f"  {shadow}")
    was = None if lock.was is None else lock.was.version
    if not lock.pin_rewritten:
        print(f"  pin in {lock_file} already followed the alias: {deploy}")
    elif change.changed and was == change.previous:
        print(f"  pin written to {lock_file}: {deploy}")
    else:
        print(f"  pin rewritten in {lock_file} to follow the alias ({lock.was_phrase()}): {deploy}")
