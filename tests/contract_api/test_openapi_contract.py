"""The local API keeps the contract it publishes: schemathesis against `sds serve`'s server.

Given the real handler behind the local API Gateway on a loopback port, serving a trained model,
when schemathesis generates requests from the server's own `GET /openapi.json`, valid ones
(positive) and invalid ones (negative: wrong types, out-of-range values, missing and unknown
fields, wrong media types), then no response is a 5xx, every status code, header and body matches
the document, valid events are scored or stored (2xx) and invalid ones rejected with a 4xx.
Examples are bounded so the whole run stays well under a minute on 2 cores.

`POST /events` refuses one event id with two contents, within a batch (400) or against what an
earlier request stored (409): the document cannot say that ids must be unique, so valid examples
get a fresh id for each event. Both POST routes refuse an event dated more than 5 minutes ahead
of the server's clock (400; a label by its `labelled_at`): the document says so in words, which
no schema can check, so valid examples are dated in the past.

One deliberate difference: JSON Schema counts `3.0` as an integer, the API does not (integer
fields take integer literals; tests/unit/test_features.py pins that). The document cannot say so,
so valid examples write integral floats in integer fields as integer literals.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from sds.kernel.features import FIELDS, parse_time
from sds.kernel.online import now_micros

INTEGER_FIELDS = frozenset(f.name for f in FIELDS if f.kind == "integer")

POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
# The GET (and HEAD) routes take no input, so only their positive side exists.
OPERATIONS = [
    pytest.param("POST", "/predict", POSITIVE, 80, id="POST /predict valid"),
    pytest.param("POST", "/predict", NEGATIVE, 80, id="POST /predict invalid"),
    pytest.param("GET", "/model", POSITIVE, 3, id="GET /model"),
    pytest.param("GET", "/health", POSITIVE, 3, id="GET /health"),
    pytest.param("HEAD", "/health", POSITIVE, 3, id="HEAD /health"),
    pytest.param("GET", "/openapi.json", POSITIVE, 3, id="GET /openapi.json"),
    pytest.param("POST", "/events", POSITIVE, 60, id="POST /events valid"),
    pytest.param("POST", "/events", NEGATIVE, 60, id="POST /events invalid"),
]


@pytest.mark.parametrize(("method", "path", "mode", "examples"), OPERATIONS)
def test_operation_conforms_to_the_published_document(
    contract_api_schema: Any, method: str, path: str, examples: int, mode: GenerationMode
) -> None:
    operation = contract_api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=mode)
    if mode is POSITIVE:
        strategy = strategy.map(_integer_literals).map(_not_ahead_of_the_clock)
        if path == "/events":
            strategy = strategy.map(_fresh_event_ids)
    seen: list[int] = []

    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        response = case.call_and_validate(timeout=10)
        seen.append(response.status_code)

    check()
    assert seen, "schemathesis sent no request"
    assert all(status < 500 for status in seen)


def _events(case: Any) -> list[Any]:
    events = case.body.get("events") if isinstance(case.body, dict) else None
    return events if isinstance(events, list) else []


def _integer_literals(case: Any) -> Any:
    for event in _events(case):
        for name in INTEGER_FIELDS & set(event):
            if isinstance(event[name], float) and event[name].is_integer():
                event[name] = int(event[name])
    return case


def _not_ahead_of_the_clock(case: Any) -> Any:
    """What the document says only in words: an event is not dated ahead of the server's clock
    (/predict refuses such a payment, /events such an activity event, as the updater does, and
    a label whose `labelled_at` is, as `sds label` does)."""
    for event in _events(case):
        for field in ("occurred_at", "labelled_at"):
            if isinstance(event.get(field), str) and parse_time(event[field]) > now_micros():
                event[field] = "2026-01-01T00:00:00Z"
    return case


def _fresh_event_ids(case: Any) -> Any:
    """What the document cannot say of a valid batch: each activity event's id is new."""
    for event in _events(case):
        if event.get("type") != "label":  # a label names the payment it labels
            event["event_id"] = uuid.uuid4().hex
    return case
