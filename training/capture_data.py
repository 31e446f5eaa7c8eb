"""Served traffic for training: captures joined with labels by event id, under a maturity policy.

`read_served` reads an environment's capture records (`sds.kernel.capture`) and its label events
(`sds.kernel.events.LABEL`) from a folder (`.sds/capture/<env>`, `.sds/labels/<env>`) or an S3
prefix (`s3://<captures-bucket>/captures/`, `.../labels/`), both partitioned by the UTC day they
arrived (`dt=YYYY-MM-DD/`), and returns the feature vectors exactly as they were scored, with a
label each. Which captures count, in this order (each exclusion is counted in `counts`):

1. the environment's own records whose payment happened in the window `[since, until)`
   (`occurred_at`); partitions are read from the day before `since` on, because a payment is
   captured when it is scored, at or after it happened;
2. one record per event id (a retried request scores an event twice): the first served;
3. matured: the payment happened at least the maturity window before `as_of` (a younger one may
   still get its chargeback); younger ones are left out;
4. with the features as scored, under this code's feature layout (`feature_schema`), and with the
   account aggregates read (a payment scored without them, under `when_features_unavailable:
   score`, saw zeros the model will not see again);
5. labelled: the latest label known at `as_of` (by `labelled_at`; on a tie, fraud) decides; a
   matured payment without one is legitimate (`unlabelled: legitimate`, no chargeback came) or
   left out (`unlabelled: exclude`).

Capture records are this project's own contract, so a malformed line is an error naming the file
and line (a newer schema version too: upgrade to read it); only a file's incomplete last line (a
write cut short) is skipped, with a warning (`sds.kernel.capture.records`). Labels come from producers through the
event bus, so a malformed label line is skipped and counted, never fatal.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from sds.kernel.capture import (
    PARTITION_KEY,
    Capture,
    CaptureError,
    feature_fingerprint,
    records,
)
from sds.kernel.events import LABEL_KINDS, validate
from sds.kernel.features import N_FEATURES, TIME_FORMAT_HINT, format_time, parse_time
from training.data import DataError

DAY_US = 86_400_000_000
UNLABELLED_POLICIES = ("legitimate", "exclude")


@dataclass(frozen=True)
class Window:
    """Which payments count: those that happened in [since, until), matured as of `as_of`."""

    since_us: int
    until_us: int
    as_of_us: int
    maturity_days: int
    unlabelled: str = "legitimate"

    def __post_init__(self) -> None:
        if self.since_us >= self.until_us:
            raise DataError(
                f"the window is empty: --since {format_time(self.since_us)} is not before "
                f"--until {format_time(self.until_us)}"
            )
        if self.maturity_days < 0:
            raise DataError("the maturity window must be >= 0 days")
        if self.unlabelled not in UNLABELLED_POLICIES:
            raise DataError(f"unlabelled must be one of {', '.join(UNLABELLED_POLICIES)}")

    @property
    def matured_before(self) -> int:
        """Payments at or after this time are too young to count (or outside the window)."""
        return min(self.until_us, self.as_of_us - self.maturity_days * DAY_US)

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": format_time(self.since_us),
            "until": format_time(self.until_us),
            "as_of": format_time(self.as_of_us),
            "matured_before": format_time(self.matured_before),
            "maturity_days": self.maturity_days,
            "unlabelled": self.unlabelled,
        }


@dataclass
class Served:
    """The payments that count, in time order: their features as scored, labels, and what served
    them (model version, sha256 and score, for the comparison with the candidate)."""

    features: np.ndarray  # float32, one row per payment
    labels: np.ndarray  # bool
    times: np.ndarray  # occurred_at, microseconds (int64)
    event_ids: list[str]
    model_names: list[str]
    versions: np.ndarray  # int64
    shas: list[str]
    scores: np.ndarray  # float64, what the served model answered
    sample_rates: np.ndarray  # float64, each record's capture rate
    counts: dict[str, int] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    fingerprint: str = ""

    def __len__(self) -> int:
        return len(self.event_ids)


# Reading partitions ------------------------------------------------------------------------------


def _day(micros: int) -> str:
    return format_time(micros)[:10]


def moment(micros: int) -> str:
    """A window's bound as the user likely typed it: the date alone at midnight UTC
    (`--since 2026-03-01`), else the full time (`--until` defaulted to now)."""
    return _day(micros) if micros % DAY_US == 0 else format_time(micros)


def _is_data_file(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and (base.endswith(".jsonl") or base.endswith(".jsonl.gz"))


def _local_partitions(root: Path, first_day: str) -> Iterator[tuple[str, bytes]]:
    if not root.is_dir():
        return
    start = f"{PARTITION_KEY}={first_day}"
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if not folder.name.startswith(f"{PARTITION_KEY}=") or folder.name < start:
            continue
        for file in sorted(p for p in folder.iterdir() if p.is_file() and _is_data_file(p.name)):
            yield str(file), file.read_bytes()


def _s3_partitions(uri: str, first_day: str) -> Iterator[tuple[str, bytes]]:
    from sds.kernel.sdk import client  # boto3, only when the data lives on S3

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    s3 = client("s3")
    keys: list[str] = []
    # Keys sort by day (dt=YYYY-MM-DD): one listing from the first day on.
    start_after = f"{prefix}{PARTITION_KEY}={first_day}"
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, StartAfter=start_after
    )
    for page in pages:
        keys.extend(o["Key"] for o in page.get("Contents", []) if _is_data_file(o["Key"]))
    for key in sorted(keys):
        if key.removeprefix(prefix).startswith(f"{PARTITION_KEY}="):
            yield f"s3://{bucket}/{key}", s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def partitions(location: str, first_day: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every JSON Lines file in the day partitions of `location` from
    `first_day` (YYYY-MM-DD) on, in order."""
    if location.startswith("s3://"):
        return _s3_partitions(location, first_day)
    return _local_partitions(Path(location), first_day)


def decompressed(name: str, raw: bytes) -> bytes:
    """A partition file's bytes, gunzipped if its name ends in .gz."""
    try:
        return gzip.decompress(raw) if name.endswith(".gz") else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: not a valid gzip file ({exc})") from None


def _lines(name: str, raw: bytes) -> Iterator[tuple[str, bytes]]:
    for lineno, line in enumerate(decompressed(name, raw).splitlines(), start=1):
        if line.strip():
            yield f"{name}:{lineno}", line


# Labels ------------------------------------------------------------------------------------------


@dataclass
class Labels:
    """The deciding label of each labelled event, known at `as_of`."""

    by_event: dict[str, bool]
    read: int = 0
    invalid: int = 0
    after_as_of: int = 0


def read_labels(location: str, *, first_day: str, as_of_us: int) -> Labels:
    latest: dict[str, tuple[int, bool]] = {}
    found = Labels(by_event={})
    for name, raw in partitions(location, first_day):
        for where, line in _lines(name, raw):
            found.read += 1
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                found.invalid += 1
                continue
            if validate(record, where=where, kinds=LABEL_KINDS):
                found.invalid += 1
                continue
            at = parse_time(record["labelled_at"])
            if at > as_of_us:
                found.after_as_of += 1
                continue
            key = (at, bool(record["is_fraud"]))
            known = latest.get(record["event_id"])
            if known is None or key > known:  # the latest label decides; on a tie, fraud
                latest[record["event_id"]] = key
    found.by_event = {event_id: fraud for event_id, (_, fraud) in latest.items()}
    return found


# Captures ----------------------------------------------------------------------------------------


# A partition's day in a file's name (`.../dt=YYYY-MM-DD/...`).
_PARTITION_DAY = re.compile(rf"/{PARTITION_KEY}=(\d{{4}}-\d{{2}}-\d{{2}})/")


def capture_records(
    location: str, first_day: str, last_day: str | None = None
) -> Iterator[tuple[str, Capture]]:
    """(file name, record) of every capture record in the day partitions of `location` from
    `first_day` to `last_day` (or the last one), in order: the one reader of captures (training
    from capture, `sds monitor`, `sds compare`). A malformed record is a DataError naming its
    file and line (`sds.kernel.capture.records`, which also says what it skips)."""
    for name, raw in partitions(location, first_day):
        found = _PARTITION_DAY.search(name)
        if last_day is not None and found is not None and found.group(1) > last_day:
            return  # partitions come in day order: nothing after this one is read
        try:
            for _where, record in records(name, decompressed(name, raw)):
                yield name, record
        except CaptureError as exc:
            raise DataError(str(exc)) from None


def read_served(captures: str, labels: str, *, env: str, window: Window) -> Served:
    """The matured, labelled payments `env` served in the window (see the module docstring)."""
    first_day = _day(window.since_us - DAY_US)
    counts = dict.fromkeys(
        (
            "records",
            "other_env",
            "outside_window",
            "duplicates",
            "young",
            "without_features",
            "other_feature_schema",
            "without_online_features",
            "labelled_fraud",
            "labelled_legitimate",
            "unlabelled_as_legitimate",
            "unlabelled_excluded",
            "labels_read",
            "labels_invalid",
            "labels_after_as_of",
            "used",
        ),
        0,
    )
    chosen: dict[str, Capture] = {}
    sources: list[str] = []
    digest = hashlib.sha256()
    fingerprint = feature_fingerprint()
    for name, record in capture_records(captures, first_day):
        if not sources or sources[-1] != name:
            sources.append(name)
        counts["records"] += 1
        if record.env != env:
            counts["other_env"] += 1
            continue
        if not window.since_us <= record.occurred_at_us < window.until_us:
            counts["outside_window"] += 1
            continue
        known = chosen.get(record.event_id)
        if known is not None:
            counts["duplicates"] += 1
            if record.received_at_us >= known.received_at_us:
                continue
        chosen[record.event_id] = record
    if not counts["records"]:
        raise DataError(
            f"{captures}: no capture records of payments made from {moment(window.since_us)} to "
            f"{moment(window.until_us)} (the day folders from {first_day} on are empty or "
            f"missing): serve {env} with capture on (sds serve --env {env}); on AWS the "
            "function's captures reach S3 within minutes"
        )
    labelled = read_labels(labels, first_day=first_day, as_of_us=window.as_of_us)
    counts["labels_read"] = labelled.read
    counts["labels_invalid"] = labelled.invalid
    counts["labels_after_as_of"] = labelled.after_as_of
    rows: list[tuple[Capture, bool]] = []
    for record in sorted(chosen.values(), key=lambda r: (r.occurred_at_us, r.event_id)):
        if record.occurred_at_us >= window.matured_before:
            counts["young"] += 1
            continue
        if record.features is None:
            counts["without_features"] += 1
            continue
        if record.feature_schema != fingerprint or len(record.features) != N_FEATURES:
            counts["other_feature_schema"] += 1
            continue
        if not record.online_features:
            counts["without_online_features"] += 1
            continue
        label = labelled.by_event.get(record.event_id)
        if label is None:
            if window.unlabelled == "exclude":
                counts["unlabelled_excluded"] += 1
                continue
            counts["unlabelled_as_legitimate"] += 1
            label = False
        else:
            counts["labelled_fraud" if label else "labelled_legitimate"] += 1
        rows.append((record, label))
        digest.update(f"{record.event_id}\0{int(label)}\0{record.model_sha256}\n".encode())
    counts["used"] = len(rows)
    if not rows:
        # Say which window the records missed (by default the days before now, while traffic
        # replayed from a history is dated by its payments), and how to choose another.
        where = (
            f"; the window takes payments from {format_time(window.since_us)} to "
            f"{format_time(window.until_us)} that matured before "
            f"{format_time(window.matured_before)}"
        )
        if counts["outside_window"] or counts["young"]:
            where += " (by the payment's time: choose it with --since, --until and --as-of)"
        raise DataError(
            f"none of {env}'s {counts['records']} capture records can be trained on: "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v)
            + where
        )
    records = [record for record, _ in rows]
    return Served(
        features=np.asarray([r.features for r in records], dtype=np.float32),
        labels=np.fromiter((label for _, label in rows), dtype=bool, count=len(rows)),
        times=np.fromiter((r.occurred_at_us for r in records), dtype=np.int64, count=len(rows)),
        event_ids=[r.event_id for r in records],
        model_names=[r.model_name for r in records],
        versions=np.fromiter((r.model_version for r in records), dtype=np.int64, count=len(rows)),
        shas=[r.model_sha256 for r in records],
        scores=np.fromiter((r.score for r in records), dtype=np.float64, count=len(rows)),
        sample_rates=np.fromiter((r.sample_rate for r in records), np.float64, count=len(rows)),
        counts=counts,
        sources=sources,
        fingerprint=digest.hexdigest(),
    )


def parse_moment(text: str, *, what: str) -> int:
    """A `--since`/`--until`/`--as-of` value: a date (midnight UTC) or an ISO 8601 time with a
    time zone; microseconds since the epoch."""
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        try:
            return parse_time(text)
        except ValueError:
            raise DataError(
                f"{what} {text!r}: expected a date (2026-03-01) or {TIME_FORMAT_HINT}"
            ) from None
    return (day - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
