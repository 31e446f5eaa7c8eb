"""Served traffic written as the handler writes it: capture records and labels in day partitions.

Shared by the tests of training from capture and of the must_beat_live gate. The records are
built by the contract's own writer (`sds.kernel.capture.Capturer`), one request per payment, and
land under `<root>/dt=<day it was served>/`, as `sds serve` and Firehose lay them out. The
features are made so that a model can learn them (the first feature is shifted for fraud), and
the served model's scores are chosen by the test: `weak` (unrelated to the label) or `strong`
(near perfect), so which of the candidate and the served model is better is known in advance.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sds.kernel.capture import Capturer, partition
from sds.kernel.features import N_FEATURES, format_time, parse_time

DAY_US = 86_400_000_000
JAN_1 = parse_time("2026-01-01T00:00:00Z")


@dataclass(frozen=True)
class Payment:
    event_id: str
    occurred_us: int
    is_fraud: bool
    features: np.ndarray  # float32, N_FEATURES
    score: float  # what the served model answered

    def event(self) -> dict[str, Any]:
        return {
            "type": "payment",
            "event_id": self.event_id,
            "account_id": f"acct-{self.event_id[-1]}",
            "occurred_at": format_time(self.occurred_us),
        }


def traffic(
    *,
    days: int,
    per_day: int,
    start_us: int = JAN_1,
    served: str = "weak",
    seed: int = 3,
    prefix: str = "evt",
) -> list[Payment]:
    """`per_day` payments a day for `days` days, about one in five fraud."""
    rng = np.random.default_rng(seed)
    payments = []
    for day in range(days):
        for n in range(per_day):
            fraud = bool(rng.random() < 0.2)
            features = rng.normal(size=N_FEATURES).astype(np.float32)
            features[0] += 2.5 if fraud else 0.0
            if served == "strong":
                score = float(np.clip((0.95 if fraud else 0.05) + rng.normal(0, 0.01), 0, 1))
            else:
                score = float(rng.random())
            at = start_us + day * DAY_US + (n + 1) * (DAY_US // (per_day + 1))
            payments.append(Payment(f"{prefix}-{day:03d}-{n:03d}", at, fraud, features, score))
    return payments


def write_captures(
    root: Path,
    payments: Sequence[Payment],
    *,
    env: str = "dev",
    version: int = 1,
    sha256: str = "a" * 64,
    served_after_us: int = 50_000,
    online_features: bool = True,
    sample_rate: float = 1.0,
) -> None:
    """One capture per payment, served `served_after_us` after it happened, in the partition of
    the day it was served."""
    for payment in payments:
        lines: list[bytes] = []
        Capturer(
            env=env,
            model={"name": "fraud", "version": version, "sha256": sha256},
            threshold=0.5,
            sink=lines.append,
            sample_rate=1.0,
        ).capture(
            request_id=f"req-{payment.event_id}",
            received_us=payment.occurred_us + served_after_us,
            started_ns=0,
            events=[payment.event()],
            features=payment.features.reshape(1, -1),
            scores=[payment.score],
            online_features=online_features,
        )
        line = lines[0]
        if sample_rate != 1.0:  # as if captured at that rate (the records say so)
            record = json.loads(line)
            record["sample_rate"] = sample_rate
            line = (json.dumps(record) + "\n").encode()
        folder = root / partition(payment.occurred_us + served_after_us)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "server.jsonl").open("ab") as handle:
            handle.write(line)


def label(event_id: str, is_fraud: bool, at_us: int, source: str = "chargeback") -> dict[str, Any]:
    return {
        "type": "label",
        "event_id": event_id,
        "is_fraud": is_fraud,
        "labelled_at": format_time(at_us),
        "source": source,
    }


def write_labels(root: Path, labels: Sequence[Mapping[str, Any]], *, day_us: int) -> Path:
    folder = root / partition(day_us)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "labels.jsonl"
    with path.open("a") as handle:
        for item in labels:
            handle.write(json.dumps(item) + "\n")
    return path


def chargebacks(payments: Sequence[Payment], *, after_days: int = 3) -> list[dict[str, Any]]:
    """A chargeback for each fraud, `after_days` after the payment."""
    return [
        label(p.event_id, True, p.occurred_us + after_days * DAY_US) for p in payments if p.is_fraud
    ]
