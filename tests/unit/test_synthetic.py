"""Synthetic activity: deterministic, time-ordered, and with the fraud signal in the events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pytest

from sds.kernel.pointintime import compute
from training.synthetic import LABEL, generate_activity


@pytest.fixture(scope="module")
def activity() -> list[dict[str, Any]]:
    return generate_activity(8_000, seed=5)


def _micros(stamp: str) -> int:
    moment = datetime.fromisoformat(stamp)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def test_the_same_seed_gives_the_same_events_and_another_seed_others() -> None:
    assert generate_activity(300, seed=1) == generate_activity(300, seed=1)
    assert generate_activity(300, seed=1) != generate_activity(300, seed=2)


def test_histories_of_another_size_share_no_event_or_account_id() -> None:
    # Given two histories of one seed and different sizes (the runbook's and `--help`'s example)
    small, large = generate_activity(300, seed=1), generate_activity(400, seed=1)
    # Then no id means two things: both can go into one feature store or one training folder
    assert not {e["event_id"] for e in small} & {e["event_id"] for e in large}
    assert not {e["account_id"] for e in small} & {e["account_id"] for e in large}
    assert small[0]["event_id"].startswith(("p-1-300-", "l-1-300-"))


def test_events_are_time_ordered_uniquely_identified_and_typed(
    activity: list[dict[str, Any]],
) -> None:
    stamps = [_micros(e["occurred_at"]) for e in activity]
    assert stamps == sorted(stamps)
    assert len({e["event_id"] for e in activity}) == len(activity)
    kinds = {e["type"] for e in activity}
    assert kinds == {"payment", "login"}
    payments = [e for e in activity if e["type"] == "payment"]
    assert len(payments) == 8_000
    assert {e["outcome"] for e in activity if e["type"] == "login"} == {"success", "failure"}
    # No aggregate is written into the data: the system computes them
    assert not any("num_failed_logins_last_24_hours" in e for e in payments)


def test_a_few_percent_of_payments_are_fraud(activity: list[dict[str, Any]]) -> None:
    labels = [e[LABEL] for e in activity if e["type"] == "payment"]
    assert 0.02 <= sum(labels) / len(labels) <= 0.04


def test_fraud_shows_in_the_account_history_before_the_payment(
    activity: list[dict[str, Any]],
) -> None:
    # Given each payment's aggregates as of just before it
    times = np.array([_micros(e["occurred_at"]) for e in activity], dtype=np.int64)
    payments = [i for i, e in enumerate(activity) if e["type"] == "payment"]
    values = compute(
        activity, times, [activity[i]["account_id"] for i in payments], times[payments]
    )
    fraud = np.array([activity[i][LABEL] for i in payments])
    # Then failed-login bursts precede fraud far more often than legitimate payments
    burst = values["failed_logins_last_1h"] >= 2
    assert burst[fraud].mean() > 0.5 > 10 * burst[~fraud].mean()
