"""The features: each defined once over columns, identical in batch and per event and equal to their
formulas, with a published schema that validation enforces and that names every problem in an
event; the batch validation accepts exactly the batches whose every event validates."""

from __future__ import annotations

import copy
import math
import re
from typing import Any

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sds.kernel.features as features_module
from sds.kernel.features import (
    ABSENT,
    CURRENCIES,
    FEATURE_NAMES,
    FIELD_NAMES,
    FIELDS,
    MERCHANT_CATEGORIES,
    N_FEATURES,
    USD_PER_UNIT,
    Columns,
    event_columns,
    feature_schema,
    featurize,
    featurize_batch,
    featurize_columns,
    validate_event,
)
from training.data import LABEL, RECORD_FIELDS, generate_events


def _event_fields(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in RECORD_FIELDS}


@pytest.fixture(scope="module")
def history() -> list[dict[str, Any]]:
    return [_event_fields(r) for r in generate_events(3000, seed=11)]


def valid_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "amount": 42.5,
        "currency": "EUR",
        "merchant_category": "electronics",
        "country": "DE",
        "card_country": "US",
        "hour_of_day": 3,
        "account_age_days": 12,
        "is_new_device": True,
        "num_failed_logins_last_24_hours": 2,
        "txn_count_last_1h": 5,
    }
    event.update(overrides)
    return event


events_strategy = st.fixed_dictionaries(
    {
        "amount": st.floats(0, 1e9, allow_nan=False) | st.integers(0, 10**9),
        "currency": st.sampled_from(CURRENCIES),
        "merchant_category": st.sampled_from(MERCHANT_CATEGORIES),
        "country": st.from_regex(r"\A[A-Z]{2}\Z"),
        "card_country": st.from_regex(r"\A[A-Z]{2}\Z"),
        "hour_of_day": st.integers(0, 23),
        "account_age_days": st.integers(0, 36_500),
        "is_new_device": st.booleans(),
        "num_failed_logins_last_24_hours": st.integers(0, 1_000_000),
        "txn_count_last_1h": st.integers(0, 1_000_000),
    }
)


# Batch == per event == the formulas -------------------------------------------------------------


def formulas(event: dict[str, Any]) -> list[float]:
    """What each feature means, written out per event: the reference the definitions must equal."""
    amount, hour = float(event["amount"]), int(event["hour_of_day"])
    return [
        math.log1p(amount),
        math.log1p(amount * USD_PER_UNIT[event["currency"]]),
        1.0 if event["country"] != event["card_country"] else 0.0,
        float(hour),
        1.0 if hour < 6 else 0.0,
        math.log1p(int(event["account_age_days"])),
        1.0 if event["is_new_device"] else 0.0,
        float(event["num_failed_logins_last_24_hours"]),
        float(event["txn_count_last_1h"]),
        *(1.0 if event["merchant_category"] == c else 0.0 for c in MERCHANT_CATEGORIES),
    ]


def as_float32(vectors: list[list[float]]) -> list[list[float]]:
    return np.asarray(vectors, dtype=np.float32).tolist()  # type: ignore[no-any-return]


def test_given_generated_history_when_featurized_in_batch_then_each_row_equals_the_per_event_vector(
    history: list[dict[str, Any]],
) -> None:
    batch = featurize_batch(history)

    assert batch.dtype == np.float32
    assert batch.shape == (len(history), N_FEATURES)
    assert batch.flags.c_contiguous  # what ONNX Runtime reads without a copy
    # exact: no tolerance, it is the same definition (as float32, what the model reads)
    assert batch.tolist() == as_float32([featurize(event) for event in history])
    assert [featurize(event) for event in history] == [formulas(event) for event in history]


def test_given_generated_history_then_every_event_is_valid_and_every_vector_has_the_published_width(
    history: list[dict[str, Any]],
) -> None:
    for event in history:
        assert validate_event(event) == []
        vector = featurize(event)
        assert len(vector) == N_FEATURES
        assert all(isinstance(x, float) and math.isfinite(x) for x in vector)


@settings(max_examples=200, deadline=None)
@given(events=st.lists(events_strategy, min_size=1, max_size=20))
def test_given_any_valid_events_then_batch_features_equal_per_event_features_and_the_formulas(
    events: list[dict[str, Any]],
) -> None:
    per_event = [featurize(e) for e in events]

    assert per_event == [formulas(e) for e in events]
    assert featurize_batch(events).tolist() == as_float32(per_event)
    columns = event_columns(events)
    assert columns is not None
    assert featurize_columns(columns).tolist() == as_float32(per_event)


def test_given_history_longer_than_a_chunk_then_the_chunks_join_to_the_same_matrix(
    history: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = featurize_batch(history)
    monkeypatch.setattr(features_module, "FEATURIZE_CHUNK", 7)

    chunked = featurize_batch(history)

    assert chunked.dtype == np.float32
    assert np.array_equal(chunked, whole)


def test_given_no_events_then_the_matrix_is_empty_with_the_published_width() -> None:
    assert featurize_batch([]).shape == (0, N_FEATURES)


def test_a_feature_reads_an_input_by_name_whatever_its_source() -> None:
    """Inputs fed from elsewhere (for example aggregates read once per request) join the batch
    as columns; a column of the wrong length is refused, never silently misaligned."""
    columns = Columns.of([valid_event(), valid_event(amount=1.0)])

    enriched = columns.with_inputs({"txn_count_last_1h": (7, 9)})

    assert enriched["txn_count_last_1h"] == (7, 9)
    assert featurize_columns(enriched)[:, FEATURE_NAMES.index("txn_count_last_1h")].tolist() == [
        7.0,
        9.0,
    ]
    with pytest.raises(ValueError, match="has 1 values for 2 events"):
        columns.with_inputs({"txn_count_last_1h": (7,)})


# Purity ---------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(event=events_strategy)
def test_given_an_event_when_featurized_twice_then_same_vector_and_the_input_is_not_mutated(
    event: dict[str, Any],
) -> None:
    before = copy.deepcopy(event)

    first = featurize(event)
    second = featurize(copy.deepcopy(event))

    assert first == second
    assert event == before
    assert validate_event(event) == []
    assert event == before


def test_given_a_known_event_then_the_vector_encodes_the_analyst_signals_by_name() -> None:
    vector = dict(zip(FEATURE_NAMES, featurize(valid_event()), strict=True))

    assert vector["amount_log1p"] == pytest.approx(math.log1p(42.5))
    assert vector["amount_usd_log1p"] == pytest.approx(math.log1p(42.5 * 1.08))
    assert vector["is_foreign"] == 1.0
    assert vector["is_night"] == 1.0
    assert vector["is_new_device"] == 1.0
    assert vector["merchant_category=electronics"] == 1.0
    assert sum(vector[f"merchant_category={c}"] for c in MERCHANT_CATEGORIES) == 1.0
    assert (
        dict(zip(FEATURE_NAMES, featurize(valid_event(country="US")), strict=True))["is_foreign"]
        == 0.0
    )


# Published schema -----------------------------------------------------------------------------


def test_the_published_schema_lists_exactly_the_input_fields_and_feature_order() -> None:
    schema = feature_schema()

    assert schema["inputs"]["required"] == list(FIELD_NAMES)
    assert list(schema["inputs"]["properties"]) == list(FIELD_NAMES)
    assert schema["inputs"]["additionalProperties"] is False
    assert schema["features"] == list(FEATURE_NAMES)
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == N_FEATURES
    assert schema["inputs"]["properties"]["currency"]["enum"] == list(CURRENCIES)
    assert schema["inputs"]["properties"]["merchant_category"]["enum"] == list(MERCHANT_CATEGORIES)
    assert schema["inputs"]["properties"]["hour_of_day"] == {
        "description": "Local hour of the transaction",
        "type": "integer",
        "minimum": 0,
        "maximum": 23,
    }
    for spec in FIELDS:
        assert schema["inputs"]["properties"][spec.name]["description"]
    jsonschema.Draft202012Validator.check_schema(schema["inputs"])


_anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=4,
)
_near_valid_values = st.one_of(
    _anything,
    st.sampled_from([*CURRENCIES, *MERCHANT_CATEGORIES, "US", "A1", "1A", "us", "USA", "ÄB", ""]),
    st.text(alphabet="AZaz09 _-Ä", min_size=0, max_size=3),
    st.integers(-3, 40),
    st.floats(-1, 1e10),
    st.sampled_from([10**9, 10**9 + 1, 1e9, 1e9 + 1e-3, 36_500, 36_501, 1_000_000, 1_000_001]),
)


@settings(max_examples=500, deadline=None)
@given(
    base=events_strategy,
    changes=st.dictionaries(st.sampled_from([*FIELD_NAMES, "extra"]), _near_valid_values),
    dropped=st.sets(st.sampled_from(FIELD_NAMES), max_size=2),
)
def test_given_any_event_then_validation_agrees_with_the_published_json_schema(
    base: dict[str, Any], changes: dict[str, Any], dropped: set[str]
) -> None:
    """A client validating against the published schema gets the same verdict as the API."""
    event = {**base, **changes}
    for name in dropped:
        event.pop(name, None)
    validator = jsonschema.Draft202012Validator(feature_schema()["inputs"])
    # JSON Schema treats 1.0 as an integer and has no notion of finiteness; the API is stricter
    # there on purpose, so compare only where both are defined.
    if any(
        isinstance(v, float) and (v.is_integer() or not math.isfinite(v)) for v in event.values()
    ):
        return

    schema_ok = validator.is_valid(event)
    problems = validate_event(event)

    assert schema_ok == (problems == []), (event, problems)


@settings(max_examples=300, deadline=None)
@given(
    base=events_strategy,
    changes=st.dictionaries(st.sampled_from(FIELD_NAMES), _near_valid_values),
)
def test_given_any_event_that_validates_then_featurize_returns_a_finite_vector_of_published_width(
    base: dict[str, Any], changes: dict[str, Any]
) -> None:
    """Validation is the only gate before featurize on the serving path: nothing it lets through
    may make featurize raise or produce a value ONNX Runtime cannot score."""
    event = {**base, **changes}
    if validate_event(event):
        return

    vector = featurize(event)

    assert len(vector) == N_FEATURES
    assert all(isinstance(x, float) and math.isfinite(x) for x in vector)


# Validation names every problem ---------------------------------------------------------------


def test_given_a_valid_event_then_there_are_no_problems() -> None:
    assert validate_event(valid_event()) == []


def test_given_an_event_with_many_problems_then_each_one_is_named_with_field_and_reason() -> None:
    event = valid_event(
        amount=-1,
        currency="XXX",
        country="usa",
        hour_of_day=24,
        is_new_device="yes",
        account_age_days=1.5,
        surprise=1,
    )
    del event["txn_count_last_1h"]

    problems = {p.field: p.reason for p in validate_event(event, where="events[3]")}

    assert problems == {
        "events[3].amount": "must be >= 0",
        "events[3].currency": "'XXX' is not one of " + ", ".join(CURRENCIES),
        "events[3].country": "must be a two-letter ISO 3166-1 code such as 'US'",
        "events[3].hour_of_day": "must be <= 23",
        "events[3].account_age_days": "must be an integer",
        "events[3].is_new_device": "must be true or false",
        "events[3].txn_count_last_1h": "is required",
        "events[3].surprise": "is not a known field",
    }


def test_given_an_empty_object_then_every_field_is_reported_missing_in_schema_order() -> None:
    problems = validate_event({})

    assert [p.field for p in problems] == [f"event.{name}" for name in FIELD_NAMES]
    assert {p.reason for p in problems} == {"is required"}


@pytest.mark.parametrize("value", [None, [], "amount", 3, True])
def test_given_something_that_is_not_an_object_then_one_problem_says_so(value: Any) -> None:
    assert [p.to_dict() for p in validate_event(value, where="events[0]")] == [
        {"field": "events[0]", "reason": "must be a JSON object"}
    ]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("amount", True, "must be a number"),
        ("amount", False, "must be a number"),
        ("hour_of_day", True, "must be an integer"),
        ("txn_count_last_1h", False, "must be an integer"),
        ("amount", "12", "must be a number"),
        ("amount", float("nan"), "must be a finite number"),
        ("amount", float("inf"), "must be a finite number"),
        ("amount", float("-inf"), "must be a finite number"),
        ("amount", 10**400, "must be at most 1e+09"),
        ("amount", 10**12, "must be <= 1e+09"),
        ("account_age_days", 10**400, "must be at most 36500"),
        ("num_failed_logins_last_24_hours", -(10**400), "must be at most 1e+06"),
        ("num_failed_logins_last_24_hours", 1_000_001, "must be <= 1e+06"),
        ("hour_of_day", 23.0, "must be an integer"),
        ("hour_of_day", -1, "must be >= 0"),
        ("is_new_device", 1, "must be true or false"),
        ("is_new_device", "true", "must be true or false"),
        ("merchant_category", 7, "must be a string"),
        ("card_country", "A1", "must be a two-letter ISO 3166-1 code such as 'US'"),
        ("card_country", "ÄB", "must be a two-letter ISO 3166-1 code such as 'US'"),
        ("country", "U", "must be a two-letter ISO 3166-1 code such as 'US'"),
    ],
)
def test_given_one_bad_value_then_exactly_that_field_is_named_with_its_reason(
    field: str, value: Any, reason: str
) -> None:
    problems = validate_event(valid_event(**{field: value}))

    assert [p.to_dict() for p in problems] == [{"field": f"event.{field}", "reason": reason}]


def test_given_a_huge_unknown_value_then_the_reason_is_shortened_not_echoed_in_full() -> None:
    [problem] = validate_event(valid_event(currency="X" * 10_000))

    assert len(problem.reason) < 200
    assert problem.reason.startswith("'" + "X" * 40 + "...'")


@pytest.mark.parametrize("country", ["US", "GB", "ZZ"])
def test_given_any_two_capital_letters_then_the_country_is_accepted(country: str) -> None:
    assert validate_event(valid_event(country=country, card_country=country)) == []


@given(value=st.text(min_size=0, max_size=3))
@settings(max_examples=300, deadline=None)
def test_given_any_string_then_a_country_is_accepted_exactly_when_the_published_pattern_matches(
    value: str,
) -> None:
    pattern = feature_schema()["inputs"]["properties"]["country"]["pattern"]
    accepted = validate_event(valid_event(country=value)) == []

    assert accepted == bool(re.fullmatch(pattern.strip("^$"), value, flags=re.ASCII))


def test_extra_fields_are_accepted_only_when_the_caller_allows_them() -> None:
    record = {**valid_event(), "event_id": "e1", LABEL: False}

    assert [p.field for p in validate_event(record)] == ["event.event_id", f"event.{LABEL}"]
    assert validate_event(record, extra_fields=("event_id", LABEL)) == []


# Batch validation: the columns of exactly the batches whose every event validates -------------

_plain_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 30),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1, 1e10),
    st.sampled_from([*CURRENCIES, *MERCHANT_CATEGORIES, "US", "us", "A1", "ÄB", "", "USD "]),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)


@st.composite
def mixed_batches(draw: st.DrawFn) -> list[Any]:
    """Valid events, some of them broken: a field dropped, replaced, added, or the event replaced."""
    events: list[Any] = [dict(e) for e in draw(st.lists(events_strategy, min_size=1, max_size=8))]
    for index in range(len(events)):
        if draw(st.integers(0, 3)):  # most events stay valid
            continue
        action = draw(st.sampled_from(["drop", "replace", "add", "event_id", "not_an_event"]))
        event = events[index]
        if action == "drop":
            event.pop(draw(st.sampled_from(sorted(event))))
        elif action == "replace":
            event[draw(st.sampled_from(FIELD_NAMES))] = draw(_plain_values)
        elif action == "add":
            event[draw(st.text(max_size=6))] = draw(_plain_values)
        elif action == "event_id":
            event["event_id"] = draw(st.text(max_size=4) | _plain_values)
        else:
            events[index] = draw(_plain_values)
    return events


@settings(max_examples=600, deadline=None)
@given(events=mixed_batches())
def test_given_mixed_batches_then_batch_validation_accepts_exactly_when_every_event_validates(
    events: list[Any],
) -> None:
    columns = event_columns(events, optional=("event_id",))
    every_event_valid = all(
        validate_event(e, where=f"events[{i}]", extra_fields=("event_id",)) == []
        for i, e in enumerate(events)
    )

    assert (columns is not None) == every_event_valid, events
    if columns is not None:
        assert columns.size == len(events)
        for name in FIELD_NAMES:
            assert list(columns[name]) == [e[name] for e in events]
        assert list(columns["event_id"]) == [e.get("event_id", ABSENT) for e in events]
        assert featurize_columns(columns).tolist() == as_float32([featurize(e) for e in events])


class Amount(float):
    """A float subclass: valid for `validate_event`, not a plain JSON value."""


@pytest.mark.parametrize(
    "events",
    [
        [valid_event(amount=Amount(3.0))],
        [valid_event(), {**valid_event(), "amount": float("nan")}],
        [valid_event(amount=float("inf"))],
        [valid_event(amount=10**400)],
        [valid_event(hour_of_day=3.0)],
        [valid_event(is_new_device=1)],
        [valid_event(), [valid_event()]],
        [valid_event(surprise=1)],
        [valid_event(event_id="e1")],  # not allowed unless optional
    ],
    ids=[
        "float subclass",
        "NaN after a valid event",
        "infinity",
        "integer beyond float range",
        "float hour",
        "int for a boolean",
        "an event that is not an object",
        "unknown field",
        "optional field not declared",
    ],
)
def test_given_anything_unusual_then_batch_validation_declines_and_never_raises(
    events: list[Any],
) -> None:
    assert event_columns(events) is None
