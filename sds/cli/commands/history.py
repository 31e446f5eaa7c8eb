"""`sds history`: an environment's audit trail (registered, promoted, rolled back, ...).

BY is who did it (on AWS the caller's identity, from STS); DECLARED, shown when any event has
one, is what the caller said about themselves (`$SDS_ACTOR` on AWS), an annotation only.
"""

from __future__ import annotations

import argparse
import sys

from sds.cli.arguments import Commands, env_option, workspace
from sds.cli.render import fmt, print_json, table
from sds.config import EnvironmentConfig


def register(commands: Commands) -> None:
    parser = commands.add(
        "history",
        run,
        "the audit trail of an environment",
        ["sds history --env prod", "sds --aws history --env prod --json"],
    )
    env_option(parser, "--env", required=True)


def run(args: argparse.Namespace) -> int:
    from sds.ops.promotion import history

    ws = workspace(args)
    env: EnvironmentConfig = args.env
    trail = history(ws, env.name)
    # The trail goes on past an event file that cannot be read; each is named on stderr.
    for problem in trail.unreadable:
        print(
            f"warning: {env.name}: audit event {problem} (left out of the history; the file is "
            "left as it is)",
            file=sys.stderr,
        )
    events = trail.events
    if args.json:
        print_json(events)
        return 0
    if not events:
        print(f"no events in {env.name}'s registry yet")
        return 0
    declared = any(e.get("declared_actor") for e in events)
    rows = [
        [
            str(e.get("at", ""))[:23].replace("T", " "),
            str(e.get("type")),
            str(e.get("version")),
            fmt(e.get("from_version")),
            str(e.get("by")),
            *([str(e.get("declared_actor") or "-")] if declared else []),
            str(e.get("reason") or "-"),
        ]
        for e in events
    ]
    headers = ["TIME (UTC)", "EVENT", "VERSION", "FROM", "BY"]
    print(table(rows, [*headers, *(["DECLARED"] if declared else []), "REASON"]))
    return 0
