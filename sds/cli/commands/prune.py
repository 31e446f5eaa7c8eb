"""`sds --aws prune`: delete published Lambda versions beyond `versions_to_keep`, never one that
alias `live` serves or routes to, a deployment in flight moves, or a rollback can return to;
prints what it keeps and why. A deletion Lambda refuses does not stop the others; the command
then fails (`NotDeleted`), its report (`--json`: with the error in it) saying what was done."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from sds.cli.arguments import Commands, env_option, workspace
from sds.cli.render import FailedResult, print_json, table
from sds.config import EnvironmentConfig

if TYPE_CHECKING:
    from lambdas.pruner.pruning import PruneReport


class NotDeleted(FailedResult):
    """A version Lambda refused to delete; the others went on (the report says which)."""


def register(commands: Commands) -> None:
    parser = commands.add(
        "prune",
        run,
        "delete published Lambda versions nothing needs (never live's, a deployment's or a "
        "rollback target); says what it keeps and why",
        [
            "sds --aws prune --env prod --dry-run",
            "sds --aws prune --env prod",
            "sds --aws prune --env staging --json",
        ],
    )
    env_option(parser, "--env", required=True, help="the environment whose function to prune")
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would be deleted, and delete nothing"
    )


def run(args: argparse.Namespace) -> int:
    from sds.ops.prune import prune_versions

    ws = workspace(args)
    env: EnvironmentConfig = args.env
    report = prune_versions(ws, env=env.name, dry_run=args.dry_run)
    if not args.json:
        _print_report(report)
    if report.failed:
        raise NotDeleted(
            "; ".join(
                f"version {version} was not deleted: {message}"
                for version, message in sorted(report.failed.items())
            ),
            report.to_dict(),
        )
    if args.json:
        print_json(report.to_dict())
    return 0


def _print_report(report: PruneReport) -> None:
    env, plan = report.target.environment, report.plan
    rows = []
    for decision in plan.decisions:
        if decision.keep:
            action = "keep"
        elif plan.blocked:
            action = "keep (blocked)"
        elif report.dry_run:
            action = "would delete"
        elif decision.version in report.failed:
            action = "FAILED"
        else:
            action = "deleted"
        models = ", ".join(
            f"v{pin.version}" if role == "live" else f"{role} v{pin.version}"
            for role, pin in sorted(decision.pins.items())
        )
        why = "; ".join(decision.reasons) or "nothing needs it"
        rows.append([str(decision.version), models or "-", action, why])
    print(
        f"{env}: {report.target.function} (keeps the {plan.versions_to_keep} newest, and "
        f"rollback targets {plan.history_depth} deep in the registry alias's history)"
    )
    print(table(rows, ["VERSION", "MODEL", "ACTION", "WHY"]) if rows else "no published versions")
    if plan.blocked:
        print(f"nothing deleted: {plan.blocked}")
    elif report.dry_run:
        print(f"dry run: {len(plan.to_delete)} would be deleted, {len(plan.kept)} kept")
    else:
        gone = len(report.deleted) + len(report.already_gone)
        print(f"deleted {gone}, kept {len(plan.kept)}, failed {len(report.failed)}")
