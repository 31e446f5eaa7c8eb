"""Synthetic card-payment events with a learnable fraud signal, and reading event history.

`generate_events(n, seed)` is deterministic: the same seed gives byte-identical files. Fraud is a
few percent of events and depends on the fields a fraud analyst would look at (new device abroad,
failed logins, bursts of transactions, young accounts, risky merchant categories, night hours),
with noise, so a model can learn it but not perfectly.

History is JSON Lines (`.jsonl` or `.jsonl.gz`), one event per line with `event_id`, `timestamp`
(ISO 8601, UTC) and `is_fraud` besides the event fields. `read_history` takes a file, a directory
or an `s3://bucket/prefix`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from sds.kernel.errors import SdsError
from sds.kernel.features import CURRENCIES, MERCHANT_CATEGORIES, USD_PER_UNIT, validate_event

LABEL = "is_fraud"
RECORD_FIELDS = ("event_id", "timestamp", LABEL)
START = datetime(2026, 1, 1, tzinfo=UTC)

_COUNTRIES = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "CA", "MX", "BR", "IN", "JP", "AU", "SG")
_COUNTRY_CURRENCY = {
    "US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "ES": "EUR", "IT": "EUR", "NL": "EUR",
    "CA": "CAD", "MX": "MXN", "BR": "BRL", "IN": "INR", "JP": "JPY", "AU": "AUD", "SG": "SGD",
}  # fmt: skip
_CATEGORY_WEIGHTS = (0.22, 0.18, 0.10, 0.06, 0.07, 0.17, 0.07, 0.02, 0.05, 0.06)
_CATEGORY_MEDIAN_USD = (45, 30, 50, 420, 300, 70, 15, 60, 25, 40)
_CATEGORY_RISK = (-0.6, -0.5, -0.4, 0.5, 0.9, 0.3, 1.0, 1.2, -0.3, 0.0)


class DataError(SdsError, ValueError):
    """Training data is missing or malformed; the message names the file and line."""


def generate_events(
    n: int, *, seed: int = 7, fraud_rate_shift: float = 0.0
) -> list[dict[str, Any]]:
    """`n` events in time order over 90 days, about 3% fraud."""
    if n < 1:
        raise ValueError("n must be >= 1")
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.uniform(0, 90 * 24 * 3600, size=n))
    card_country_idx = rng.choice(len(_COUNTRIES), size=n, p=_country_weights())
    abroad = rng.random(n) < 0.08
    country_idx = np.where(abroad, rng.integers(0, len(_COUNTRIES), size=n), card_country_idx)
    category = rng.choice(len(MERCHANT_CATEGORIES), size=n, p=_CATEGORY_WEIGHTS)
    hour = rng.choice(24, size=n, p=_hour_weights())
    account_age = np.minimum(rng.gamma(1.2, 500, size=n).astype(np.int64), 20_000)
    new_device = rng.random(n) < 0.07
    failed = rng.poisson(0.15, size=n)
    txn_1h = rng.poisson(0.8, size=n)
    median_usd = np.asarray(_CATEGORY_MEDIAN_USD, dtype=float)[category]
    amount_usd = median_usd * rng.lognormal(0.0, 0.9, size=n)

    foreign = country_idx != card_country_idx
    logit = (
        -5.2
        + fraud_rate_shift
        + np.asarray(_CATEGORY_RISK)[category]
        + 1.4 * new_device
        + 1.1 * foreign
        + 0.9 * (new_device & foreign)
        + 0.55 * np.minimum(failed, 6)
        + 0.35 * np.minimum(txn_1h, 8)
        + 0.8 * (hour < 6)
        + 1.0 * (account_age < 30)
        + 0.45 * np.log1p(amount_usd / 100.0)
        + rng.normal(0.0, 0.7, size=n)
    )
    fraud = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    # Fraudsters test stolen cards: more failed logins and bursts when the event is fraud.
    failed = failed + fraud * rng.poisson(1.2, size=n)
    txn_1h = txn_1h + fraud * rng.poisson(1.5, size=n)

    events: list[dict[str, Any]] = []
    for i in range(n):
        card_country = _COUNTRIES[card_country_idx[i]]
        country = _COUNTRIES[country_idx[i]]
        currency = _COUNTRY_CURRENCY[country] if rng.random() < 0.9 else CURRENCIES[i % 4]
        amount = round(float(amount_usd[i]) / USD_PER_UNIT[currency], 2)
        events.append(
            {
                "event_id": f"evt-{seed}-{i:08d}",
                "timestamp": (START + timedelta(seconds=float(seconds[i]))).strftime(
                    "%Y-%m-%dT%H:%M:%S.%fZ"
                ),
                "amount": amount,
                "currency": currency,
                "merchant_category": MERCHANT_CATEGORIES[category[i]],
                "country": country,
                "card_country": card_country,
                "hour_of_day": int(hour[i]),
                "account_age_days": int(account_age[i]),
                "is_new_device": bool(new_device[i]),
                "num_failed_logins_last_24_hours": int(failed[i]),
                "txn_count_last_1h": int(txn_1h[i]),
                LABEL: bool(fraud[i]),
            }
        )
    return events


def _country_weights() -> np.ndarray:
    weights = np.array([30, 10, 8, 7, 5, 5, 4, 6, 4, 5, 6, 4, 3, 3], dtype=float)
    return np.asarray(weights / weights.sum())


def _hour_weights() -> np.ndarray:
    # Quiet nights, busy evenings.
    shape = np.array(
        [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.5, 3, 4, 5, 5, 6, 7, 6, 6, 6, 6, 7, 8, 8, 7, 5, 3, 2]
    )
    return np.asarray(shape / shape.sum())


def write_jsonl(events: list[dict[str, Any]], path: Path) -> Path:
    """Write events as JSON Lines; `.gz` suffix compresses (deterministically: no mtime)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events).encode()
    if path.suffix == ".gz":
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
            handle.write(payload)
        payload = buffer.getvalue()
    path.write_bytes(payload)
    return path


@dataclass(frozen=True)
class History:
    """Labelled events in time order, and a fingerprint of exactly the bytes they came from."""

    events: list[dict[str, Any]]
    labels: list[bool]
    timestamps: list[str]
    fingerprint: str
    sources: list[str]


def _is_history_file(name: str) -> bool:
    return name.endswith(".jsonl") or name.endswith(".jsonl.gz")


def _local_sources(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _is_history_file(p.name))
        if not files:
            raise DataError(f"{path}: no .jsonl or .jsonl.gz files")
        for file in files:
            yield str(file), file.read_bytes()
    elif path.is_file():
        yield str(path), path.read_bytes()
    else:
        raise DataError(f"{path}: no such file or directory")


def _s3_sources(uri: str) -> Iterator[tuple[str, bytes]]:
    import boto3  # only needed when history lives on S3

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []) if _is_history_file(o["Key"]))
    if not keys:
        raise DataError(f"{uri}: no .jsonl or .jsonl.gz objects under this prefix")
    for key in sorted(keys):
        yield f"s3://{bucket}/{key}", s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def read_history(location: str | Path) -> History:
    """Read, validate and time-order labelled events from a file, directory or s3:// prefix."""
    text = str(location)
    sources = _s3_sources(text) if text.startswith("s3://") else _local_sources(Path(text))
    digest = hashlib.sha256()
    events: list[dict[str, Any]] = []
    labels: list[bool] = []
    stamps: list[str] = []
    moments: list[datetime] = []
    names: list[str] = []
    for name, raw in sources:
        names.append(name)
        digest.update(name.rsplit("/", 1)[-1].encode() + b"\0" + hashlib.sha256(raw).digest())
        try:
            data = gzip.decompress(raw) if name.endswith(".gz") else raw
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{name}: not a valid gzip file ({exc})") from None
        for lineno, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{name}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: invalid JSON ({exc.msg})") from None
            except UnicodeDecodeError:
                raise DataError(f"{where}: not valid UTF-8") from None
            except (ValueError, RecursionError) as exc:  # e.g. a number with 5000 digits
                raise DataError(f"{where}: invalid JSON ({str(exc)[:100]})") from None
            problems = validate_event(record, where=where, extra_fields=RECORD_FIELDS)
            if problems:
                raise DataError(f"{problems[0].field}: {problems[0].reason}")
            label = record.get(LABEL)
            if not isinstance(label, bool):
                raise DataError(f"{where}.{LABEL}: must be true or false")
            stamp = record.get("timestamp")
            try:
                moment = datetime.fromisoformat(stamp)
            except (TypeError, ValueError):
                raise DataError(f"{where}.timestamp: must be an ISO 8601 time") from None
            if moment.tzinfo is None:
                raise DataError(f"{where}.timestamp: must carry a time zone (e.g. 'Z')")
            labels.append(label)
            stamps.append(stamp)
            moments.append(moment)
            events.append({k: v for k, v in record.items() if k not in RECORD_FIELDS})
    if not events:
        raise DataError(f"{text}: no events")
    order = sorted(range(len(events)), key=moments.__getitem__)
    return History(
        events=[events[i] for i in order],
        labels=[labels[i] for i in order],
        timestamps=[stamps[i] for i in order],
        fingerprint=digest.hexdigest(),
        sources=names,
    )
