"""Property-based fuzzing of the inference API: nothing a client sends produces a 5xx, every error
is JSON with `error` and `message`, and every valid request is scored, one prediction per event.

A few hundred examples per property keep this under a few seconds on 2 cores; the 10,000-case
version runs in the slow suite. The app's clock is stopped at `CLOCK`, so that payments at the
tolerance ahead of it are valid and later ones are not, whatever the day the tests run.
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lambdas.inference.app import InferenceApp
from sds.kernel.features import (
    CURRENCIES,
    FIELD_NAMES,
    MERCHANT_CATEGORIES,
    format_time,
    parse_time,
    validate_event,
)
from sds.kernel.online import FUTURE_TOLERANCE, ahead_of_clock
from tests.support.trained_model import TrainedModel

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
finite_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)

CLOCK = parse_time("2026-06-01T00:00:00Z")
AT_THE_TOLERANCE = format_time(CLOCK + FUTURE_TOLERANCE)
# Times the app refuses: just past the tolerance, and a producer's clock years ahead.
AHEAD = [format_time(CLOCK + FUTURE_TOLERANCE + 1), "2031-07-04T00:00:00Z"]
NOT_AHEAD = functools.partial(ahead_of_clock, now=CLOCK)


@pytest.fixture(scope="module")
def served(trained: TrainedModel) -> InferenceApp:
    """The inference app serving the trained version, its clock stopped at `CLOCK`."""
    app = InferenceApp(
        trained.settings(), metrics=lambda values, dimensions: None, clock=lambda: CLOCK
    )
    assert app.model is not None, app.unavailable
    return app


VALID = {
    "event_id": "evt-1",
    "account_id": "acct-1",
    "occurred_at": "2026-03-01T12:00:00Z",
    "amount": 12.5,
    "currency": "EUR",
    "merchant_category": "grocery",
    "country": "DE",
    "card_country": "DE",
    "hour_of_day": 14,
    "account_age_days": 900,
    "is_new_device": False,
}
valid_events = st.fixed_dictionaries(
    {
        "event_id": st.text(min_size=1, max_size=128),
        "account_id": st.text(min_size=1, max_size=20),
        "occurred_at": st.sampled_from(
            ["2026-03-01T12:00:00Z", "2026-03-01T12:00:00.123+02:00", AT_THE_TOLERANCE]
        ),
        "amount": st.floats(0, 1e9, allow_nan=False) | st.integers(0, 10**9),
        "currency": st.sampled_from(CURRENCIES),
        "merchant_category": st.sampled_from(MERCHANT_CATEGORIES),
        "country": st.from_regex(r"\A[A-Z]{2}\Z"),
        "card_country": st.from_regex(r"\A[A-Z]{2}\Z"),
        "hour_of_day": st.integers(0, 23),
        "account_age_days": st.integers(0, 36_500),
        "is_new_device": st.booleans(),
    },
    optional={"type": st.just("payment")},
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


methods = st.sampled_from(
    ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "post"]
) | st.text(max_size=8)
paths = st.sampled_from(["/predict", "/model", "/health", "/", "/predict/", "//", ""]) | st.text(
    max_size=30
)
header_values = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "", "*/*", "+json"]
) | st.text(max_size=30)
headers = (
    st.none()
    | st.dictionaries(
        st.sampled_from(["Content-Type", "content-type", "CONTENT-TYPE", "Accept"])
        | st.text(max_size=12),
        header_values,
        max_size=3,
    )
    | json_values
)
request_bodies = st.builds(
    lambda events: json.dumps({"events": events}), st.lists(valid_events, max_size=3)
)
bodies = st.one_of(
    st.none(),
    st.text(),
    json_values.map(json.dumps),
    request_bodies,
    st.binary(max_size=200).map(_b64),
    request_bodies.map(lambda text: _b64(text.encode())),
    json_values,  # not even a string
)
proxy_events = st.fixed_dictionaries(
    {},
    optional={
        "httpMethod": methods | json_values,
        "path": paths | json_values,
        "headers": headers,
        "body": bodies,
        "isBase64Encoded": st.booleans() | json_values,
        "queryStringParameters": st.none()
        | st.dictionaries(st.text(max_size=5), st.text(max_size=5)),
    },
)


def assert_well_formed(response: dict[str, Any]) -> Any:
    """Never a 5xx; always a JSON body; errors always carry `error` and `message`."""
    status = response["statusCode"]
    assert isinstance(status, int)
    assert 200 <= status < 500, response
    assert response["headers"]["Content-Type"] == "application/json"
    assert response["isBase64Encoded"] is False
    body = json.loads(response["body"])
    assert isinstance(body, dict)
    if status >= 400:
        assert isinstance(body.get("error"), str) and body["error"], body
        assert isinstance(body.get("message"), str) and body["message"], body
        for problem in body.get("problems", []):
            assert set(problem) == {"field", "reason"}
            assert isinstance(problem["field"], str) and isinstance(problem["reason"], str)
    return body


def predict(events_body: str, *, b64: bool = False) -> dict[str, Any]:
    return {
        "path": "/predict",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "body": _b64(events_body.encode()) if b64 else events_body,
        "isBase64Encoded": b64,
    }


@FUZZ
@given(event=proxy_events | json_values)
@example(event={"path": "/predict", "httpMethod": "POST", "body": "[" * 100_000})
@example(
    event={"path": "/predict", "httpMethod": "POST", "body": '{"events": [' + "9" * 5000 + "]}"}
)
@example(event={"path": "/predict", "httpMethod": "POST", "body": "\ud800", "headers": {}})
@example(event={"path": "/\ud800", "httpMethod": "\ud800"})
def test_given_any_proxy_event_then_the_answer_is_never_a_5xx_and_always_json(
    served: InferenceApp, event: Any
) -> None:
    assert_well_formed(served.handle(event, None))


@FUZZ
@given(body=st.binary(max_size=2000), encoded=st.booleans())
def test_given_any_bytes_as_the_body_then_the_answer_is_a_well_formed_4xx_or_a_score(
    served: InferenceApp, body: bytes, encoded: bool
) -> None:
    event = predict("", b64=False)
    event["body"] = _b64(body) if encoded else body.decode("utf-8", "surrogateescape")
    event["isBase64Encoded"] = encoded

    assert_well_formed(served.handle(event, None))


@FUZZ
@given(document=json_values)
def test_given_any_json_document_as_the_body_then_it_is_a_well_formed_4xx_or_a_score(
    served: InferenceApp, document: Any
) -> None:
    response = served.handle(predict(json.dumps(document)), None)

    body = assert_well_formed(response)
    assert response["statusCode"] in (200, 400)
    if response["statusCode"] == 200:
        assert len(body["predictions"]) == len(document["events"])


@FUZZ
@given(events=st.lists(valid_events, min_size=1, max_size=20), b64=st.booleans())
def test_given_valid_events_then_each_gets_one_probability_between_zero_and_one(
    served: InferenceApp, events: list[dict[str, Any]], b64: bool
) -> None:
    response = served.handle(predict(json.dumps({"events": events}), b64=b64), None)

    body = assert_well_formed(response)
    assert response["statusCode"] == 200, body
    assert response["headers"]["X-Model-Version"] == "1"
    assert body["model"] == {"name": "fraud", "version": 1}
    assert len(body["predictions"]) == len(events)
    for event, prediction in zip(events, body["predictions"], strict=True):
        assert 0.0 <= prediction["fraud_probability"] <= 1.0
        assert isinstance(prediction["is_fraud"], bool)
        assert prediction["event_id"] == event["event_id"]


@st.composite
def mutated_requests(draw: st.DrawFn) -> list[Any]:
    """Valid events with a few fields dropped, replaced by arbitrary JSON, or added."""
    events: list[Any] = [dict(e) for e in draw(st.lists(valid_events, min_size=1, max_size=6))]
    for index in range(len(events)):
        for _ in range(draw(st.integers(0, 3))):
            action = draw(st.sampled_from(["drop", "replace", "add", "swap_event", "ahead"]))
            event = events[index]
            if not isinstance(event, dict):
                break
            if action == "drop" and event:
                event.pop(draw(st.sampled_from(sorted(event))))
            elif action == "replace":
                event[draw(st.sampled_from([*FIELD_NAMES, "type"]))] = draw(finite_json_values)
            elif action == "add":
                event[draw(st.text(max_size=10))] = draw(finite_json_values)
            elif action == "ahead":
                event["occurred_at"] = draw(st.sampled_from(AHEAD))
            else:
                events[index] = draw(finite_json_values)
    return events


def _is_valid(event: Any) -> bool:
    if validate_event(event, extra_fields=("type",), check_time=NOT_AHEAD):
        return False
    return bool(event.get("type", "payment") == "payment")


@settings(FUZZ, max_examples=500)
@given(events=mutated_requests())
def test_given_mutated_events_then_valid_ones_are_scored_and_each_invalid_event_is_named(
    served: InferenceApp, events: list[Any]
) -> None:
    response = served.handle(predict(json.dumps({"events": events})), None)

    body = assert_well_formed(response)
    invalid = {i for i, event in enumerate(events) if not _is_valid(event)}
    if not invalid:
        assert response["statusCode"] == 200, body
        assert len(body["predictions"]) == len(events)
        assert all(0.0 <= p["fraud_probability"] <= 1.0 for p in body["predictions"])
    else:
        assert response["statusCode"] == 400, body
        named = {int(p["field"].split("]")[0].removeprefix("events[")) for p in body["problems"]}
        assert named == invalid


# The fast path changes nothing a client can see ------------------------------------------------


class Declining:
    """A warm-path reader that declines every body (`BatchDecoder.events` answering None)."""

    def events(self, data: bytes) -> None:
        return None


def _reference_answer(app: InferenceApp, event: dict[str, Any]) -> dict[str, Any]:
    """The answer of the reference path alone: the warm path's reader declines everything, so
    the standard library parses and `validate_event` validates each event."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app, "decoder", Declining())
        return app.handle(event, None)


big_numbers = st.sampled_from(
    ["10000000000000000000000", "-9223372036854775809", "18446744073709551616", "1e400", "1E2"]
)


@st.composite
def request_texts(draw: st.DrawFn) -> str:
    """Request bodies as a client writes them: mutated events, escapes or raw UTF-8, and numbers
    that orjson reads otherwise than the standard library (beyond 64 bits) or refuses."""
    text = json.dumps({"events": draw(mutated_requests())}, ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        field = draw(st.sampled_from([*FIELD_NAMES, "type"]))
        text = text.replace(f'"{field}": ', f'"{field}": {draw(big_numbers)}, "x{field}": ', 1)
    return text


@settings(FUZZ, max_examples=400)
@given(text=request_texts() | bodies.filter(lambda b: isinstance(b, str)), b64=st.booleans())
@example(text='{"events": [{"event_id": "\\ud800"}]}', b64=False)
@example(text=json.dumps({"events": [{"event_id": "\ud800", **VALID}]}), b64=False)
@example(text=json.dumps({"events": [{**VALID, "hour_of_day": 10**22}]}), b64=False)
@example(text=json.dumps({"events": [{**VALID, "amount": 1e-7}]}), b64=False)
@example(text=json.dumps({"events": [VALID, {**VALID, "occurred_at": AHEAD[0]}]}), b64=False)
def test_given_any_body_then_the_fast_path_answers_exactly_as_the_reference_path(
    served: InferenceApp, text: str, b64: bool
) -> None:
    """The warm path's reader (msgspec) is an optimization: same status, headers and document
    (numbers included) as the standard library's parser and per-event validation."""
    try:
        event = predict(text, b64=b64)
    except UnicodeEncodeError:  # a lone surrogate cannot be base64-encoded as UTF-8
        event = predict(text)

    fast, reference = served.handle(event, None), _reference_answer(served, event)

    assert fast["statusCode"] == reference["statusCode"]
    assert fast["headers"] == reference["headers"]
    assert json.loads(fast["body"]) == json.loads(reference["body"])


@settings(FUZZ, max_examples=300)
@given(events=mutated_requests())
def test_given_mixed_valid_and_invalid_events_then_the_problems_are_the_per_event_ones_in_order(
    served: InferenceApp, events: list[Any]
) -> None:
    response = served.handle(predict(json.dumps({"events": events})), None)

    expected = []
    for index, event in enumerate(events):
        where = f"events[{index}]"
        expected += [
            p.to_dict()
            for p in validate_event(
                event, where=where, extra_fields=("type",), check_time=NOT_AHEAD
            )
        ]
        if isinstance(event, dict) and event.get("type", "payment") != "payment":
            kind = event["type"]
            reason = (
                f"{kind[:40]!r}: only payments are scored"
                if isinstance(kind, str)
                else 'must be "payment": only payments are scored'
            )
            expected.append({"field": f"{where}.type", "reason": reason})
    body = json.loads(response["body"])
    if expected:
        assert response["statusCode"] == 400
        assert body["problems"] == expected
    else:
        assert response["statusCode"] == 200, body
