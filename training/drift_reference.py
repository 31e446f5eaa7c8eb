"""The training holdout's reference distributions, stored in the manifest for drift monitoring.

`sds monitor` and the scheduled monitor function compare served traffic with them
(`sds.kernel.drift`: the bins, PSI and how to read it). One function, called by both training
entrypoints (from history and from capture) with the holdout they evaluated on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sds.kernel import drift
from sds.kernel.features import FEATURE_NAMES


def holdout_reference(
    features: np.ndarray, scores: np.ndarray, *, weights: np.ndarray | None = None
) -> dict[str, Any]:
    """The manifest's `drift_reference`: quantile bins and shares of the holdout's scores and of
    each of its features (columns in `FEATURE_NAMES` order).

    With `weights` (a holdout sampled by negative downsampling: each row stands for `weight`
    payments) the bins and shares are the whole holdout's, which is what served traffic is
    compared with; the sample's own over-represent fraud and read as drift on unchanged
    traffic. `events` is then the number of payments the rows stand for.
    """
    rows = np.asarray(features, dtype=np.float64)
    values = np.asarray(scores, dtype=np.float64)
    document = drift.reference(rows.tolist(), values.tolist(), FEATURE_NAMES)
    if weights is None:
        return document
    weights = np.asarray(weights, dtype=np.float64)
    document["events"] = round(float(weights.sum()))
    document["score"] = weighted_distribution(values, weights)
    document["features"] = {
        name: weighted_distribution(rows[:, column], weights)
        for column, name in enumerate(FEATURE_NAMES)
    }
    return document


def weighted_edges(values: np.ndarray, weights: np.ndarray, bins: int = drift.BINS) -> list[float]:
    """`sds.kernel.drift.quantile_edges` of a weighted sample: for each `i / bins` of the total
    weight, the first value at which the running weight passes it, under the same rules (NaN left out, edges at
    the minimum dropped, two bins for a value that is mostly one number). With equal weights it
    is `quantile_edges` (tested)."""
    present = ~np.isnan(values)
    order = np.argsort(values[present], kind="stable")
    ordered, through = values[present][order], np.cumsum(weights[present][order])
    if not len(ordered):
        return []
    low, total = float(ordered[0]), float(through[-1])
    # The first value whose weight, with what precedes it, passes i / bins of the total.
    at = np.searchsorted(through, [i * total / bins for i in range(1, bins)], side="right")
    picks = {float(ordered[min(len(ordered) - 1, int(i))]) for i in at}
    edges = sorted(e for e in picks if e > low)
    if not edges and ordered[-1] > low:
        edges = [float(ordered[ordered > low][0])]
    return edges


def weighted_distribution(values: np.ndarray, weights: np.ndarray) -> dict[str, Any]:
    """A reference distribution (`edges`, `proportions`) of a weighted sample: the bins of
    `weighted_edges`, each value in `bisect_right(edges, value)` as the readers bin it, and each
    bin's share of the weight."""
    edges = weighted_edges(values, weights)
    present = ~np.isnan(values)
    where = np.searchsorted(np.asarray(edges, dtype=np.float64), values[present], side="right")
    sums = np.bincount(where, weights=weights[present], minlength=len(edges) + 1)
    total = float(sums.sum())
    return {"edges": edges, "proportions": [float(s) / total if total else 0.0 for s in sums]}
