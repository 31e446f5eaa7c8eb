"""`sds score`: score a history with an environment's model, one output row per payment.

On this machine the run uses every core (a worker process per core, each holding one partition
of accounts), streams its input, shows progress and is resumable by part; `--aws` starts the
environment's batch state machine instead (Step Functions Distributed Map over the input, a
batch-scoring Lambda from the inference bundle) and follows it.
"""

from __future__ import annotations

import argparse

from sds.cli.arguments import Commands, env_option, version_argument, workspace
from sds.cli.batch_output import (
    add_run_options,
    check_target,
    report_aws_run,
    report_local_run,
    start_over,
)
from sds.config import EnvironmentConfig


def register(commands: Commands) -> None:
    parser = commands.add(
        "score",
        run,
        "score a history of activity events (a backtest, a re-score) with an environment's "
        "pinned model or a given version: the API's validation, account aggregates (point in "
        "time) and model, one row per payment with its score, decision, model version and sha256",
        [
            "sds score --env dev --data data/events.jsonl.gz --out data/scores",
            "sds score --env prod --version 12 --data data/2026/ --out data/scores-v12 --json",
            "sds score --env dev --data data/events.jsonl.gz --out data/scores  # resumes",
            "sds --aws score --env prod --data s3://my-data/events/ --out s3://my-data/scores/",
        ],
    )
    env_option(parser, "--env", default_first=True, help="whose model (default: the first)")
    version_argument(
        parser, "--version", help="score with this version from ENV's registry, not ENV's pin"
    )
    add_run_options(parser)


def run(args: argparse.Namespace) -> int:
    ws = workspace(args)
    env: EnvironmentConfig = args.env
    check_target(args, on_aws=ws.on_aws)
    if ws.on_aws:
        from sds.ops.batch_aws import run_on_aws

        return report_aws_run(
            args,
            lambda say: run_on_aws(
                ws,
                "score",
                env=env.name,
                data=args.data,
                out=args.out,
                version=args.version,
                say=say,
                partitions=args.partitions,
                wait=not args.no_wait,
            ),
        )
    from sds.ops.batch import model_for, run_locally

    model = model_for(ws, env.name, args.version)
    return report_local_run(
        args,
        lambda progress: run_locally(
            "score",
            data=args.data,
            out=args.out,
            model=model,
            workers=args.workers,
            partitions=args.partitions,
            progress=progress,
            restart=args.restart,
            start_over=start_over(args),
        ),
        what=f"{env.name}'s {ws.model} v{model.version} (sha256 {model.sha256[:12]}...)",
    )
