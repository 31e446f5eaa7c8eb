"""`sds monitor`: the drift report of what an environment served, per model version and UTC day.

It reads the environment's captures (`sds.kernel.capture`, locally `.sds/capture/<env>`, on AWS
the captures bucket's `captures/` prefix) and its labels, and reports for each model version and
day it served, and each day without payments since (a gap, `_report_days`, shown as a day of zero
with no rates): volume (captured payments, and the served volume they estimate under sampling),
alert rate, the score's PSI against the training holdout stored in the version's manifest
(`sds.kernel.drift`, bins stated in the report), each feature's PSI, and, once the day's payments
have matured, precision and recall against the labels. Labels and maturity are training's
(`training.capture_data`): the latest label known at `--as-of` decides, a payment is matured once
it is older than the environment's `labels.maturity_days`, and a matured payment without a label
counts as the environment's `labels.unlabelled` policy says.

It reads the day partitions of the window, the day before it (Firehose files an object under
the day its oldest record arrived, so one opened just before midnight holds the first minutes of
the next day) and the day after it (where a late delivery lands) in one pass, holding the event
ids seen and the figures, not the records: a retried request scores an event twice, and the
first read counts.

The report is a JSON document (`REPORT_SCHEMA`; `to_dict` is what `--json` prints and what the
HTML page is drawn from), so the table, the JSON and the page cannot disagree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sds.kernel import drift
from sds.kernel.behaviour import expected_alert_rate
from sds.kernel.features import format_time, parse_time
from sds.kernel.registry import Registry, RegistryError
from training.capture_data import DAY_US, Window, capture_records, moment, read_labels
from training.data import DataError

REPORT_SCHEMA = 1
DEFAULT_DAYS = 14


@dataclass
class _Labels:
    """Label-based figures of one cell: its matured payments, against what the model decided."""

    payments: int = 0
    matured: int = 0
    labelled: int = 0
    unlabelled_excluded: int = 0
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    true_negatives: int = 0

    def add(self, *, matured: bool, decision: bool, label: bool | None, unlabelled: str) -> None:
        self.payments += 1
        if not matured:
            return
        self.matured += 1
        if label is None:
            if unlabelled == "exclude":
                self.unlabelled_excluded += 1
                return
            label = False
        else:
            self.labelled += 1
        if decision:
            if label:
                self.true_positives += 1
            else:
                self.false_positives += 1
        elif label:
            self.false_negatives += 1
        else:
            self.true_negatives += 1

    def to_dict(self, *, matures_on: str) -> dict[str, Any]:
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        if not self.payments:
            status = "no payments"
        elif not self.matured:
            status = "not yet matured"
        elif self.matured < self.payments:
            status = "partly matured"
        else:
            status = "matured"
        return {
            "status": status,
            "matures_on": matures_on,
            "matured": self.matured,
            "labelled": self.labelled,
            "unlabelled_excluded": self.unlabelled_excluded,
            "true_positives": tp,
            "false_positives": fp,
            "false_negatives": fn,
            "true_negatives": self.true_negatives,
            "precision": tp / (tp + fp) if self.matured and tp + fp else None,
            "recall": tp / (tp + fn) if self.matured and tp + fn else None,
        }


@dataclass
class _Figures:
    cell: drift.Cell = field(default_factory=drift.Cell)
    labels: _Labels = field(default_factory=_Labels)
    last_occurred_us: int = 0


@dataclass
class _Model:
    """One model version as the report knows it: its manifest's reference and expectations."""

    name: str
    version: int
    sha256: str
    reference: drift.Reference | None
    note: str | None
    expected_alert_rate: float | None
    days: dict[str, _Figures] = field(default_factory=dict)
    total: _Figures = field(default_factory=_Figures)
    # The days the report lists for it (`_report_days`): those it served and the gaps between
    # and after them, each a day of zero.
    report_days: list[str] = field(default_factory=list)


ManifestLookup = Callable[[str, int], Mapping[str, Any] | None]


def registry_manifests(registry: Registry) -> ManifestLookup:
    """Manifests from the environment's registry: the version it served is there (by promotion
    or registration); None for another model's name or a version it does not hold."""

    def lookup(name: str, version: int) -> Mapping[str, Any] | None:
        if name != registry.model:
            return None
        try:
            return registry.get_version(version).manifest
        except RegistryError:
            return None

    return lookup


def _model(name: str, version: int, sha256: str, manifests: ManifestLookup, env: str) -> _Model:
    manifest = manifests(name, version)
    reference: drift.Reference | None = None
    expected = None
    note: str | None
    if manifest is None:
        note = f"{name} version {version} is not in {env}'s registry: no reference to compare with"
    elif manifest.get("sha256") not in (None, sha256):
        note = (
            f"{env}'s registry holds another {name} version {version} (sha256 "
            f"{str(manifest.get('sha256'))[:12]}..., served {sha256[:12]}...): not compared"
        )
    else:
        # What the version flagged on its holdout as served (ties at the threshold included),
        # as the deployment's alert-rate alarms read it: not the rate the threshold aimed at.
        expected = expected_alert_rate(manifest)
        try:
            reference = drift.read_reference(manifest)
        except ValueError as exc:
            raise DataError(f"{name} version {version}'s manifest: {exc}") from None
        note = (
            None
            if reference is not None
            else f"version {version} was trained before sds stored the holdout's reference "
            "distributions in the manifest: no PSI (retrain to get one)"
        )
    return _Model(name, version, sha256, reference, note, expected)


@dataclass
class Report:
    env: str
    window: Window
    captures: str
    labels: str
    generated_at_us: int
    counts: dict[str, int]
    models: list[_Model]

    def to_dict(self) -> dict[str, Any]:
        """The report as `--json` prints it (schema `REPORT_SCHEMA`)."""
        maturity = self.window.maturity_days
        return {
            "schema_version": REPORT_SCHEMA,
            "env": self.env,
            "generated_at": format_time(self.generated_at_us),
            "window": self.window.to_dict(),
            "sources": {"captures": self.captures, "labels": self.labels, **self.counts},
            "psi": {
                "bins": drift.BINS_DESCRIPTION,
                "stable_below": drift.PSI_STABLE,
                "drift_above": drift.PSI_DRIFT,
                "min_events": drift.MIN_EVENTS_FOR_PSI,
            },
            "versions": [
                {
                    "model": m.name,
                    "version": m.version,
                    "sha256": m.sha256,
                    "reference": {
                        "available": m.reference is not None,
                        "events": m.reference.events if m.reference else None,
                        "note": m.note,
                    },
                    "expected_alert_rate": m.expected_alert_rate,
                    "total": _figures(m, m.total, day=None, maturity_days=maturity),
                    "days": [
                        _figures(m, m.days.get(day, _Figures()), day=day, maturity_days=maturity)
                        for day in m.report_days
                    ],
                }
                for m in self.models
            ],
        }


def _figures(
    model: _Model, figures: _Figures, *, day: str | None, maturity_days: int
) -> dict[str, Any]:
    cell, reference = figures.cell, model.reference
    score_psi = cell.score_psi(reference)
    feature_psi = cell.feature_psi(reference)
    worst = max(feature_psi.items(), key=lambda kv: kv[1], default=None)
    # A day without payments matures when a payment at its end would: a date all the same, so
    # the field keeps its type on every day.
    last_occurred_us = (
        figures.last_occurred_us
        if cell.captured or day is None
        else parse_time(f"{day}T00:00:00Z") + DAY_US
    )
    matures_on = format_time(last_occurred_us + maturity_days * DAY_US)
    document: dict[str, Any] = {
        "captured": cell.captured,
        "served_estimate": round(cell.served_estimate, 3),
        "flagged": cell.flagged,
        "alert_rate": cell.alert_rate,
        "score_psi": score_psi,
        "score_drift": drift.verdict(score_psi),
        "score_histogram": (
            {
                "edges": list(reference.score.edges),
                "reference": list(reference.score.proportions),
                "served": drift.proportions(cell.score_counts),
            }
            if reference is not None and cell.score_counts is not None
            else None
        ),
        "feature_psi": {name: feature_psi[name] for name in sorted(feature_psi)},
        "max_feature_psi": {"feature": worst[0], "psi": worst[1]} if worst else None,
        "drifted_features": sorted(n for n, v in feature_psi.items() if v >= drift.PSI_DRIFT),
        "without_features": cell.without_features,
        "labels": figures.labels.to_dict(matures_on=matures_on),
    }
    if day is not None:
        document = {"day": day, "gap": not cell.captured, **document}
    return document


def monitor(
    *,
    env: str,
    captures: str,
    labels: str,
    window: Window,
    manifests: ManifestLookup,
    now_us: int | None = None,
) -> Report:
    """The drift report of the payments `env` served (received) in the window.

    One pass over the captures, holding only the event ids seen (a retried request scores an
    event twice: the first read counts) and the figures; labels are read first, as a map from
    event id to the label that decides."""
    # A record lands in the partition of the day it reached Firehose (a little after it was
    # served), or of the day before: Firehose files an object under the arrival of its oldest
    # record, so one opened just before midnight holds the next day's first minutes. The day
    # before `since` and the day after `until` are read too, and nothing beyond them.
    first_day = format_time(window.since_us - DAY_US)[:10]
    last_day = format_time(window.until_us - 1 + DAY_US)[:10]
    known_labels = read_labels(
        labels, first_day=format_time(window.since_us - DAY_US)[:10], as_of_us=window.as_of_us
    ).by_event
    counts = dict.fromkeys(("records", "other_env", "outside_window", "duplicates"), 0)
    seen: set[str] = set()
    days: dict[int, str] = {}
    models: dict[tuple[str, int, str], _Model] = {}
    matured_before = window.as_of_us - window.maturity_days * DAY_US
    for _name, record in capture_records(captures, first_day, last_day):
        counts["records"] += 1
        if record.env != env:
            counts["other_env"] += 1
            continue
        if not window.since_us <= record.received_at_us < window.until_us:
            counts["outside_window"] += 1
            continue
        if record.event_id in seen:
            counts["duplicates"] += 1
            continue
        seen.add(record.event_id)
        key = (record.model_name, record.model_version, record.model_sha256)
        model = models.get(key)
        if model is None:
            model = models[key] = _model(*key, manifests, env)
        day_index = record.received_at_us // DAY_US
        day = days.get(day_index)
        if day is None:
            day = days[day_index] = format_time(day_index * DAY_US)[:10]
        label = known_labels.get(record.event_id)
        matured = record.occurred_at_us < matured_before
        reference = model.reference
        bins = None if reference is None else reference.bins(record.score, record.features)
        for figures in (model.days.setdefault(day, _Figures()), model.total):
            figures.cell.add(
                decision=record.decision,
                sample_rate=record.sample_rate,
                reference=reference,
                bins=bins,
            )
            figures.labels.add(
                matured=matured, decision=record.decision, label=label, unlabelled=window.unlabelled
            )
            figures.last_occurred_us = max(figures.last_occurred_us, record.occurred_at_us)
    if not counts["records"]:
        raise DataError(
            f"{captures}: no capture records of payments received from {moment(window.since_us)} "
            f"to {moment(window.until_us)} (the day folders {first_day} to {last_day} are empty "
            f"or missing): serve {env} with capture on (sds serve --env {env}); on AWS the "
            "function's captures reach S3 within minutes"
        )
    generated_at_us = time.time_ns() // 1000 if now_us is None else now_us
    # The report's last day: the window's, or yesterday's when the window runs into today (a day
    # under way, just after midnight say, is no gap yet, and a day to come has no payments),
    # never before a day some version served (today, with payments, is listed).
    last = min((window.until_us - 1) // DAY_US, generated_at_us // DAY_US - 1)
    _report_days(models.values(), last_day=format_time(max([last, *days]) * DAY_US)[:10])
    return Report(
        env=env,
        window=window,
        captures=captures,
        labels=labels,
        generated_at_us=generated_at_us,
        counts=counts,
        models=sorted(models.values(), key=lambda m: (m.name, m.version, m.sha256)),
    )


def records_read(sources: Mapping[str, Any]) -> str:
    """How many capture records the report read (`to_dict()["sources"]`), and how many of them
    it did not count: the partitions beside the window hold other days' records."""
    beside = [
        f"{sources[key]} {what}"
        for key, what in (
            ("outside_window", "outside the window"),
            ("other_env", "of another environment"),
        )
        if sources[key]
    ]
    return f"{sources['records']} capture records" + (f" ({', '.join(beside)})" if beside else "")


def _report_days(models: Iterable[_Model], *, last_day: str) -> None:
    """Set each version's `report_days`: every day from the first it served in the window (one
    that went live mid-window has no days before it) to the report's last day, so that a day
    without payments (the API down, capture off, its delivery broken) shows as a day of zero
    instead of vanishing between its neighbours. A version ends at its own last day instead when
    another one served after it: it was replaced, and the days after are not gaps. A gap at the
    very start of the window looks like a version going live: a wider --since shows it."""
    served = [m for m in models if m.days]
    latest = max((max(m.days) for m in served), default="")
    for model in served:
        first, last = min(model.days), max(model.days)
        model.report_days = _day_range(first, last if last < latest else last_day)


def _day_range(first: str, last: str) -> list[str]:
    """The UTC days from `first` to `last`, both included (YYYY-MM-DD)."""
    start = parse_time(f"{first}T00:00:00Z") // DAY_US
    end = parse_time(f"{last}T00:00:00Z") // DAY_US
    return [format_time(index * DAY_US)[:10] for index in range(start, end + 1)]
