"""The inference API over a real, small trained model: routes, responses, validation that names
every problem, and clear 503s when no model can be served."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio

from lambdas.inference import app as app_module
from lambdas.inference.app import InferenceApp
from sds.kernel.aggregates import NAMES as AGGREGATES
from sds.kernel.behaviour import BEHAVIOUR_METRICS, SCORE_BOUNDS, SCORE_BUCKETS
from sds.kernel.features import (
    COMPUTED_REASON,
    FIELD_NAMES,
    featurize,
    format_time,
    parse_time,
)
from sds.kernel.featurestore import FeatureStoreError
from sds.kernel.featurestore.sqlite import SqliteFeatureStore
from sds.kernel.online import FUTURE_TOLERANCE, OnlineFeatures
from sds.kernel.registry import open_registry
from sds.kernel.serving import SHOWN_IN_NUMPY_FROM, shown_scores
from sds.kernel.settings import ServingSettings
from tests.support.trained_model import MODEL, TrainedModel
from training.onnx_export import onnx_scores

Metrics = list[tuple[str, float, dict[str, str]]]


def collect(seen: Metrics) -> Any:
    """A metric sink that records each metric with its dimensions, one request at a time."""

    def sink(values: Any, dimensions: Any) -> None:
        seen.extend((name, value, dict(dimensions)) for name, value in values.items())

    return sink


NOW = "2026-03-01T12:00:00Z"
ZERO = {name: 0.0 for name in AGGREGATES}


def valid_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "evt-risky",
        "account_id": "acct-risky",
        "occurred_at": NOW,
        "amount": 950.0,
        "currency": "USD",
        "merchant_category": "electronics",
        "country": "BR",
        "card_country": "US",
        "hour_of_day": 3,
        "account_age_days": 5,
        "is_new_device": True,
    }
    event.update(overrides)
    return event


def ordinary_event(**overrides: Any) -> dict[str, Any]:
    return valid_event(
        amount=23.5,
        merchant_category="grocery",
        country="US",
        hour_of_day=14,
        account_age_days=2000,
        is_new_device=False,
        **{"event_id": "evt-ordinary", "account_id": "acct-ordinary", **overrides},
    )


def proxy(
    body: Any = None,
    *,
    method: str = "POST",
    path: str = "/predict",
    headers: dict[str, str] | None = None,
    raw: str | None = None,
    b64: bool = False,
) -> dict[str, Any]:
    text = raw if raw is not None else (None if body is None else json.dumps(body))
    if b64 and text is not None:
        text = base64.b64encode(text.encode()).decode()
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json"} if headers is None else headers,
        "body": text,
        "isBase64Encoded": b64,
    }


def call(app: InferenceApp, event: Any) -> tuple[int, dict[str, str], Any]:
    response = app.handle(event, None)
    assert set(response) == {"statusCode", "headers", "body", "isBase64Encoded"}
    assert response["headers"]["Content-Type"] == "application/json"
    return response["statusCode"], response["headers"], json.loads(response["body"])


def problems_of(body: Any) -> dict[str, str]:
    assert body["error"] == "invalid_request"
    return {p["field"]: p["reason"] for p in body["problems"]}


# Predictions ------------------------------------------------------------------------------------


def test_given_valid_events_then_each_gets_a_prediction_from_the_pinned_version(
    served: InferenceApp, trained: TrainedModel
) -> None:
    status, headers, body = call(
        served, proxy({"events": [valid_event(event_id="risky"), ordinary_event()]})
    )

    assert status == 200
    assert headers["X-Model-Version"] == "1"
    assert headers["X-Model-Name"] == MODEL
    assert body["model"] == {"name": MODEL, "version": 1}
    risky, ordinary = body["predictions"]
    assert set(risky) == {"fraud_probability", "is_fraud", "event_id"}
    assert risky["event_id"] == "risky"
    assert ordinary["event_id"] == "evt-ordinary"
    assert 0 <= ordinary["fraud_probability"] < risky["fraud_probability"] <= 1
    threshold = trained.version.manifest["decision_threshold"]
    for prediction in body["predictions"]:
        assert prediction["is_fraud"] is (prediction["fraud_probability"] >= threshold)


def test_every_decision_is_the_shown_score_against_the_published_threshold(
    trained: TrainedModel, tmp_path: Path
) -> None:
    # Given a version whose threshold is one of its served scores, as training chooses it, and
    # one that round(score, 6) would show below the threshold (its 7th digit onwards < .5)
    events = [
        valid_event(
            event_id=f"e-{i}",
            account_id=f"acct-{i}",
            amount=12.5 * i + 1.0,
            hour_of_day=i % 24,
            account_age_days=7 * i,
        )
        for i in range(SHOWN_IN_NUMPY_FROM + 16)  # a request long enough for numpy's path
    ]
    scores = _scores(InferenceApp(trained.settings(), metrics=lambda *a: None), events)
    below_when_rounded = sorted(
        (score, i) for i, score in enumerate(scores) if round(score, 6) < score
    )
    assert below_when_rounded, "no score rounds down: the case is not exercised"
    threshold, at = below_when_rounded[len(below_when_rounded) // 2]
    app = InferenceApp(
        _register_variant(trained, tmp_path, decision_threshold=threshold),
        metrics=lambda *a: None,
    )
    _, _, described = call(app, proxy(method="GET", path="/model"))
    assert described["decision_threshold"] == threshold

    # When the payment at the threshold is scored alone, and with the others in one request
    _, _, alone = call(app, proxy({"events": [events[at]]}))
    _, _, together = call(app, proxy({"events": events}))

    # Then each decision is its fraud_probability against the threshold GET /model publishes
    for body in (alone, together):
        for prediction in body["predictions"]:
            shown = prediction["fraud_probability"]
            assert prediction["is_fraud"] is (shown >= threshold), (prediction, threshold)
    # and the payment at the threshold is flagged, shown at or above it
    assert alone["predictions"][0]["is_fraud"] is together["predictions"][at]["is_fraud"] is True
    assert alone["predictions"][0]["fraud_probability"] >= threshold
    # among payments on both sides of it
    assert 0 < sum(p["is_fraud"] for p in together["predictions"]) < len(events)


def test_served_scores_equal_the_registered_scikit_learn_estimator_on_the_same_events(
    served: InferenceApp, trained: TrainedModel
) -> None:
    events = [valid_event(), ordinary_event(), valid_event(amount=1.0, currency="JPY")]
    _, _, body = call(served, proxy({"events": events}))

    data = trained.registry().read_artifact(1, "model.skops")
    estimator = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    # Nothing was ever folded into the feature store for these accounts: every aggregate is 0
    vectors = np.asarray([featurize(e, ZERO) for e in events], dtype=np.float32)
    expected = estimator.predict_proba(vectors)[:, 1]
    served_scores = [p["fraud_probability"] for p in body["predictions"]]

    assert np.max(np.abs(np.asarray(served_scores) - expected)) <= 1e-4
    onnx = trained.registry().read_artifact(1)
    threshold = trained.version.manifest["decision_threshold"]
    assert served_scores == shown_scores(onnx_scores(onnx, vectors).tolist(), threshold)


def test_serving_is_stateless_a_batch_scores_like_its_events_one_by_one(
    served: InferenceApp,
) -> None:
    events = [valid_event(), ordinary_event(), valid_event(hour_of_day=12)]

    _, _, batch = call(served, proxy({"events": events}))
    _, _, again = call(served, proxy({"events": events}))
    singles = [call(served, proxy({"events": [e]}))[2]["predictions"][0] for e in events]

    assert batch == again
    assert batch["predictions"] == singles


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/vnd.api+json",
    ],
)
def test_given_a_json_content_type_or_none_then_the_request_is_scored(
    served: InferenceApp, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}

    status, _, _ = call(served, proxy({"events": [valid_event()]}, headers=headers))

    assert status == 200


def test_given_a_base64_encoded_body_then_it_is_decoded_and_scored(served: InferenceApp) -> None:
    plain = call(served, proxy({"events": [valid_event()]}))
    encoded = call(served, proxy({"events": [valid_event()]}, b64=True))

    assert encoded[0] == 200
    assert encoded[2] == plain[2]


@pytest.mark.parametrize("path", ["/predict", "/predict/", "predict", "//predict//"])
def test_given_slashes_around_the_path_or_lower_case_method_then_the_route_still_matches(
    served: InferenceApp, path: str
) -> None:
    assert call(served, proxy({"events": [valid_event()]}, path=path, method="post"))[0] == 200


def test_given_the_maximum_number_of_events_then_all_are_scored(served: InferenceApp) -> None:
    limit = served.settings.max_events
    status, _, body = call(served, proxy({"events": [ordinary_event()] * limit}))

    assert status == 200
    assert len(body["predictions"]) == limit


# Model and health ------------------------------------------------------------------------------


def test_get_model_describes_the_served_version(
    served: InferenceApp, trained: TrainedModel
) -> None:
    status, headers, body = call(served, proxy(method="GET", path="/model"))

    assert status == 200
    assert headers["X-Model-Version"] == "1"
    assert body["name"] == MODEL
    assert body["version"] == 1
    assert body["sha256"] == trained.version.sha256
    assert body["metrics"]["roc_auc"] == trained.version.metrics["roc_auc"]
    assert body["decision_threshold"] == trained.version.manifest["decision_threshold"]
    assert body["feature_schema"]["inputs"]["required"] == list(FIELD_NAMES)
    assert body["created_at"] == trained.version.manifest["created_at"]


def test_get_health_reports_ok_with_the_model(served: InferenceApp) -> None:
    status, _, body = call(served, proxy(method="GET", path="/health"))

    assert (status, body) == (200, {"status": "ok", "model": {"name": MODEL, "version": 1}})


@pytest.mark.parametrize("path", ["/health", "/model", "/openapi.json"])
def test_head_on_a_get_route_answers_as_get(served: InferenceApp, path: str) -> None:
    # Given a GET route, when it is asked for HEAD (a health check, `curl -I`)
    got = served.handle(proxy(method="GET", path=path), None)
    headed = served.handle(proxy(method="HEAD", path=path), None)

    # Then the answer is GET's, status and headers included; the HTTP layer (API Gateway, `sds
    # serve`) sends it without the body, whose length its Content-Length gives
    assert headed == got
    assert got["statusCode"] == 200


# Routing errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/predictions", "/predict/extra", "/admin", "/" + "x" * 5000]
)
def test_given_an_unknown_path_then_404_points_at_the_predict_route(
    served: InferenceApp, path: str
) -> None:
    status, _, body = call(served, proxy({"events": []}, path=path))

    assert status == 404
    assert body["error"] == "not_found"
    assert body["message"].endswith("try POST /predict")
    assert len(body["message"]) < 200


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/predict", "POST"),
        ("PUT", "/predict", "POST"),
        ("HEAD", "/predict", "POST"),
        ("DELETE", "/model", "GET, HEAD"),
        ("POST", "/health", "GET, HEAD"),
        ("WHATEVER", "/model", "GET, HEAD"),
    ],
)
def test_given_the_wrong_method_then_405_with_an_allow_header(
    served: InferenceApp, method: str, path: str, allow: str
) -> None:
    status, headers, body = call(
        served, proxy({"events": [valid_event()]}, method=method, path=path)
    )

    assert status == 405
    assert headers["Allow"] == allow
    assert body == {"error": "method_not_allowed", "message": f"{path} accepts {allow}"}


def test_given_a_body_over_the_limit_then_413_says_the_size_and_limit(
    trained: TrainedModel,
) -> None:
    app = InferenceApp(trained.settings(max_body_bytes=2000), metrics=lambda *a: None)
    body = {"events": [valid_event()] * 20}
    size = len(json.dumps(body).encode())

    for b64 in (False, True):  # the limit applies to the decoded bytes
        status, _, answer = call(app, proxy(body, b64=b64))
        assert status == 413
        assert answer == {
            "error": "payload_too_large",
            "message": f"the body has {size} bytes; the limit is 2000",
        }
    assert call(app, proxy({"events": [valid_event()]}))[0] == 200


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "json"]
)
def test_given_a_body_that_is_not_json_then_415(served: InferenceApp, content_type: str) -> None:
    status, _, body = call(
        served, proxy({"events": [valid_event()]}, headers={"Content-Type": content_type})
    )

    assert status == 415
    assert body["error"] == "unsupported_media_type"
    assert content_type in body["message"]


# 400: every problem named ----------------------------------------------------------------------


def test_given_several_bad_events_then_400_lists_every_problem_with_field_and_reason(
    served: InferenceApp,
) -> None:
    second = valid_event(amount=-5, hour_of_day="3", is_new_device=1)
    del second["country"]
    events = [valid_event(), second, "not an event", valid_event(event_id=7, colour="red")]
    events[0] = {**valid_event(), "txn_count_last_1h": 3}

    status, headers, body = call(served, proxy({"events": events, "debug": True}))

    assert status == 400
    assert headers["X-Model-Version"] == "1"
    assert body["message"].startswith(
        "9 problems in the request; expected fields per event: event_id, account_id"
    )
    assert problems_of(body) == {
        "debug": "is not a known field (expected only 'events')",
        "events[0].txn_count_last_1h": COMPUTED_REASON,
        "events[1].amount": "must be >= 0",
        "events[1].country": "is required",
        "events[1].hour_of_day": "must be an integer",
        "events[1].is_new_device": "must be true or false",
        "events[2]": "must be a JSON object",
        "events[3].event_id": "must be a string",
        "events[3].colour": "is not a known field",
    }


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({}, "events", "is required"),
        ({"events": {}}, "events", "must be a list of events"),
        ({"events": []}, "events", "must contain at least one event"),
        ({"events": [valid_event()] * 101}, "events", "has 101 events; the limit is 100"),
        (
            {"events": [valid_event(event_id="")]},
            "events[0].event_id",
            "must be 1 to 128 characters",
        ),
        (
            {"events": [valid_event(event_id="x" * 129)]},
            "events[0].event_id",
            "must be 1 to 128 characters",
        ),
        ({"events": [valid_event(amount=10**400)]}, "events[0].amount", "must be <= 1e+09"),
        (
            {"events": [valid_event(txn_count_last_1h=10**30)]},
            "events[0].txn_count_last_1h",
            COMPUTED_REASON,
        ),
        (
            {"events": [valid_event(occurred_at="2026-03-01 12:00")]},
            "events[0].occurred_at",
            "must be an ISO 8601 time with a time zone, e.g. 2026-03-01T12:00:00Z",
        ),
        (
            {"events": [valid_event(type="login")]},
            "events[0].type",
            "'login': only payments are scored",
        ),
        (
            {"events": [valid_event(type=None)]},
            "events[0].type",
            'must be "payment": only payments are scored',
        ),
    ],
)
def test_given_a_bad_request_then_the_problem_is_named(
    served: InferenceApp, body: Any, field: str, reason: str
) -> None:
    status, _, answer = call(served, proxy(raw=json.dumps(body)))

    assert status == 400
    assert problems_of(answer)[field] == reason


@pytest.mark.parametrize(
    ("overrides", "counted"),
    [({"amount": -5}, "1 problem"), ({"amount": -5, "country": 7}, "2 problems")],
    ids=["one", "two"],
)
def test_the_400_message_counts_the_problems_in_the_singular_or_the_plural(
    served: InferenceApp, overrides: dict[str, Any], counted: str
) -> None:
    # Given a payment with one bad field, or two
    # When it is posted
    status, _, body = call(served, proxy({"events": [valid_event(**overrides)]}))
    # Then the message says "1 problem" or "2 problems", never "problem(s)"
    assert status == 400
    assert body["message"] == (
        f"{counted} in the request; expected fields per event: {', '.join(FIELD_NAMES)}"
    )


def test_given_a_number_that_overflows_to_infinity_then_it_is_named_not_scored(
    served: InferenceApp,
) -> None:
    raw = json.dumps({"events": [valid_event(amount=12345.0)]}).replace("12345.0", "1e400")

    status, _, body = call(served, proxy(raw=raw))

    assert status == 400
    assert problems_of(body) == {"events[0].amount": "must be a finite number"}


def test_given_integers_too_long_for_python_to_convert_then_their_fields_are_named(
    served: InferenceApp,
) -> None:
    # Given integers of 5000 digits, beyond what Python converts (4300), in two fields
    raw = (
        json.dumps({"events": [valid_event(amount=12345, account_age_days=678)]})
        .replace("12345", "1" * 5000)
        .replace("678", "-" + "9" * 5000)
    )
    # When they are posted
    status, _, body = call(served, proxy(raw=raw))
    # Then each field's range is what the client reads, not an interpreter's limit
    assert status == 400
    assert problems_of(body) == {
        "events[0].amount": "must be <= 1e+09",
        "events[0].account_age_days": "must be >= 0",
    }


def test_given_a_thousand_bad_events_then_the_listing_is_capped_and_says_how_many_more(
    trained: TrainedModel,
) -> None:
    app = InferenceApp(trained.settings(max_events=2000), metrics=lambda *a: None)

    status, _, body = call(app, proxy({"events": [{}] * 200}))

    assert status == 400
    assert len(body["problems"]) == 1000
    assert body["problems_not_listed"] == 200 * len(FIELD_NAMES) - 1000


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        ("", "empty_body", 'the request body is empty; send {"events": [...]}'),
        ("{", "invalid_json", "the body is not valid JSON: Expecting property name"),
        ('{"events": [{"amount": NaN}]}', "invalid_json", "NaN is not valid JSON"),
        ('{"events": [{"amount": Infinity}]}', "invalid_json", "Infinity is not valid JSON"),
        ('{"events": [{"amount": -Infinity}]}', "invalid_json", "-Infinity is not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "invalid_json", "the JSON is nested too deeply"),
        ('{"events": ' + "[" * 50_000 + "]" * 50_000 + "}", "invalid_json", "nested too deeply"),
        ("[]", "invalid_request", "the body must be a JSON object"),
        ('"events"', "invalid_request", "the body must be a JSON object"),
        ("null", "invalid_request", "the body must be a JSON object"),
    ],
)
def test_given_a_body_that_is_not_a_valid_request_then_400_says_why(
    served: InferenceApp, raw: str, error: str, message: str
) -> None:
    status, _, body = call(served, proxy(raw=raw))

    assert status == 400
    assert body["error"] == error
    assert message in body["message"]
    assert len(body["message"]) < 300


def test_given_no_body_at_all_then_400_empty_body(served: InferenceApp) -> None:
    status, _, body = call(served, proxy(None))

    assert (status, body["error"]) == (400, "empty_body")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xff\xfe{}", "the body is not valid UTF-8"),
        (
            '{"events": [{"currency": "\ud800"}]}'.encode("utf-8", "surrogatepass"),
            "not valid UTF-8",
        ),
    ],
)
def test_given_a_body_that_is_not_utf8_then_400(
    served: InferenceApp, payload: bytes, message: str
) -> None:
    event = proxy(b64=True)
    event["body"] = base64.b64encode(payload).decode()

    status, _, body = call(served, event)

    assert status == 400
    assert body["error"] == "invalid_body"
    assert message in body["message"]


def test_given_a_lone_surrogate_in_a_text_body_then_400_not_a_crash(served: InferenceApp) -> None:
    status, _, body = call(served, proxy(raw='{"events": [{"currency": "\ud800"}]}'))

    assert (status, body["error"]) == (400, "invalid_body")


@pytest.mark.parametrize("raw", ["not base64!", "e30", "ü"])
def test_given_invalid_base64_then_400(served: InferenceApp, raw: str) -> None:
    event = proxy(b64=True)
    event["body"] = raw

    status, _, body = call(served, event)

    assert (status, body["error"]) == (400, "invalid_body")


@pytest.mark.parametrize(
    "event",
    [None, "GET /predict", [], {}, {"path": "/predict"}, {"httpMethod": "POST", "path": 7}],
)
def test_given_something_that_is_not_a_proxy_event_then_400_bad_event(
    served: InferenceApp, event: Any
) -> None:
    status, _, body = call(served, event)

    assert (status, body["error"]) == (400, "bad_event")


def test_given_a_body_that_is_not_a_string_then_400(served: InferenceApp) -> None:
    event = proxy()
    event["body"] = {"events": [valid_event()]}

    status, _, body = call(served, event)

    assert (status, body["error"]) == (400, "bad_event")


# Payments dated ahead of the clock -------------------------------------------------------------

SECOND_US = 1_000_000


def clocked(trained: TrainedModel, at: str = NOW) -> InferenceApp:
    """The app serving the trained version with its clock stopped at `at`."""
    now = parse_time(at)
    return InferenceApp(trained.settings(), metrics=lambda *a: None, clock=lambda: now)


class Declining:
    """A warm-path reader that declines every body (`BatchDecoder.events` answering None)."""

    def events(self, data: bytes) -> None:
        return None


def reference_answer(app: InferenceApp, event: dict[str, Any]) -> dict[str, Any]:
    """The reference path's answer alone (the fast reader declines every body)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app, "decoder", Declining())
        return app.handle(event, None)


def test_given_a_payment_dated_ahead_of_the_clock_then_400_says_how_far(
    trained: TrainedModel,
) -> None:
    # Given the app's clock at NOW, a payment at the tolerance and one 10 minutes ahead
    app = clocked(trained)
    at_limit = format_time(parse_time(NOW) + FUTURE_TOLERANCE)
    ahead = format_time(parse_time(NOW) + 600 * SECOND_US)
    events = [valid_event(occurred_at=at_limit), ordinary_event(occurred_at=ahead)]

    # When they are sent together, then the later one is refused by name, with how far ahead
    status, _, body = call(app, proxy({"events": events}))

    assert status == 400
    assert problems_of(body) == {
        "events[1].occurred_at": (
            "is 600 s ahead of the clock (more than 300 s): is the producer's clock right?"
        )
    }
    # And the one at the tolerance alone is scored: a producer's clock may drift that much
    status, _, body = call(app, proxy({"events": events[:1]}))
    assert status == 200 and len(body["predictions"]) == 1


def test_a_payment_ahead_of_the_clock_gets_the_reference_path_s_answer_among_its_other_problems(
    trained: TrainedModel,
) -> None:
    # Given a clock at NOW and a batch: valid, ahead of the clock with a bad amount, ahead only
    app = clocked(trained)
    ahead = format_time(parse_time(NOW) + FUTURE_TOLERANCE + 1)
    events = [
        valid_event(),
        valid_event(occurred_at=ahead, amount=-1),
        ordinary_event(occurred_at="2099-12-31T23:59:59Z"),
    ]
    event = proxy({"events": events})

    # When the request is answered by the warm path and by the reference path alone
    fast, reference = app.handle(event, None), reference_answer(app, event)

    # Then both answer the same 400, each problem of an event in its field order
    assert fast == reference
    body = json.loads(fast["body"])
    far = (parse_time("2099-12-31T23:59:59Z") - parse_time(NOW)) // SECOND_US
    assert [(p["field"], p["reason"].split(" (")[0]) for p in body["problems"]] == [
        ("events[1].occurred_at", "is 301 s ahead of the clock"),
        ("events[1].amount", "must be >= 0"),
        ("events[2].occurred_at", f"is {far} s ahead of the clock"),
    ]


def test_the_clock_is_read_once_per_request(trained: TrainedModel) -> None:
    reads: list[int] = []

    def clock() -> int:
        reads.append(1)
        return parse_time(NOW)

    app = InferenceApp(trained.settings(), metrics=lambda *a: None, clock=clock)

    call(app, proxy({"events": [valid_event(), ordinary_event()]}))

    assert len(reads) == 1


# Metrics ---------------------------------------------------------------------------------------


def _scores(app: InferenceApp, events: list[dict[str, Any]]) -> list[float]:
    """The model's scores for `events`, as the handler computes them (no account history)."""
    assert app.model is not None
    return app.model.predict([featurize(e, ZERO) for e in events])


def test_a_scored_request_counts_its_predictions_flags_and_scores_per_model_version(
    trained: TrainedModel, tmp_path: Path
) -> None:
    # Given the trained model with its decision threshold between a risky and an ordinary score
    events = [valid_event(), ordinary_event(), valid_event(event_id="evt-risky-2")]
    plain = InferenceApp(trained.settings(), metrics=lambda *a: None)
    risky, ordinary, _ = _scores(plain, events)
    assert ordinary < risky
    seen: list[tuple[dict[str, float], dict[str, str]]] = []
    app = InferenceApp(
        _register_variant(trained, tmp_path, decision_threshold=(risky + ordinary) / 2),
        metrics=lambda values, dimensions: seen.append((dict(values), dict(dimensions))),
    )

    # When it scores the three events in one request
    status, _, body = call(app, proxy({"events": events}))

    # Then one metric line counts them under the served version's own dimensions
    assert status == 200
    [(values, dimensions)] = seen
    assert dimensions == {"Environment": "test", "Model": "fraud", "ModelVersion": "2"}
    assert list(values) == list(BEHAVIOUR_METRICS)
    assert (values["Predictions"], values["Flagged"]) == (3, 2)
    assert values["Flagged"] == sum(p["is_fraud"] for p in body["predictions"])

    # And each score is counted once, in the bucket its value falls into
    def bucket(score: float) -> str:
        (name,) = [
            name
            for name, low, high in zip(SCORE_BUCKETS, SCORE_BOUNDS, SCORE_BOUNDS[1:], strict=False)
            if low <= score < high or score == high == 1.0
        ]
        return name

    expected = dict.fromkeys(SCORE_BUCKETS, 0)
    for score in (risky, ordinary, risky):
        expected[bucket(score)] += 1
    assert {name: values[name] for name in SCORE_BUCKETS} == expected


def test_health_metrics_stay_per_environment_and_a_request_without_scores_counts_no_behaviour(
    trained: TrainedModel,
) -> None:
    seen: list[tuple[dict[str, float], dict[str, str]]] = []
    app = InferenceApp(
        trained.settings(), metrics=lambda values, dims: seen.append((dict(values), dict(dims)))
    )

    call(app, proxy({"events": [{}]}))
    call(app, proxy(method="GET", path="/health"))
    call(app, proxy(method="GET", path="/model"))

    # Only the invalid request emits, per environment: no model version judged by a 400
    assert seen == [({"InvalidRequests": 1.0}, {"Environment": "test"})]


def test_a_failing_metric_sink_never_breaks_serving(trained: TrainedModel) -> None:
    def broken(values: Any, dimensions: Any) -> None:
        raise OSError("stdout closed")

    app = InferenceApp(trained.settings(), metrics=broken)

    assert call(app, proxy({"events": [valid_event()]}))[0] == 200
    assert call(app, proxy({"events": [{}]}))[0] == 400


def test_a_scored_request_writes_one_embedded_metric_format_line_cloudwatch_accepts(
    trained: TrainedModel, capsys: pytest.CaptureFixture[str]
) -> None:
    app = InferenceApp(trained.settings(environment="prod"))
    capsys.readouterr()

    call(app, proxy({"events": [valid_event(), ordinary_event(), valid_event()]}))
    call(app, proxy({"events": [{}]}))

    scored, invalid = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # The behaviour line: one directive, the version's three dimensions, every count
    assert scored["_aws"]["CloudWatchMetrics"] == [
        {
            "Namespace": "sds/inference",
            "Dimensions": [["Environment", "Model", "ModelVersion"]],
            "Metrics": [{"Name": name, "Unit": "Count"} for name in BEHAVIOUR_METRICS],
        }
    ]
    assert (scored["Environment"], scored["Model"], scored["ModelVersion"]) == (
        "prod",
        "fraud",
        "1",
    )
    assert scored["Predictions"] == 3
    assert sum(scored[name] for name in SCORE_BUCKETS) == 3
    assert abs(scored["_aws"]["Timestamp"] / 1000 - time.time()) < 60
    # Within the format's limits: at most 100 metrics per directive and 30 dimensions per set,
    # every metric and dimension a member of the document, values numbers, dimensions strings
    for document in (scored, invalid):
        assert isinstance(document["_aws"]["Timestamp"], int)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            assert len(directive["Metrics"]) <= 100
            assert all(0 < len(names) <= 30 for names in directive["Dimensions"])
            for metric in directive["Metrics"]:
                assert 1 <= len(metric["Name"]) <= 255
                value = document[metric["Name"]]
                assert isinstance(value, (int, float)) and not isinstance(value, bool)
            for name in (n for names in directive["Dimensions"] for n in names):
                assert isinstance(document[name], str) and document[name].isascii()
                assert 1 <= len(document[name]) <= 1024
    # The health line stays per environment
    [health] = invalid["_aws"]["CloudWatchMetrics"]
    assert health["Dimensions"] == [["Environment"]]
    assert (invalid["InvalidRequests"], invalid["Environment"]) == (1, "prod")


# 503: nothing to serve -------------------------------------------------------------------------


def assert_unavailable(app: InferenceApp, message: str) -> None:
    assert app.model is None
    for method, path in (("POST", "/predict"), ("GET", "/model")):
        status, headers, body = call(
            app, proxy({"events": [valid_event()]}, method=method, path=path)
        )
        assert status == 503
        assert "X-Model-Version" not in headers
        assert body["error"] == "model_unavailable"
        assert message in body["message"]
    status, _, body = call(app, proxy(method="GET", path="/health"))
    assert status == 503
    assert body["status"] == "unavailable"
    assert message in body["message"]
    # Client errors are still client errors while unavailable.
    assert call(app, proxy({"events": [valid_event()]}, path="/nope"))[0] == 404
    assert call(app, proxy(raw="{"))[0] == 400


def test_given_no_pin_then_every_model_route_answers_503_with_how_to_deploy_one() -> None:
    seen: Metrics = []
    app = InferenceApp(
        ServingSettings(MODEL, None, None, None, environment="dev"),
        metrics=collect(seen),
    )

    assert_unavailable(
        app,
        "no model is deployed to environment 'dev': promote a version "
        "(sds promote VERSION --to dev) and deploy",
    )
    assert [m for m in seen if m[0] == "ModelLoadFailure"] == []  # a valid state, not a failure


def _load_failure(settings: ServingSettings) -> tuple[InferenceApp, Metrics]:
    seen: Metrics = []
    app = InferenceApp(settings, metrics=collect(seen))
    return app, seen


def test_given_a_pin_with_the_wrong_sha256_then_503_and_a_load_failure_metric(
    trained: TrainedModel,
) -> None:
    app, seen = _load_failure(trained.settings(model_sha256="0" * 64))

    assert_unavailable(app, "does not match the deployed pin")
    assert ("ModelLoadFailure", 1.0, {"Environment": "test"}) in seen


def test_given_a_tampered_artifact_then_503_names_the_integrity_failure(
    trained: TrainedModel, tmp_path: Path
) -> None:
    root = trained.copy_registry(tmp_path / "registry")
    onnx = root / "models" / MODEL / "versions" / "1" / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))

    app, seen = _load_failure(trained.settings(registry_uri=root.as_uri()))

    assert_unavailable(
        app, "could not be loaded: version 1: model.onnx does not match its manifest"
    )
    assert [m[0] for m in seen if m[0] == "ModelLoadFailure"] == ["ModelLoadFailure"]


def test_given_a_pinned_version_missing_from_the_registry_then_503(
    trained: TrainedModel, tmp_path: Path
) -> None:
    app, _ = _load_failure(trained.settings(registry_uri=(tmp_path / "empty").as_uri()))

    assert_unavailable(app, "has no version 1")


ABSENT = object()  # a change to `_register_variant` that leaves the field out of the manifest


def _register_variant(
    trained: TrainedModel, tmp_path: Path, *, onnx: bytes | None = None, **changes: Any
) -> ServingSettings:
    root = trained.copy_registry(tmp_path / "registry")
    registry = open_registry(root.as_uri(), MODEL)
    metadata = {**trained.version.manifest, **changes}
    metadata = {key: value for key, value in metadata.items() if value is not ABSENT}
    version = registry.register(
        {"model.onnx": registry.read_artifact(1) if onnx is None else onnx}, metadata, actor="t"
    )
    return trained.settings(
        registry_uri=root.as_uri(), model_version=version.number, model_sha256=version.sha256
    )


def _damage_manifest(trained: TrainedModel, tmp_path: Path, **changes: Any) -> ServingSettings:
    """A pin on a version whose stored manifest has `changes` applied, written straight to the
    file as damage would be: the registry refuses to register a manifest of that shape."""
    settings = _register_variant(trained, tmp_path)
    version = tmp_path / "registry" / "models" / MODEL / "versions" / str(settings.model_version)
    path = version / "manifest.json"
    manifest = json.loads(path.read_bytes())
    path.write_text(json.dumps({**manifest, **changes}))
    return settings


def test_given_a_model_trained_on_other_features_then_503_asks_to_retrain_or_redeploy(
    trained: TrainedModel, tmp_path: Path
) -> None:
    schema = dict(trained.version.manifest["feature_schema"])
    schema["features"] = [*schema["features"], "new_feature"]

    app, seen = _load_failure(_register_variant(trained, tmp_path, feature_schema=schema))

    assert_unavailable(app, "was trained on different features than this code computes")
    assert [m[0] for m in seen if m[0] == "ModelLoadFailure"] == ["ModelLoadFailure"]


@pytest.mark.parametrize("schema", [ABSENT, {}], ids=["absent", "empty"])
def test_given_a_manifest_without_a_usable_feature_schema_then_503_not_a_crash_loop(
    trained: TrainedModel, tmp_path: Path, schema: Any
) -> None:
    app, seen = _load_failure(_register_variant(trained, tmp_path, feature_schema=schema))

    assert_unavailable(app, "was trained on different features than this code computes")
    assert [m[0] for m in seen if m[0] == "ModelLoadFailure"] == ["ModelLoadFailure"]


@pytest.mark.parametrize(
    ("schema", "said"),
    [(None, "null"), ([], "an array"), ("v1", "a string"), ({"features": "f"}, None)],
    ids=["null", "array", "string", "features-string"],
)
def test_given_a_feature_schema_of_another_shape_then_503_names_the_manifest_field(
    trained: TrainedModel, tmp_path: Path, schema: Any, said: str | None
) -> None:
    app, seen = _load_failure(_damage_manifest(trained, tmp_path, feature_schema=schema))

    # The registry refuses the manifest as it reads it (`Registry.get_version`)
    problem = (
        f"feature_schema is {said}, not an object"
        if said is not None
        else "feature_schema.features is a string, not an array"
    )
    assert_unavailable(app, f"could not be loaded: version 2: manifest.json: {problem}")
    assert [m[0] for m in seen if m[0] == "ModelLoadFailure"] == ["ModelLoadFailure"]


def test_given_an_artifact_that_is_not_onnx_then_503(trained: TrainedModel, tmp_path: Path) -> None:
    app, _ = _load_failure(_register_variant(trained, tmp_path, onnx=b"not an onnx model"))

    assert_unavailable(app, "is not a valid ONNX model")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MODEL_VERSION": "abc"}, "MODEL_VERSION must be a positive integer, got 'abc'"),
        ({"MODEL_VERSION": "1"}, "MODEL_SHA256 must be the 64-hex-digit sha256"),
        ({"MODEL_VERSION": "1", "MODEL_SHA256": "a" * 64}, "REGISTRY_URI is required"),
        ({"MAX_EVENTS": "0"}, "MAX_EVENTS must be a positive integer"),
    ],
)
def test_given_a_misconfigured_function_then_503_names_the_variable(
    environ: dict[str, str], message: str
) -> None:
    seen: Metrics = []
    app = InferenceApp.from_environ(environ, metrics=collect(seen))

    assert_unavailable(app, "the function is misconfigured: " + message)
    assert [m[0] for m in seen if m[0] == "ModelLoadFailure"] == ["ModelLoadFailure"]


def test_from_environ_with_a_valid_pin_serves_it(trained: TrainedModel) -> None:
    app = InferenceApp.from_environ(trained.environ(), metrics=lambda *a: None)

    assert call(app, proxy({"events": [valid_event()]}))[2]["model"] == {
        "name": MODEL,
        "version": 1,
    }


def test_given_a_manifest_without_a_threshold_then_503_names_it(
    trained: TrainedModel, tmp_path: Path
) -> None:
    app, seen = _load_failure(_register_variant(trained, tmp_path, decision_threshold=ABSENT))

    assert_unavailable(app, "the manifest has no numeric decision_threshold")
    assert [m[0] for m in seen if m[0] == "ModelLoadFailure"] == ["ModelLoadFailure"]


@pytest.mark.parametrize(
    ("threshold", "said"), [(None, "null"), ("0.5", "a string"), (True, "a boolean")]
)
def test_given_a_threshold_that_is_not_a_number_then_503_names_the_manifest_field(
    trained: TrainedModel, tmp_path: Path, threshold: Any, said: str
) -> None:
    app, seen = _load_failure(_damage_manifest(trained, tmp_path, decision_threshold=threshold))

    # The registry refuses the manifest as it reads it (`Registry.get_version`)
    assert_unavailable(
        app,
        f"could not be loaded: version 2: manifest.json: decision_threshold is {said}, "
        "not a number",
    )
    assert [m[0] for m in seen if m[0] == "ModelLoadFailure"] == ["ModelLoadFailure"]


def test_given_a_model_trained_on_other_aggregate_definitions_then_503_asks_to_retrain(
    trained: TrainedModel, tmp_path: Path
) -> None:
    schema = dict(trained.version.manifest["feature_schema"])
    schema["aggregates"] = {**schema["aggregates"], "fingerprint": "0" * 64}

    app, _ = _load_failure(_register_variant(trained, tmp_path, feature_schema=schema))

    assert_unavailable(app, "was trained on other account aggregate definitions")


# Account aggregates from the feature store -------------------------------------------------------


class CountingStore(SqliteFeatureStore):
    """The SQLite store, counting reads (one round trip per request is the contract)."""

    reads = 0

    def read(self, entities: Any) -> Any:
        self.reads += 1
        return super().read(entities)


class BrokenStore(SqliteFeatureStore):
    def read(self, entities: Any) -> Any:
        raise FeatureStoreError("features.db: read failed: disk I/O error")


def _failed_logins(account: str, count: int, at: str = NOW) -> list[tuple[int, dict[str, Any]]]:
    minute = 60_000_000
    return [
        (
            parse_time(at) - (i + 1) * minute,
            {
                "type": "login",
                "event_id": f"{account}-{i}",
                "account_id": account,
                "outcome": "failure",
            },
        )
        for i in range(count)
    ]


def test_a_payment_is_scored_with_its_account_aggregates_read_in_one_round_trip(
    trained: TrainedModel, tmp_path: Path
) -> None:
    # Given a feature store holding a burst of failed logins on one account
    store = CountingStore(tmp_path / "features.db")
    online = OnlineFeatures(store)
    online.apply(_failed_logins("acct-risky", 6), now=parse_time(NOW))
    app = InferenceApp(trained.settings(), metrics=lambda *a: None, online=online)
    events = [
        valid_event(),
        ordinary_event(),
        *[ordinary_event(event_id=f"o{i}") for i in range(98)],
    ]
    store.reads = 0

    # When a request with 100 payments is scored
    status, _, body = call(app, proxy({"events": events}))

    # Then the store was read once, and each payment was scored with its own account's values
    assert status == 200 and store.reads == 1
    burst = online.read([("acct-risky", parse_time(NOW))])[0]
    assert burst["failed_logins_last_1h"] == 6 and burst["num_failed_logins_last_24_hours"] == 6
    data = trained.registry().read_artifact(1)
    expected = onnx_scores(
        data,
        np.asarray([featurize(events[0], burst), featurize(events[1], ZERO)], dtype=np.float32),
    )
    assert [p["fraud_probability"] for p in body["predictions"][:2]] == shown_scores(
        expected.tolist(), trained.version.manifest["decision_threshold"]
    )
    # and the burst is what moved the score: without it the same payment scores lower
    _, _, quiet = call(app, proxy({"events": [valid_event(account_id="acct-quiet")]}))
    assert (
        body["predictions"][0]["fraud_probability"] > quiet["predictions"][0]["fraud_probability"]
    )


def test_one_payment_is_scored_as_a_row_exactly_as_in_a_batch(
    trained: TrainedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a store holding a burst of failed logins on one account, and payments of that
    # account, of another, at other hours and amounts
    online = OnlineFeatures(SqliteFeatureStore(tmp_path / "features.db"))
    online.apply(_failed_logins("acct-risky", 4), now=parse_time(NOW))
    app = InferenceApp(trained.settings(), metrics=lambda *a: None, online=online)
    events = [
        valid_event(),
        ordinary_event(),
        valid_event(event_id="e3", amount=12, hour_of_day=23, is_new_device=False),
        valid_event(event_id="e4", currency="JPY", amount=99_999.5, merchant_category="travel"),
    ]
    # When each is sent alone (scored as a row: no columns are built for it) and all together
    _, _, batch = call(app, proxy({"events": events}))
    with monkeypatch.context() as patch:
        patch.setattr(app_module, "featurize_columns", None)  # the row path never calls it
        singles = [call(app, proxy({"events": [e]})) for e in events]
    # Then each alone gets exactly its prediction in the batch, aggregates included
    assert [status for status, _, _ in singles] == [200] * len(events)
    assert [body["predictions"][0] for _, _, body in singles] == batch["predictions"]
    # (they score apart: a path that dropped an input or the aggregates would not pass above)
    assert len({p["fraud_probability"] for p in batch["predictions"]}) >= 3


@pytest.mark.parametrize("payments", [1, 2], ids=["one payment (a row)", "two (columns)"])
def test_given_the_store_failing_and_an_environment_that_refuses_then_503_not_500(
    trained: TrainedModel, tmp_path: Path, payments: int
) -> None:
    seen: Metrics = []
    app = InferenceApp(
        trained.settings(),
        metrics=collect(seen),
        online=OnlineFeatures(BrokenStore(tmp_path / "features.db")),
    )

    status, _, body = call(app, proxy({"events": [valid_event(), ordinary_event()][:payments]}))

    assert status == 503
    assert body["error"] == "features_unavailable"
    assert "disk I/O error" in body["message"]
    assert ("OnlineFeaturesUnavailable", 1.0, {"Environment": "test"}) in seen


@pytest.mark.parametrize("payments", [1, 2], ids=["one payment (a row)", "two (columns)"])
def test_given_the_store_failing_and_an_environment_that_scores_then_200_flagged(
    trained: TrainedModel, tmp_path: Path, payments: int
) -> None:
    seen: Metrics = []
    app = InferenceApp(
        trained.settings(when_features_unavailable="score"),
        metrics=collect(seen),
        online=OnlineFeatures(BrokenStore(tmp_path / "features.db")),
    )
    events = [valid_event(), ordinary_event()][:payments]

    status, _, body = call(app, proxy({"events": events}))

    assert status == 200
    assert body["online_features"] == {
        "available": False,
        "reason": "features.db: read failed: disk I/O error",
    }
    assert [p["event_id"] for p in body["predictions"]] == [e["event_id"] for e in events]
    assert ("OnlineFeaturesUnavailable", 1.0, {"Environment": "test"}) in seen
    # scored with every aggregate 0, as an account the store has never seen is
    data = trained.registry().read_artifact(1)
    expected = onnx_scores(data, np.asarray([featurize(e, ZERO) for e in events], np.float32))
    assert [p["fraud_probability"] for p in body["predictions"]] == shown_scores(
        expected.tolist(), trained.version.manifest["decision_threshold"]
    )


def test_given_no_feature_store_configured_then_503_names_the_setting(
    trained: TrainedModel,
) -> None:
    app = InferenceApp(trained.settings(feature_store_uri=None), metrics=lambda *a: None)

    status, _, body = call(app, proxy({"events": [valid_event()]}))

    assert status == 503
    assert "no feature store is configured (FEATURE_STORE_URI)" in body["message"]
