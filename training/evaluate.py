"""Holdout evaluation: ranking quality, the alerting operating point and calibration, and what
the version does as served (the manifest's `behaviour`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from sds.kernel.behaviour import BEHAVIOUR_METRICS, behaviour_values, holdout_behaviour


def expected_calibration_error(
    labels: np.ndarray, scores: np.ndarray, *, bins: int = 10, weights: np.ndarray | None = None
) -> float:
    """Weighted mean |observed fraud rate - mean score| over equal-count score bins.

    Equal-count bins, because with a few percent positives most equal-width bins are empty.
    With `weights` (a downsampled holdout), bins hold equal weight and rates are weighted.
    """
    order = np.argsort(scores, kind="stable")
    if weights is None:
        chunks = [c for c in np.array_split(order, bins) if len(c)]
        total = len(scores)
        return float(sum(len(c) / total * abs(labels[c].mean() - scores[c].mean()) for c in chunks))
    w = np.asarray(weights, dtype=np.float64)[order]
    before = np.cumsum(w) - w
    which = np.minimum((before / w.sum() * bins).astype(np.int64), bins - 1)
    error = 0.0
    for b in np.unique(which):
        rows, rw = order[which == b], w[which == b]
        gap = np.average(labels[rows], weights=rw) - np.average(scores[rows], weights=rw)
        error += rw.sum() / w.sum() * abs(gap)
    return float(error)


def evaluate(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    alert_rate: float,
    weights: np.ndarray | None = None,
) -> tuple[dict[str, Any], float]:
    """(metrics, decision threshold that flags `alert_rate` of the holdout as fraud).

    The threshold is the score of the event that brings the flagged share to `alert_rate`; every
    event scoring as much is flagged too, so with tied scores at the threshold more than
    `alert_rate` is flagged. `flagged_at_alert_rate` is the share actually flagged, the one
    `precision_at_alert_rate` and `recall_at_alert_rate` are measured over.

    `weights` are the holdout rows' sampling weights (1/rate for the legitimate payments kept by
    negative downsampling, 1 for fraud): every figure is then the one the whole holdout would
    give, in expectation, rather than the sample's (whose fraud rate is inflated).
    """
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if len(set(labels.tolist())) < 2:
        raise ValueError(
            "the holdout has only one class; use more data or a larger --holdout-fraction"
        )
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != scores.shape or (w <= 0).any():
        raise ValueError("weights must be positive, one per holdout event")
    ranked = np.argsort(-scores, kind="stable")
    # The top-scored events holding `alert_rate` of the (weighted) holdout.
    wanted = max(1, round(alert_rate * float(w.sum())))
    last = min(int(np.searchsorted(np.cumsum(w[ranked]), wanted - 1e-9)), len(scores) - 1)
    threshold = float(scores[ranked[last]])
    flagged = scores >= threshold
    fraud = w * labels
    metrics = {
        "roc_auc": float(roc_auc_score(labels, scores, sample_weight=weights)),
        "pr_auc": float(average_precision_score(labels, scores, sample_weight=weights)),
        "alert_rate": alert_rate,
        "flagged_at_alert_rate": float(w[flagged].sum() / w.sum()),
        "precision_at_alert_rate": float(fraud[flagged].sum() / w[flagged].sum()),
        "recall_at_alert_rate": float(fraud[flagged].sum() / fraud.sum()),
        "expected_calibration_error": expected_calibration_error(labels, scores, weights=weights),
        "brier_score": float(brier_score_loss(labels, scores, sample_weight=weights)),
        "holdout_events": len(labels),
        "holdout_fraud_rate": float(fraud.sum() / w.sum()),
    }
    return metrics, threshold


def served_behaviour(
    scores: np.ndarray, threshold: float, *, weights: np.ndarray | None = None
) -> dict[str, Any]:
    """The manifest's `behaviour` block (`sds.kernel.behaviour.holdout_behaviour`): what the
    version flags on its holdout at `threshold`, the alert rate its deployment's alarms and the
    monitor expect of it.

    With `weights` (a holdout sampled by negative downsampling) every figure is the whole
    holdout's, as the metrics are: the sample over-represents fraud, so its own share flagged
    is several times what the version flags in traffic. The counts are then estimates (the
    weighted counts, rounded) and `alert_rate` their exact ratio, `flagged_at_alert_rate`.
    """
    behaviour = holdout_behaviour(scores.tolist(), threshold)
    if weights is None:
        return behaviour
    weights = np.asarray(weights, dtype=np.float64)
    totals = np.zeros(len(BEHAVIOUR_METRICS))
    for weight in np.unique(weights):  # one weight per class: a count per distinct weight
        totals += weight * np.asarray(
            behaviour_values(scores[weights == weight].tolist(), threshold), dtype=np.float64
        )
    events, flagged, *counts = totals.tolist()
    behaviour.update(
        alert_rate=flagged / events,
        flagged=round(flagged),
        holdout_events=round(events),
        score_histogram={**behaviour["score_histogram"], "counts": [round(c) for c in counts]},
    )
    return behaviour
