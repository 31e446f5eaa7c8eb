"""A model version's behaviour as served: what the handler counts, and what the version expects.

The contract between the inference handler, which writes the counts, the Inference stack, whose
alarms read them, and training, which records what each version is expected to do. One writer,
one reader, both here: a metric or dimension renamed here is renamed for all three.

Per scored request the handler emits, as one Embedded Metric Format line (no API call), in
`NAMESPACE` with the dimensions `Environment`, `Model` and `ModelVersion`:

- `Predictions`: the events scored;
- `Flagged`: those at or above the version's decision threshold (`is_fraud` in the response);
- `SCORE_BUCKETS`: how many scores fell into each bucket of a coarse histogram. The edges are
  fixed for every version (so two versions' histograms compare) and symmetric in log-odds
  around 0.5, because a fraud model's scores crowd both ends: 0.001, 0.01, 0.05, 0.2, 0.5, 0.8,
  0.95, 0.99, 0.999. Bucket i holds scores in [edge i, edge i+1); the last one includes 1.

Training records in the manifest's `behaviour` block what the version does on its holdout, scored
by the ONNX model as served: the fraction it flags at its decision threshold (`alert_rate`), and
the holdout's histogram over the same buckets. Each deployment alarms when the pinned version's
live alert rate leaves a band around that expectation (`stacks/components/alert_rate_alarms.py`).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from functools import partial
from itertools import pairwise
from typing import Any

NAMESPACE = "sds/inference"
PREDICTIONS = "Predictions"
FLAGGED = "Flagged"
ENVIRONMENT = "Environment"
MODEL = "Model"
MODEL_VERSION = "ModelVersion"
# The order the dimensions appear in a metric's identity (EMF lists them sorted anyway).
VERSION_DIMENSIONS = (ENVIRONMENT, MODEL, MODEL_VERSION)

SCORE_EDGES: tuple[float, ...] = (0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99, 0.999)
SCORE_BOUNDS: tuple[float, ...] = (0.0, *SCORE_EDGES, 1.0)
SCORE_BUCKETS: tuple[str, ...] = tuple(
    f"Score_{low:g}_{high:g}" for low, high in pairwise(SCORE_BOUNDS)
)
# Everything one scored request emits, in this order.
BEHAVIOUR_METRICS: tuple[str, ...] = (PREDICTIONS, FLAGGED, *SCORE_BUCKETS)


def version_dimensions(*, environment: str, model: str, version: int) -> dict[str, str]:
    """The dimensions of one version's behaviour metrics in one environment."""
    return {ENVIRONMENT: environment, MODEL: model, MODEL_VERSION: str(version)}


# The index in `SCORE_BUCKETS` of the bucket a score counts in.
score_bucket = partial(bisect_right, SCORE_EDGES)
_NO_COUNTS = [0] * len(SCORE_BUCKETS)
# From this batch size on, sorting once beats a Python-level loop over the scores (measured:
# about even at 10 events; 14 against 40 us at 100, 8 against 4 us at 1).
_SORT_FROM = 12


def behaviour_counts(scores: Sequence[float], threshold: float) -> dict[str, int]:
    """A request's behaviour metrics: predictions, flagged, and the score histogram.

    A score on an edge counts in the bucket above it; flagged are the scores at or above the
    threshold (`is_fraud` in the response).
    """
    return dict(zip(BEHAVIOUR_METRICS, behaviour_values(scores, threshold), strict=True))


def behaviour_values(scores: Sequence[float], threshold: float) -> tuple[int, ...]:
    """`behaviour_counts`' values, in `BEHAVIOUR_METRICS` order: what the handler writes for
    every request (`lambdas.inference.app.BehaviourLine`)."""
    events = len(scores)
    if events < _SORT_FROM:
        # One C-level bisect per score
        counts = _NO_COUNTS.copy()
        for bucket in map(score_bucket, scores):
            counts[bucket] += 1
        flagged = sum(map(threshold.__le__, scores))
    else:
        # One sort, then a bisect per edge: below[i] is the number of scores under edge i
        ordered = sorted(scores)
        below = [0, *[bisect_left(ordered, edge) for edge in SCORE_EDGES], events]
        counts = [high - low for low, high in pairwise(below)]
        flagged = events - bisect_left(ordered, threshold)
    return (events, flagged, *counts)


def holdout_behaviour(scores: Sequence[float], threshold: float) -> dict[str, Any]:
    """The manifest's `behaviour` block: what a version does on its holdout at its threshold."""
    counts = behaviour_counts(scores, threshold)
    events = counts[PREDICTIONS]
    if events == 0:
        raise ValueError("the holdout is empty: there is no behaviour to record")
    return {
        "alert_rate": counts[FLAGGED] / events,
        "flagged": counts[FLAGGED],
        "holdout_events": events,
        "decision_threshold": threshold,
        "score_histogram": {
            "bounds": list(SCORE_BOUNDS),
            "counts": [counts[name] for name in SCORE_BUCKETS],
        },
    }


def expected_alert_rate(manifest: Mapping[str, Any]) -> float | None:
    """The fraction of events a version is expected to flag, from its manifest; None if unknown.

    `behaviour.alert_rate` is what the version flagged on its holdout, as served. Manifests
    written before sds recorded it still say which rate the decision threshold was chosen to flag
    (`metrics.alert_rate`): the same figure but for ties at the threshold.
    """
    behaviour = manifest.get("behaviour")
    metrics = manifest.get("metrics")
    if isinstance(behaviour, Mapping) and "alert_rate" in behaviour:
        rate = behaviour["alert_rate"]
    elif isinstance(metrics, Mapping):
        rate = metrics.get("alert_rate")
    else:
        return None
    return float(rate) if is_alert_rate(rate) else None


def is_alert_rate(value: Any) -> bool:
    """Whether `value` can be an expected alert rate: a finite number in (0, 1]."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value <= 1
    )
