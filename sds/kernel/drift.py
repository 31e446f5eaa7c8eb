"""Drift figures: how served traffic compares with the training holdout, per model version and day.

The contract between training, which stores the holdout's reference distributions in the
manifest (`reference`), and the readers that compare served traffic with them (`sds monitor`, the
scheduled monitor function): both here, in pure Python, so the command and the function compute
the same figures and the function needs no wheel.

Reference (the manifest's `drift_reference`, schema version 1): for the score and for each
feature, the interior edges of `BINS` quantile bins of the holdout (duplicates dropped: a binary
feature has one edge, two bins) and the holdout's share of each bin. A value `x` falls in bin
`bisect_right(edges, x)`: bin 0 is below the first edge, the last bin is at or above the last one
(a feature's value and edges compared as the float32 numbers the model takes: `float32`).
Quantile bins put a tenth of the holdout in each bin, so a shift anywhere in the distribution
moves mass between bins; equal-width bins over a fraud score would put almost every payment in the
first bin and see nothing.

PSI (population stability index) = sum over bins of (served - reference) * ln(served / reference),
each share floored at `FLOOR` so an empty bin counts as a small share, not an infinite one. Read it
as the industry does: below `PSI_STABLE` (0.1) stable, from 0.1 to below `PSI_DRIFT` (0.25) a
moderate shift worth a look, from 0.25 on a shift that changes what the model sees. A day with fewer than
`MIN_EVENTS_FOR_PSI` captured payments gets no PSI: on a handful of payments the figure is noise.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sds.kernel.errors import SdsError

REFERENCE_KEY = "drift_reference"
REFERENCE_SCHEMA = 1
BINS = 10
FLOOR = 1e-4
PSI_STABLE = 0.1
PSI_DRIFT = 0.25
MIN_EVENTS_FOR_PSI = 100
BINS_DESCRIPTION = (
    f"{BINS} quantile bins of the training holdout (fewer where values repeat), shares floored "
    f"at {FLOOR}"
)


# The reference, built by training from its holdout ------------------------------------------------


def quantile_edges(values: Sequence[float], bins: int = BINS) -> list[float]:
    """The interior edges of `bins` quantile bins of `values`, duplicates dropped, ascending."""
    ordered = sorted(float(v) for v in values if not math.isnan(v))
    if not ordered:
        return []
    n, low = len(ordered), ordered[0]
    # Edges strictly above the minimum: an edge at it would leave bin 0 empty by construction.
    edges = sorted({ordered[min(n - 1, (i * n) // bins)] for i in range(1, bins)} - {low})
    edges = [e for e in edges if e > low]
    if not edges and ordered[-1] > low:
        # A value that is mostly one number (a flag, a count that is mostly zero): two bins, the
        # number and everything above it.
        edges = [next(v for v in ordered if v > low)]
    return edges


def histogram(values: Iterable[float], edges: Sequence[float]) -> list[int]:
    """How many of `values` fall in each of the `len(edges) + 1` bins (NaN in none)."""
    counts = [0] * (len(edges) + 1)
    for v in values:
        if v == v:  # not NaN
            counts[bisect_right(edges, v)] += 1
    return counts


def proportions(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def _distribution(values: Sequence[float]) -> dict[str, Any]:
    edges = quantile_edges(values)
    return {"edges": edges, "proportions": proportions(histogram(values, edges))}


def reference(
    features: Sequence[Sequence[float]], scores: Sequence[float], names: Sequence[str]
) -> dict[str, Any]:
    """The manifest's `drift_reference` of a holdout: its rows of features (in `names` order)
    and the model's scores on them."""
    columns = list(zip(*features, strict=True)) if features else [() for _ in names]
    if len(columns) != len(names):
        raise ValueError(f"{len(columns)} feature columns for {len(names)} names")
    return {
        "schema_version": REFERENCE_SCHEMA,
        "bins": BINS_DESCRIPTION,
        "events": len(scores),
        "feature_names": list(names),  # the manifest's JSON sorts keys; this keeps the order
        "score": _distribution([float(s) for s in scores]),
        "features": {
            name: _distribution([float(v) for v in column])
            for name, column in zip(names, columns, strict=True)
        },
    }


@dataclass(frozen=True)
class Distribution:
    edges: tuple[float, ...]
    proportions: tuple[float, ...]


@dataclass(frozen=True)
class Reference:
    """A manifest's reference, read back and checked."""

    events: int
    score: Distribution
    features: Mapping[str, Distribution]
    feature_names: tuple[str, ...]  # the order of a captured feature vector
    feature_edges: tuple[tuple[float, ...], ...]  # each feature's edges, in that order

    def bins(
        self, score: float, features: Sequence[float] | None
    ) -> tuple[int, tuple[int, ...] | None]:
        """Which bin the score falls in, and each feature (in `feature_names` order; -1 for a
        NaN); None for the features when the vector is missing or of another length."""
        score_bin = bisect_right(self.score.edges, score)
        if features is None or len(features) != len(self.feature_names):
            return score_bin, None
        return score_bin, tuple(
            bisect_right(edges, v) if v == v else -1
            for edges, v in zip(self.feature_edges, float32(features), strict=True)
        )


def _read_distribution(document: Any, where: str) -> Distribution:
    if not isinstance(document, Mapping):
        raise ValueError(f"{where}: expected an object")
    edges, shares = document.get("edges"), document.get("proportions")
    if not isinstance(edges, list) or not isinstance(shares, list):
        raise ValueError(f"{where}: expected edges and proportions lists")
    if len(shares) != len(edges) + 1:
        raise ValueError(f"{where}: {len(edges)} edges need {len(edges) + 1} proportions")
    return Distribution(tuple(float(e) for e in edges), tuple(float(p) for p in shares))


def read_reference(manifest: Mapping[str, Any]) -> Reference | None:
    """The manifest's reference, or None for a model trained before training stored one.
    A reference that is there but malformed raises ValueError naming the part."""
    document = manifest.get(REFERENCE_KEY)
    if document is None:
        return None
    if not isinstance(document, Mapping):
        raise ValueError(f"{REFERENCE_KEY}: expected an object")
    if document.get("schema_version") != REFERENCE_SCHEMA:
        raise ValueError(
            f"{REFERENCE_KEY}: schema_version {document.get('schema_version')!r} is not "
            f"{REFERENCE_SCHEMA} (a newer sds trained the model? upgrade to read it)"
        )
    features = document.get("features")
    names = document.get("feature_names")
    if not isinstance(features, Mapping) or not isinstance(names, list):
        raise ValueError(f"{REFERENCE_KEY}: expected features and feature_names")
    if set(names) != set(features):
        raise ValueError(f"{REFERENCE_KEY}: feature_names do not name the features")
    distributions = {
        str(name): _read_distribution(value, f"{REFERENCE_KEY}.features.{name}")
        for name, value in features.items()
    }
    return Reference(
        events=int(document.get("events", 0)),
        score=_read_distribution(document.get("score"), f"{REFERENCE_KEY}.score"),
        features=distributions,
        feature_names=tuple(str(n) for n in names),
        feature_edges=tuple(tuple(float32(distributions[str(n)].edges)) for n in names),
    )


def float32(values: Sequence[float]) -> array[float]:
    """`values` as the float32 numbers they stand for. A feature vector is float32 (the model's
    input), and its capture record writes each value as the shortest decimal that reads back as
    that float32 (`4.6151204` for log1p(100)), which as a float64 is a hair off it, below it as
    often as above; the holdout's edges are the float32 values themselves (4.6151204109191895).
    Compared in float64, every served payment at a repeated value that is an edge (a popular
    amount) would fall in the bin below it, and unchanged traffic would show drift."""
    return array("f", values)


# Comparing served traffic with it ----------------------------------------------------------------


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """The population stability index of `actual` shares against `expected` ones (same bins)."""
    if len(expected) != len(actual):
        raise ValueError(f"{len(expected)} reference bins, {len(actual)} served bins")
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, FLOOR), max(a, FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def verdict(value: float | None) -> str:
    """How to read a PSI: stable, moderate or drift (or "-" when there is none)."""
    if value is None:
        return "-"
    if value < PSI_STABLE:
        return "stable"
    return "moderate" if value < PSI_DRIFT else "drift"


@dataclass
class Cell:
    """One model version on one UTC day (or over the whole window): what it served, as
    captured. `add` takes the bins the reference put the record in (`Reference.bins`), computed
    once per record whatever the number of cells it counts in."""

    captured: int = 0
    served_estimate: float = 0.0  # each record weighs 1 / its sample rate
    flagged: int = 0
    score_counts: list[int] | None = None
    feature_counts: list[list[int]] | None = None  # in the reference's feature_names order
    without_features: int = 0

    def add(
        self,
        *,
        decision: bool,
        sample_rate: float,
        reference: Reference | None,
        bins: tuple[int, tuple[int, ...] | None] | None,
    ) -> None:
        self.captured += 1
        self.served_estimate += 1.0 / sample_rate if sample_rate > 0 else 0.0
        self.flagged += int(decision)
        if reference is None or bins is None:
            return
        score_bin, feature_bins = bins
        if self.score_counts is None:
            self.score_counts = [0] * (len(reference.score.edges) + 1)
        self.score_counts[score_bin] += 1
        if feature_bins is None:
            self.without_features += 1
            return
        counts = self.feature_counts
        if counts is None:
            counts = self.feature_counts = [
                [0] * (len(reference.features[name].edges) + 1) for name in reference.feature_names
            ]
        for column, index in zip(counts, feature_bins, strict=True):
            if index >= 0:
                column[index] += 1

    @property
    def alert_rate(self) -> float | None:
        return self.flagged / self.captured if self.captured else None

    def score_psi(self, reference: Reference | None) -> float | None:
        if reference is None or self.score_counts is None or self.captured < MIN_EVENTS_FOR_PSI:
            return None
        return psi(reference.score.proportions, proportions(self.score_counts))

    def feature_psi(self, reference: Reference | None) -> dict[str, float]:
        if reference is None or self.feature_counts is None:
            return {}
        found: dict[str, float] = {}
        for name, counts in zip(reference.feature_names, self.feature_counts, strict=True):
            if sum(counts) < MIN_EVENTS_FOR_PSI:
                continue
            found[name] = psi(reference.features[name].proportions, proportions(counts))
        return found


# The scheduled monitor function's settings (its Lambda environment) ------------------------------

NAMESPACE = "sds/drift"
ENVIRONMENT = "SDS_ENVIRONMENT"
MODEL_NAME = "MODEL_NAME"
REGISTRY_URI = "REGISTRY_URI"
CAPTURES_URI = "CAPTURES_URI"
DAYS = "MONITOR_DAYS"
_REQUIRED = (ENVIRONMENT, MODEL_NAME, REGISTRY_URI, CAPTURES_URI, DAYS)


class MonitorSettingsError(SdsError, ValueError):
    """The monitor function's environment is not what `MonitorTarget.to_environ` writes."""


@dataclass(frozen=True)
class MonitorTarget:
    """What the scheduled monitor function reads: one environment's captures (an s3:// prefix),
    and its registry for each served version's reference; `days`: how many whole UTC days
    before the run it reports (1: yesterday)."""

    environment: str
    model: str
    registry_uri: str
    captures_uri: str
    days: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.days <= 31:
            raise MonitorSettingsError(f"days must be from 1 to 31, got {self.days}")

    def to_environ(self) -> dict[str, str]:
        """The monitor Lambda's environment variables (values may be CDK tokens)."""
        return {
            ENVIRONMENT: self.environment,
            MODEL_NAME: self.model,
            REGISTRY_URI: self.registry_uri,
            CAPTURES_URI: self.captures_uri,
            DAYS: str(self.days),
        }

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> MonitorTarget:
        """Parse what `to_environ` wrote; the error names every missing or invalid variable."""
        values = {name: environ.get(name, "").strip() for name in _REQUIRED}
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise MonitorSettingsError(f"monitor settings missing: {', '.join(missing)}")
        days = values[DAYS]
        if not (days.isascii() and days.isdigit()):
            raise MonitorSettingsError(f"{DAYS} must be a positive integer, got {days!r}")
        return cls(
            environment=values[ENVIRONMENT],
            model=values[MODEL_NAME],
            registry_uri=values[REGISTRY_URI],
            captures_uri=values[CAPTURES_URI],
            days=int(days),
        )
