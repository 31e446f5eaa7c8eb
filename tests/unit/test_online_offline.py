"""Online = offline under the delivery a queue really makes: the store's aggregates, read when a
payment is scored, equal the point-in-time computation of training for every payment.

`test_aggregates` proves the fold and the point-in-time computation against the window rule on
histories delivered in time order, folded at their own time. Here the history goes through
`OnlineFeatures` over the SQLite store as the event path delivers it: out of order within an
account, each event folded at the updater's clock, which runs up to `LATENESS` ahead of the
payment being scored (a queue a week behind included), some events delivered again, times sent
with other UTC offsets, ids in any script. The one condition is the guarantee's own
(docs/decisions.md 25): when a payment is scored, every earlier event of its account has been
delivered, and none at or after it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sds.kernel import pointintime
from sds.kernel.aggregates import AGGREGATES, DAY, LATENESS, MINUTE, SECOND
from sds.kernel.events import timed
from sds.kernel.featurestore.sqlite import SqliteFeatureStore
from sds.kernel.online import OnlineFeatures

T0 = 1_767_225_600 * SECOND  # 2026-01-01T00:00:00Z, a day boundary
ACCOUNTS = ("a", "b", "ü-ß", "账户")
OFFSETS = (0, 0, -5 * 60, 5 * 60 + 30, 14 * 60)  # minutes east of UTC
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def occurred_at(micros: int, offset_minutes: int) -> str:
    """The moment as a producer in another time zone writes it (Z for UTC, else its offset)."""
    zone = timezone(timedelta(minutes=offset_minutes))
    moment = (_EPOCH + timedelta(microseconds=micros)).astimezone(zone)
    text = moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def event(kind: str, event_id: str, account: str, at: int, offset: int, n: int) -> dict[str, Any]:
    common = {"event_id": event_id, "account_id": account, "occurred_at": occurred_at(at, offset)}
    if kind == "login":
        return {"type": "login", **common, "outcome": ("failure", "success")[n % 2]}
    return {
        "type": "payment",
        **common,
        "amount": (0.01, 0.1, 9.99, 120.5, 3000)[n % 5],
        "currency": ("USD", "EUR", "JPY")[n % 3],
        "merchant_category": "grocery",
        "country": ("US", "DE", "BR")[n % 3],
        "card_country": "US",
        "hour_of_day": 12,
        "account_age_days": 100,
        "is_new_device": False,
    }


# One account's history as drawn: (minute, kind, n, offset index, delivery lateness 0..1,
# delivered again). Times land on whole minutes (bucket edges) of 10 days.
_drawn_events = st.lists(
    st.tuples(
        st.integers(0, 10 * DAY // MINUTE),
        st.sampled_from(("login", "payment")),
        st.integers(0, 29),
        st.integers(0, len(OFFSETS) - 1),
        st.one_of(st.just(1.0), st.just(0.0), st.floats(0, 1)),
        st.booleans(),
    ),
    min_size=1,
    max_size=25,
)
_histories = st.dictionaries(st.sampled_from(ACCOUNTS), _drawn_events, min_size=1, max_size=3)
Drawn = Mapping[str, list[tuple[int, str, int, int, float, bool]]]


def schedule(
    drawn: Drawn,
) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[str, Any]]]:
    """The history (time, event) and what happens to it, in order: ("deliver", (clock, event))
    and ("score", event). Between two payments of an account, the events in between arrive in
    reverse order of lateness (out of order), each folded at a clock up to LATENESS past the
    next payment's time; the next payment is then scored."""
    history: list[tuple[int, dict[str, Any]]] = []
    steps: list[tuple[str, Any]] = []
    for account, rows in drawn.items():
        # Distinct times within the account (the guarantee cannot order two at one microsecond)
        rows = sorted(rows, key=lambda row: row[0])
        mine = []
        for index, (minute, kind, n, offset, lateness, again) in enumerate(rows):
            at = T0 + minute * MINUTE + index
            made = event(kind, f"{account}-{index}", account, at, OFFSETS[offset], n)
            mine.append((at, made, lateness, again))
            history.append((at, made))
        pending: list[tuple[int, dict[str, Any], float, bool]] = []
        for at, made, lateness, again in mine:
            if made["type"] == "payment":
                deadline = at + LATENESS  # the updater's clock may be this far past the payment
                arrivals = [
                    (earlier + int(late * (deadline - earlier)), e, again_)
                    for earlier, e, late, again_ in pending
                ]
                for clock, e, again_ in sorted(arrivals, key=lambda a: -a[0]):
                    steps.append(("deliver", (clock, e)))
                    if again_:
                        steps.append(("deliver", (deadline, dict(e))))  # redelivered
                pending = []
                steps.append(("score", made))
            pending.append((at, made, lateness, again))
    return history, steps


@settings(max_examples=120, deadline=None)
@given(_histories)
@example(  # a payment delivered a week late, folded 45 minutes after the next one happened
    {"a": [(10, "payment", 1, 0, 1.0, False), (11_490, "payment", 2, 0, 0.0, False)]}
)
def test_online_aggregates_equal_point_in_time_under_real_delivery(drawn: Drawn) -> None:
    history, steps = schedule(drawn)
    # Given the history delivered as scheduled into the store, each payment read when scored
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteFeatureStore(Path(folder) / "features.db")
        online = OnlineFeatures(store)
        served: list[tuple[str, int, dict[str, float]]] = []
        for what, payload in steps:
            if what == "deliver":
                clock, delivered = payload
                result = online.apply(timed([delivered]), now=clock)
                assert not result.failed and not result.conflicts
            else:
                ((at, _),) = timed([payload])
                (values,) = online.read([(payload["account_id"], at)])
                served.append((payload["event_id"], at, values))
        store.close()
    # When training computes the same payments point in time, from the history as written
    events = [e for _, e in history]
    by_id = {e["event_id"]: e for e in events}
    offline = pointintime.compute(
        events,
        np.array([at for at, _ in timed(events)], dtype=np.int64),
        [by_id[event_id]["account_id"] for event_id, _, _ in served],
        np.array([at for _, at, _ in served], dtype=np.int64),
    )
    # Then every payment's every aggregate is the same, exactly
    for index, (event_id, _, values) in enumerate(served):
        for aggregate in AGGREGATES:
            assert values[aggregate.name] == offline[aggregate.name][index], (
                event_id,
                aggregate.name,
            )
