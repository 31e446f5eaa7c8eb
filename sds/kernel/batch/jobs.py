"""What a batch run computes for one partition: scores (`sds score`) or the account aggregates
(`sds backfill`), one output row per payment, in time order.

Both take the partition's events as `load_partition` gives them (distinct, in time order, every
event of each of its accounts) and compute each payment's account aggregates as of just before
it with the offline point-in-time computation (`sds.kernel.pointintime`), which a test proves
equal to what the online feature store serves at that moment. Scoring then featurizes the
payments with the API's feature function (`featurize_batch`) and scores them with the model the
API loads (`sds.kernel.serving.LoadedModel`, verified against its pin): a row's score is the
score the API gives that payment with the same account history, shown the same way (to 6
decimals, rounded toward its decision: `sds.kernel.serving.shown_scores`), and its decision uses
the version's own threshold.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import orjson

from sds.kernel import pointintime
from sds.kernel.aggregates import NAMES as AGGREGATES
from sds.kernel.batch.shuffle import LABEL, PartitionHistory
from sds.kernel.features import featurize_batch
from sds.kernel.serving import LoadedModel, shown_scores

JOBS = ("score", "features")
SCORE_CHUNK = 65_536  # payments featurized and scored at a time
# gzip level 1: parts are written once and read by tools; level 6 would triple the write time
# for about a fifth less size.
PART_COMPRESSION = 1


@dataclass
class PartCounts:
    """What one part holds; summed over parts for the run's manifest."""

    events: int = 0
    payments: int = 0
    rows: int = 0
    duplicates: int = 0
    flagged: int = 0  # rows the model's threshold flags (score)
    labelled: int = 0  # rows whose payment carried a label
    fraud: int = 0  # of which labelled fraud
    flagged_labelled: int = 0  # flagged among the labelled
    flagged_fraud: int = 0  # flagged and labelled fraud
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        document = {
            "events": self.events,
            "payments": self.payments,
            "rows": self.rows,
            "duplicates": self.duplicates,
            "flagged": self.flagged,
            "labelled": self.labelled,
            "fraud": self.fraud,
            "flagged_labelled": self.flagged_labelled,
            "flagged_fraud": self.flagged_fraud,
        }
        return {**document, **self.extra}


def aggregates_at_payments(
    history: PartitionHistory, payments: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(positions of the payments in `history.events`, each aggregate at each payment): every
    payment of the partition, or those at `payments` (positions in `history.events`)."""
    payments = history.payments if payments is None else payments
    accounts = [history.events[i]["account_id"] for i in payments.tolist()]
    computed = pointintime.compute(history.events, history.times, accounts, history.times[payments])
    return payments, computed


def score_rows(
    history: PartitionHistory, model: LoadedModel
) -> tuple[list[dict[str, Any]], PartCounts]:
    """One row per payment: its score and decision by `model`, with the model's version."""
    counts = PartCounts(events=len(history.events), duplicates=history.duplicates)
    payments, computed = aggregates_at_payments(history)
    events = [history.events[i] for i in payments.tolist()]
    counts.payments = len(events)
    rows: list[dict[str, Any]] = []
    threshold = model.threshold
    for start in range(0, len(events), SCORE_CHUNK):
        chunk = events[start : start + SCORE_CHUNK]
        matrix = featurize_batch(
            chunk, {n: computed[n][start : start + SCORE_CHUNK].tolist() for n in AGGREGATES}
        )
        scores = model.predict(matrix)
        for event, score, shown in zip(chunk, scores, shown_scores(scores, threshold), strict=True):
            flagged = score >= threshold
            row: dict[str, Any] = {
                "event_id": event["event_id"],
                "account_id": event["account_id"],
                "occurred_at": event["occurred_at"],
                "fraud_probability": shown,
                "is_fraud": flagged,
                "model_version": model.version,
                "model_sha256": model.sha256,
            }
            label = history.labels.get(event["event_id"])
            if label is not None:
                row["label"] = label
                counts.labelled += 1
                counts.fraud += label
                counts.flagged_labelled += flagged
                counts.flagged_fraud += label and flagged
            counts.flagged += flagged
            rows.append(row)
    counts.rows = len(rows)
    return rows, counts


def feature_rows(history: PartitionHistory) -> tuple[list[dict[str, Any]], PartCounts]:
    """One row per payment: each account aggregate as of just before it (what the API reads
    from the feature store when it scores that payment)."""
    counts = PartCounts(events=len(history.events), duplicates=history.duplicates)
    payments, computed = aggregates_at_payments(history)
    columns = {name: computed[name].tolist() for name in AGGREGATES}
    rows: list[dict[str, Any]] = []
    for position, index in enumerate(payments.tolist()):
        event = history.events[index]
        row: dict[str, Any] = {
            "event_id": event["event_id"],
            "account_id": event["account_id"],
            "occurred_at": event["occurred_at"],
            **{name: columns[name][position] for name in AGGREGATES},
        }
        label = history.labels.get(event["event_id"])
        if label is not None:
            row[LABEL] = label
            counts.labelled += 1
            counts.fraud += label
        rows.append(row)
    counts.payments = counts.rows = len(rows)
    return rows, counts


def write_rows(handle: BinaryIO, rows: Iterable[Mapping[str, Any]]) -> None:
    """Rows as gzip-compressed JSON Lines (deterministic bytes: no time stamp in the header)."""
    # No file name in the header either: the bytes depend on the rows only.
    with gzip.GzipFile(
        filename="", fileobj=handle, mode="wb", compresslevel=PART_COMPRESSION, mtime=0
    ) as out:
        out.writelines(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE) for row in rows)
