"""Capture: one record per scored payment, as served, through the sink the handler is given.

Given the small trained model served by the real handler with a sink that keeps what it is
written, each test sends requests as API Gateway would and reads the records back with the
contract's own parser (`sds.kernel.capture.parse`): the feature vector the model scored, the
model's identity, the decision the client saw, sampling that is the same for the same event ids,
exclusions that leave fields out everywhere, and a capture that never fails a request.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdas.inference.app import InferenceApp
from sds.kernel.aggregates import NAMES as AGGREGATES
from sds.kernel.capture import (
    RECORD,
    SCHEMA_VERSION,
    Capture,
    CaptureError,
    Capturer,
    check_exclude,
    feature_fingerprint,
    parse,
    partition,
    records,
    sampled,
)
from sds.kernel.features import NOT_UNICODE, Columns, featurize_columns
from sds.kernel.serving import shown_scores
from sds.kernel.settings import (
    CAPTURE_EXCLUDE,
    CAPTURE_SAMPLE_RATE,
    ServingSettings,
    SettingsError,
    function_environment,
)
from tests.support.trained_model import TrainedModel

NOW = "2026-03-01T12:00:00Z"


def payment(number: int, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"evt-{number}",
        "account_id": f"acct-{number % 7}",
        "occurred_at": NOW,
        "amount": 10.0 + number,
        "currency": "EUR",
        "merchant_category": "electronics" if number % 2 else "grocery",
        "country": "BR" if number % 3 else "DE",
        "card_country": "DE",
        "hour_of_day": number % 24,
        "account_age_days": 5 + number,
        "is_new_device": bool(number % 2),
    }
    event.update(overrides)
    return event


def proxy(events: list[dict[str, Any]], request_id: str = "req-1") -> dict[str, Any]:
    return {
        "resource": "/{proxy+}",
        "path": "/predict",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"events": events}),
        "isBase64Encoded": False,
        "requestContext": {"requestId": request_id, "stage": "live"},
    }


class Sink:
    """What the handler wrote: each call's bytes, as Lambda's stdout would receive them."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def __call__(self, lines: bytes) -> None:
        self.writes.append(lines)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for data in self.writes for line in data.splitlines()]


def app_with(trained: TrainedModel, sink: Any, **settings: Any) -> InferenceApp:
    metrics: list[dict[str, float]] = []
    app = InferenceApp(
        trained.settings(**settings),
        metrics=lambda values, dimensions: metrics.append(dict(values)),
        capture=sink,
    )
    assert app.model is not None, app.unavailable
    app.seen_metrics = metrics  # type: ignore[attr-defined]
    return app


def test_each_scored_payment_is_one_record_holding_what_the_model_saw_and_said(
    trained: TrainedModel,
) -> None:
    # Given the handler serving the trained version, capturing to a sink
    sink = Sink()
    app = app_with(trained, sink)
    events = [payment(i) for i in range(5)]
    # When one request scores five payments
    response = app.handle(proxy(events, request_id="req-42"), None)
    assert response["statusCode"] == 200
    predictions = json.loads(response["body"])["predictions"]
    # Then the sink got one write (one log write per request) with one line per payment
    assert len(sink.writes) == 1 and sink.writes[0].endswith(b"\n")
    records = sink.records()
    assert [r["event_id"] for r in records] == [e["event_id"] for e in events]
    # each readable by the contract's parser, in the documented field order
    assert list(records[0]) == [
        "record", "schema_version", "env", "model", "threshold", "sample_rate", "feature_schema",
        "request_id", "received_at", "latency_ms", "event_id", "account_id", "occurred_at",
        "score", "decision", "online_features", "features", "event",
    ]  # fmt: skip
    # The feature vector is exactly the float32 row the model scored (aggregates included)
    columns = Columns.of(events).with_inputs(
        {name: [0.0] * len(events) for name in AGGREGATES}  # an empty store: nothing counts yet
    )
    matrix = featurize_columns(columns)
    for record, row, sent, answer in zip(records, matrix, events, predictions, strict=True):
        capture = parse(record)
        assert isinstance(capture, Capture)
        assert np.array_equal(np.asarray(capture.features, dtype=np.float32), row)
        # the model, its score unrounded and the decision the client saw
        assert (capture.model_name, capture.model_version, capture.model_sha256) == (
            "fraud",
            trained.version.number,
            trained.version.sha256,
        )
        assert shown_scores([capture.score], capture.threshold) == [answer["fraud_probability"]]
        assert capture.decision is answer["is_fraud"]
        assert capture.threshold == trained.version.manifest["decision_threshold"]
        # who asked, when, in which environment, and the payment as sent
        assert capture.request_id == "req-42"
        assert capture.env == "test" and capture.online_features is True
        assert capture.event == sent and capture.account_id == sent["account_id"]
        assert capture.feature_schema == feature_fingerprint()
        assert capture.latency_ms is not None and 0 <= capture.latency_ms < 10_000
        assert record["record"] == RECORD and record["schema_version"] == SCHEMA_VERSION


def test_the_features_read_back_are_the_float32_values_scored_to_the_last_bit(
    trained: TrainedModel,
) -> None:
    # Given values whose float32 text is short but not obvious (log1p of odd amounts)
    sink = Sink()
    app = app_with(trained, sink)
    events = [payment(i, amount=amount) for i, amount in enumerate((0.01, 3.3333, 999_999.99))]
    app.handle(proxy(events), None)
    # When read back from JSON and cast to float32, Then nothing was lost in the text
    (first, *_) = sink.records()
    assert all(isinstance(v, float) for v in first["features"])
    matrix = featurize_columns(Columns.of(events).with_inputs({n: [0.0] * 3 for n in AGGREGATES}))
    read = np.asarray([r["features"] for r in sink.records()], dtype=np.float32)
    assert read.tobytes() == matrix.tobytes()


def test_a_payment_sent_alone_is_captured_as_the_same_payment_in_a_batch(
    trained: TrainedModel,
) -> None:
    # Given payments sent one per request (each scored as a row) and then all in one request
    sink = Sink()
    app = app_with(trained, sink)
    events = [payment(i, amount=amount) for i, amount in enumerate((0.01, 3.3333, 999_999.99))]
    for event in events:
        app.handle(proxy([event]), None)
    alone = sink.records()
    sink.writes.clear()
    app.handle(proxy(events), None)
    together = sink.records()
    # Then each record holds the same features, to the last bit, score, decision and event
    kept = ("event_id", "score", "decision", "online_features", "features", "event")
    assert [{k: r[k] for k in kept} for r in alone] == [{k: r[k] for k in kept} for r in together]
    matrix = featurize_columns(Columns.of(events).with_inputs({n: [0.0] * 3 for n in AGGREGATES}))
    read = np.asarray([r["features"] for r in alone], dtype=np.float32)
    assert read.tobytes() == matrix.tobytes()


def test_sampling_is_decided_by_the_event_id_so_a_replay_captures_the_same_events(
    trained: TrainedModel,
) -> None:
    # Given an environment capturing a quarter of its payments
    events = [payment(i) for i in range(200)]
    first, second = Sink(), Sink()
    for sink in (first, second):
        app = app_with(trained, sink, capture_sample_rate=0.25)
        for start in range(0, 200, 50):
            app.handle(proxy(events[start : start + 50]), None)
    captured = [r["event_id"] for r in first.records()]
    # Then the same payments are captured every time, and they are exactly the sampled ones
    assert captured == [r["event_id"] for r in second.records()]
    assert captured == [e["event_id"] for e in events if sampled(e["event_id"], 0.25)]
    assert 30 <= len(captured) <= 70  # a quarter of 200, give or take
    assert {r["sample_rate"] for r in first.records()} == {0.25}


def test_sampled_is_stable_and_close_to_its_rate_over_many_ids() -> None:
    ids = [f"txn-{i:07d}" for i in range(20_000)]
    for rate in (0.01, 0.1, 0.5):
        chosen = [i for i in ids if sampled(i, rate)]
        assert abs(len(chosen) / len(ids) - rate) < 0.01 + rate * 0.1
        assert chosen == [i for i in ids if sampled(i, rate)]
    # Rates nest: what a lower rate captures, a higher one captures too
    assert set(i for i in ids if sampled(i, 0.1)) <= set(i for i in ids if sampled(i, 0.5))
    assert all(sampled(i, 1.0) for i in ids[:100]) and not any(sampled(i, 0.0) for i in ids[:100])


def test_a_sample_rate_of_zero_captures_nothing(trained: TrainedModel) -> None:
    sink = Sink()
    app = app_with(trained, sink, capture_sample_rate=0.0)
    assert app.handle(proxy([payment(1)]), None)["statusCode"] == 200
    assert sink.writes == [] and app.capturer is None


def test_each_record_keeps_the_event_as_it_was_sent(trained: TrainedModel) -> None:
    # Given payments as clients send them: an amount as an integer, one saying its type
    sink = Sink()
    app = app_with(trained, sink)
    sent = [payment(1, amount=12), {**payment(2), "type": "payment"}]
    event = proxy(sent)
    # (read by the warm path's reader, which gives its own objects, not the parsed JSON)
    assert app.decoder(event["body"].encode()) is not None

    app.handle(event, None)

    # Then each record's event is the JSON object sent, value for value and type for type
    records = sink.records()
    assert [r["event"] for r in records] == sent
    assert type(records[0]["event"]["amount"]) is int
    assert "type" not in records[0]["event"] and records[1]["event"]["type"] == "payment"


def test_excluded_fields_are_left_out_wherever_they_appear(trained: TrainedModel) -> None:
    # Given an environment that keeps account ids and request ids out of its captures
    sink = Sink()
    app = app_with(trained, sink, capture_exclude=("account_id", "request_id", "card_country"))
    app.handle(proxy([payment(1), payment(2)]), None)
    for record in sink.records():
        # Then the fields are gone from the record and from the raw event
        assert "account_id" not in record and "request_id" not in record
        assert "account_id" not in record["event"] and "card_country" not in record["event"]
        # and what the loop needs is still there
        capture = parse(record)
        assert capture.event_id and capture.occurred_at_us and capture.features is not None
        assert capture.account_id is None and capture.request_id is None
    # And a record can drop the vector and the event entirely
    bare = Sink()
    app_with(trained, bare, capture_exclude=("features", "event")).handle(proxy([payment(3)]), None)
    (record,) = bare.records()
    assert "features" not in record and "event" not in record
    assert parse(record).features is None


def test_what_the_loop_needs_cannot_be_excluded() -> None:
    for name in ("event_id", "occurred_at", "score", "model", "decision", "nonsense"):
        with pytest.raises(CaptureError) as error:
            check_exclude([name])
        assert repr(name) in str(error.value) and "always keeps event_id" in str(error.value)


def test_a_failing_sink_never_fails_the_request(trained: TrainedModel) -> None:
    # Given a sink that raises (a full disk, a closed pipe)
    def broken(lines: bytes) -> None:
        raise OSError("no space left on device")

    app = app_with(trained, broken)
    # When a payment is scored, Then the client gets its answer and a metric counts the loss
    response = app.handle(proxy([payment(1)]), None)
    assert response["statusCode"] == 200
    assert {"CaptureFailures": 1.0}.items() <= app.seen_metrics[-1].items()  # type: ignore[attr-defined]


def test_nothing_is_captured_for_a_request_that_is_not_scored(trained: TrainedModel) -> None:
    sink = Sink()
    app = app_with(trained, sink)
    bad = payment(1, amount=-5)
    assert app.handle(proxy([bad]), None)["statusCode"] == 400
    assert sink.writes == []


def test_an_event_id_with_a_lone_surrogate_is_refused_and_nothing_is_captured(
    trained: TrainedModel,
) -> None:
    # Given an event id with a lone surrogate escape, which the standard library's parser reads
    # (orjson refuses it) and which no capture reader could read back
    sink = Sink()
    app = app_with(trained, sink)
    body = json.dumps({"events": [payment(1)]}).replace("evt-1", "evt-\\ud800")
    event = {**proxy([payment(1)]), "body": body}
    # When it is sent to /predict
    response = app.handle(event, None)
    # Then it is a 400 that names the field, and nothing is captured
    assert response["statusCode"] == 400
    problems = json.loads(response["body"])["problems"]
    assert {"field": "events[0].event_id", "reason": NOT_UNICODE} in problems
    assert sink.writes == []


def test_parse_refuses_what_is_not_a_record_of_this_schema() -> None:
    capturer_lines: list[bytes] = []
    Capturer(
        env="dev",
        model={"name": "fraud", "version": 3, "sha256": "a" * 64},
        threshold=0.5,
        sink=capturer_lines.append,
    ).capture(
        request_id="r",
        received_us=1_772_366_400_000_000,
        started_ns=0,
        events=[payment(1)],
        features=np.zeros((1, 22), dtype=np.float32),
        scores=[0.7],
        online_features=True,
    )
    good = json.loads(capturer_lines[0])
    assert parse(good).decision is True and parse(good).received_at_us == 1_772_366_400_000_000
    with pytest.raises(CaptureError, match="not a capture record"):
        parse({"_aws": {}, "Predictions": 1})  # an EMF line is not a capture
    with pytest.raises(CaptureError, match="schema_version 3: this sds reads capture schema"):
        parse({**good, "schema_version": 3})
    with pytest.raises(CaptureError, match="score: expected int or float"):
        parse({**good, "score": "high"})
    with pytest.raises(CaptureError, match="occurred_at"):
        parse({**good, "occurred_at": "yesterday"})


def test_latency_runs_to_the_decision_in_milliseconds_to_three_decimals() -> None:
    lines: list[bytes] = []
    capturer = Capturer(
        env="dev",
        model={"name": "fraud", "version": 3, "sha256": "a" * 64},
        threshold=0.5,
        sink=lines.append,
    )
    for decided_ns, expected in ((1_234_567, 1.235), (1_234_499, 1.234), (999, 0.001), (0, 0.0)):
        capturer.capture(
            request_id="r",
            received_us=1_772_366_400_000_000,
            started_ns=1_000_000_000,
            decided_ns=1_000_000_000 + decided_ns,
            events=[payment(1)],
            features=np.zeros((1, 22), dtype=np.float32),
            scores=[0.2],
            online_features=True,
        )
        assert json.loads(lines[-1])["latency_ms"] == expected
        assert f'"latency_ms":{expected}'.encode() in lines[-1]  # no float noise in the text


def test_partitions_are_utc_days() -> None:
    midnight = 1_772_323_200_000_000  # 2026-03-01T00:00:00Z
    assert partition(midnight) == "dt=2026-03-01"
    assert partition(midnight - 1) == "dt=2026-02-28"
    assert partition(midnight + 86_400_000_000 - 1) == "dt=2026-03-01"


def test_the_function_environment_carries_the_capture_settings_the_handler_parses() -> None:
    variables = function_environment(
        model_name="fraud",
        environment="prod",
        pin=None,
        registry_uri="s3://bucket",
        max_events=100,
        max_body_bytes=262144,
        feature_store_uri=None,
        when_features_unavailable="refuse",
        capture_sample_rate=0.1,
        capture_exclude=("account_id", "features"),
    )
    assert variables[CAPTURE_SAMPLE_RATE] == "0.1"
    assert variables[CAPTURE_EXCLUDE] == "account_id,features"
    settings = ServingSettings.from_environ(variables)
    assert settings.capture_sample_rate == 0.1
    assert settings.capture_exclude == ("account_id", "features")
    # A bad value is a misconfigured function (503 with the reason), named
    for name, value, message in (
        (CAPTURE_SAMPLE_RATE, "1.5", "CAPTURE_SAMPLE_RATE must be a number from 0 to 1"),
        (CAPTURE_SAMPLE_RATE, "nan", "CAPTURE_SAMPLE_RATE must be a number from 0 to 1"),
        (CAPTURE_EXCLUDE, "score", "CAPTURE_EXCLUDE: capture cannot exclude 'score'"),
    ):
        with pytest.raises(SettingsError, match=message):
            ServingSettings.from_environ({**variables, name: value})
    app = InferenceApp.from_environ({**variables, CAPTURE_SAMPLE_RATE: "2"})
    assert app.handle(proxy([payment(1)]), None)["statusCode"] == 503


def test_sds_serve_captures_into_day_files_and_takes_labels_on_post_events(
    trained: TrainedModel, tmp_path: Path
) -> None:
    # Given what `sds serve --env dev` builds: the pinned app, capturing into dev's folder
    from sds.ops.capture_store import CaptureFiles, LabelFiles
    from training.capture_data import Window, read_served

    captures, labels = tmp_path / "capture" / "dev", tmp_path / "labels" / "dev"
    apps = trained.serving_locally(
        tmp_path / "models.lock.json",
        feature_store_uri=f"sqlite://{tmp_path / 'features.db'}",
        capture=CaptureFiles(captures),
        labels=LabelFiles(labels),
    )
    # When two requests are scored and a chargeback arrives on POST /events
    for start in (0, 3):
        assert (
            apps.handle(proxy([payment(i) for i in range(start, start + 3)]))["statusCode"] == 200
        )
    label = {
        "type": "label",
        "event_id": "evt-4",
        "is_fraud": True,
        "labelled_at": "2026-03-20T00:00:00Z",
        "source": "chargeback",
    }
    events = {**proxy([]), "path": "/events", "body": json.dumps({"events": [label]})}
    answer = apps.handle(events)
    assert answer["statusCode"] == 202 and json.loads(answer["body"])["labels"] == 1
    # Then the captures are one file of the day, a line per payment, in the contract's schema
    (file,) = captures.rglob("*.jsonl")
    assert file.parent.name == partition(time.time_ns() // 1000)
    assert [parse(json.loads(line)).event_id for line in file.read_text().splitlines()] == [
        f"evt-{i}" for i in range(6)
    ]
    # and training from capture reads them back joined with the label
    served = read_served(
        str(captures),
        str(labels),
        env="dev",
        window=Window(
            since_us=1_772_323_200_000_000,
            until_us=1_772_323_200_000_000 + 86_400_000_000,
            as_of_us=1_772_323_200_000_000 + 40 * 86_400_000_000,
            maturity_days=30,
        ),
    )
    assert served.event_ids == [f"evt-{i}" for i in range(6)]
    assert served.labels.tolist() == [False, False, False, False, True, False]
    # And a batch with a bad label stores nothing
    bad = {**events, "body": json.dumps({"events": [label, {**label, "is_fraud": "yes"}]})}
    assert apps.handle(bad)["statusCode"] == 400
    assert len(list(labels.rglob("*.jsonl"))) == 1


# Reading capture files back: an incomplete last line ----------------------------------------------


def _capture_lines(count: int) -> list[bytes]:
    lines: list[bytes] = []
    Capturer(
        env="dev",
        model={"name": "fraud", "version": 3, "sha256": "a" * 64},
        threshold=0.5,
        sink=lines.append,
    ).capture(
        request_id="r",
        received_us=1_772_366_400_000_000,
        started_ns=0,
        events=[payment(i) for i in range(count)],
        features=np.zeros((count, 22), dtype=np.float32),
        scores=[0.7] * count,
        online_features=True,
    )
    return lines[0].splitlines(keepends=True)


def test_a_file_cut_short_mid_write_is_read_up_to_its_last_whole_record_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a capture file whose writer crashed in the middle of its third record
    first, second, third = _capture_lines(3)
    data = first + second + third[:40]
    # When it is read
    with caplog.at_level(logging.WARNING, logger="sds.capture"):
        found = list(records("dt=2026-03-01/host-1.jsonl", data))
    # Then the two whole records are read, and a warning names the file and the line skipped
    assert [where for where, _ in found] == [
        "dt=2026-03-01/host-1.jsonl:1",
        "dt=2026-03-01/host-1.jsonl:2",
    ]
    assert [r.event_id for _, r in found] == ["evt-0", "evt-1"]
    (warning,) = caplog.messages
    assert "dt=2026-03-01/host-1.jsonl: the last line (3) is incomplete" in warning


def test_a_whole_last_record_without_its_newline_is_read_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = _capture_lines(2)
    with caplog.at_level(logging.WARNING, logger="sds.capture"):
        found = list(records("f.jsonl", first + second.rstrip(b"\n")))
    assert [r.event_id for _, r in found] == ["evt-0", "evt-1"]
    assert caplog.messages == []


@pytest.mark.parametrize(
    ("data", "where"),
    [
        # a broken line followed by others is corruption, not a write cut short
        (lambda a, b, c: a + b[:40] + b"\n" + c, "f.jsonl:2"),
        # a broken last line that ends with its newline was written whole: corruption too
        (lambda a, b, c: a + b + c[:40] + b"\n", "f.jsonl:3"),
        # a whole JSON line that is not a record, even last and unterminated
        (lambda a, b, c: a + b + b'{"_aws": {}}', "f.jsonl:3"),
    ],
    ids=["torn line in the middle", "torn last line with its newline", "last line not a record"],
)
def test_corruption_anywhere_else_is_an_error_naming_the_file_and_line(
    data: Callable[[bytes, bytes, bytes], bytes], where: str
) -> None:
    first, second, third = _capture_lines(3)
    with pytest.raises(CaptureError, match=f"^{re.escape(where)}: not a capture record"):
        list(records("f.jsonl", data(first, second, third)))
