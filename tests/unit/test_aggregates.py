"""Account aggregates: the declarations, the window rule, and online = offline = the definition."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sds.kernel import aggregates as agg
from sds.kernel.aggregates import AGGREGATES, HOUR, MINUTE, Aggregate, evaluate, fold
from sds.kernel.pointintime import compute

T0 = 1_767_225_600 * agg.SECOND  # 2026-01-01T00:00:00Z
BURST = next(a for a in AGGREGATES if a.name == "failed_logins_last_1h")


def login(event_id: str, account: str, outcome: str = "failure") -> dict[str, Any]:
    return {"type": "login", "event_id": event_id, "account_id": account, "outcome": outcome}


def payment(
    event_id: str, account: str, amount: float = 10.0, country: str = "US"
) -> dict[str, Any]:
    return {
        "type": "payment",
        "event_id": event_id,
        "account_id": account,
        "amount": amount,
        "currency": "USD",
        "country": country,
    }


def by_definition(
    events: Sequence[tuple[int, Mapping[str, Any]]], entity: str, at: int, aggregate: Aggregate
) -> float:
    """The rule in words: events of the entity in [floor(t - window), t)."""
    start = (at - aggregate.window) - (at - aggregate.window) % aggregate.bucket
    inside = [
        e
        for t, e in events
        if start <= t < at and aggregate.matches(e) and e[aggregate.entity] == entity
    ]
    if aggregate.function == "count":
        return len(inside) / aggregate.scale
    values = [aggregate.contribution(e) for e in inside]
    if aggregate.function == "sum":
        return sum(values) / aggregate.scale  # type: ignore[arg-type]
    return len(set().union(*values)) / aggregate.scale  # type: ignore[arg-type]


def test_the_window_starts_on_a_bucket_boundary_and_ends_just_before_t() -> None:
    # Given failed logins at 10:00, 10:04:59 and 11:00 (buckets of 5 minutes, window 1 hour)
    events = [
        (T0 + 10 * HOUR, login("a", "acct")),
        (T0 + 10 * HOUR + 5 * MINUTE - 1, login("b", "acct")),
        (T0 + 11 * HOUR, login("c", "acct")),
    ]
    state = fold({}, events, now=T0 + 11 * HOUR).state
    # When read at 11:03: the window starts at floor(10:03) = 10:00, so both early logins count,
    # and the one at 11:00 counts too (before t)
    assert evaluate(state, T0 + 11 * HOUR + 3 * MINUTE)[BURST.name] == 3
    # At 11:05 the window starts at 10:05: the first two logins have left it
    assert evaluate(state, T0 + 11 * HOUR + 5 * MINUTE)[BURST.name] == 1
    # At exactly 11:00 the login at 11:00 does not count (strictly before t)
    assert evaluate(state, T0 + 11 * HOUR)[BURST.name] == 2


def test_only_matching_events_count_and_sums_are_exact_cents() -> None:
    # Given one account's successful login and two small payments (states are per account)
    events = [
        (T0, login("ok", "acct", outcome="success")),
        (T0 + 1, payment("p1", "acct", amount=0.1)),
        (T0 + 2, payment("p2", "acct", amount=0.2, country="DE")),
    ]
    result = fold({}, events, now=T0 + 2)
    values = evaluate(result.state, T0 + HOUR)
    # Then a successful login is read by no aggregate, and the payments count as declared
    assert result.ignored == ["ok"] and result.applied == ["p1", "p2"]
    assert values["num_failed_logins_last_24_hours"] == 0
    assert values["txn_count_last_1h"] == 2
    assert values["amount_usd_last_24h"] == 0.3  # 10 + 20 cents, exactly, not 0.30000000000000004
    assert values["distinct_countries_last_7d"] == 2


def test_fold_drops_events_past_the_longest_window_and_its_lateness_and_expires_buckets() -> None:
    now = T0 + 30 * agg.DAY
    horizon = now - agg.LONGEST_WINDOW - agg.LATENESS
    result = fold({}, [(horizon - 1, login("old", "acct"))], now=now)
    assert result.too_old == ["old"] and result.state == {}
    # A bucket is kept LATENESS after it leaves its window, then dropped at the next fold
    state = fold({}, [(T0, login("x", "acct"))], now=T0).state
    assert BURST.name in state
    later = fold(state, [], now=T0 + BURST.window + agg.LATENESS + BURST.bucket).state
    assert BURST.name not in later
    assert "num_failed_logins_last_24_hours" in later  # its 24-hour window still holds it


def test_a_payment_scored_behind_the_updaters_clock_sees_an_event_delivered_late() -> None:
    # Given a payment at 23:30 on day 8, whose 7-day window of countries starts at day 1's 00:00
    countries = next(a for a in AGGREGATES if a.name == "distinct_countries_last_7d")
    at = T0 + 7 * agg.DAY + 23 * HOUR + 30 * MINUTE
    assert countries.window_start(at) == T0
    # And a payment of day 1, 00:10, that the queue delivers a week late: the updater folds it
    # at 00:15 on day 9, 45 minutes after the payment above happened
    late = payment("late", "acct", country="DE")
    folded = fold({}, [(T0 + 10 * MINUTE, late)], now=at + 45 * MINUTE)
    # When the payment is scored then (less than LATENESS behind the updater's clock)
    online = evaluate(folded.state, at)[countries.name]
    offline = compute([late], np.array([T0 + 10 * MINUTE]), ["acct"], np.array([at]))
    # Then the late payment counts online as it does in history
    assert folded.too_old == []
    assert online == offline[countries.name][0] == 1


def test_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="number of buckets"):
        Aggregate("x", "", "login", "count", window=HOUR + 1, bucket=HOUR)
    with pytest.raises(ValueError, match="needs `of`"):
        Aggregate("x", "", "payment", "sum", window=HOUR, bucket=HOUR)
    with pytest.raises(ValueError, match="unknown value"):
        Aggregate("x", "", "payment", "sum", window=HOUR, bucket=HOUR, of="nope")


def test_the_fingerprint_changes_with_any_declaration() -> None:
    changed = (
        *AGGREGATES[:-1],
        Aggregate(**{**AGGREGATES[-1].__dict__, "window": AGGREGATES[-1].window * 2}),
    )
    assert agg.fingerprint(changed) != agg.fingerprint()
    assert agg.fingerprint() == agg.fingerprint(AGGREGATES)


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[int, dict[str, Any]]]:
    """A few accounts' logins and payments over two days, with clustered times."""
    count = draw(st.integers(1, 60))
    events = []
    for i in range(count):
        # Clustered on whole minutes (bucket edges), never two events at the same microsecond
        time = T0 + draw(st.integers(0, 2 * agg.DAY // MINUTE)) * MINUTE + i
        account = draw(st.sampled_from(["a", "b", "c"]))
        if draw(st.booleans()):
            outcome = draw(st.sampled_from(["failure", "success"]))
            events.append((time, login(f"e{i}", account, outcome)))
        else:
            amount = draw(st.sampled_from([0.01, 0.1, 9.99, 120.5, 3000.0]))
            country = draw(st.sampled_from(["US", "DE", "BR"]))
            events.append((time, payment(f"e{i}", account, amount, country)))
    # Arrival order is time order: nothing at or after t has been delivered when t is scored
    return sorted(events, key=lambda pair: pair[0])


@settings(max_examples=150, deadline=None)
@given(histories())
def test_online_fold_and_offline_point_in_time_both_equal_the_definition(
    events: list[tuple[int, dict[str, Any]]],
) -> None:
    # Given a history, each payment scored when it arrives (online: read, then fold it in)
    states: dict[str, agg.EntityState] = {}
    online: list[dict[str, float]] = []
    queries = []
    for time, event in events:
        account = event["account_id"]
        if event["type"] == "payment":
            online.append(evaluate(states.get(account, {}), time))
            queries.append((account, time))
        states[account] = fold(states.get(account, {}), [(time, event)], now=time).state
    # And the same payments computed offline, all at once
    offline = compute(
        [e for _, e in events],
        np.array([t for t, _ in events], dtype=np.int64),
        [a for a, _ in queries],
        np.array([t for _, t in queries], dtype=np.int64),
    )
    # Then both give the definition's value for every payment and aggregate, exactly
    for index, (account, time) in enumerate(queries):
        for aggregate in AGGREGATES:
            expected = by_definition(events, account, time, aggregate)
            assert online[index][aggregate.name] == expected, (aggregate.name, index)
            assert offline[aggregate.name][index] == expected, (aggregate.name, index)


_bucket_values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),  # beyond 64 bits: orjson refuses them
    st.frozensets(st.text(max_size=4), max_size=3),  # any text, lone surrogates included
)
_states = st.dictionaries(
    st.sampled_from(agg.NAMES),
    st.dictionaries(st.integers(min_value=0, max_value=2**62), _bucket_values, max_size=5),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(_states)
def test_a_stored_state_reads_back_as_the_standard_library_reads_it(
    state: dict[str, dict[int, agg.BucketValue]],
) -> None:
    # Given any state as a feature store keeps it (the text `encode_state` writes)
    text = agg.encode_state(state)
    # When the scoring path decodes it (msgspec, the standard library for what msgspec refuses)
    decoded = agg.decode_state(text)
    # Then it is the state that was written, exactly what the standard library's parser gives
    assert decoded == state
    assert decoded == agg.state_from_json(json.loads(text))
    assert agg.decode_state(text.encode()) == state


_json_scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
# Bucket starts as text that `int` reads otherwise than canonically, or not at all.
_odd_starts = st.text(alphabet="0123456789+-_ .e\u0663", max_size=6)
_state_like = st.dictionaries(
    st.one_of(st.sampled_from(agg.NAMES), st.text(max_size=3)),
    st.dictionaries(
        st.integers(-(2**65), 2**65).map(str),
        st.one_of(
            st.integers(min_value=-(2**70), max_value=2**70),
            st.lists(st.text(max_size=3), max_size=3),
        ),
        min_size=1,
        max_size=4,
    ),
    min_size=1,
    max_size=3,
)


@st.composite
def _near_states(draw: st.DrawFn) -> dict[str, dict[str, Any]]:
    """A document as `encode_state` writes one, with at most one odd start or value in it."""
    document: dict[str, dict[str, Any]] = draw(_state_like)
    buckets = draw(st.sampled_from(sorted(document)))
    odd = draw(st.sampled_from(["none", "start", "value"]))
    if odd == "start":
        document[buckets][draw(_odd_starts)] = draw(st.integers(0, 9))
    elif odd == "value":
        start = draw(st.sampled_from(sorted(document[buckets])))
        document[buckets][start] = draw(st.one_of(_json_scalars, st.lists(_json_scalars)))
    return document


_raw_documents = st.one_of(
    _near_states(),
    st.dictionaries(
        st.text(max_size=6),
        st.dictionaries(
            st.one_of(st.integers(-(2**65), 2**65).map(str), _odd_starts),
            st.one_of(_json_scalars, st.lists(_json_scalars, max_size=3)),
            max_size=4,
        ),
        max_size=3,
    ),
    st.lists(_json_scalars, max_size=2),
    _json_scalars,
)


@settings(max_examples=500, deadline=None)
@given(_raw_documents)
def test_any_stored_text_reads_as_the_standard_library_reads_it_or_fails_as_it_does(
    document: Any,
) -> None:
    # Given any JSON a store could hold, not only what `encode_state` writes
    text = json.dumps(document)
    try:
        expected: Any = agg.state_from_json(json.loads(text))
    except Exception as exc:
        expected = type(exc)
    # When the scoring path decodes it
    try:
        decoded: Any = agg.decode_state(text)
    except Exception as exc:
        decoded = type(exc)
    # Then it gets the standard library's state, or the same error
    assert decoded == expected


def _typed_states() -> st.SearchStrategy[dict[str, dict[int, agg.BucketValue]]]:
    """States as folding makes them: sets of strings for count_distinct, integers otherwise."""
    per_aggregate: dict[str, st.SearchStrategy[dict[int, agg.BucketValue]]] = {
        a.name: st.dictionaries(
            st.integers(min_value=T0 - 9 * agg.DAY, max_value=T0 + agg.DAY).map(a.bucket_of),
            st.frozensets(st.sampled_from(["US", "GB", "FR"]), min_size=1)
            if a.function == "count_distinct"
            else st.integers(min_value=-(10**12), max_value=10**12),
            max_size=40,
        )
        for a in AGGREGATES
    }
    return st.fixed_dictionaries({}, optional=per_aggregate)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(_typed_states(), st.integers(min_value=T0 - agg.DAY, max_value=T0 + agg.DAY)),
        max_size=20,
    )
)
def test_evaluating_many_queries_at_once_gives_each_querys_own_values(
    queries: list[tuple[dict[str, dict[int, agg.BucketValue]], int]],
) -> None:
    # Given states and times, as a request's payments query them
    # When the scoring path evaluates them together, as columns
    columns = agg.evaluate_columns(queries)
    # Then each payment's values are exactly what evaluating it alone gives, and what the rule
    # gives when read off the buckets directly
    assert list(columns) == list(agg.NAMES)
    for i, (state, at) in enumerate(queries):
        alone = evaluate(state, at)
        assert {name: columns[name][i] for name in agg.NAMES} == alone
        assert alone == {a.name: from_buckets(state, at, a) for a in AGGREGATES}
        # and the row a one-payment request evaluates holds the same values, in NAMES order
        assert agg.row_evaluator(AGGREGATES)(state, at) == tuple(alone.values())


def from_buckets(
    state: Mapping[str, Mapping[int, agg.BucketValue]], at: int, a: Aggregate
) -> float:
    """The rule on a state: the buckets that start in [floor(t - window), t), added up (their
    sets' union counted), divided by the scale."""
    inside = [v for start, v in state.get(a.name, {}).items() if a.window_start(at) <= start < at]
    if a.function == "count_distinct":
        return len(frozenset[str]().union(*inside)) / a.scale  # type: ignore[arg-type]
    return sum(inside) / a.scale  # type: ignore[arg-type]


def test_other_declarations_are_evaluated_by_their_own_windows_buckets_and_scales() -> None:
    # Given declarations of its own, as a project may add (a 10-minute window in 2-minute
    # buckets, a sum scaled by 1000, countries over 2 days), and a state with buckets inside
    # and outside each window
    declared = (
        Aggregate("logins_10m", "", "login", "count", window=10 * MINUTE, bucket=2 * MINUTE),
        Aggregate(
            "paid_k",
            "",
            "payment",
            "sum",
            of="amount_usd_cents",
            scale=1000,
            window=HOUR,
            bucket=HOUR,
        ),
        Aggregate(
            "countries_2d",
            "",
            "payment",
            "count_distinct",
            of="country",
            window=2 * agg.DAY,
            bucket=agg.DAY,
        ),
    )
    at = T0 + 3 * agg.DAY + 30 * MINUTE
    state: dict[str, dict[int, agg.BucketValue]] = {
        "logins_10m": {at - 12 * MINUTE: 5, at - 10 * MINUTE: 1, at - 2 * MINUTE: 2, at: 7},
        "paid_k": {at - 150 * MINUTE: 1_000, at - 90 * MINUTE: 500, at - 30 * MINUTE: 2_500},
        "countries_2d": {
            T0: frozenset({"US"}),
            T0 + agg.DAY: frozenset({"GB"}),
            T0 + 2 * agg.DAY: frozenset({"GB", "FR"}),
            T0 + 3 * agg.DAY: frozenset({"DE"}),
        },
    }
    # When they are evaluated for two payments, one of them of an account with no state
    columns = agg.evaluate_columns([(state, at), ({}, at)], aggregates=declared)
    # Then each counts its own window, from the bucket its start falls in (at - 10 minutes for
    # the logins, at - 90 minutes for the sum, T0 + 1 day for the countries), up to just before
    # the payment; and nothing where nothing counts
    assert columns == {"logins_10m": [3.0, 0.0], "paid_k": [3.0, 0.0], "countries_2d": [3.0, 0.0]}
    assert columns == {a.name: [from_buckets(state, at, a), 0.0] for a in declared}
    # And a row of them, in their declared order, holds the same values
    assert agg.row_evaluator(declared)(state, at) == (3.0, 3.0, 3.0)
    assert agg.row_evaluator(declared)({}, at) == (0.0, 0.0, 0.0)


def test_no_declarations_evaluate_to_no_columns() -> None:
    assert agg.evaluate_columns([({}, T0)], aggregates=()) == {}
    assert agg.row_evaluator(())({}, T0) == ()


def test_without_msgspec_a_state_reads_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given states as the updater writes them, one with a sum beyond 64 bits and a lone surrogate
    states: list[agg.EntityState] = [
        {"txn_count_last_1h": {T0: 3, T0 + 5 * MINUTE: 1}},
        {
            "amount_usd_last_24h": {T0: 2**70},
            "distinct_countries_last_7d": {T0: frozenset({"\ud800", "US"})},
        },
    ]
    texts = [agg.encode_state(state) for state in states]
    # When a bundle without orjson reads them (the feature updater's: the kernel and numpy only)
    monkeypatch.setattr(agg, "_typed", (None, ValueError))
    # Then each reads back as written
    assert [agg.decode_state(text) for text in texts] == states
