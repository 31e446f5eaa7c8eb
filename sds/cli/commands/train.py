"""`sds train`: train a model and register it, on this machine or (`--on-fargate`) as the
deployed environment's ECS task.

Versions are registered only where the promotion chain starts (dev as committed): training on
this machine is for that environment; `--on-fargate` may run any environment's task (its data,
its network), which registers there too. `--from-capture` trains on what an environment served
(its captures joined with its labels: `training.from_capture`), any environment's, and registers
where that environment's chain starts, like its Fargate task would. The report names where the
version went.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sds.cli.arguments import Commands, env_option, moment_option, workers_option, workspace
from sds.cli.render import print_json
from sds.config import EnvironmentConfig
from sds.kernel.errors import UsageError


def register(commands: Commands) -> None:
    from training.params import HOLDOUT_DAYS, add_training_arguments

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
            "sds train --from-capture --env dev --since 2026-01-01 --until 2026-03-01",
            'sds --aws train --from-capture --env prod --reason "retrain on served traffic"',
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
    capture = parser.add_argument_group(
        "training from capture (the environment's served traffic, joined with its labels)"
    )
    capture.add_argument(
        "--from-capture",
        action="store_true",
        help="train on --env's captures instead of --data; registers where its promotion "
        "chain starts",
    )
    moment_option(
        capture,
        "--since",
        "payments from (a date, 2026-03-01, or an ISO 8601 time; default: --until minus "
        "the environment's infra.training.window_days)",
    )
    moment_option(capture, "--until", "payments before (default: --as-of)")
    moment_option(
        capture, "--as-of", "labels known by, and maturity measured at, this time (default: now)"
    )
    capture.add_argument(
        "--holdout-days",
        type=HOLDOUT_DAYS.parse,
        help=f"the out-of-time holdout: the most recent matured days ({HOLDOUT_DAYS}; default: "
        "the environment's infra.training.holdout_days)",
    )
    parser.add_argument("--reason", default="", help="why (recorded in the audit trail)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    reading = parser.add_argument_group(
        "reading a --data history on this machine (in bounded memory, partitioned by account)"
    )
    workers_option(reading, "processes reading the history's partitions (default: one per core)")
    reading.add_argument(
        "--work-dir",
        help="folder for the partitioned history while it is read, about 270 bytes per event "
        "(default: the system's temporary folder)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--on-fargate",
        action=_OnFargate,
        help="run the environment's training task on ECS Fargate (implies --aws), wait, and "
        "report the registered version; --data then overrides the task's data location, and "
        "the model parameters given are passed to the task",
    )
    where.add_argument(
        "--local",
        action="store_true",
        help="train on this machine and register into the environment's registry (default; "
        "only where the promotion chain starts)",
    )
    add_training_arguments(parser)


CAPTURE_ONLY = ("since", "until", "as_of", "holdout_days")
LOCAL_DATA_ONLY = ("workers", "work_dir")


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


def _given(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """The options among `names` the command line gave, spelled as typed (--work-dir)."""
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is not None]


def run(args: argparse.Namespace) -> int:
    from sds.ops.promotion import registering_environment
    from training.params import params_from_args
    from training.train import STEPS, Progress, train

    local_only = _given(args, LOCAL_DATA_ONLY)
    if local_only and (args.on_fargate or args.from_capture):
        mode = "--on-fargate" if args.on_fargate else "--from-capture"
        raise UsageError(
            f"{', '.join(local_only)}: only when this machine trains on a --data history, "
            f"not with {mode}"
        )
    if args.on_fargate:
        if args.from_capture:
            raise UsageError(
                "--on-fargate runs the training the environment's task is deployed with; to "
                "train its task from capture, set infra.training.source to capture and deploy"
            )
        window = _given(args, CAPTURE_ONLY)
        if window:
            raise UsageError(
                f"{', '.join(window)}: only with --from-capture on this machine; a task that "
                "trains from capture takes the window it is deployed with "
                "(infra.training.window_days, holdout_days)"
            )
        return _run_on_fargate(args)
    if args.from_capture:
        return _run_from_capture(args)
    given = _given(args, CAPTURE_ONLY)
    if given:
        raise UsageError(f"{', '.join(given)}: only with --from-capture")
    ws = workspace(args)
    env: EnvironmentConfig = args.env
    registering_environment(ws, env.name, on_fargate=False)  # refused above the chain start
    if not args.data:
        raise UsageError(
            "--data is required: a .jsonl[.gz] file, a directory or s3://bucket/prefix "
            "(make some with: sds generate --out data/events.jsonl.gz)"
        )
    params = params_from_args(args)  # each in range: checked as the arguments were parsed
    if args.work_dir is not None and not Path(args.work_dir).is_dir():
        raise UsageError(f"--work-dir {args.work_dir}: no such folder")
    version = train(
        data=args.data,
        registry=ws.registry(env.name),
        params=params,
        actor=ws.actor,
        reason=args.reason,
        progress=Progress(STEPS, enabled=not args.quiet),
        workers=args.workers,
        work_dir=args.work_dir,
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


def _run_from_capture(args: argparse.Namespace) -> int:
    import time

    from training.data import DataError
    from training.from_capture import STEPS, make_window, train_from_capture
    from training.params import params_from_args
    from training.train import Progress

    if args.data:
        raise UsageError("--from-capture trains on the environment's captures: drop --data")
    ws = workspace(args)
    env: EnvironmentConfig = args.env
    training = env.infra.training
    holdout_days = training.holdout_days if args.holdout_days is None else args.holdout_days
    try:
        params = params_from_args(args, from_capture=True)
        window = make_window(
            since=args.since,
            until=args.until,
            as_of=args.as_of,
            window_days=training.window_days,
            maturity_days=env.labels.maturity_days,
            unlabelled=env.labels.unlabelled,
            now_us=time.time_ns() // 1000,
        )
    except (ValueError, DataError) as exc:
        raise UsageError(str(exc)) from None
    registering = env.chain_start
    version = train_from_capture(
        captures=ws.captures_uri(env.name),
        labels=ws.labels_uri(env.name),
        env=env.name,
        window=window,
        holdout_days=holdout_days,
        registry=ws.registry(registering),
        params=params,
        actor=ws.actor,
        reason=args.reason,
        progress=Progress(STEPS, enabled=not args.quiet),
    )
    if args.json:
        print_json(dict(version.manifest))
        return 0
    m = version.metrics
    where = (
        registering if registering == env.name else f"{registering} (versions are allocated there)"
    )
    print(
        f"registered {ws.model} version {version.number} in {where} from {env.name}'s captured "
        f"traffic (ROC AUC {m['roc_auc']:.4f}, PR AUC {m['pr_auc']:.4f}, sha256 "
        f"{version.sha256[:12]}...)"
    )
    for served in version.manifest["comparison"]["served"]:
        if served["live"] is None:
            print(
                f"  v{served['version']} served {served['events']} held-out payments: "
                f"not compared ({served['reason']})"
            )
            continue
        print(
            f"  on the {served['events']} held-out payments v{served['version']} served: PR AUC "
            f"{served['candidate']['pr_auc']:.4f} vs {served['live']['pr_auc']:.4f} for "
            f"v{served['version']}"
        )
    return 0


def _run_on_fargate(args: argparse.Namespace) -> int:
    from sds.ops.fargate import run_training
    from training.params import given_parameters

    ws = workspace(args)  # on AWS: --on-fargate implies --aws
    env: EnvironmentConfig = args.env

    def say(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    done = run_training(
        ws,
        env=env.name,
        reason=args.reason,
        data=args.data,
        parameters=given_parameters(args),
        say=say,
    )
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
