"""`sds train`: train a model and register it, on this machine or (`--on-fargate`) as the
deployed environment's ECS task.

Versions are registered only where the promotion chain starts (dev as committed): training on
this machine is for that environment; `--on-fargate` may run any environment's task (its data,
its network), which registers there too. The report names where the version went.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from sds.cli.arguments import Commands, env_option, workspace
from sds.cli.render import print_json
from sds.config import EnvironmentConfig
from sds.kernel.errors import UsageError


def register(commands: Commands) -> None:
    from training.params import add_training_arguments

    parser = commands.add(
        "train",
        run,
        "train a model and register it where versions are allocated (the start of the "
        "promotion chain)",
        [
            'sds train --data data/events.jsonl.gz --reason "weekly retrain"',
            "sds train --data data/events.jsonl.gz --max-iter 200 --learning-rate 0.05 --json",
            'sds --aws train --env dev --data s3://my-bucket/events/ --reason "weekly retrain"',
            'sds --aws train --env dev --on-fargate --reason "weekly retrain"',
            'sds --aws train --env prod --on-fargate --reason "on prod data"  # registers in dev',
        ],
    )
    env_option(
        parser,
        "--env",
        default_first=True,
        help="on this machine: the environment that allocates versions (default: the first "
        "environment); with --on-fargate: whose training task runs (it registers where that "
        "environment's promotion chain starts)",
    )
    parser.add_argument("--data", help="history: .jsonl[.gz] file, directory or s3://bucket/prefix")
    parser.add_argument("--reason", default="", help="why (recorded in the audit trail)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--on-fargate",
        action=_OnFargate,
        help="run the environment's training task on ECS Fargate (implies --aws), wait, and "
        "report the registered version; --data then overrides the task's data location",
    )
    where.add_argument(
        "--local",
        action="store_true",
        help="train on this machine and register into the environment's registry (default; "
        "only where the promotion chain starts)",
    )
    add_training_arguments(parser)


class _OnFargate(argparse.Action):
    """`--on-fargate` also means `--aws`: the task, its network and the registry are the
    deployed environment's."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, True)
        namespace.aws = True


def run(args: argparse.Namespace) -> int:
    from sds.ops.promotion import registering_environment
    from training.params import params_from_args
    from training.train import STEPS, Progress, train

    if args.on_fargate:
        return _run_on_fargate(args)
    ws = workspace(args)
    env: EnvironmentConfig = args.env
    registering_environment(ws, env.name, on_fargate=False)  # refused above the chain start
    if not args.data:
        raise UsageError(
            "--data is required: a .jsonl[.gz] file, a directory or s3://bucket/prefix "
            "(make some with: sds generate --out data/events.jsonl.gz)"
        )
    try:
        params = params_from_args(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    version = train(
        data=args.data,
        registry=ws.registry(env.name),
        params=params,
        actor=ws.actor,
        reason=args.reason,
        progress=Progress(STEPS, enabled=not args.quiet),
    )
    if args.json:
        print_json(dict(version.manifest))
    else:
        m = version.metrics
        print(
            f"registered {ws.model} version {version.number} in {env.name} "
            f"(ROC AUC {m['roc_auc']:.4f}, PR AUC {m['pr_auc']:.4f}, sha256 {version.sha256[:12]}...)"
        )
    return 0


def _run_on_fargate(args: argparse.Namespace) -> int:
    from sds.ops.fargate import run_training

    ws = workspace(args)  # on AWS: --on-fargate implies --aws
    env: EnvironmentConfig = args.env

    def say(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    done = run_training(ws, env=env.name, reason=args.reason, data=args.data, say=say)
    if args.json:
        print_json(done.to_dict())
    else:
        m = done.version.metrics
        where = (
            f"in {done.registered_in} on Fargate"
            if done.registered_in == done.env
            else f"in {done.registered_in} (versions are allocated there) on {done.env}'s "
            "Fargate task"
        )
        print(
            f"registered {ws.model} version {done.version.number} {where} "
            f"in {done.duration_s:.0f} s (ROC AUC {m.get('roc_auc', float('nan')):.4f}, "
            f"sha256 {done.version.sha256[:12]}...)"
        )
    return 0
