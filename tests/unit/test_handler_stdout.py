"""What the Lambda handler writes to stdout: one write per request.

On Lambda the runtime flushes stdout after every write (awslambdaric's `Unbuffered`), so each
write is a system call. A request's metric line and its capture records go out together, in one
write at its end (`StdoutLines`), in the order they were made; writing them never fails a request.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import pytest
from awslambdaric.bootstrap import Unbuffered

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


# Under the Lambda runtime's own stdout (awslambdaric's `Unbuffered`, every write flushed), the
# lines go straight to its file descriptor.


@pytest.fixture
def pipe() -> Iterator[tuple[TextIO, int]]:
    """A text stream on a pipe, and the pipe's read end (not blocking)."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    stream = open(write_fd, "w")  # noqa: SIM115 - closed below
    try:
        yield stream, read_fd
    finally:
        stream.close()
        os.close(read_fd)


def _runtime_stdout(monkeypatch: pytest.MonkeyPatch, stream: TextIO) -> StdoutLines:
    """sys.stdout as the runtime sets it before importing a handler (`Unbuffered` around
    `stream`; set in the test, since pytest sets its own between a fixture and the test), and the
    `StdoutLines` the handler then makes."""
    monkeypatch.setattr(sys, "stdout", Unbuffered(stream))
    return StdoutLines()


def _drain(read_fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(read_fd, 1 << 16)
        except BlockingIOError:
            return b"".join(chunks)
        chunks.append(chunk)


def _recording_writes(monkeypatch: pytest.MonkeyPatch, most: int | None = None) -> list[bytes]:
    """`os.write` recorded (the text layer writes in C, not through it), taking at most `most`
    bytes a call."""
    calls: list[bytes] = []
    write = os.write

    def recorded(fd: int, data: Any) -> int:
        data = bytes(data)
        calls.append(data)
        return write(fd, data if most is None else data[:most])

    monkeypatch.setattr(os, "write", recorded)
    return calls


def test_under_the_runtime_stdout_a_request_is_one_write_to_its_descriptor_in_order(
    pipe: tuple[TextIO, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, read_fd = pipe
    stdout = _runtime_stdout(monkeypatch, stream)
    calls = _recording_writes(monkeypatch)
    # Given something printed before (the runtime flushes it at once), then a request's lines
    print("before")
    stdout.metrics({"Predictions": 1.0}, {"Environment": "test"})
    stdout.capture(b'{"record":"sds.capture","event_id":"e-1"}\n')
    stdout.flush()
    print("after")
    # Then the request's lines went to the pipe in one os.write, between the printed lines
    assert len(calls) == 1 and calls[0].count(b"\n") == 2
    lines = _drain(read_fd).decode().splitlines()
    assert lines[0] == "before" and lines[-1] == "after"
    assert json.loads(lines[1])["Predictions"] == 1
    assert json.loads(lines[2])["event_id"] == "e-1"


def test_a_large_write_the_pipe_takes_in_parts_arrives_whole(
    pipe: tuple[TextIO, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, read_fd = pipe
    stdout = _runtime_stdout(monkeypatch, stream)
    calls = _recording_writes(monkeypatch, most=7)
    records = b"".join(b'{"record":"sds.capture","n":%d}\n' % n for n in range(20))
    stdout.capture(records)
    stdout.flush()
    assert _drain(read_fd) == records
    assert len(calls) == -(-len(records) // 7)  # written on from where each part ended


def test_a_descriptor_that_takes_nothing_or_fails_is_logged_and_never_raises(
    pipe: tuple[TextIO, int],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream, read_fd = pipe
    stdout = _runtime_stdout(monkeypatch, stream)
    _recording_writes(monkeypatch, most=0)  # a write that takes none of the bytes
    stdout.capture(b"lost\n")
    with caplog.at_level(logging.ERROR, logger="sds.inference"):
        stdout.flush()
    assert "could not write 5 bytes" in caplog.text and "took none" in caplog.text

    def closed(fd: int, data: Any) -> int:
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(os, "write", closed)
    stdout.capture(b"lost too\n")
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="sds.inference"):
        stdout.flush()
    assert "could not write 9 bytes" in caplog.text and "Bad file descriptor" in caplog.text
    assert _drain(read_fd) == b""


def test_stdout_replaced_after_it_was_made_gets_the_lines_as_text(
    pipe: tuple[TextIO, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, read_fd = pipe
    stdout = _runtime_stdout(monkeypatch, stream)
    calls = _recording_writes(monkeypatch)
    written: list[str] = []
    monkeypatch.setattr(sys, "stdout", type("Out", (), {"write": lambda _, t: written.append(t)})())
    stdout.capture(b"line\n")
    stdout.flush()
    assert written == ["line\n"] and calls == [] and _drain(read_fd) == b""


def test_a_stream_of_the_same_name_without_a_descriptor_gets_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    inner = io.StringIO()
    monkeypatch.setattr(sys, "stdout", Unbuffered(inner))
    calls = _recording_writes(monkeypatch)
    stdout = StdoutLines()
    stdout.capture(b"line\n")
    stdout.flush()
    assert inner.getvalue() == "line\n" and calls == []
