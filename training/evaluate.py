"""Holdout evaluation: ranking quality, the alerting operating point and calibration."""

from __future__ import annotations

from typing import Any

import numpy as np


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, *, bins: int = 10) -> float:
    """Weighted mean |observed fraud rate - mean score| over equal-count score bins.

    Equal-count bins, because with a few percent positives most equal-width bins are empty.
    """
    order = np.argsort(scores, kind="stable")
    chunks = [c for c in np.array_split(order, bins) if len(c)]
    total = len(scores)
    return float(sum(len(c) / total * abs(labels[c].mean() - scores[c].mean()) for c in chunks))


def evaluate(
    labels: np.ndarray, scores: np.ndarray, *, alert_rate: float
) -> tuple[dict[str, Any], float]:
    """(metrics, decision threshold that flags `alert_rate` of the holdout as fraud)."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if len(set(labels.tolist())) < 2:
        raise ValueError(
            "the holdout has only one class; use more data or a larger --holdout-fraction"
        )
    n_alerts = max(1, round(alert_rate * len(scores)))
    ranked = np.argsort(-scores, kind="stable")[:n_alerts]
    threshold = float(scores[ranked].min())
    flagged = scores >= threshold
    positives = int(labels.sum())
    metrics = {
        "roc_auc": float(roc_auc_score(labels, scores)),
        "pr_auc": float(average_precision_score(labels, scores)),
        "alert_rate": alert_rate,
        "precision_at_alert_rate": float(labels[flagged].mean()),
        "recall_at_alert_rate": float(labels[flagged].sum() / positives),
        "expected_calibration_error": expected_calibration_error(labels, scores),
        "brier_score": float(brier_score_loss(labels, scores)),
        "holdout_events": len(labels),
        "holdout_fraud_rate": float(labels.mean()),
    }
    return metrics, threshold
