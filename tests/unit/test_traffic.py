"""A replayed history (the demo's streamed traffic) is scored as training computes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sds.kernel import pointintime
from sds.kernel.aggregates import AGGREGATES
from sds.kernel.events import timed
from sds.kernel.featurestore.sqlite import SqliteFeatureStore
from sds.kernel.online import OnlineFeatures
from sds.ops.traffic import replay, rounds


def payment(event_id: str, occurred_at: str, account: str = "acct") -> dict[str, Any]:
    return {
        "type": "payment",
        "event_id": event_id,
        "account_id": account,
        "occurred_at": occurred_at,
        "amount": 10.0,
        "currency": "USD",
        "merchant_category": "grocery",
        "country": "US",
        "card_country": "US",
        "hour_of_day": 18,
        "account_age_days": 100,
        "is_new_device": False,
        "is_fraud": False,
    }


def login(event_id: str, occurred_at: str, account: str = "acct") -> dict[str, Any]:
    return {
        "type": "login",
        "event_id": event_id,
        "account_id": account,
        "occurred_at": occurred_at,
        "outcome": "failure",
    }


def test_events_of_one_account_at_one_microsecond_are_scored_as_history_counts_them(
    tmp_path: Path,
) -> None:
    # Given two payments of one account at the same microsecond (generate_activity makes such
    # pairs), a failed login at the microsecond of a later payment, and another account's events
    history = [
        payment("p1", "2026-03-21T18:25:15.906187Z"),
        payment("p2", "2026-03-21T18:25:15.906187Z"),
        login("l1", "2026-03-21T18:31:02.5Z"),
        payment("p3", "2026-03-21T18:31:02.5Z"),
        payment("p4", "2026-03-21T18:40:00Z"),
        login("l2", "2026-03-21T18:25:15.906187Z", account="other"),
        payment("q1", "2026-03-21T18:25:15.906187Z", account="other"),
    ]
    online = OnlineFeatures(SqliteFeatureStore(tmp_path / "features.db"))
    served: dict[str, dict[str, float]] = {}

    def score(batch: list[dict[str, Any]]) -> None:
        # What the handler reads for a request: each payment's account as of its time
        assert all("is_fraud" not in p for p in batch)
        pairs = timed(batch)
        values = online.read([(str(e["account_id"]), t) for t, e in pairs])
        served.update({str(e["event_id"]): v for (_, e), v in zip(pairs, values, strict=True)})

    # When it is replayed as live traffic
    result = replay(history, score=score, online=online, batch=1)
    assert (result.payments, result.events) == (5, 7)
    # Then every payment read what the point-in-time computation gives it, exactly
    pairs = timed(history)
    payments = [(t, e) for t, e in pairs if e["type"] == "payment"]
    offline = pointintime.compute(
        [e for _, e in pairs],
        np.array([t for t, _ in pairs], dtype=np.int64),
        [str(e["account_id"]) for _, e in payments],
        np.array([t for t, _ in payments], dtype=np.int64),
    )
    for index, (_, event) in enumerate(payments):
        for aggregate in AGGREGATES:
            assert served[event["event_id"]][aggregate.name] == offline[aggregate.name][index], (
                event["event_id"],
                aggregate.name,
            )
    # (p2 does not count p1, nor p3 the login of its own microsecond; p4 counts all three)
    assert served["p2"]["txn_count_last_1h"] == 0
    assert served["p3"]["failed_logins_last_1h"] == 0
    assert served["p4"]["txn_count_last_1h"] == 3
    assert served["p4"]["failed_logins_last_1h"] == 1
    # And events at one account's same microsecond shared a round
    assert [sorted(e["event_id"] for e in r) for r in rounds(history)] == [
        ["l2", "p1", "p2", "q1"],
        ["l1", "p3"],
        ["p4"],
    ]
