"""`sds compare`: an environment's live model against its shadow on the payments both scored."""

from __future__ import annotations

import argparse

from sds.cli.arguments import Commands, env_option, moment_option, workspace
from sds.cli.render import print_json
from sds.config import EnvironmentConfig
from sds.kernel.errors import UsageError


def register(commands: Commands) -> None:
    parser = commands.add(
        "compare",
        run,
        "live against shadow on identical captured payments: agreement, alert rates, score "
        "correlation, the payments they disagree on, label metrics once labels mature, and the "
        "shadow's measured cost",
        [
            "sds compare --env prod",
            "sds compare --env prod --since 2026-11-01 --json",
            "sds --aws compare --env prod --since 2026-11-01 --until 2026-11-15",
        ],
    )
    env_option(parser, "--env", required=True, help="whose captures")
    moment_option(parser, "--since", "payments from (a date or ISO 8601 time, UTC)")
    moment_option(parser, "--until", "payments before (default: --as-of)")
    moment_option(
        parser, "--as-of", "labels known by, and maturity measured at, this time (default: now)"
    )
    parser.add_argument(
        "--limit", type=int, default=20, help="disagreements listed per pair (default: 20)"
    )


def run(args: argparse.Namespace) -> int:
    from sds.ops.shadow import compare, render_report
    from training.capture_data import parse_moment

    env: EnvironmentConfig = args.env
    if args.limit < 0:
        raise UsageError("--limit must be >= 0")
    since = None if args.since is None else parse_moment(args.since, what="--since")
    as_of = None if args.as_of is None else parse_moment(args.as_of, what="--as-of")
    # Payments after --as-of were not there to compare at that time: the window ends there
    # unless --until says otherwise (and without --as-of it runs to now, the report's "now").
    until = as_of if args.until is None else parse_moment(args.until, what="--until")
    if since is not None and until is not None and since >= until:
        if args.until is None:
            raise UsageError(
                f"the window is empty: --since {args.since} is not before --until, which "
                f"defaults to --as-of ({args.as_of}): give --until too"
            )
        raise UsageError(f"--since {args.since} is not before --until {args.until}")
    report = compare(
        workspace(args),
        env=env.name,
        since_us=since,
        until_us=until,
        as_of_us=as_of,
        limit=args.limit,
    )
    if args.json:
        print_json(report.to_dict())
    else:
        for line in render_report(report):
            print(line)
    return 0
