"""`sds backfill`: the account aggregates of every payment of a history, as of just before it.

The offline computation (`sds.kernel.pointintime`, what training uses) partitioned by account,
so memory holds one partition per worker whatever the history's length; the result is the same
as one process computing the whole history at once. `--aws` runs it on the environment's batch
state machine.
"""

from __future__ import annotations

import argparse

from sds.cli.arguments import Commands, env_option, environment_given, workspace
from sds.cli.batch_output import (
    add_run_options,
    check_target,
    other_target,
    report_aws_run,
    report_local_run,
    start_over,
)
from sds.config import EnvironmentConfig


def register(commands: Commands) -> None:
    parser = commands.add(
        "backfill",
        run,
        "compute the account aggregates (sds.kernel.aggregates) of every payment of a history, "
        "point in time, partitioned by account: one row per payment",
        [
            "sds backfill --data data/events.jsonl.gz --out data/features",
            "sds backfill --data data/2026/ --out data/features --workers 8 --json",
            "sds --aws backfill --env dev --data s3://my-data/events/ --out s3://my-data/features/",
        ],
    )
    env_option(
        parser,
        "--env",
        default_first=True,
        help="with --aws: whose state machine runs it (default: the first)",
    )
    add_run_options(parser)


def run(args: argparse.Namespace) -> int:
    ws = workspace(args)
    env: EnvironmentConfig = args.env
    check_target(args, on_aws=ws.on_aws)
    if not ws.on_aws and environment_given(args, "env"):
        # The aggregates are the code's (sds.kernel.aggregates), the same for every
        # environment: here --env would change nothing, and saying nothing would let a user
        # believe it did.
        raise other_target(
            "--env",
            for_aws=True,
            instead="a backfill on this machine computes the same aggregates for every "
            "environment (sds.kernel.aggregates); leave --env out",
        )
    if ws.on_aws:
        from sds.ops.batch_aws import run_on_aws

        return report_aws_run(
            args,
            lambda say: run_on_aws(
                ws,
                "features",
                env=env.name,
                data=args.data,
                out=args.out,
                version=None,
                say=say,
                partitions=args.partitions,
                wait=not args.no_wait,
            ),
        )
    from sds.ops.batch import run_locally

    return report_local_run(
        args,
        lambda progress: run_locally(
            "features",
            data=args.data,
            out=args.out,
            workers=args.workers,
            partitions=args.partitions,
            progress=progress,
            restart=args.restart,
            start_over=start_over(args),
        ),
        what="the account aggregates",
    )
