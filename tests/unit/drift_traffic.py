"""Generated served traffic for the monitor's tests: payments featurized as training does, scored
by a fixed rule, captured as the handler captures them, day by day, with labels."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sds.kernel import pointintime
from sds.kernel.behaviour import holdout_behaviour
from sds.kernel.capture import Capturer, partition
from sds.kernel.features import FEATURE_NAMES, featurize_batch, format_time, parse_time
from training.data import read_history, write_jsonl
from training.drift_reference import holdout_reference
from training.synthetic import generate_activity

DAY_US = 86_400_000_000
MODEL = "fraud"
AMOUNT = FEATURE_NAMES.index("amount_usd_log1p")


@dataclass
class Payments:
    events: list[dict[str, Any]]
    features: np.ndarray  # float32, FEATURE_NAMES order
    labels: list[bool]

    @property
    def scores(self) -> list[float]:
        return [score(row) for row in self.features]

    def take(self, rows: slice) -> Payments:
        """Some of the payments: the same accounts, other payments (every other one, say)."""
        return Payments(self.events[rows], self.features[rows], self.labels[rows])


def score(row: Sequence[float]) -> float:
    """A fixed rule standing in for the model: larger amounts look riskier."""
    return 1.0 / (1.0 + math.exp(-(float(row[AMOUNT]) - 5.0)))


def payments(tmp: Path, count: int, *, seed: int, amount_factor: float = 1.0) -> Payments:
    """`count`-ish payments of generated activity (amounts scaled by `amount_factor`), with the
    features training computes for them."""
    activity = generate_activity(count, seed=seed)
    for event in activity:
        if event["type"] == "payment":
            event["amount"] = round(event["amount"] * amount_factor, 2)
    history = read_history(write_jsonl(activity, tmp / f"activity-{seed}-{amount_factor}.jsonl"))
    paid = history.payment_events
    computed = pointintime.compute(
        history.events, history.times, [e["account_id"] for e in paid], history.payment_times
    )
    features = featurize_batch(paid, {n: v.tolist() for n, v in computed.items()})
    return Payments(list(paid), np.asarray(features, dtype=np.float32), list(history.labels))


def manifest(
    reference: Payments | None,
    *,
    version: int,
    sha256: str,
    alert_rate: float = 0.1,
    threshold: float | None = None,
) -> dict[str, Any]:
    """A version's manifest as the monitor reads it (with the holdout's reference, or without,
    as a model trained before training stored one; with a `threshold`, the `behaviour` block of
    what the reference's payments flag at it, as training records it)."""
    document: dict[str, Any] = {
        "version": version,
        "sha256": sha256,
        "metrics": {"alert_rate": alert_rate},
    }
    if reference is not None:
        document["drift_reference"] = holdout_reference(
            reference.features, np.asarray(reference.scores)
        )
        if threshold is not None:
            document["behaviour"] = holdout_behaviour(reference.scores, threshold)
    return document


def threshold_for(reference: Payments, alert_rate: float) -> float:
    return float(np.quantile(np.asarray(reference.scores), 1.0 - alert_rate))


def capture(
    root: Path,
    served: Payments,
    *,
    day_us: int,
    version: int,
    sha256: str,
    threshold: float,
    env: str = "dev",
    sample_rate: float = 1.0,
    id_prefix: str = "",
    span_us: int = DAY_US - 1,
) -> list[dict[str, Any]]:
    """Write `served` as captured on the UTC day starting at `day_us` (one request per payment,
    spread over its first `span_us`, by default the whole day) in that day's partition; the
    events as captured (event ids prefixed with `id_prefix`)."""
    lines: list[bytes] = []
    capturer = Capturer(
        env=env,
        model={"name": MODEL, "version": version, "sha256": sha256},
        threshold=threshold,
        sink=lines.append,
        sample_rate=sample_rate,
    )
    step = span_us // max(len(served.events), 1)
    events = []
    for i, (event, row) in enumerate(zip(served.events, served.features, strict=True)):
        received = day_us + i * step
        event = {**event, "event_id": f"{id_prefix}{event['event_id']}"}
        event["occurred_at"] = format_time(received)
        events.append(event)
        capturer.capture(
            request_id=f"r-{i}",
            received_us=received,
            started_ns=0,
            events=[event],
            features=row.reshape(1, -1),
            scores=[score(row)],
            online_features=True,
        )
    folder = root / partition(day_us)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"served-{version}-{id_prefix or 'x'}.jsonl").open("ab") as handle:
        handle.write(b"".join(lines))
    return events


def label(
    root: Path, events: Sequence[dict[str, Any]], fraud: Sequence[bool], *, at_us: int
) -> None:
    """Label events (by event id), received on the day of `at_us`."""
    folder = root / partition(at_us)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"labels-{at_us}.jsonl").open("a") as handle:
        for event, is_fraud in zip(events, fraud, strict=True):
            handle.write(
                json.dumps(
                    {
                        "type": "label",
                        "event_id": event["event_id"],
                        "is_fraud": bool(is_fraud),
                        "labelled_at": format_time(at_us),
                        "source": "chargeback",
                    }
                )
                + "\n"
            )


def day(text: str) -> int:
    return parse_time(f"{text}T00:00:00Z")
