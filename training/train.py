"""Training entry point: the same code runs on a laptop (`sds train`) and in the Fargate task.

    python -m training.train --data PATH|s3://bucket/prefix --registry file:///...|s3://bucket
    python -m training.train --from-capture --captures URI --labels URI --capture-env ENV ...

Steps: partition the activity history (payments, labelled, and logins) by account on local disk
-> the payments' time order: the time-ordered split and the sample (`--negative-rate`) -> for the
kept payments only, each one's account aggregates as of just before it
(`sds.kernel.pointintime`, from the same declarations the online feature store folds) and
features (the shared `sds.kernel.features.featurize_batch`), partition by partition
(`training.partitioned`: memory follows the sample, not the history) -> fit HistGradientBoosting
-> evaluate on the holdout -> export to ONNX -> refuse unless ONNX and scikit-learn agree within
1e-4 -> register both artifacts with a manifest.
With `--from-capture` it trains on served traffic instead (`training.from_capture`).

Stopped (Ctrl-C, or SIGTERM: ECS StopTask, `docker stop`, `timeout`), it cleans up as it goes
(workers stopped, the partitioned history removed), registers nothing it has not finished
(the registry writes a version's manifest last: an interrupted registration leaves an
invisible, never-reused number) and exits 130, or 143 for SIGTERM, with one line saying so.
Stopped or failing once a version's manifest is stored (its audit event, say), that line says
the version was registered in full: it is there to promote, not to train again.

The registry is where versions are allocated (the start of the promotion chain): the Fargate
task of every environment is deployed with that registry in its command. Who registers is the
identity that signs the registry's requests: for an `s3://` registry the caller's AWS identity
(STS; in the task, its role), with `SDS_ACTOR` kept as an annotation (`declared_by`); for a
local one `SDS_ACTOR`, else `user@host`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from sds.config import CODE_VERSION, TASK_ROLE_ARN
from sds.kernel.errors import UsageError
from sds.kernel.features import FEATURE_NAMES, feature_schema
from sds.kernel.registry import (
    Registry,
    RegistryError,
    Version,
    aws_actor,
    default_actor,
    open_registry,
)
from sds.kernel.signals import reworded, sigterm_as_interrupt, stop_reason
from sds.progress import Progress, human_bytes
from training.drift_reference import holdout_reference
from training.evaluate import evaluate, served_behaviour
from training.from_capture import add_capture_arguments, train_from_capture, window_from_args
from training.onnx_export import check_parity, onnx_scores, to_onnx
from training.params import (
    WORKERS,
    TrainParams,
    add_training_arguments,
    params_from_args,
    recorded_params,
)
from training.partitioned import TrainingSet, downsample, time_ordered_split, training_set

STEPS = 8


def sampling_record(rows: TrainingSet, params: TrainParams) -> dict[str, Any]:
    """The manifest's account of negative downsampling: what was kept and how it was weighted."""
    return {
        "method": "negative downsampling" if params.negative_rate < 1 else "none",
        "negative_rate": params.negative_rate,
        "legitimate_weight": 1 / params.negative_rate,
        "seed": params.seed,
        "payments": rows.payments,
        "kept_payments": len(rows.kept),
        "kept_fraud": int(rows.labels.sum()),
        "fraud": rows.fraud,
        "metrics": "weighted back to the whole holdout"
        if params.negative_rate < 1
        else "on the whole holdout",
    }


def fit(
    features: np.ndarray,
    labels: np.ndarray,
    params: TrainParams,
    *,
    sample_weight: np.ndarray | None = None,
) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    if len(set(labels.tolist())) < 2:
        raise ValueError("training data has only one class: need fraud and non-fraud events")
    model = HistGradientBoostingClassifier(
        max_iter=params.max_iter,
        learning_rate=params.learning_rate,
        max_leaf_nodes=params.max_leaf_nodes,
        max_depth=params.max_depth,
        min_samples_leaf=params.min_samples_leaf,
        l2_regularization=params.l2_regularization,
        early_stopping=False,
        random_state=params.seed,
    )
    return model.fit(features, labels, sample_weight=sample_weight)


def to_skops(model: Any) -> bytes:
    import skops.io as sio

    buffer = io.BytesIO()
    sio.dump(model, buffer)
    return buffer.getvalue()


def library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import skl2onnx
    import sklearn
    import skops

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "skops": skops.__version__,
    }


TRAINING_CODE = Path(__file__).resolve().parent


def code_version(source: Path = TRAINING_CODE) -> str:
    """What code trains: `SDS_CODE_VERSION` where it is set (the Fargate task, whose image has no
    git: `image:<the image's content hash>`, set by its stack), else the git revision of the
    checkout `source` is in (`-dirty` if its tracked files differ from it), else `unknown`."""
    if os.environ.get(CODE_VERSION):
        return os.environ[CODE_VERSION]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


ECS_METADATA_VARIABLE = "ECS_CONTAINER_METADATA_URI_V4"  # set by ECS in every Fargate container


def task_actor(registry_uri: str) -> tuple[str, str | None]:
    """(who registers, what they declare): see the module docstring.

    In the Fargate task, who registers is the task itself: its role (its ARN set by the deploy in
    the task definition's environment) and the task's ARN from ECS's task metadata endpoint, a
    link-local address only the container reaches; asking them needs no network route (the
    isolated training network has no STS endpoint). It is a record, not a boundary: whoever may
    run the task (the training operator policy) could override a container variable at launch,
    as with any ECS task, though not the role the task's writes are authorized by (that takes
    iam:PassRole, granted for the task's own roles only; CloudTrail names it). On S3 elsewhere
    it is STS's answer for the credentials in use; locally, SDS_ACTOR or user@host.
    """
    declared = os.environ.get("SDS_ACTOR") or None
    role = os.environ.get(TASK_ROLE_ARN)
    metadata = os.environ.get(ECS_METADATA_VARIABLE)
    if role and metadata:
        return f"{role} (ECS task {ecs_task_arn(metadata)})", declared
    if registry_uri.startswith("s3://"):
        return aws_actor(), declared
    return declared or default_actor(), None


def ecs_task_arn(metadata_uri: str) -> str:
    """The running task's ARN from the ECS task metadata endpoint (version 4)."""
    import urllib.request

    with urllib.request.urlopen(f"{metadata_uri}/task", timeout=5) as answer:
        document = json.loads(answer.read())
    arn = document.get("TaskARN") if isinstance(document, dict) else None
    if not isinstance(arn, str) or not arn.startswith("arn:"):
        raise RuntimeError(f"the ECS task metadata at {metadata_uri}/task names no TaskARN")
    return arn


def train(
    *,
    data: str | Path,
    registry: Registry,
    params: TrainParams,
    actor: str,
    reason: str = "",
    run_id: str | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    work_dir: str | Path | None = None,
) -> Version:
    """Train, evaluate, convert, check parity and register one version; return it.

    `run_id` (from `sds train --on-fargate`) is recorded in the manifest, so the command that
    started the run finds the version it produced. `workers` (default: every core) read the
    history's partitions; `work_dir` holds them meanwhile (default: the temporary folder).
    """
    progress = progress or Progress(STEPS)
    # Bounded memory: the history is partitioned by account on local disk and only the kept
    # payments' rows are ever held (training.partitioned).
    rows = training_set(
        data,
        holdout_fraction=params.holdout_fraction,
        negative_rate=params.negative_rate,
        seed=params.seed,
        progress=progress,
        workers=workers,
        work_dir=work_dir,
    )
    features, labels, weights = rows.features, rows.labels, rows.weights
    sampled = params.negative_rate < 1
    train_rows = rows.train_rows
    model = progress.run(
        f"fitting HistGradientBoosting on {train_rows} payments before {rows.holdout_from}"
        + (
            f" (legitimate ones sampled at {params.negative_rate:g}, weighted back)"
            if sampled
            else ""
        ),
        lambda: fit(
            features[:train_rows],
            labels[:train_rows],
            params,
            sample_weight=weights[:train_rows] if sampled else None,
        ),
        lambda m: f"{m.n_iter_} trees",
    )
    holdout_x, holdout_y = features[train_rows:], labels[train_rows:]
    onnx_bytes, worst, scores = export_as_served(model, holdout_x, progress)
    metrics, threshold = progress.run(
        f"evaluating on the {rows.payments - rows.cut} most recent payments"
        + (f" ({len(holdout_y)} sampled, weighted back)" if sampled else ""),
        lambda: evaluate(
            holdout_y,
            scores,
            alert_rate=params.alert_rate,
            weights=weights[train_rows:] if sampled else None,
        ),
        lambda r: f"ROC AUC {r[0]['roc_auc']:.4f}, PR AUC {r[0]['pr_auc']:.4f}",
    )
    metrics["onnx_max_abs_diff"] = worst
    metadata = {
        "algorithm": "sklearn.ensemble.HistGradientBoostingClassifier",
        "metrics": metrics,
        "decision_threshold": threshold,
        # What the version does as served: the deployment's alert-rate alarms expect its alert
        # rate, and the histogram is the baseline drift is measured against. Both are the whole
        # holdout's, weighted back as the metrics are (the sample over-represents fraud).
        "behaviour": served_behaviour(
            scores, threshold, weights=weights[train_rows:] if sampled else None
        ),
        "params": recorded_params(params),
        "feature_schema": feature_schema(),
        "library_versions": library_versions(),
        "data": {
            "uri": str(data),
            "fingerprint": rows.fingerprint,
            "files": len(rows.sources),
            "events": rows.events,
            "payments": rows.payments,
            "train_events": rows.cut,
            "holdout_events": rows.payments - rows.cut,
            "holdout_from": rows.holdout_from,
        },
        "sampling": sampling_record(rows, params),
        "code_version": code_version(),
        "serving": {"input": "features", "output": "probabilities", "positive_class": 1},
    }
    return register_model(
        registry,
        model=model,
        onnx_bytes=onnx_bytes,
        metadata=metadata,
        holdout_x=holdout_x,
        scores=scores,
        holdout_weights=weights[train_rows:] if sampled else None,
        run_id=run_id,
        actor=actor,
        reason=reason,
        progress=progress,
    )


def export_as_served(
    model: Any, holdout_x: np.ndarray, progress: Progress
) -> tuple[bytes, float, np.ndarray]:
    """Two steps of every trainer: the model exported to ONNX and its parity with scikit-learn
    checked on the holdout; then the holdout's scores as the function serves them, which the
    trainer evaluates: the threshold is one of the scores served (scikit-learn's float64 scores
    can put it between tied served ones, flagging none of them), and the metrics, behaviour,
    drift reference and comparisons are the served model's. (ONNX bytes, worst difference,
    holdout scores.)"""
    onnx_bytes = progress.run(
        "exporting to ONNX", lambda: to_onnx(model), lambda b: f"{len(b)} bytes"
    )
    worst = progress.run(
        "checking ONNX parity with scikit-learn on the holdout",
        lambda: check_parity(model, onnx_bytes, holdout_x),
        lambda w: f"max |difference| {w:.2g}",
    )
    return onnx_bytes, worst, onnx_scores(onnx_bytes, holdout_x)


def register_model(
    registry: Registry,
    *,
    model: Any,
    onnx_bytes: bytes,
    metadata: dict[str, Any],
    holdout_x: np.ndarray,
    scores: np.ndarray,
    run_id: str | None,
    actor: str,
    reason: str,
    progress: Progress,
    note: str = "",
    holdout_weights: np.ndarray | None = None,
) -> Version:
    """The last step of every trainer: the manifest gets the holdout's drift reference (of the
    whole holdout a sampled one stands for, with `holdout_weights`) and the run id, and the ONNX
    and skops artifacts are registered as a new version, `note` after the step's title."""
    metadata["drift_reference"] = holdout_reference(holdout_x, scores, weights=holdout_weights)
    if run_id:
        metadata["run_id"] = run_id
    artifacts = {"model.onnx": onnx_bytes, "model.skops": to_skops(model)}

    claimed: list[int] = []

    def register() -> Version:
        # One bar over the artifacts and the manifest, as each object is stored.
        with progress.uploading(f"uploading {len(artifacts) + 1} objects") as on_upload:
            return registry.register(
                artifacts,
                metadata,
                actor=actor,
                reason=reason,
                on_upload=on_upload,
                on_claimed=claimed.append,
            )

    try:
        size = sum(len(data) for data in artifacts.values())
        return progress.run(
            f"registering in {registry.uri}{note}",
            register,
            lambda v: f"version {v.number} ({human_bytes(size)} of artifacts)",
        )
    except KeyboardInterrupt as exc:
        version = _completed(registry, claimed)
        if version is None:
            raise
        raise reworded(
            exc,
            f"version {version.number} was registered in full before the interruption "
            f"(sha256 {version.sha256[:12]}...); it is there to promote, not to train again",
        ) from None
    except Exception as exc:
        version = _completed(registry, claimed)
        if version is None:
            raise
        raise RegistryError(
            f"version {version.number} was registered in full (sha256 {version.sha256[:12]}...), "
            f"then registering failed: {exc}; it is there to promote, not to train again"
        ) from exc


def _completed(registry: Registry, claimed: list[int]) -> Version | None:
    """The version a registration stopped midway (interrupted, or failed) had completed, if it
    had: once its manifest is stored a version is registered in full (its audit event may be
    missing), and a caller told only "interrupted" or "failed" would train it again."""
    if not claimed:
        return None
    try:
        return registry.get_version(claimed[-1])
    except (RegistryError, OSError):
        return None  # not complete (or not readable now): nothing of it is visible


class _Parser(argparse.ArgumentParser):
    """A parser whose usage errors `main` reports as the task's others: one line
    (`error: argument --max-depth: '0': must be ...`), exit 2, no usage text."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m training.train",
        description="Train a fraud model and register it (locally or in the Fargate task).",
    )
    add_training_arguments(parser)
    parser.add_argument(
        "--data",
        default=os.environ.get("TRAINING_DATA_URI"),
        help="history: .jsonl[.gz] file, directory or s3://bucket/prefix (env TRAINING_DATA_URI)",
    )
    parser.add_argument(
        "--registry",
        default=os.environ.get("REGISTRY_URI"),
        help="file:///path or s3://bucket (env REGISTRY_URI)",
    )
    parser.add_argument("--model", default=os.environ.get("MODEL_NAME", "fraud"))
    parser.add_argument("--reason", default="", help="why this version was trained (audited)")
    parser.add_argument(
        "--run-id", default=None, help="recorded in the manifest (set by sds train --on-fargate)"
    )
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    parser.add_argument(
        "--workers",
        type=WORKERS.parse,
        default=None,
        help=f"processes reading the history's partitions ({WORKERS}; default: one per core)",
    )
    parser.add_argument(
        "--work-dir",
        default=os.environ.get("TRAINING_WORK_DIR"),
        help="local folder for the partitioned history while it is read: about 270 bytes per "
        "event (env TRAINING_WORK_DIR; default: the temporary folder)",
    )
    add_capture_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # The task's ENTRYPOINT: ECS StopTask sends SIGTERM (then SIGKILL after the stop timeout),
    # which must run the same cleanup as Ctrl-C.
    with sigterm_as_interrupt():
        try:
            return _run(argv)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM, cleaned up on the way out
            how, code = stop_reason(exc)
            print(
                f"training {how}: {exc}"
                if str(exc)  # what it completed first (a version registered in full)
                else f"training {how}: a version is registered only once complete, so nothing "
                "half-written is left",
                file=sys.stderr,
            )
            return code


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        params = params_from_args(args, from_capture=args.from_capture)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.from_capture:
        missing = [n for n in ("captures", "labels", "capture_env") if not getattr(args, n)]
        if missing or not args.registry:
            names = ", ".join(f"--{n.replace('_', '-')}" for n in [*missing, "registry"])
            print(f"error: --from-capture needs {names}", file=sys.stderr)
            return 2
    elif not args.data or not args.registry:
        print(
            "error: --data and --registry are required (or TRAINING_DATA_URI, REGISTRY_URI)",
            file=sys.stderr,
        )
        return 2
    try:
        # Asked first: a run that cannot say who it is fails before it trains, not after.
        actor, declared = task_actor(args.registry)
        registry = open_registry(args.registry, args.model, declared_actor=declared)
        if args.from_capture:
            version = train_from_capture(
                captures=args.captures,
                labels=args.labels,
                env=args.capture_env,
                window=window_from_args(args, now_us=time.time_ns() // 1000),
                holdout_days=args.holdout_days,
                registry=registry,
                params=params,
                actor=actor,
                reason=args.reason,
                run_id=args.run_id,
            )
        else:
            version = train(
                data=args.data,
                registry=registry,
                params=params,
                actor=actor,
                reason=args.reason,
                run_id=args.run_id,
                workers=args.workers,
                work_dir=args.work_dir,
            )
    except Exception as exc:  # one clear line, non-zero exit: this is a batch job's last word
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(version.manifest, indent=2))
    else:
        print(f"registered {args.model} version {version.number} (sha256 {version.sha256[:12]}...)")
    return 0


__all__ = [
    "FEATURE_NAMES",
    "Progress",
    "TrainParams",
    "add_training_arguments",
    "downsample",
    "main",
    "params_from_args",
    "time_ordered_split",
    "train",
]

if __name__ == "__main__":
    raise SystemExit(main())
