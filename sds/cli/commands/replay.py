"""`sds --aws replay`: replay an environment's activity archive into its feature table. A replay
EventBridge reports failed or cancelled fails the command (`ReplayFailed`), its report (`--json`:
with the error in it) saying how far it got."""

from __future__ import annotations

import argparse
import sys

from sds.cli.arguments import Commands, env_option, workspace
from sds.cli.render import FailedResult, print_json
from sds.config import REPLAY_DAYS, EnvironmentConfig


class ReplayFailed(FailedResult):
    """The replay ended FAILED or CANCELLED, with the reason EventBridge gave."""


def register(commands: Commands) -> None:
    parser = commands.add(
        "replay",
        run,
        "replay the environment's archived activity events through its feature updater: rebuild "
        "the feature table, or fill it after the aggregate definitions changed (events it "
        "already holds count once)",
        [
            "sds --aws replay --env prod                       # the last "
            f"{REPLAY_DAYS} days: every window",
            "sds --aws replay --env prod --since 2026-11-20T00:00:00Z --until 2026-11-21T00:00:00Z",
            "sds --aws replay --env staging --since 36h --wait",
        ],
    )
    env_option(parser, "--env", required=True, help="whose archive and feature table")
    parser.add_argument(
        "--since",
        help=f"first event time to replay: ISO 8601 with a zone, or a span back from now (9d, "
        f"36h, 90m); default {REPLAY_DAYS}d, the longest window and its lateness",
    )
    parser.add_argument("--until", help="last event time to replay (default: now)")
    parser.add_argument(
        "--wait", action="store_true", help="follow the replay until it ends, with progress"
    )


def run(args: argparse.Namespace) -> int:
    from sds.ops.replay import ReplayReport, replay_archive

    ws = workspace(args)
    env: EnvironmentConfig = args.env

    def progress(report: ReplayReport) -> None:
        if args.json or report.done:
            return
        last = "-" if report.last_replayed is None else report.last_replayed.isoformat()
        print(f"  {report.state}: replayed up to {last}", file=sys.stderr, flush=True)

    def started(report: ReplayReport) -> None:
        # What started comes first, before the progress of a --wait: the window, the archive
        # and the replay's name, in its first state. With --json, one document at the end.
        if args.json:
            return
        document = report.to_dict()
        print(
            f"{env.name}: replaying {document['since']} .. {document['until']} from archive "
            f"{report.archive} to the feature rule: {report.name} {report.state}",
            flush=True,
        )
        for warning in report.warnings:
            print(f"  note: {warning}", flush=True)

    report = replay_archive(
        ws,
        env=env.name,
        since=args.since,
        until=args.until,
        wait=args.wait,
        on_progress=progress,
        on_started=started,
    )
    if not args.json:  # with --json, one document once done: the report, or the error in it
        if args.wait:
            print(f"{env.name}: replay {report.name} {report.state}", flush=True)
        else:
            print(
                f"  follow it with: aws events describe-replay --replay-name {report.name} "
                "(or run with --wait)"
            )
    if not report.ok:
        raise ReplayFailed(
            f"the replay {report.state}: {report.reason or 'no reason given'}", report.to_dict()
        )
    if args.json:
        print_json(report.to_dict())
    return 0
