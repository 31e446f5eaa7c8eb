"""`sds ingest`: feed activity events (logins, payments) into an environment's local feature store."""

from __future__ import annotations

import argparse
import sys

from sds.cli.arguments import Commands, env_option, workspace
from sds.cli.render import FailedResult, print_json
from sds.config import EnvironmentConfig
from sds.ops.ingest import CLOCKS


class EventsNotStored(FailedResult):
    """Events the feature store did not take (a commit that failed, a writer racing this run);
    the others were stored (the totals say how many)."""


def register(commands: Commands) -> None:
    parser = commands.add(
        "ingest",
        run,
        "fold activity events from a file into an environment's local feature store (what "
        "`sds serve` reads the account aggregates from); nothing is stored if any event is invalid "
        "or reuses an event id the store holds with other content",
        [
            "sds ingest data/events.jsonl.gz --env dev",
            "sds ingest data/events.jsonl.gz --env dev --clock events   # replay a history",
            "sds ingest logins.jsonl --json",
        ],
    )
    parser.add_argument("data", help="events: .jsonl[.gz] file, directory or s3://bucket/prefix")
    env_option(parser, "--env", default_first=True, help="whose feature store (default: the first)")
    parser.add_argument(
        "--clock",
        choices=CLOCKS,
        default="wall",
        help="wall: drop events older than the longest window (and its hour of lateness), as live; "
        "events: replay history as it happened (time stands at the latest event so far); "
        "default: wall",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def run(args: argparse.Namespace) -> int:
    from sds.ops.ingest import STEPS, ingest
    from sds.progress import Progress

    ws = workspace(args)
    env: EnvironmentConfig = args.env
    result = ingest(
        ws,
        env.name,
        args.data,
        clock=args.clock,
        progress=Progress(STEPS, enabled=not args.quiet),
    )
    totals = result.totals
    if not args.json:
        print(
            f"{env.name}: {result.events} events -> {totals.applied} applied, "
            f"{totals.duplicates} already there, {totals.too_old} too old, "
            f"{totals.ignored} read by no aggregate ({result.store})"
        )
        for event_id, reason in list(totals.failed.items())[:5]:
            print(f"  failed {event_id}: {reason}", file=sys.stderr)
        # Only a writer racing this run gets here: conflicts with the store refuse the input
        # first.
        for event_id, reason in list(totals.conflicts.items())[:5]:
            print(f"  refused {event_id}: {reason}", file=sys.stderr)
    unstored = {**totals.failed, **totals.conflicts}
    if unstored:
        (first, reason), more = next(iter(unstored.items())), len(unstored) - 1
        raise EventsNotStored(
            f"{len(unstored)} event{'s were' if more else ' was'} not stored: {first}: {reason}"
            + (f" (and {more} more)" if more else ""),
            result.to_dict(),
        )
    if args.json:
        print_json(result.to_dict())
    return 0
