"""What the Lambda handler writes to stdout: one write per request.

On Lambda the runtime flushes stdout after every write (awslambdaric's `Unbuffered`), so each
write is a system call. A request's metric line and its capture records go out together, in one
write at its end (`StdoutLines`), in the order they were made; writing them never fails a request.
"""

from __future__ import annotations

import json
import logging
import sys

import pytest

from lambdas.inference.app import StdoutLines
from tests.support.trained_model import TrainedModel

# A fresh interpreter, stdout counted per write as the Lambda runtime flushes it, then the handler
# imported (cold start) and called as the runtime calls it.
_PROBE = r"""
import json
import sys

real = sys.stdout
writes = []


class Flushed:
    def write(self, text):
        writes.append(text)
        return len(text)

    def flush(self):
        pass


sys.stdout = Flushed()
import lambdas.inference.handler as handler  # noqa: E402

payment = {
    "amount": 120.0, "currency": "EUR", "merchant_category": "travel", "country": "FR",
    "card_country": "FR", "hour_of_day": 11, "account_age_days": 400, "is_new_device": False,
    "account_id": "acct-1", "occurred_at": "2026-03-01T12:00:00Z",
}


def request(body, request_id):
    return {
        "path": "/predict", "httpMethod": "POST", "isBase64Encoded": False,
        "headers": {"Content-Type": "application/json"}, "body": json.dumps(body),
        "requestContext": {"requestId": request_id},
    }


per_request = []
for body, request_id in (
    ({"events": [{**payment, "event_id": "one"}]}, "r-1"),
    ({"events": [{**payment, "event_id": f"three-{i}"} for i in range(3)]}, "r-3"),
    ({"events": [{"amount": "x"}]}, "r-bad"),
):
    before = len(writes)
    status = handler.lambda_handler(request(body, request_id), None)["statusCode"]
    per_request.append({"status": status, "writes": writes[before:]})
real.write("RESULT " + json.dumps({"init": writes[: len(writes) - sum(
    len(r["writes"]) for r in per_request)], "requests": per_request}) + "\n")
"""


def _run_probe(trained: TrainedModel, **extra: str) -> dict[str, object]:
    report: dict[str, object] = trained.run_probe(_PROBE, **extra)[0]
    return report


def test_each_request_writes_its_metric_line_and_capture_records_in_one_write(
    trained: TrainedModel,
) -> None:
    # Given the handler imported as on Lambda, capture on (the default rate, 1.0)
    # When a 1-payment, a 3-payment and an invalid request arrive
    report = _run_probe(trained)
    requests = report["requests"]
    assert isinstance(requests, list)
    one, three, bad = requests
    # Then the init wrote nothing (the model loaded), and each request made exactly one write
    assert report["init"] == []
    assert [r["status"] for r in requests] == [200, 200, 400]
    assert [len(r["writes"]) for r in requests] == [1, 1, 1]
    for served, ids in ((one, ["one"]), (three, ["three-0", "three-1", "three-2"])):
        lines = served["writes"][0].splitlines()
        # the served version's behaviour line first, then one capture record per payment
        behaviour = json.loads(lines[0])
        assert behaviour["Predictions"] == len(ids) and behaviour["ModelVersion"] == "1"
        records = [json.loads(x) for x in lines[1:]]
        assert [r["record"] for r in records] == ["sds.capture"] * len(ids)
        assert [r["event_id"] for r in records] == ids
        assert served["writes"][0].endswith("\n")
    # and a refused request writes its health metric, in its one write too
    (health,) = [json.loads(x) for x in bad["writes"][0].splitlines()]
    assert health["InvalidRequests"] == 1


def test_with_capture_off_a_request_still_makes_one_write(trained: TrainedModel) -> None:
    report = _run_probe(trained, CAPTURE_SAMPLE_RATE="0")
    requests = report["requests"]
    assert isinstance(requests, list)
    assert [len(r["writes"]) for r in requests] == [1, 1, 1]
    assert [len(r["writes"][0].splitlines()) for r in requests] == [1, 1, 1]


def test_a_model_that_fails_to_load_writes_its_metric_at_init(trained: TrainedModel) -> None:
    # Given a pin that does not match the registry
    report = _run_probe(trained, MODEL_SHA256="0" * 64)
    # Then the init's failure metric is written before any request, in one write
    init = report["init"]
    assert isinstance(init, list) and len(init) == 1
    assert json.loads(init[0])["ModelLoadFailure"] == 1


class _BrokenStdout:
    def write(self, text: str) -> int:
        raise OSError("stdout is closed")


def test_a_failed_write_is_logged_and_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stdout = StdoutLines()
    stdout.metrics({"Predictions": 1.0}, {"Environment": "test"})
    stdout.capture(b'{"record":"sds.capture"}\n')
    monkeypatch.setattr(sys, "stdout", _BrokenStdout())
    with caplog.at_level(logging.ERROR, logger="sds.inference"):
        stdout.flush()
    assert "could not write" in caplog.text and "stdout is closed" in caplog.text
    # and what could not be written is not written again with the next request
    written: list[str] = []
    monkeypatch.setattr(sys, "stdout", type("Out", (), {"write": lambda _, t: written.append(t)})())
    stdout.capture(b"next\n")
    stdout.flush()
    assert written == ["next\n"]
