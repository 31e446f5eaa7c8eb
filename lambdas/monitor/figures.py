"""The scheduled monitor's work: one environment's served traffic of whole UTC days, read from
its captures bucket, tallied per model version and day (`sds.kernel.drift`, the same figures
`sds monitor` reports) and published as CloudWatch metrics in embedded metric format.

Metrics (namespace `sds/drift`, dimensions `Environment` and `Environment, ModelVersion`):
`Captured` and `Flagged` (counts), `AlertRate`, and, once a version served at least
`MIN_EVENTS_FOR_PSI` payments that day, `AlertRateRatio` (the alert rate over the one its manifest
expects), `ScorePSI` and `MaxFeaturePSI` against the training holdout in its manifest. A version
whose manifest has no reference (trained before training stored one) gets no PSI metric, and the
summary says so. Each reported day also publishes `Payments` on the `Environment` dimension alone:
the payments every version served that day together, each captured record standing for 1 / its
sample rate of them (`payments_by_day`; the volume alarm, `monitor.min_daily_payments`, reads its
smallest value). A version's `Captured` on that dimension would not do: a day two versions served
(a canary, a rollback) puts two datapoints there, and with `monitor.days` above 1, or a day
published again, one period holds several days. A day on which the environment served nothing at
all (the API down, capture off or its delivery broken) publishes `Payments`, `Captured` and
`Flagged` 0 there, so the volume shows the gap as a zero instead of a hole; no version is named
(the captures are all that says which versions serve) and no rate or PSI is published (none of
them is measured on no payments, and the drift alarms read missing data as no breach). Labels are
not published: precision and recall wait for matured labels, which `sds monitor` reports.
"""

from __future__ import annotations

import gzip
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from sds.kernel import drift
from sds.kernel.behaviour import expected_alert_rate
from sds.kernel.capture import PARTITION_KEY, Capture, CaptureError, parse
from sds.kernel.features import format_time, parse_time

DAY_US = 86_400_000_000

# (key, bytes) of the data files of one day partition (YYYY-MM-DD) written at or after a time
# (microseconds since the epoch; 0: all of them).
Reader = Callable[[str, int], Iterable[tuple[str, bytes]]]
# An object is written after every record in it arrived, and a record arrives after it was
# served, so an object written before a day began holds none of that day's payments. This much
# earlier is read all the same, for the function's clock and S3's to disagree.
WRITE_MARGIN_US = 3_600_000_000
ManifestLookup = Callable[[str, int], Mapping[str, Any] | None]


@dataclass
class Tally:
    """One model version on one day."""

    name: str
    version: int
    sha256: str
    day: str
    reference: drift.Reference | None
    expected_alert_rate: float | None
    note: str | None
    cell: drift.Cell = field(default_factory=drift.Cell)

    def figures(self) -> dict[str, Any]:
        cell = self.cell
        rate = cell.alert_rate
        score_psi = cell.score_psi(self.reference)
        feature_psi = cell.feature_psi(self.reference)
        ratio = (
            rate / self.expected_alert_rate
            if rate is not None
            and self.expected_alert_rate
            and cell.captured >= drift.MIN_EVENTS_FOR_PSI
            else None
        )
        return {
            "model": self.name,
            "version": self.version,
            "day": self.day,
            "captured": cell.captured,
            "served_estimate": round(cell.served_estimate, 3),
            "flagged": cell.flagged,
            "alert_rate": rate,
            "alert_rate_ratio": ratio,
            "score_psi": score_psi,
            "max_feature_psi": max(feature_psi.values(), default=None),
            "drifted_features": sorted(k for k, v in feature_psi.items() if v >= drift.PSI_DRIFT),
            "note": self.note,
        }


def _is_data_file(key: str) -> bool:
    base = key.rsplit("/", 1)[-1]
    return not base.startswith(".") and (base.endswith(".jsonl") or base.endswith(".jsonl.gz"))


def s3_reader(s3: Any, captures_uri: str) -> Reader:
    """Reads the data files of one day partition (`dt=YYYY-MM-DD/`) under the captures prefix,
    those last modified at or after the time asked."""
    bucket, _, prefix = captures_uri.removeprefix("s3://").partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"

    def read(day: str, written_from_us: int) -> Iterator[tuple[str, bytes]]:
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}{PARTITION_KEY}={day}/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                if item["LastModified"].timestamp() * 1_000_000 < written_from_us:
                    continue
                if _is_data_file(item["Key"]):
                    body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                    yield f"s3://{bucket}/{item['Key']}", body

    return read


def _records(files: Iterable[tuple[str, bytes]], counts: dict[str, int]) -> Iterator[Capture]:
    for name, raw in files:
        try:
            data = gzip.decompress(raw) if name.endswith(".gz") else raw
        except (OSError, EOFError, zlib.error):
            counts["unreadable_files"] += 1
            continue
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                yield parse(orjson.loads(line))
            except (orjson.JSONDecodeError, CaptureError):
                # One bad line must not hide a day's figures: counted, and in the summary.
                counts["invalid_records"] += 1


def _reference(
    name: str, version: int, sha256: str, manifests: ManifestLookup
) -> tuple[drift.Reference | None, float | None, str | None]:
    manifest = manifests(name, version)
    if manifest is None or manifest.get("sha256") not in (None, sha256):
        return None, None, f"{name} version {version} with this sha256 is not in the registry"
    # What the version flagged on its holdout as served (ties at the threshold included), as the
    # deployment's alert-rate alarms read it: not the rate the threshold aimed at.
    expected = expected_alert_rate(manifest)
    try:
        reference = drift.read_reference(manifest)
    except ValueError as exc:
        return None, expected, f"version {version}'s reference is unreadable: {exc}"
    if reference is None:
        return None, expected, f"version {version} was trained without a reference: no PSI"
    return reference, expected, None


def _start(day: str) -> int:
    return parse_time(f"{day}T00:00:00Z")


def _next_day(day: str) -> str:
    return format_time(_start(day) + DAY_US)[:10]


def _previous_day(day: str) -> str:
    return format_time(_start(day) - DAY_US)[:10]


def tally(
    read: Reader, *, env: str, days: Iterable[str], manifests: ManifestLookup
) -> tuple[list[Tally], dict[str, int]]:
    """Each version's figures on each of `days` (YYYY-MM-DD, the UTC day a payment was scored)
    of `env`'s captures; a retried request's second record counts once.

    Firehose files an object under the day its oldest record arrived, and a record arrives a
    little after it was served: a day's records are in its partition, the next one's (delivered
    after midnight) or the day before's (an object opened just before midnight holds the first
    minutes of the day, up to its buffer interval). So each day's partition and the next are read
    whole, and of the day before only the objects written from the day's start on
    (`WRITE_MARGIN_US` earlier): the others hold no payment served that day."""
    wanted = sorted(set(days))
    written_from = {day: 0 for day in wanted} | {_next_day(day): 0 for day in wanted}
    for day in wanted:
        written_from.setdefault(_previous_day(day), _start(day) - WRITE_MARGIN_US)
    partitions = sorted(written_from)
    counts = dict.fromkeys(
        (
            "records",
            "other_env",
            "other_days",
            "duplicates",
            "invalid_records",
            "unreadable_files",
        ),
        0,
    )
    found: dict[tuple[str, int, str, str], Tally] = {}
    known: dict[tuple[str, int, str], tuple[drift.Reference | None, float | None, str | None]] = {}
    seen: set[str] = set()
    for partition in partitions:
        for record in _records(read(partition, written_from[partition]), counts):
            counts["records"] += 1
            if record.env != env:
                counts["other_env"] += 1
                continue
            day = format_time(record.received_at_us)[:10]
            if day not in wanted:
                counts["other_days"] += 1
                continue
            if record.event_id in seen:
                counts["duplicates"] += 1
                continue
            seen.add(record.event_id)
            model = (record.model_name, record.model_version, record.model_sha256)
            if model not in known:
                known[model] = _reference(*model, manifests)
            entry = found.get((*model, day))
            if entry is None:
                reference, expected, note = known[model]
                entry = found[(*model, day)] = Tally(*model, day, reference, expected, note)
            reference = entry.reference
            entry.cell.add(
                decision=record.decision,
                sample_rate=record.sample_rate,
                reference=reference,
                bins=None if reference is None else reference.bins(record.score, record.features),
            )
    return sorted(found.values(), key=lambda t: (t.day, t.name, t.version)), counts


def days_without_payments(days: Iterable[str], tallies: Iterable[Tally]) -> list[str]:
    """Those of `days` on which no version served the environment a payment, in order."""
    served = {entry.day for entry in tallies}
    return sorted(set(days) - served)


def payments_by_day(days: Iterable[str], tallies: Iterable[Tally]) -> dict[str, float]:
    """The payments the environment served on each of `days`, every version together: each
    captured record stands for 1 / its sample rate of them (`Cell.served_estimate`, what
    `sds monitor` reports per version and day as `served_estimate`); 0 on a day without any."""
    found = dict.fromkeys(sorted(set(days)), 0.0)
    for entry in tallies:
        if entry.day in found:
            found[entry.day] += entry.cell.served_estimate
    return {day: round(value, 3) for day, value in found.items()}


def days_before(now_us: int, count: int) -> list[str]:
    """The `count` whole UTC days before the one `now_us` is in, oldest first."""
    today = now_us - now_us % DAY_US
    return [format_time(today - i * DAY_US)[:10] for i in range(count, 0, -1)]


def emf_documents(
    env: str,
    tallies: Iterable[Tally],
    *,
    days: Iterable[str],
    now_ms: int | None = None,
) -> list[dict[str, Any]]:
    """One embedded-metric-format document per day of `days` (those the run reports) on the
    `Environment` dimension alone, with the day's `Payments` (`payments_by_day`), and `Captured`
    and `Flagged` 0 on a day without payments (`days_without_payments`); then one per version
    and day. Timestamped at the run: a datapoint in an already evaluated period would never
    reach the alarms."""
    stamp = int(time.time() * 1000) if now_ms is None else now_ms
    tallies = list(tallies)
    days = list(days)
    empty = set(days_without_payments(days, tallies))
    documents = []
    for day, payments in payments_by_day(days, tallies).items():
        values = {"Payments": (payments, "Count")}
        if day in empty:
            values |= {"Captured": (0, "Count"), "Flagged": (0, "Count")}
        documents.append(_emf(stamp, [["Environment"]], {"Environment": env, "Day": day}, values))
    for entry in tallies:
        figures = entry.figures()
        values = {
            "Captured": (figures["captured"], "Count"),
            "Flagged": (figures["flagged"], "Count"),
            "AlertRate": (figures["alert_rate"], "None"),
            "AlertRateRatio": (figures["alert_rate_ratio"], "None"),
            "ScorePSI": (figures["score_psi"], "None"),
            "MaxFeaturePSI": (figures["max_feature_psi"], "None"),
        }
        documents.append(
            _emf(
                stamp,
                [["Environment"], ["Environment", "ModelVersion"]],
                {
                    "Environment": env,
                    "ModelVersion": str(entry.version),
                    "Day": entry.day,
                    "DriftedFeatures": figures["drifted_features"],
                },
                {name: pair for name, pair in values.items() if pair[0] is not None},
            )
        )
    return documents


def _emf(
    stamp: int,
    dimensions: list[list[str]],
    fields: Mapping[str, Any],
    values: Mapping[str, tuple[Any, str]],
) -> dict[str, Any]:
    """One embedded-metric-format document: `values` (name -> (value, unit)) as metrics of
    `dimensions` in the drift namespace, beside `fields` (the dimensions' values and the rest)."""
    return {
        "_aws": {
            "Timestamp": stamp,
            "CloudWatchMetrics": [
                {
                    "Namespace": drift.NAMESPACE,
                    "Dimensions": dimensions,
                    "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in values.items()],
                }
            ],
        },
        **fields,
        **{name: value for name, (value, _) in values.items()},
    }
