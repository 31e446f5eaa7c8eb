"""Train from what was served: captures joined with labels, then gated against the live model.

    sds train --from-capture --env ENV [--since ...] [--until ...] [--as-of ...]
    python -m training.train --from-capture --captures URI --labels URI --capture-env ENV ...

Steps: read the environment's matured, labelled captures (`training.capture_data`) -> split by
time: the out-of-time holdout is the most recent `holdout_days` of the matured range -> fit on
the captured feature vectors (the model's input exactly as served: no feature is recomputed, so
there is no training/serving skew) -> evaluate on the holdout -> compare with every model that
served the holdout, on its own events (the captures hold its scores): the manifest's
`comparison` (`sds.kernel.comparison`), which the `must_beat_live` gate reads -> export to ONNX,
check parity -> register where versions are allocated, as a candidate: nothing moves an alias.

The manifest's `data` records the source (`capture`), the environment, the window and policy,
the locations read and every count of what was and was not used.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from sds.kernel.behaviour import holdout_behaviour
from sds.kernel.comparison import Comparison, Served
from sds.kernel.features import feature_schema, format_time
from sds.kernel.registry import Registry, Version
from sds.progress import Progress
from training import capture_data
from training.capture_data import DAY_US, Window, parse_moment, read_served
from training.data import DataError
from training.evaluate import evaluate
from training.params import (
    HOLDOUT_DAYS,
    MATURITY_DAYS,
    WINDOW_DAYS,
    TrainParams,
    recorded_params,
)

STEPS = 7
MIN_EVENTS = 10  # on each side of the split, and per served model compared


def split(served: capture_data.Served, window: Window, holdout_days: int) -> int:
    """Index of the first holdout row: the payments of the last `holdout_days` of the matured
    range; everything before is training data. Each side must hold fraud and legitimate
    payments."""
    start = window.matured_before - holdout_days * DAY_US
    cut = int(np.searchsorted(served.times, start, side="left"))
    if cut < MIN_EVENTS or len(served) - cut < MIN_EVENTS:
        raise DataError(
            f"need at least {MIN_EVENTS} training and {MIN_EVENTS} holdout payments; the "
            f"{len(served)} usable captures give {cut} before and {len(served) - cut} in the "
            f"holdout (from {format_time(start)}): widen the window or shorten --holdout-days"
        )
    # Checked here, not left to the fit and the evaluation, whose messages speak of "training
    # data" and of the history trainer's --holdout-fraction: this split is chosen by days.
    before = int(served.labels[:cut].sum())
    if before in (0, cut):
        kind = "fraud" if before else "legitimate"
        raise DataError(
            f"the {cut} payments before the holdout (before {format_time(start)}) hold only "
            f"{kind} payments: the fit needs both; move --since earlier, or shorten "
            "--holdout-days, for labelled fraud and legitimate payments before the holdout"
        )
    fraud = int(served.labels[cut:].sum())
    if fraud in (0, len(served) - cut):
        kind = "fraud" if fraud else "legitimate"
        raise DataError(
            f"the holdout (the {len(served) - cut} payments from {format_time(start)}) holds "
            f"only {kind} payments: its metrics and the comparison with the served model need "
            "both; lengthen --holdout-days, or move the window (--until, --as-of) to include "
            "labelled fraud"
        )
    return cut


def compare(
    served: capture_data.Served,
    cut: int,
    candidate: np.ndarray,
    *,
    env: str,
    window: Window,
    holdout_days: int,
    alert_rate: float,
) -> Comparison:
    """The candidate and each served model on the served model's own holdout events."""
    labels = served.labels[cut:]
    groups: dict[tuple[str, int, str], list[int]] = {}
    for offset in range(len(labels)):
        row = cut + offset
        key = (served.model_names[row], int(served.versions[row]), served.shas[row])
        groups.setdefault(key, []).append(offset)
    compared = []
    for (model, version, sha), rows in sorted(groups.items(), key=lambda item: item[0][1]):
        index = np.asarray(rows)
        y = labels[index]
        fraud = int(y.sum())
        reason = None
        if len(rows) < MIN_EVENTS:
            reason = f"only {len(rows)} of the holdout's events (needs {MIN_EVENTS})"
        elif fraud in (0, len(rows)):
            reason = f"one class only among its {len(rows)} events"
        live_metrics = candidate_metrics = None
        if reason is None:
            live_metrics = _comparable(
                evaluate(y, served.scores[cut:][index], alert_rate=alert_rate)[0]
            )
            candidate_metrics = _comparable(evaluate(y, candidate[index], alert_rate=alert_rate)[0])
        compared.append(
            Served(model, version, sha, len(rows), fraud, live_metrics, candidate_metrics, reason)
        )
    return Comparison(
        env=env,
        holdout_from=format_time(window.matured_before - holdout_days * DAY_US),
        holdout_until=format_time(window.matured_before),
        events=len(labels),
        served=tuple(compared),
    )


def _comparable(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k not in ("holdout_events", "alert_rate")}


def train_from_capture(
    *,
    captures: str,
    labels: str,
    env: str,
    window: Window,
    holdout_days: int,
    registry: Registry,
    params: TrainParams,
    actor: str,
    reason: str = "",
    run_id: str | None = None,
    progress: Progress | None = None,
) -> Version:
    """Train on `env`'s served traffic, compare with the models that served it, register."""
    from training.train import (
        code_version,
        export_as_served,
        fit,
        library_versions,
        register_model,
    )

    progress = progress or Progress(STEPS)
    served = progress.run(
        f"reading {env}'s captures ({captures}) and labels ({labels})",
        lambda: read_served(captures, labels, env=env, window=window),
        _summary,
    )
    cut = split(served, window, holdout_days)
    train_x, train_y = served.features[:cut], served.labels[:cut]
    holdout_x, holdout_y = served.features[cut:], served.labels[cut:]
    rates = served.sample_rates[:cut]
    # Captured at different rates over the window: weigh each payment by what it stands for.
    weights = None if len(set(rates.tolist())) <= 1 else (1.0 / rates) / np.mean(1.0 / rates)
    model = progress.run(
        f"fitting HistGradientBoosting on {cut} served payments before "
        f"{format_time(int(served.times[cut]))}",
        lambda: fit(train_x, train_y.astype(np.int64), params, sample_weight=weights),
        lambda m: f"{m.n_iter_} trees",
    )
    # Evaluated and compared as served: the candidate meets the served models on the scores it
    # would serve.
    onnx_bytes, worst, scores = export_as_served(model, holdout_x, progress)
    metrics, threshold = progress.run(
        f"evaluating on the {len(holdout_y)} most recent matured payments (the last "
        f"{holdout_days} days)",
        lambda: evaluate(holdout_y.astype(np.int64), scores, alert_rate=params.alert_rate),
        lambda r: f"ROC AUC {r[0]['roc_auc']:.4f}, PR AUC {r[0]['pr_auc']:.4f}",
    )
    comparison = progress.run(
        "comparing with the models that served the holdout, on their own events",
        lambda: compare(
            served,
            cut,
            scores,
            env=env,
            window=window,
            holdout_days=holdout_days,
            alert_rate=params.alert_rate,
        ),
        _comparison_summary,
    )
    metrics["onnx_max_abs_diff"] = worst
    metadata: dict[str, Any] = {
        "algorithm": "sklearn.ensemble.HistGradientBoostingClassifier",
        "metrics": metrics,
        "decision_threshold": threshold,
        # What the version does as served, as `sds train` records it (train.py).
        "behaviour": holdout_behaviour(scores.tolist(), threshold),
        "params": recorded_params(params, from_capture=True),
        "feature_schema": feature_schema(),
        "library_versions": library_versions(),
        "data": {
            "source": "capture",
            "env": env,
            "captures": captures,
            "labels": labels,
            **window.to_dict(),
            "holdout_days": holdout_days,
            "fingerprint": served.fingerprint,
            "files": len(served.sources),
            "counts": served.counts,
            "payments": len(served),
            "train_events": cut,
            "holdout_events": len(holdout_y),
            "holdout_from": comparison.holdout_from,
            "sample_rates": sorted(set(served.sample_rates.tolist())),
            "weighted_by_sample_rate": weights is not None,
        },
        "comparison": comparison.to_manifest(),
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
        run_id=run_id,
        actor=actor,
        reason=reason,
        progress=progress,
        note=" (a candidate: promotion and its gates decide)",
    )


def _summary(served: capture_data.Served) -> str:
    c = served.counts
    left = {
        "young": c["young"],
        "duplicates": c["duplicates"],
        "outside the window": c["outside_window"],
        "without aggregates": c["without_online_features"],
        "without features": c["without_features"] + c["other_feature_schema"],
        "unlabelled, excluded": c["unlabelled_excluded"],
    }
    skipped = ", ".join(f"{n} {what}" for what, n in left.items() if n)
    return (
        f"{len(served)} payments ({c['labelled_fraud']} fraud, {c['labelled_legitimate']} "
        f"labelled legitimate, {c['unlabelled_as_legitimate']} unlabelled as legitimate) of "
        f"{c['records']} records" + (f"; left out: {skipped}" if skipped else "")
    )


def _comparison_summary(comparison: Comparison) -> str:
    parts = []
    for s in comparison.served:
        if s.live is None or s.candidate is None:
            parts.append(f"v{s.version}: not compared ({s.reason})")
        else:
            parts.append(
                f"v{s.version} on {s.events} events: PR AUC {s.live['pr_auc']:.4f} served, "
                f"{s.candidate['pr_auc']:.4f} candidate"
            )
    return "; ".join(parts)


def add_capture_arguments(parser: argparse.ArgumentParser) -> None:
    """`python -m training.train --from-capture ...`: what the Fargate task of an environment
    whose `infra.training.source` is `capture` runs (the stack writes these flags)."""
    group = parser.add_argument_group("training from capture")
    group.add_argument(
        "--from-capture",
        action="store_true",
        help="train on served traffic: captures joined with labels (instead of --data)",
    )
    group.add_argument("--captures", help="captures: folder or s3://bucket/captures/")
    group.add_argument("--labels", help="labels: folder or s3://bucket/labels/")
    group.add_argument("--capture-env", help="the environment whose traffic was captured")
    group.add_argument(
        "--window-days",
        type=WINDOW_DAYS.parse,
        default=90,
        help=f"without --since: the days before --until ({WINDOW_DAYS}; default 90)",
    )
    group.add_argument("--since", help="payments from (a date or ISO 8601 time, UTC)")
    group.add_argument("--until", help="payments before (default: now)")
    group.add_argument("--as-of", help="labels known by, maturity measured at (default: now)")
    group.add_argument(
        "--maturity-days",
        type=MATURITY_DAYS.parse,
        default=30,
        help=f"a payment younger than this is left out ({MATURITY_DAYS}; default 30)",
    )
    group.add_argument(
        "--unlabelled", choices=capture_data.UNLABELLED_POLICIES, default="legitimate"
    )
    group.add_argument(
        "--holdout-days",
        type=HOLDOUT_DAYS.parse,
        default=7,
        help=f"the out-of-time holdout: the most recent matured days ({HOLDOUT_DAYS}; default 7)",
    )


def make_window(
    *,
    since: str | None,
    until: str | None,
    as_of: str | None,
    window_days: int,
    maturity_days: int,
    unlabelled: str,
    now_us: int,
) -> Window:
    """The window named by `--since`, `--until` and `--as-of` (each optional): labels known and
    maturity measured at `as_of` (default now), payments before `until` (default `as_of`) from
    `since` (default `window_days` before `until`)."""
    at = now_us if as_of is None else parse_moment(as_of, what="--as-of")
    end = at if until is None else parse_moment(until, what="--until")
    if since is None and window_days < 1:
        raise DataError("--window-days must be >= 1")
    start = end - window_days * DAY_US if since is None else parse_moment(since, what="--since")
    return Window(
        since_us=start,
        until_us=end,
        as_of_us=at,
        maturity_days=maturity_days,
        unlabelled=unlabelled,
    )


def window_from_args(args: argparse.Namespace, *, now_us: int) -> Window:
    """The window of `python -m training.train --from-capture`'s flags."""
    return make_window(
        since=args.since,
        until=args.until,
        as_of=args.as_of,
        window_days=args.window_days,
        maturity_days=args.maturity_days,
        unlabelled=args.unlabelled,
        now_us=now_us,
    )
