"""The features: each defined once over columns, identical in batch and per event and equal to their
formulas, with a published schema that validation enforces and that names every problem in an
event; the batch validation accepts exactly the batches whose every event validates."""

from __future__ import annotations

import copy
import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sds.kernel.features as features_module
from sds.kernel import aggregates, pointintime
from sds.kernel.features import (
    COMPUTED_REASON,
    CURRENCIES,
    FEATURE_NAMES,
    FIELD_NAMES,
    FIELDS,
    MERCHANT_CATEGORIES,
    N_FEATURES,
    NOT_UNICODE,
    USD_PER_UNIT,
    BatchDecoder,
    Columns,
    feature_schema,
    featurize,
    featurize_batch,
    featurize_columns,
    featurize_row,
    format_time,
    parse_time,
    parse_times,
    validate_event,
)
from training.synthetic import LABEL, generate_activity

AGGREGATES = aggregates.NAMES
TIME_HINT = features_module.TIME_FORMAT_HINT
TIME_REASON = f"must be {TIME_HINT}"


@pytest.fixture(scope="module")
def activity() -> list[dict[str, Any]]:
    return generate_activity(3000, seed=11)


@pytest.fixture(scope="module")
def history(activity: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The payments of a generated history, as the API receives them (no label)."""
    return [
        {k: v for k, v in e.items() if k not in ("type", LABEL)}
        for e in activity
        if e["type"] == "payment"
    ]


@pytest.fixture(scope="module")
def computed(
    activity: list[dict[str, Any]], history: list[dict[str, Any]]
) -> dict[str, list[float]]:
    """Each payment's account aggregates as of just before it (what training computes)."""
    times = np.array([parse_time(e["occurred_at"]) for e in activity], dtype=np.int64)
    at = np.array([parse_time(e["occurred_at"]) for e in history], dtype=np.int64)
    values = pointintime.compute(activity, times, [e["account_id"] for e in history], at)
    return {name: column.tolist() for name, column in values.items()}


def row(computed: dict[str, list[float]], index: int) -> dict[str, float]:
    return {name: computed[name][index] for name in AGGREGATES}


ZERO = {name: 0.0 for name in AGGREGATES}
SOME = {name: float(i + 1) for i, name in enumerate(AGGREGATES)}


def zeros(events: list[Any]) -> dict[str, list[float]]:
    return {name: [0.0] * len(events) for name in AGGREGATES}


def valid_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "evt-1",
        "account_id": "acct-1",
        "occurred_at": "2026-03-01T12:00:00.250Z",
        "amount": 42.5,
        "currency": "EUR",
        "merchant_category": "electronics",
        "country": "DE",
        "card_country": "US",
        "hour_of_day": 3,
        "account_age_days": 12,
        "is_new_device": True,
    }
    event.update(overrides)
    return event


TIMES = [
    "2026-03-01T12:00:00Z",
    "2026-03-01T12:00:00.5+02:00",
    "2000-01-01T00:00:00Z",
    "2099-12-31T23:59:59.999999-11:30",
]
events_strategy = st.fixed_dictionaries(
    {
        "event_id": st.text(min_size=1, max_size=12),
        "account_id": st.text(min_size=1, max_size=12),
        "occurred_at": st.sampled_from(TIMES),
        "amount": st.floats(0, 1e9, allow_nan=False) | st.integers(0, 10**9),
        "currency": st.sampled_from(CURRENCIES),
        "merchant_category": st.sampled_from(MERCHANT_CATEGORIES),
        "country": st.from_regex(r"\A[A-Z]{2}\Z"),
        "card_country": st.from_regex(r"\A[A-Z]{2}\Z"),
        "hour_of_day": st.integers(0, 23),
        "account_age_days": st.integers(0, 36_500),
        "is_new_device": st.booleans(),
    }
)


# Batch == per event == the formulas -------------------------------------------------------------


def formulas(event: dict[str, Any], computed: dict[str, float]) -> list[float]:
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
        *(1.0 if event["merchant_category"] == c else 0.0 for c in MERCHANT_CATEGORIES),
        *(float(computed[name]) for name in AGGREGATES),
    ]


def as_float32(vectors: list[list[float]]) -> list[list[float]]:
    return np.asarray(vectors, dtype=np.float32).tolist()  # type: ignore[no-any-return]


def test_given_generated_history_when_featurized_in_batch_then_each_row_equals_the_per_event_vector(
    history: list[dict[str, Any]], computed: dict[str, list[float]]
) -> None:
    batch = featurize_batch(history, computed)
    per_event = [featurize(event, row(computed, i)) for i, event in enumerate(history)]

    assert batch.dtype == np.float32
    assert batch.shape == (len(history), N_FEATURES)
    assert batch.flags.c_contiguous  # what ONNX Runtime reads without a copy
    # exact: no tolerance, it is the same definition (as float32, what the model reads)
    assert batch.tolist() == as_float32(per_event)
    assert per_event == [formulas(e, row(computed, i)) for i, e in enumerate(history)]


def test_given_generated_history_then_every_event_is_valid_and_every_vector_has_the_published_width(
    history: list[dict[str, Any]], computed: dict[str, list[float]]
) -> None:
    for index, event in enumerate(history):
        assert validate_event(event) == []
        vector = featurize(event, row(computed, index))
        assert len(vector) == N_FEATURES
        assert all(isinstance(x, float) and math.isfinite(x) for x in vector)


@settings(max_examples=200, deadline=None)
@given(events=st.lists(events_strategy, min_size=1, max_size=20))
def test_given_any_valid_events_then_batch_features_equal_per_event_features_and_the_formulas(
    events: list[dict[str, Any]],
) -> None:
    per_event = [featurize(e, SOME) for e in events]

    assert per_event == [formulas(e, SOME) for e in events]
    some = {name: [SOME[name]] * len(events) for name in AGGREGATES}
    assert featurize_batch(events, some).tolist() == as_float32(per_event)
    decoded = DECODER(body_of(events))
    assert decoded is not None
    assert featurize_columns(decoded[0].with_inputs(some)).tolist() == as_float32(per_event)
    # and each decoded payment's row, as a one-payment request scores it, is its matrix row
    computed = [SOME[name] for name in AGGREGATES]
    rows = [featurize_row(DECODER.fields(payment), computed) for payment in decoded[1]]
    assert np.array(rows, dtype=np.float32).tolist() == as_float32(per_event)


def _both_ways(columns: Columns) -> tuple[Any, Any]:
    """The batch's matrix assembled in blocks, and written row by row."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(features_module, "_BLOCKS_FROM", 0)
        in_blocks = featurize_columns(columns)
        patch.setattr(features_module, "_BLOCKS_FROM", columns.size + 1)
        return in_blocks, featurize_columns(columns)


@settings(max_examples=150, deadline=None)
@given(events=st.lists(events_strategy, min_size=0, max_size=30))
def test_a_batch_assembled_in_blocks_is_the_matrix_written_row_by_row(
    events: list[dict[str, Any]],
) -> None:
    # Given any batch, smaller or larger than the size from which one-hot blocks are used
    columns = Columns.of(events).with_inputs(
        {name: [SOME[name]] * len(events) for name in AGGREGATES}
    )
    # When the matrix is assembled both ways
    in_blocks, row_by_row = _both_ways(columns)
    # Then it is the same float32 matrix, C-contiguous (what ONNX Runtime reads without a copy)
    assert in_blocks.dtype == row_by_row.dtype == np.float32
    assert in_blocks.shape == row_by_row.shape == (len(events), N_FEATURES)
    assert in_blocks.flags.c_contiguous
    assert np.array_equal(in_blocks, row_by_row)
    assert in_blocks.tolist() == as_float32([featurize(e, SOME) for e in events])


def test_a_batch_in_blocks_reads_every_kind_of_number_as_the_rows_do() -> None:
    # Given a batch whose aggregate columns hold every kind of number an input may be: ints
    # (one beyond a double's exact integers, one beyond a float32's), booleans, doubles that
    # round to a float32's subnormal or to its zero, keeping the sign
    values = [2**53 + 1, True, 1e-310, 3e-39, -0.0, 7, 1 / 3, 16_777_217, False, -2.5e-45]
    events = [valid_event(amount=float(i)) for i in range(len(values))]
    columns = Columns.of(events).with_inputs(
        {name: values[k:] + values[:k] for k, name in enumerate(AGGREGATES)}
    )
    # When the matrix is assembled both ways
    in_blocks, row_by_row = _both_ways(columns)
    # Then both hold the same float32 bits
    assert in_blocks.dtype == row_by_row.dtype == np.float32
    assert in_blocks.tobytes() == row_by_row.tobytes()
    assert np.signbit(in_blocks[in_blocks == 0]).any()


def test_given_history_longer_than_a_chunk_then_the_chunks_join_to_the_same_matrix(
    history: list[dict[str, Any]], computed: dict[str, list[float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = featurize_batch(history, computed)
    monkeypatch.setattr(features_module, "FEATURIZE_CHUNK", 7)

    chunked = featurize_batch(history, computed)

    assert chunked.dtype == np.float32
    assert np.array_equal(chunked, whole)


def test_given_no_events_then_the_matrix_is_empty_with_the_published_width() -> None:
    assert featurize_batch([], zeros([])).shape == (0, N_FEATURES)


def test_a_feature_reads_an_input_by_name_whatever_its_source() -> None:
    """The aggregates read once per request join the batch as columns; a column of the wrong
    length is refused, never silently misaligned."""
    events = [valid_event(), valid_event(amount=1.0)]
    columns = Columns.of(events)

    enriched = columns.with_inputs({**zeros(events), "txn_count_last_1h": (7, 9)})

    assert enriched["txn_count_last_1h"] == (7, 9)
    assert featurize_columns(enriched)[:, FEATURE_NAMES.index("txn_count_last_1h")].tolist() == [
        7.0,
        9.0,
    ]
    with pytest.raises(ValueError, match="has 1 values for 2 events"):
        columns.with_inputs({"txn_count_last_1h": (7,)})
    with pytest.raises(KeyError):  # an aggregate missing is an error, never a silent zero
        featurize_columns(columns)


def test_a_feature_is_one_expression_compiled_into_its_columns_and_its_term_of_a_row() -> None:
    # Given a feature declared as an expression over two inputs and the scope's functions
    usd = features_module._feature("usd", "log1p(amount * USD_PER_UNIT[currency])")
    events = [valid_event(amount=10.0, currency="EUR"), valid_event(amount=0.0, currency="JPY")]
    columns = Columns.of(events)
    expected = [math.log1p(10.0 * USD_PER_UNIT["EUR"]), 0.0]

    # Then it reads those inputs, and its columns and its rows give the expression's values
    assert usd.inputs == ("amount", "currency")
    assert [list(c) for c in usd.compute(columns)] == [expected]
    rows = features_module._compile_rows((usd, features_module._feature("hour", "hour_of_day")))
    assert rows(columns) == [(expected[0], 3), (0.0, 3)]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("log1p(amont)", "feature f: 'amont' is neither an input nor in scope"),
        ("amount +", "feature f: 'amount +' is not an expression"),
        ("columns", "feature f: 'columns' is neither an input nor in scope"),
    ],
)
def test_a_feature_naming_an_unknown_input_or_not_an_expression_is_refused_at_import(
    expression: str, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        features_module._feature("f", expression)


# Purity ---------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(event=events_strategy)
def test_given_an_event_when_featurized_twice_then_same_vector_and_the_input_is_not_mutated(
    event: dict[str, Any],
) -> None:
    before = copy.deepcopy(event)

    first = featurize(event, SOME)
    second = featurize(copy.deepcopy(event), SOME)

    assert first == second
    assert event == before
    assert validate_event(event) == []
    assert event == before


def test_given_a_known_event_then_the_vector_encodes_the_analyst_signals_by_name() -> None:
    vector = dict(zip(FEATURE_NAMES, featurize(valid_event(), SOME), strict=True))

    assert vector["amount_log1p"] == pytest.approx(math.log1p(42.5))
    assert vector["amount_usd_log1p"] == pytest.approx(math.log1p(42.5 * 1.08))
    assert vector["is_foreign"] == 1.0
    assert vector["is_night"] == 1.0
    assert vector["is_new_device"] == 1.0
    assert vector["merchant_category=electronics"] == 1.0
    assert sum(vector[f"merchant_category={c}"] for c in MERCHANT_CATEGORIES) == 1.0
    for name in AGGREGATES:
        assert vector[name] == SOME[name]
    domestic = featurize(valid_event(country="US"), ZERO)
    assert dict(zip(FEATURE_NAMES, domestic, strict=True))["is_foreign"] == 0.0


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
    # The aggregates are part of the schema a model records: their declarations and fingerprint
    assert schema["aggregates"]["fingerprint"] == aggregates.fingerprint()
    assert [d["name"] for d in schema["aggregates"]["definitions"]] == list(AGGREGATES)
    assert set(AGGREGATES) <= set(FEATURE_NAMES) and not set(AGGREGATES) & set(FIELD_NAMES)


_anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=4,
)
_near_valid_values = st.one_of(
    _anything,
    st.sampled_from([*CURRENCIES, *MERCHANT_CATEGORIES, "US", "A1", "1A", "us", "USA", "ÄB", ""]),
    st.sampled_from(
        [
            *TIMES,
            "2026-03-01T12:00:00",  # no zone
            "2026-03-01 12:00:00Z",
            "1999-12-31T23:59:59Z",
            "2100-01-01T00:00:00Z",
            "2026-03-01T12:00:00.1234567Z",
            "26-03-01T12:00:00Z",
        ]
    ),
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

    vector = featurize(event, SOME)

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
        txn_count_last_1h=3,
    )
    del event["account_id"]

    problems = {p.field: p.reason for p in validate_event(event, where="events[3]")}

    assert problems == {
        "events[3].account_id": "is required",
        "events[3].amount": "must be >= 0",
        "events[3].currency": "'XXX' is not one of " + ", ".join(CURRENCIES),
        "events[3].country": "must be a two-letter ISO 3166-1 code such as 'US'",
        "events[3].hour_of_day": "must be <= 23",
        "events[3].account_age_days": "must be an integer",
        "events[3].is_new_device": "must be true or false",
        "events[3].surprise": "is not a known field",
        "events[3].txn_count_last_1h": COMPUTED_REASON,
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
        ("account_age_days", False, "must be an integer"),
        ("amount", "12", "must be a number"),
        ("amount", float("nan"), "must be a finite number"),
        ("amount", float("inf"), "must be a finite number"),
        ("amount", float("-inf"), "must be a finite number"),
        ("amount", 10**400, "must be <= 1e+09"),
        ("amount", -(10**400), "must be >= 0"),
        ("amount", 10**12, "must be <= 1e+09"),
        ("account_age_days", 10**400, "must be <= 36500"),
        ("account_age_days", -(10**400), "must be >= 0"),
        ("account_age_days", 36_501, "must be <= 36500"),
        ("event_id", "", "must be 1 to 128 characters"),
        ("account_id", "x" * 129, "must be 1 to 128 characters"),
        ("account_id", 7, "must be a string"),
        # What the standard library's parser reads from the escape "\\ud800": no store takes it.
        ("event_id", "evt-\ud800", NOT_UNICODE),
        ("account_id", "\udc00", NOT_UNICODE),
        ("currency", "\ud800", "'\\ud800' is not one of " + ", ".join(CURRENCIES)),
        ("occurred_at", "2026-03-01T12:00:00", TIME_REASON),
        ("occurred_at", "yesterday", TIME_REASON),
        ("occurred_at", 1767225600, TIME_REASON),
        ("occurred_at", "1999-12-31T23:59:59Z", "must be in the years 2000 to 2099"),
        ("occurred_at", "2026-02-30T00:00:00Z", "must be a real date and time (" + TIME_HINT + ")"),
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
    record = {**valid_event(), "type": "payment", LABEL: False}

    assert [p.field for p in validate_event(record)] == ["event.type", f"event.{LABEL}"]
    assert validate_event(record, extra_fields=("type", LABEL)) == []


def test_times_are_exact_microseconds_since_the_epoch() -> None:
    assert parse_time("2026-01-01T00:00:00Z") == 1_767_225_600_000_000
    assert parse_time("2026-01-01T01:00:00.000001+01:00") == 1_767_225_600_000_001
    assert features_module.format_time(1_767_225_600_000_001) == "2026-01-01T00:00:00.000001Z"


@pytest.mark.parametrize("offset", ["+00:60", "-00:60", "+00:99", "+05:75"])
def test_an_offset_whose_minutes_are_not_00_to_59_is_refused(offset: str) -> None:
    # RFC 3339's minutes run 00 to 59; datetime.fromisoformat would read +00:99 as +01:39
    with pytest.raises(ValueError, match="must be an ISO 8601 time with a time zone"):
        parse_time(f"2026-11-30T12:00:00{offset}")
    assert parse_time("2026-11-30T12:00:00+05:59") == parse_time("2026-11-30T06:01:00Z")


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
        action = draw(st.sampled_from(["drop", "replace", "add", "type", "not_an_event"]))
        event = events[index]
        if action == "drop":
            event.pop(draw(st.sampled_from(sorted(event))))
        elif action == "replace":
            event[draw(st.sampled_from(FIELD_NAMES))] = draw(_plain_values)
        elif action == "add":
            event[draw(st.text(max_size=6))] = draw(_plain_values)
        elif action == "type":
            event["type"] = draw(st.text(max_size=4) | _plain_values)
        else:
            events[index] = draw(_plain_values)
    return events


MAX_EVENTS = 20
DECODER = BatchDecoder(max_events=MAX_EVENTS)
PAYMENTS = BatchDecoder(max_events=MAX_EVENTS, optional={"type": ("payment",)})


def body_of(events: Any) -> bytes:
    return json.dumps({"events": events}).encode()


@settings(max_examples=600, deadline=None)
@given(events=mixed_batches())
def test_given_mixed_batches_then_the_decoder_accepts_exactly_when_every_event_validates(
    events: list[Any],
) -> None:
    # Given a request of valid events, some of them broken (a payment may say its type)
    decoded = PAYMENTS(body_of(events))

    # Then it is read only if every event passes validate_event and says it is a payment, if
    # it says anything
    every_event_valid = all(
        validate_event(e, where=f"events[{i}]", extra_fields=("type",)) == []
        and e.get("type", "payment") == "payment"
        for i, e in enumerate(events)
    )
    assert (decoded is not None) == every_event_valid, events
    if decoded is not None:
        # And its columns are the reference's, value for value and type for type
        columns, payments = decoded
        reference = Columns.of(events)
        assert columns.size == len(events)
        for name in (*FIELD_NAMES, features_module.TIME_US):
            assert list(map(repr, columns[name])) == list(map(repr, reference[name])), name
        # And the events, as JSON objects, are the ones sent
        assert PAYMENTS.as_dicts(payments) == events
        per_event = as_float32([featurize(e, ZERO) for e in events])
        assert featurize_columns(columns.with_inputs(zeros(events))).tolist() == per_event


def _dumped(event: dict[str, Any]) -> str:
    return json.dumps(event)[1:-1]


@pytest.mark.parametrize(
    "body",
    [
        body_of([valid_event(), {**valid_event(), "amount": float("nan")}]),
        body_of([valid_event(amount=float("inf"))]),
        body_of([valid_event(amount=10**400)]),
        body_of([valid_event(amount=-1e-300)]),
        body_of([valid_event(amount=1_000_000_001)]),
        body_of([valid_event(hour_of_day=3.0)]),
        body_of([valid_event(hour_of_day=True)]),
        body_of([valid_event(is_new_device=1)]),
        body_of([valid_event(), [valid_event()]]),
        body_of([valid_event(surprise=1)]),
        body_of([valid_event(type="payment")]),  # not allowed unless optional
        body_of([valid_event(occurred_at="2026-02-30T00:00:00Z")]),
        body_of([valid_event(occurred_at="2026-03-01t12:00:00Z")]),
        body_of([valid_event(event_id="evt-\ud800")]),
        body_of([valid_event(), valid_event(), valid_event(account_id="acct-é\udfff")]),
        body_of([valid_event(event_id="")]),
        body_of([valid_event(event_id="😀" * 129)]),
        body_of([valid_event(country="us")]),
        body_of([valid_event(currency="usd")]),
        body_of([]),
        body_of([valid_event()] * (MAX_EVENTS + 1)),
        json.dumps({"events": [valid_event()], "more": 1}).encode(),
        json.dumps([valid_event()]).encode(),
        f'{{"events": [{{{_dumped(valid_event())}, "amount": -1}}]}}'.encode(),
        f'{{"events": [{{"amount": -1, {_dumped(valid_event())}}}]}}'.encode(),
        body_of([valid_event()]) + b" x",
        body_of([valid_event()]).replace(b"evt-1", b"evt-\xff"),
        body_of([valid_event()]),
    ],
    ids=[
        "NaN after a valid event",
        "infinity",
        "integer beyond float range",
        "a negative amount",
        "an amount above the maximum",
        "float hour",
        "boolean hour",
        "int for a boolean",
        "an event that is not an object",
        "unknown field",
        "optional field not declared",
        "a time that is no date",
        "a time in lower case",
        "a lone surrogate in an id",
        "a lone surrogate in an id of a batch",
        "an empty id",
        "an id of 129 characters",
        "a country in lower case",
        "a currency in lower case",
        "no events",
        "more events than the limit",
        "a key beside events",
        "a list, not an object",
        "a key sent twice, the last copy invalid",
        "a key sent twice, the first copy invalid",
        "trailing text",
        "bytes that are not UTF-8",
        "a valid body (control)",
    ],
)
def test_given_anything_unusual_then_the_decoder_declines_and_never_raises(body: bytes) -> None:
    decoded = DECODER(body)

    if body == body_of([valid_event()]):
        assert decoded is not None  # the control: the same decoder reads a valid body
    else:
        assert decoded is None


def test_a_key_sent_twice_is_read_as_the_standard_library_reads_it_the_last_copy() -> None:
    text = f'{{"events": [{{{_dumped(valid_event())}, "amount": 7}}]}}'

    decoded = DECODER(text.encode())

    assert decoded is not None and json.loads(text)["events"][0]["amount"] == 7
    assert list(decoded[0]["amount"]) == [7] and DECODER.as_dicts(decoded[1])[0]["amount"] == 7


def test_ids_are_counted_in_characters_as_validate_event_counts_them() -> None:
    # Given an id of 128 characters outside the Basic Multilingual Plane (4 bytes each in UTF-8)
    event = valid_event(event_id="😀" * 128)

    assert validate_event(event) == []
    assert DECODER(body_of([event])) is not None
    # And escaped as surrogate pairs, as json.dumps writes it
    assert DECODER(json.dumps({"events": [event]}, ensure_ascii=True).encode()) is not None


_time_texts = st.one_of(
    st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2110, 12, 31), timezones=st.timezones()
    ).map(lambda moment: moment.isoformat()),
    st.builds(
        lambda y, mo, d, h, mi, s, frac, zone: f"{y}-{mo}-{d}T{h}:{mi}:{s}{frac}{zone}",
        st.sampled_from(["2026", "1999", "2000", "2099", "2100", "٢٠٢٦", "20x6", "226"]),
        st.sampled_from(["01", "02", "12", "13", "00", "1"]),
        st.sampled_from(["01", "28", "29", "30", "31", "32"]),
        st.sampled_from(["00", "23", "24", "7"]),
        st.sampled_from(["00", "59", "60"]),
        st.sampled_from(["00", "59", "60", "61"]),
        st.sampled_from(["", ".1", ".123456", ".1234567", "."]),
        st.sampled_from(
            ["Z", "+01:00", "-23:59", "+24:00", "+00:60", "-00:99", "z", "", "+0100", "Z\n"]
        ),
    ),
    st.text(max_size=30),
)


@given(text=_time_texts)
@settings(max_examples=800, deadline=None)
def test_given_any_text_then_a_time_is_read_exactly_when_the_published_pattern_and_calendar_agree(
    text: str,
) -> None:
    # Given the published pattern (what the OpenAPI document promises) and the calendar as the
    # oracle, computed another way (timedelta floor division)
    pattern = feature_schema()["inputs"]["properties"]["occurred_at"]["pattern"]
    expected: int | None = None
    if re.fullmatch(pattern.strip("^$"), text, flags=re.ASCII):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is not None:
            expected = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)

    # When the scoring path reads it
    try:
        got: int | None = parse_time(text)
    except ValueError:
        got = None

    # Then it is accepted exactly when both accept it, with the same microsecond
    assert got == expected


def _outcome(call: Any) -> Any:
    try:
        return call()
    except ValueError as exc:
        return ("ValueError", str(exc))


@given(
    texts=st.lists(
        st.one_of(
            _time_texts,
            st.sampled_from(["2026-03-01T12:00:00Z", "2026-03-01T12:00:00.5+01:00"]),
            st.sampled_from([None, 17, b"2026-03-01T12:00:00Z"]),
        ),
        max_size=12,
    )
)
@settings(max_examples=800, deadline=None)
def test_a_column_of_times_is_read_as_each_time_is_read_alone(texts: list[Any]) -> None:
    # Given any column of texts, times or not, shorter or longer than the column path's minimum
    # When the column is read at once (the request's and the history's path)
    # Then it is what reading each time alone gives, and the first invalid one is named the same
    def each() -> list[int]:
        return [parse_time(text) for text in texts]

    assert _outcome(lambda: parse_times(texts)) == _outcome(each)


# What one character of a time may become: another digit, a separator, a non-ASCII digit, none, two
_NEAR_MISSES = ["0", "9", "2", "-", ":", "T", "Z", ".", "\n", "\u0662", "x", " ", "", "00"]


def _formatted_or_nearly(
    moment: datetime, at: int, replacement: str | None
) -> str:  # format_time's shape, one character replaced by another (None: left as it is)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return text if replacement is None else text[:at] + replacement + text[at + 1 :]


@given(
    texts=st.lists(
        st.builds(
            _formatted_or_nearly,
            st.datetimes(min_value=datetime(1995, 1, 1), max_value=datetime(2104, 12, 31)),
            st.integers(min_value=0, max_value=26),
            st.one_of(
                st.none(),
                st.none(),
                st.sampled_from(_NEAR_MISSES),
            ),
        ),
        min_size=4,
        max_size=12,
    )
)
@settings(max_examples=800, deadline=None)
def test_a_column_of_format_times_shape_is_read_as_each_time_is_read_alone(
    texts: list[str],
) -> None:
    # Given columns of times as sds writes them (the shape `_are_times` checks without the
    # regular expression), some with one character replaced, removed or doubled
    # When the column is read at once
    # Then it is what reading each time alone gives, and the first invalid one is named the same
    def each() -> list[int]:
        return [parse_time(text) for text in texts]

    assert _outcome(lambda: parse_times(texts)) == _outcome(each)


def test_every_character_of_format_times_shape_is_checked() -> None:
    # Given a column of format_time's shape, and its last time with each character replaced by
    # each of some near misses (another digit, a separator, a non-ASCII digit, none, two)
    valid = [
        "2026-03-01T12:00:00.000000Z",
        "2051-07-31T23:59:59.999999Z",
        "2000-01-01T00:00:00.000001Z",
    ]
    for at in range(27):
        for replacement in _NEAR_MISSES:
            texts = [
                *valid,
                _formatted_or_nearly(datetime(2026, 3, 29, 9, 58, 36, 167797), at, replacement),
            ]

            # Then the column reads as each time alone (a time's value, or the same error)
            def each() -> list[int]:
                return [parse_time(text) for text in texts]  # noqa: B023

            assert _outcome(lambda: parse_times(texts)) == _outcome(each), texts  # noqa: B023


def test_a_column_of_format_times_shape_is_checked_without_the_regular_expression(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the regular expression out of reach
    class Unreachable:
        def fullmatch(self, text: str) -> None:
            raise AssertionError("matched with the regular expression")

    monkeypatch.setattr(features_module, "_TIMES", Unreachable())
    texts = ["2000-01-01T00:00:00.000000Z", "2099-12-31T23:59:59.999999Z"] * 3
    # Then a column of format_time's shape is still read, exactly
    assert parse_times(texts) == [parse_time(text) for text in texts]
    assert parse_times(texts)[1] == 4_102_444_799_999_999
    # And a year outside 20xx is not taken for one of them
    with pytest.raises(AssertionError, match="regular expression"):
        parse_times([*texts, "2100-01-01T00:00:00.000000Z"])


def test_a_column_of_format_times_shape_is_read_without_a_python_call_per_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a column of format_time's shape, and what reading each time alone gives
    texts = [format_time(1_772_366_400_000_000 + i * 86_400_000_123) for i in range(40)]
    texts += ["2000-01-01T00:00:00.000000Z", "2099-12-31T23:59:59.999999Z"]
    expected = [parse_time(text) for text in texts]

    # When Python's datetime parser is out of reach
    class Unreachable:
        @staticmethod
        def fromisoformat(text: str) -> None:
            raise AssertionError("read with datetime.fromisoformat")

    monkeypatch.setattr(features_module, "datetime", Unreachable)
    # Then the column is still read, exactly (numpy's parser, in one pass)
    assert parse_times(texts) == expected
    assert features_module.times_of([{"occurred_at": t} for t in texts]).tolist() == expected


def test_every_day_of_the_years_in_format_times_shape_is_read_as_parse_time_reads_it() -> None:
    # Given every day from 2000 to 2099, each at another time of day, as one column
    day = timedelta(days=1)
    moments = []
    moment = datetime(2000, 1, 1, tzinfo=UTC)
    while moment.year < 2100:
        moments.append(
            moment + (len(moments) * 7_919_000_017 % 86_400_000_000) * timedelta(microseconds=1)
        )
        moment += day
    texts = [m.strftime("%Y-%m-%dT%H:%M:%S.%fZ") for m in moments]
    assert len(texts) == 36_525 and texts[-1].startswith("2099-12-31")
    # Then the column reads as each time alone
    assert parse_times(texts) == [parse_time(text) for text in texts]


def test_an_impossible_date_or_time_in_format_times_shape_is_named_as_parse_time_names_it() -> None:
    # Given a column of format_time's shape whose last time is a date or time the calendar has
    # or has not (months 00 to 13, days 00 to 32, in leap and other years; hours, minutes and
    # seconds past their last)
    valid = ["2026-03-01T12:00:00.000000Z"] * 4
    candidates = [
        f"{year}-{month:02d}-{day:02d}T12:00:00.000000Z"
        for year in (2000, 2001, 2004, 2023, 2024, 2096, 2099)
        for month in range(14)
        for day in range(33)
    ]
    candidates += [
        "2026-03-01T24:00:00.000000Z",
        "2026-03-01T23:60:00.000000Z",
        "2026-03-01T23:59:60.000000Z",
        "2026-03-01T99:99:99.999999Z",
        "2026-03-01T23:59:59.999999Z",
    ]
    refused = 0
    for text in candidates:
        column = [*valid, text]
        # Then it reads, or is refused with the same error, as parse_time gives for it alone
        assert _outcome(lambda: parse_times(column)) == _outcome(  # noqa: B023
            lambda: [parse_time(t) for t in column]  # noqa: B023
        ), text
        refused += isinstance(_outcome(lambda: parse_time(text)), tuple)  # noqa: B023
    # every impossible date (2000, 2004, 2024 and 2096 are leap years) and time
    assert refused == 7 * 14 * 33 - (4 * 366 + 3 * 365) + 4


def test_a_long_column_of_valid_times_takes_the_column_path_and_reads_them_exactly() -> None:
    texts = [f"2026-03-01T12:00:{s:02d}.{s:06d}+01:00" for s in range(60)] + [
        "2000-01-01T00:00:00Z",
        "2099-12-31T23:59:59.999999Z",
    ]
    expected = [parse_time(text) for text in texts]
    assert parse_times(texts) == expected
    assert features_module.times_of([{"occurred_at": t} for t in texts]).tolist() == expected
    # one time outside the years in a long column: named as parse_time names it
    with pytest.raises(ValueError, match="must be in the years 2000 to 2099"):
        parse_times([*texts, "2100-01-01T00:00:00Z"])
    # two times in one text (the column is matched joined with newlines): not a time
    with pytest.raises(ValueError, match="must be an ISO 8601 time"):
        parse_times([*texts, "2026-03-01T12:00:00Z\n2026-03-01T12:00:00Z"])
    with pytest.raises(ValueError, match="must be an ISO 8601 time"):
        parse_times([*texts, "2026-03-01T12:00:00Z\n"])


def test_a_column_longer_than_one_match_is_checked_in_every_part(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a column matched in parts of 7 times (4,096 unpatched)
    monkeypatch.setattr(features_module, "_TIMES_PER_MATCH", 7)
    texts = [f"2026-03-01T12:{m:02d}:00.5-02:00" for m in range(60)]
    # Then every part is read, and a bad time in the last part only is named
    assert parse_times(texts) == [parse_time(text) for text in texts]
    with pytest.raises(ValueError, match="must be in the years 2000 to 2099"):
        parse_times([*texts, "1999-12-31T23:59:59Z"])
    with pytest.raises(ValueError, match="must be a real date"):
        parse_times([*texts, "2026-02-30T00:00:00Z"])
