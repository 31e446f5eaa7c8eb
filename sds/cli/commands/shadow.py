"""`sds shadow`: pin a challenger beside an environment's live model (it scores every captured
payment and decides nothing), or clear it."""

from __future__ import annotations

import argparse

from sds.cli.arguments import Commands, env_option, version_argument, workspace
from sds.cli.render import print_json
from sds.config import EnvironmentConfig
from sds.kernel.errors import UsageError


def register(commands: Commands) -> None:
    parser = commands.add(
        "shadow",
        run,
        "pin a version as an environment's shadow: it scores the same payments as the live "
        "model, beside it in the capture, and decides nothing (shadow gates checked first)",
        [
            'sds shadow 13 --env prod --reason "challenger: retrained on November"',
            'sds shadow --env prod --clear --reason "enough evidence"',
            "sds shadow 13 --env staging --json",
        ],
    )
    version_argument(
        parser, "version", nargs="?", help="the version to shadow (3 or v3); none with --clear"
    )
    env_option(parser, "--env", required=True, help="the environment whose live model it shadows")
    parser.add_argument("--clear", action="store_true", help="remove the environment's shadow")
    parser.add_argument("--reason", default="", help="why (recorded in the audit trail)")
    parser.add_argument("--quiet", action="store_true", help="no progress display for a copy")


def run(args: argparse.Namespace) -> int:
    from sds.ops.shadow import clear_shadow, set_shadow
    from sds.progress import Progress

    env: EnvironmentConfig = args.env
    if args.clear and args.version is not None:
        raise UsageError("give a VERSION to shadow or --clear to remove the shadow, not both")
    ws = workspace(args)
    if not args.clear and args.version is None:
        raise UsageError(
            f"say which version shadows ({ws.command('shadow VERSION --env ENV')}), or remove "
            f"the shadow with --clear ({ws.command('shadow --env ENV --clear')})"
        )
    if args.clear:
        change = clear_shadow(ws, env=env.name, reason=args.reason)
    else:
        progress = Progress(0, enabled=not args.quiet)
        with progress.uploading(f"copying version {args.version} into {env.name}'s registry") as up:
            change = set_shadow(
                ws, env=env.name, version=args.version, reason=args.reason, on_upload=up
            )
    if args.json:
        print_json(change.to_dict())
        return 0
    if not change.changed:
        if change.action == "clear":
            print(f"{env.name} has no shadow; nothing to do")
        else:
            print(f"version {args.version} already shadows {env.name}; nothing to do")
        return 0
    live = "nothing" if change.live is None else f"version {change.live.version}"
    if change.action == "clear":
        assert change.previous is not None
        print(f"{env.name}: shadow version {change.previous.version} removed (live: {live})")
    else:
        assert change.shadow is not None
        before = "" if change.previous is None else f" (was version {change.previous.version})"
        copied = f", copied from {change.copied_from}" if change.copied_from else ""
        print(f"{env.name}: version {change.shadow.version} shadows {live}{before}{copied}")
        for gate in change.gates:
            print(f"  gate {gate.gate}: passed ({gate.detail})")
    print(f"  pin written to {ws.lock_path}: deploy with: cdk deploy '{env.name}/*'")
    return 0
