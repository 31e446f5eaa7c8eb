"""What `sds score` and `sds backfill` share: their run options and how a run is reported."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from typing import Any

from sds.cli.arguments import workers_option
from sds.cli.render import print_json, report_error
from sds.kernel.errors import UsageError, counted
from sds.kernel.signals import reworded
from sds.progress import Progress, human_bytes

STEPS = 4  # partition, collect, compute, manifest


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        help="the history: a .jsonl[.gz] file, a folder of them or s3://bucket/prefix",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="where the parts and the run's manifest go (a folder or s3://bucket/prefix); "
        "running again with the same arguments resumes the run there (with --aws, once the "
        "run there has ended: one still going is refused)",
    )
    workers_option(parser, "worker processes on this machine (default: one per core)")
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions of accounts, one output part each (default: from the input's size)",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="discard the run already in --out (its parts, progress and manifest) and start "
        "over; only where --out holds an sds run and nothing else, on this machine",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="with --aws: start the run and print its execution ARN without following it",
    )


def start_over(args: argparse.Namespace) -> str:
    """How to start over when --out holds a run this one cannot resume: the same command line,
    with --restart."""
    words = [w for w in getattr(args, "command_line", None) or [] if w != "--restart"]
    command = (
        shlex.join(["sds", *words, "--restart"]) if words else "the same command with --restart"
    )
    return f"to discard it and start over: {command} (or use another --out)"


# Run options that apply on one target only, given as (option, its attribute, whether it is for
# --aws, what to do instead): given for the other target, one is a usage error, not ignored.
ONE_TARGET = (
    (
        "--restart",
        "restart",
        False,
        "on AWS, name a new --out prefix (or delete the old one's objects)",
    ),
    (
        "--workers",
        "workers",
        False,
        "on AWS, the batch state machine runs infra.batch.max_concurrency functions at once "
        "(cdk.json)",
    ),
    (
        "--no-wait",
        "no_wait",
        True,
        "a run on this machine is followed until it ends (Ctrl-C stops it; the same command "
        "resumes it)",
    ),
)


def check_target(args: argparse.Namespace, *, on_aws: bool) -> None:
    """Refuse (exit 2) an option given for a run on the target it does not apply to."""
    for option, name, for_aws, instead in ONE_TARGET:
        if getattr(args, name) not in (None, False) and for_aws != on_aws:
            raise other_target(option, for_aws=for_aws, instead=instead)


def other_target(option: str, *, for_aws: bool, instead: str) -> UsageError:
    """The usage error for `option`, given on the target it does not apply to (`check_target`,
    and a command's own such option)."""
    where = "only applies with --aws" if for_aws else "only for runs on this machine"
    return UsageError(f"{option}: {where}; {instead}")


def report_local_run(args: argparse.Namespace, run: Callable[[Progress], Any], *, what: str) -> int:
    try:
        result = run(Progress(STEPS, enabled=not args.quiet))
    except KeyboardInterrupt as exc:
        # The workers are stopped by now (sds.kernel.batch.pool) and every finished part kept:
        # `main` prints this after "sds: interrupted" (or "sds: stopped by SIGTERM").
        raise reworded(
            exc, f"run the same command again to resume: {args.out} keeps what was finished"
        ) from None
    manifest = result.manifest
    if args.json:
        print_json(result.to_dict())
        return 0 if manifest["complete"] else 1
    totals = manifest["totals"]
    if result.nothing_to_do:
        print(f"nothing to do: {args.out} holds a finished run ({counted(totals['rows'], 'row')})")
        return 0
    rate = f"{result.events_per_second:,.0f} events/s"
    memory = result.peak_rss_bytes
    main, largest_worker = memory.get("main", 0), memory.get("largest_worker", 0)
    # No worker ran when the work fitted one process (one worker, or one task): say so, rather
    # than "0 B per worker".
    peak = (
        f"peak memory {human_bytes(largest_worker)} per worker, {human_bytes(main)} main"
        if largest_worker
        else f"peak memory {human_bytes(main)} (in one process)"
    )
    skipped = result.parts_skipped
    print(
        f"{counted(totals['rows'], 'row')} ({what}) from {counted(totals['events'], 'event')} "
        f"into {counted(len(manifest['parts']), 'part')} in {args.out}: {result.seconds:.1f} s, "
        f"{rate} with {counted(result.workers, 'worker')}; {peak}"
        + (
            f" (resumed: {counted(skipped, 'part')} {'was' if skipped == 1 else 'were'} "
            f"finished; this run computed {counted(result.parts_computed, 'part')} from "
            f"{counted(result.events_computed, 'event')})"
            if result.resumed
            else ""
        )
    )
    backtest = manifest.get("backtest")
    if backtest:
        precision, recall = backtest["precision"], backtest["recall"]
        print(
            f"  labelled: {backtest['fraud']} fraud of {backtest['labelled']}; flagged "
            f"{backtest['flagged']}: precision {_ratio(precision)}, recall {_ratio(recall)}"
        )
    if totals["duplicates"]:
        print(
            f"  {counted(totals['duplicates'], 'redelivered event')} counted once", file=sys.stderr
        )
    return 0 if manifest["complete"] else 1


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def report_aws_run(args: argparse.Namespace, run: Callable[[Callable[[str], None]], Any]) -> int:
    """Follow a run on AWS and print it: started (`--no-wait`) or finished. A run that fails is
    reported as `main` reports every error (one line on stderr; with --json, the error's document
    on stdout, its failed items in it), the failed items it names on stderr after that line."""
    from sds.ops.batch_aws import BatchRunFailed

    def say(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    try:
        result = run(say)
    except BatchRunFailed as exc:
        code = report_error(exc, as_json=args.json)
        if not args.json:
            for line in exc.listing():
                print(line, file=sys.stderr)
        return code
    if args.json:
        print_json(result.to_dict())
    else:
        print(result.summary())
    return 0
