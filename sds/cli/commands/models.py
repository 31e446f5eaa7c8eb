"""`sds models`: the versions in an environment's registry, their metrics and where each is live."""

from __future__ import annotations

import argparse
import sys

from sds.cli.arguments import Commands, env_option, workspace
from sds.cli.render import fmt, print_json, table
from sds.config import EnvironmentConfig


def register(commands: Commands) -> None:
    parser = commands.add(
        "models",
        run,
        "list versions, their metrics and where each is live",
        ["sds models", "sds models --env staging --json", "sds --aws models --env prod"],
    )
    env_option(parser, "--env", default_first=True)


def run(args: argparse.Namespace) -> int:
    from sds.ops.promotion import model_table

    ws = workspace(args)
    env: EnvironmentConfig = args.env
    listing = model_table(ws, env.name)
    rows = listing.rows
    # The listing goes on past an environment whose live version cannot be read and past an
    # unreadable version; each is named on stderr.
    for name, problem in listing.live_unknown.items():
        print(
            f"warning: {name}: cannot tell which version is live in {name}: {problem} "
            f"(LIVE IN leaves {name} out; {ws.command(f'status --env {name}')} checks it)",
            file=sys.stderr,
        )
    for row in rows:
        if row["problem"] is not None:
            show = ws.command(f"show {row['version']} --env {env.name}")
            print(
                f"warning: {env.name}: {row['problem']} (listed as unreadable; {show} verifies it)",
                file=sys.stderr,
            )
    if args.json:
        print_json(
            {
                "env": env.name,
                "registry": ws.registry_uri(env.name),
                "versions": rows,
                # Environments left out of every version's live_in: why each could not be read.
                "live_unknown": listing.live_unknown,
            }
        )
        return 0
    if not rows:
        print(
            f"no versions in {env.name}'s registry ({ws.registry_uri(env.name)}); "
            f"train one with {ws.command('train')}"
        )
        return 0
    print(
        table(
            [
                [
                    str(r["version"]),
                    "unreadable"
                    if r["problem"] is not None
                    else str(r["created_at"])[:19].replace("T", " "),
                    fmt(r["roc_auc"]),
                    fmt(r["pr_auc"]),
                    fmt(r["precision_at_alert_rate"]),
                    fmt(r["expected_calibration_error"]),
                    ", ".join(r["live_in"]) or "-",
                ]
                for r in rows
            ],
            ["VERSION", "CREATED (UTC)", "ROC_AUC", "PR_AUC", "PREC@ALERT", "ECE", "LIVE IN"],
        )
    )
    return 0
