"""Replay a history of activity events as live traffic: each payment scored as of its own time.

A payment is scored with its account's aggregates over the events before it, so a replay may not
fold an account's later events before its earlier payments are scored, and must fold every
earlier one first. `replay` goes in rounds: round r holds the events at the r-th distinct time of
every account (events of one account at one microsecond share a round: history counts none of
them for another, so none may be folded before the others are scored). Each round's payments are
scored together (in requests of `batch` payments: nothing in the round can change the aggregates
another of its payments reads), then the round's events are folded into the feature store, each
with the store's clock at its own time, as `sds ingest --clock events` does. So each payment sees
exactly the events of its account before it, what the point-in-time computation of training
gives (`sds.kernel.pointintime`; tests/unit/test_traffic.py holds the two equal), and the
captures of a replay are what live traffic would have produced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sds.kernel.events import timed
from sds.kernel.online import OnlineFeatures

# Scores one request's payments (as sent to POST /predict); raises if the API refuses them.
Score = Callable[[list[dict[str, Any]]], None]


@dataclass
class ReplayResult:
    payments: int = 0
    events: int = 0
    requests: int = 0
    rounds: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "payments": self.payments,
            "events": self.events,
            "requests": self.requests,
            "rounds": self.rounds,
        }


def rounds(events: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """The events in rounds: round r holds each account's events at its r-th distinct time, in
    time order."""
    ordered = sorted(timed(events), key=lambda pair: pair[0])
    last: dict[str, tuple[int, int]] = {}  # account -> (its latest time so far, that round)
    found: list[list[Mapping[str, Any]]] = []
    for moment, event in ordered:
        account = str(event["account_id"])
        latest, index = last.get(account, (moment, 0))
        if moment != latest:
            index += 1
        last[account] = (moment, index)
        if index == len(found):
            found.append([])
        found[index].append(event)
    return found


def replay(
    events: Sequence[Mapping[str, Any]],
    *,
    score: Score,
    online: OnlineFeatures,
    batch: int = 100,
    labels: tuple[str, ...] = ("is_fraud",),
) -> ReplayResult:
    """Score every payment of `events` through `score` as of its time, folding the history into
    `online` as it goes. Fields named in `labels` (a generated history's answers) are never sent."""
    result = ReplayResult()
    for round_ in rounds(events):
        result.rounds += 1
        payments = [
            {k: v for k, v in event.items() if k not in labels}
            for event in round_
            if event["type"] == "payment"
        ]
        for start in range(0, len(payments), batch):
            score(payments[start : start + batch])
            result.requests += 1
        result.payments += len(payments)
        for moment, event in timed(round_):
            clean = {k: v for k, v in event.items() if k not in labels}
            done = online.apply([(moment, clean)], now=moment)
            if done.failed:
                raise RuntimeError(f"folding {event['event_id']}: {done.failed}")
            result.events += 1
    return result
