"""The local API's HTTP side over real sockets: refusals a client can read, and bounded waits.

API Gateway refuses some requests before the handler runs (bodies over 10 MiB, framing it cannot
read). The local API does the same, and does it the way nginx and Go's net/http do: the refusal
goes out before `100 Continue`, with `Connection: close`, and what the client still sends is
discarded for a bounded time and amount, so a client that writes its whole body before reading
(Python's http.client, urllib, requests) reads the 413 instead of a connection reset.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sds.kernel.lock import Pin, write_pin
from sds.ops.local_api import GATEWAY_MAX_BODY, ConnectionLimits, LocalApi
from tests.support.trained_model import TrainedModel

MAX_BODY_BYTES = 262_144
EVENT = {
    "event_id": "evt-1",
    "account_id": "acct-1",
    "occurred_at": "2026-03-01T12:00:00Z",
    "amount": 250.0,
    "currency": "EUR",
    "merchant_category": "electronics",
    "country": "FR",
    "card_country": "DE",
    "hour_of_day": 2,
    "account_age_days": 12,
    "is_new_device": True,
}
JSON = {"Content-Type": "application/json"}
# A bound on how long a test waits for the server to let go: far above the limits under test
# (tenths of a second), so only a server that never lets go fails it.
PATIENCE_S = 15.0

StartApi = Callable[..., LocalApi]


@pytest.fixture
def start_api(trained: TrainedModel, tmp_path: Path) -> Iterator[StartApi]:
    """Starts local APIs serving the trained model; every one is stopped after the test."""
    lock = tmp_path / "models.lock.json"
    started: list[LocalApi] = []

    def start(
        *, max_body_bytes: int = MAX_BODY_BYTES, limits: ConnectionLimits | None = None
    ) -> LocalApi:
        apps = trained.serving_locally(lock, max_body_bytes=max_body_bytes)
        api = LocalApi(apps, limits=limits).start()
        started.append(api)
        return api

    yield start
    for api in started:
        api.stop()


def address(api: LocalApi) -> tuple[str, int]:
    host, port = api.server.server_address[:2]
    return str(host), int(port)


def post(api: LocalApi, body: Any, *, chunked: bool = False) -> tuple[int, dict[str, str], Any]:
    """One POST /predict with http.client, which sends the whole body before reading."""
    connection = http.client.HTTPConnection(*address(api), timeout=PATIENCE_S)
    try:
        connection.request("POST", "/predict", body, JSON, encode_chunked=chunked)
        response = connection.getresponse()
        headers_read = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers_read, json.loads(response.read())
    finally:
        connection.close()


def padded(size: int) -> bytes:
    """A valid request body of exactly `size` bytes (JSON allows trailing whitespace)."""
    body = json.dumps({"events": [EVENT]}).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def raw_exchange(api: LocalApi, request: bytes) -> bytes:
    """Send raw bytes, then read everything the server says until it closes the connection."""
    with socket.create_connection(address(api), timeout=PATIENCE_S) as sock:
        sock.sendall(request)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
        return bytes(received)


def parse(response: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def assert_serves(api: LocalApi) -> None:
    status, _, body = post(api, json.dumps({"events": [EVENT]}).encode())
    assert status == 200, body
    assert 0 <= body["predictions"][0]["fraud_probability"] <= 1


def handler_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


@pytest.mark.parametrize("size", [GATEWAY_MAX_BODY + 1, 3 * GATEWAY_MAX_BODY])
def test_a_body_over_the_gateway_limit_sent_in_one_go_reads_a_413(
    start_api: StartApi, size: int
) -> None:
    # Given a local API, and a client that writes its whole body before reading (http.client)
    api = start_api()
    # When it posts a body over API Gateway's 10 MiB
    status, headers, body = post(api, b"x" * size)
    # Then it reads API Gateway's 413 with a JSON message, not a reset, and the connection closes
    assert status == 413
    assert body == {"message": "Request Too Long"}
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    # And the server keeps serving
    assert_serves(api)


def test_expect_100_continue_over_the_limit_gets_413_and_never_100_continue(
    start_api: StartApi,
) -> None:
    # Given a client that asks before sending a body over the limit
    api = start_api()
    request = (
        b"POST /predict HTTP/1.1\r\nHost: local\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (GATEWAY_MAX_BODY + 1)
    )
    # When it sends only the head and reads the answer
    response = raw_exchange(api, request)
    # Then the answer is a final 413 with Connection: close, and no 100 Continue ever came
    assert b"100 Continue" not in response
    status, headers, body = parse(response)
    assert status == 413 and body == {"message": "Request Too Long"}
    assert headers["connection"] == "close"
    assert_serves(api)


def test_expect_100_continue_within_the_limit_continues_and_serves(start_api: StartApi) -> None:
    api = start_api()
    body = json.dumps({"events": [EVENT]}).encode()
    with socket.create_connection(address(api), timeout=PATIENCE_S) as sock:
        # Given a client that asks before sending a body the API accepts
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: local\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body)
        )
        # When it waits for the go-ahead, then sends the body
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        # Then the request is served as usual
        assert response.status == 200
        assert len(json.loads(response.read())["predictions"]) == 1


def test_bodies_at_the_limits_are_served_as_before(start_api: StartApi) -> None:
    # Given the handler's configured limit (256 KiB), well under API Gateway's
    api = start_api()
    # When a client sends exactly the limit, then one byte more
    at_limit = post(api, padded(MAX_BODY_BYTES))
    over = post(api, padded(MAX_BODY_BYTES + 1))
    # Then the first is scored and the second is the handler's own 413, naming the limit
    assert at_limit[0] == 200 and len(at_limit[2]["predictions"]) == 1
    assert over[0] == 413 and over[2]["error"] == "payload_too_large"
    assert f"the limit is {MAX_BODY_BYTES}" in over[2]["message"]
    assert over[1].get("connection") != "close"  # read in full: the connection can be reused


def test_exactly_the_gateway_limit_reaches_the_handler_and_one_byte_more_does_not(
    start_api: StartApi,
) -> None:
    # Given a handler configured up to API Gateway's own limit
    api = start_api(max_body_bytes=GATEWAY_MAX_BODY)
    # When a client sends exactly 10 MiB, then one byte more
    status, _, body = post(api, padded(GATEWAY_MAX_BODY))
    assert status == 200 and len(body["predictions"]) == 1
    status, headers, body = post(api, padded(GATEWAY_MAX_BODY + 1))
    # Then 10 MiB is scored and one byte more is the gateway's 413, before the handler
    assert status == 413 and body == {"message": "Request Too Long"}
    assert headers["connection"] == "close"


def test_chunked_bodies_are_decoded_and_capped_at_the_gateway_limit(start_api: StartApi) -> None:
    api = start_api()
    events = json.dumps({"events": [EVENT, {**EVENT, "event_id": "b"}]}).encode()
    # Given a client that streams its body in chunks (Transfer-Encoding: chunked)
    pieces = [events[:10], events[10:40], events[40:]]
    # When the body is within the limits, it is reassembled and scored like any other
    status, _, body = post(api, iter(pieces), chunked=True)
    assert status == 200 and body["predictions"][1]["event_id"] == "b"
    # And a chunked body that grows past 10 MiB is a readable 413, though the client keeps sending
    endless = (b"x" * (1024 * 1024) for _ in range(16))
    status, headers, body = post(api, endless, chunked=True)
    assert status == 413 and body == {"message": "Request Too Long"}
    assert headers["connection"] == "close"
    assert_serves(api)


HEAD = b"POST /predict HTTP/1.1\r\nHost: local\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status", "says"),
    [
        (
            HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "not both",
        ),
        (HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, "gzip"),
        (HEAD + b"Content-Length: abc\r\n\r\n", 400, "invalid Content-Length"),
        (HEAD + b"Content-Length: -5\r\n\r\n", 400, "invalid Content-Length"),
        (HEAD + b"Content-Length: +5\r\n\r\n{}   ", 400, "invalid Content-Length"),
        (HEAD + b"Content-Length: 1_0\r\n\r\n", 400, "invalid Content-Length"),
        (
            HEAD + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{} ",
            400,
            "invalid Content-Length",
        ),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400, "chunk size"),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}}\r\n0\r\n\r\n", 400, "declared size"),
        (HEAD + b"Content-Length: 10\r\n\r\n{}", 400, "ended before"),
        (b"BREW /predict HTTP/1.1\r\nHost: local\r\nContent-Length: 2\r\n\r\n{}", 501, "BREW"),
        # A request line it cannot read at all: still answered with a status line, in HTTP/1.1
        (b"\x00\x01\x02 x\r\n\r\n", 400, "Bad HTTP/0.9 request type"),
    ],
    ids=[
        "length-and-chunked",
        "unknown-coding",
        "length-not-a-number",
        "negative-length",
        "signed-length",
        "underscored-length",
        "two-lengths",
        "bad-chunk-size",
        "chunk-overrun",
        "truncated-body",
        "unknown-method",
        "unreadable-request-line",
    ],
)
def test_framing_that_cannot_be_read_is_refused_with_a_json_message(
    start_api: StartApi, request_bytes: bytes, status: int, says: str
) -> None:
    # Given a request whose body no server can delimit safely (or one it cannot parse at all)
    api = start_api()
    # When it is sent (a truncated body: then the client stops writing)
    with socket.create_connection(address(api), timeout=PATIENCE_S) as sock:
        sock.sendall(request_bytes)
        if says == "ended before":
            sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    # Then the answer names the problem as JSON and the connection is closed, never reused
    got_status, headers, body = parse(bytes(received))
    assert got_status == status
    assert says in body["message"]
    assert headers["connection"] == "close"
    assert_serves(api)


def trickle(api: LocalApi, head: bytes, piece: bytes, interval_s: float) -> bytes:
    """Send `head`, then `piece` every `interval_s`, reading as it goes, until the server closes.

    Returns what the server said before it closed (its end of stream).
    """
    started = time.monotonic()
    received = bytearray()
    with socket.create_connection(address(api), timeout=PATIENCE_S) as sock:
        sock.sendall(head)
        while time.monotonic() - started < PATIENCE_S:
            readable, _, _ = select.select([sock], [], [], interval_s)
            if readable:
                chunk = sock.recv(65536)
                if not chunk:
                    return bytes(received)
                received += chunk
            sock.sendall(piece)
    raise AssertionError(f"the server still held the connection after {PATIENCE_S} s: {received!r}")


def test_a_body_that_drips_in_slower_than_the_deadline_gets_408_and_is_let_go(
    start_api: StartApi,
) -> None:
    # Given a body deadline of half a second
    api = start_api(limits=ConnectionLimits(body_timeout_s=0.5, drain_timeout_s=0.5))
    threads_before = handler_threads()
    # When a client announces 1000 bytes and sends one every 50 ms
    said = trickle(api, HEAD + b"Content-Length: 1000\r\n\r\n", b" ", 0.05)
    # Then it is told 408 with the limits, and the connection is closed
    status, headers, body = parse(said)
    assert status == 408 and "0.5 s in all" in body["message"]
    assert headers["connection"] == "close"
    wait_for_threads(threads_before)
    assert_serves(api)


@pytest.mark.parametrize(
    "head",
    [
        b"GET /health",
        b"GET /health HTTP/1.1\r\nHost: local\r\nX-Slow: ",
        # the connection's second request, after a HEAD (whose answer has no body; this one has)
        b"HEAD /health HTTP/1.1\r\nHost: local\r\n\r\nGET /health",
    ],
    ids=["request line", "headers", "request line after a HEAD"],
)
def test_a_request_head_that_drips_in_slower_than_the_deadline_gets_408_and_is_let_go(
    start_api: StartApi, head: bytes
) -> None:
    # Given a deadline of half a second for a request's line and headers
    api = start_api(limits=ConnectionLimits(header_timeout_s=0.5, drain_timeout_s=0.5))
    threads_before = handler_threads()
    # When a client starts a request and sends one more byte of it every 50 ms (each read
    # well within the idle timeout, so only a deadline on the whole head can end it)
    said = trickle(api, head, b"a", 0.05)
    # Then it is told 408 with the limits, and the connection is closed
    status, headers, body = parse(said[said.rindex(b"HTTP/1.1 ") :])
    assert status == 408 and "0.5 s in all" in body["message"]
    assert headers["connection"] == "close"
    wait_for_threads(threads_before)
    assert_serves(api)


def test_a_client_stalled_in_its_request_holds_no_one_else_up(start_api: StartApi) -> None:
    # Given the local API with its default limits, and a client stalled in its headers
    api = start_api()
    with socket.create_connection(address(api), timeout=PATIENCE_S) as stalled:
        stalled.sendall(HEAD)
        # When another client sends a request meanwhile, then it is answered
        assert_serves(api)


def test_a_connection_that_sends_nothing_is_closed_quietly_after_the_idle_timeout(
    start_api: StartApi,
) -> None:
    # Given an idle timeout of half a second
    api = start_api(limits=ConnectionLimits(idle_timeout_s=0.5))
    # When a client connects and sends nothing
    with socket.create_connection(address(api), timeout=PATIENCE_S) as sock:
        # Then the server closes the connection without a word (no request, nothing to answer)
        assert sock.recv(65536) == b""
    assert_serves(api)


def test_a_kept_alive_connection_gets_the_whole_head_deadline_for_each_request(
    start_api: StartApi,
) -> None:
    # Given a head deadline of 0.3 s (and the default idle timeout, 60 s)
    api = start_api(limits=ConnectionLimits(header_timeout_s=0.3))
    connection = http.client.HTTPConnection(*address(api), timeout=PATIENCE_S)
    try:
        connection.request("GET", "/health")
        first = connection.getresponse()
        first.read()
        sock = connection.sock
        # When the connection idles longer than the head deadline before its next request
        time.sleep(0.6)
        connection.request("GET", "/health")
        second = connection.getresponse()
        second.read()
        # Then the wait counted against the idle timeout only: both are answered, on one
        # connection (the deadline starts with a request's first byte)
        assert (first.status, second.status) == (200, 200)
        assert connection.sock is sock
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("limits", "piece", "interval_s"),
    [
        # slow and endless: the lingering close ends on its time limit
        (ConnectionLimits(drain_timeout_s=0.5), b"x" * 1024, 0.02),
        # fast and endless: the lingering close ends on its byte limit long before its time
        (ConnectionLimits(drain_timeout_s=600, drain_max_bytes=1024 * 1024), b"x" * 65536, 0.0),
    ],
    ids=["slow", "fast"],
)
def test_an_endless_body_after_a_refusal_does_not_hold_a_thread(
    start_api: StartApi, limits: ConnectionLimits, piece: bytes, interval_s: float
) -> None:
    # Given a local API with bounded lingering
    api = start_api(limits=limits)
    threads_before = handler_threads()
    with socket.create_connection(address(api), timeout=PATIENCE_S) as sock:
        # When a client announces far more than 10 MiB
        sock.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % (1000 * GATEWAY_MAX_BODY))
        # Then it is told 413 at once, and the server half-closes (end of stream after it)
        said = bytearray()
        while chunk := sock.recv(65536):
            said += chunk
        status, _, body = parse(bytes(said))
        assert status == 413 and body == {"message": "Request Too Long"}
        # And when the client keeps sending regardless, the server cuts it off
        started = time.monotonic()
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            while time.monotonic() - started < PATIENCE_S:
                sock.sendall(piece)
                time.sleep(interval_s)
    # And its thread is gone, and the API keeps serving
    wait_for_threads(threads_before)
    assert_serves(api)


def wait_for_threads(count: int) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while handler_threads() > count:
        assert time.monotonic() < deadline, f"{handler_threads()} handler threads, {count} before"
        time.sleep(0.02)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_address_is_listened_on_and_its_url_is_bracketed(
    trained: TrainedModel, tmp_path: Path
) -> None:
    # Given the local API asked to listen on the IPv6 loopback (`sds serve --host ::1`)
    apps = trained.serving_locally(tmp_path / "models.lock.json")
    with LocalApi(apps, host="::1", port=0) as api:
        # Then its URL is one a client can use, and it serves there
        port = int(api.server.server_address[1])
        assert api.url == f"http://[::1]:{port}"
        connection = http.client.HTTPConnection("::1", port, timeout=PATIENCE_S)
        try:
            connection.request("POST", "/predict", json.dumps({"events": [EVENT]}), JSON)
            response = connection.getresponse()
            assert response.status == 200, response.read()
        finally:
            connection.close()


def test_connection_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="drain_timeout_s must be positive"):
        ConnectionLimits(drain_timeout_s=0)
    with pytest.raises(ValueError, match="header_timeout_s must be positive"):
        ConnectionLimits(header_timeout_s=-1)


def test_a_lock_file_that_stops_reading_while_serving_keeps_the_last_pin_serving(
    trained: TrainedModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the local API serving dev's pin
    lock = tmp_path / "models.lock.json"
    apps = trained.serving_locally(lock)
    health = {"httpMethod": "GET", "path": "/health", "headers": {}, "body": None}
    assert apps.handle(health)["statusCode"] == 200

    # When the lock file is left mid-merge (conflict markers)
    good = lock.read_text()
    lock.write_text("<<<<<<< HEAD\n" + good + "=======\n" + good + ">>>>>>> theirs\n")
    os.utime(lock, ns=(time.time_ns(), time.time_ns() + 1_000_000))

    # Then the last pin read keeps serving, and the log says why the file is not followed
    response = apps.handle(health)
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"])["model"]["version"] == trained.version.number
    assert "merge conflict" in caplog.text and "still serving" in caplog.text

    # and once the file reads again, it is followed again
    lock.write_text(good)
    os.utime(lock, ns=(time.time_ns(), time.time_ns() + 2_000_000))
    assert apps.handle(health)["statusCode"] == 200


def test_the_log_says_what_is_served_each_time_the_pin_changes_back_and_forth(
    trained: TrainedModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the local API serving dev's pin, its log read from the first request on
    lock = tmp_path / "models.lock.json"
    apps = trained.serving_locally(lock)
    caplog.set_level("INFO", logger="sds.ops.local_api")
    health = {"httpMethod": "GET", "path": "/health", "headers": {}, "body": None}
    pin = Pin(trained.version.number, trained.version.sha256)

    def pinned(to: Pin | None, tick: int) -> int:
        write_pin(lock, model="fraud", env="dev", pin=to)
        os.utime(lock, ns=(time.time_ns(), time.time_ns() + tick * 1_000_000))
        return int(apps.handle(health)["statusCode"])

    # When requests come, then the pin is cleared (a rollback past the first version), then
    # pinned again: back to the app loaded first
    assert apps.handle(health)["statusCode"] == 200
    assert apps.handle(health)["statusCode"] == 200
    assert pinned(None, 1) == 503
    assert pinned(pin, 2) == 200

    # Then the log says what is served at each change, and only then
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("now serving")]
    assert said == [
        f"now serving fraud v{pin.version}",
        # nothing to deploy locally: this server follows the pin
        "now serving no model: no model is pinned for environment 'dev': promote a version "
        "(sds promote VERSION --to dev); this server serves it on the next request",
        f"now serving fraud v{pin.version}",
    ]


HEALTH = {"httpMethod": "GET", "path": "/health", "headers": {}, "body": None}


def load_failures(caplog: pytest.LogCaptureFixture) -> int:
    return sum(r.getMessage().startswith("model load failed") for r in caplog.records)


def loads(caplog: pytest.LogCaptureFixture) -> int:
    return sum(r.getMessage().startswith("loaded model fraud") for r in caplog.records)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_pin_whose_model_failed_to_load_recovers_once_the_registry_is_fixed(
    trained: TrainedModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the local API on a pin whose artifact is missing from the local registry
    registry = trained.copy_registry(tmp_path / "registry")
    artifact = registry / "models" / "fraud" / "versions" / str(trained.version.number)
    artifact /= "model.onnx"
    aside = tmp_path / "model.onnx"
    shutil.move(artifact, aside)
    clock = Clock()
    caplog.set_level("INFO")
    apps = trained.serving_locally(
        tmp_path / "models.lock.json",
        registry_uri=registry.as_uri(),
        retry_failed_load_s=5.0,
        clock=clock,
    )
    assert apps.handle(HEALTH)["statusCode"] == 503
    assert load_failures(caplog) == 1

    # When the registry is fixed, the requests within the pause are not a reload each
    shutil.move(aside, artifact)
    clock.now += 4.9
    assert apps.handle(HEALTH)["statusCode"] == 503
    assert load_failures(caplog) == 1 and loads(caplog) == 0

    # Then the first request after it loads the model, and the log says the pin recovered
    clock.now += 0.1
    response = apps.handle(HEALTH)
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"])["model"]["version"] == trained.version.number
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("now serving")]
    assert said[-1] == (
        f"now serving fraud v{trained.version.number} (recovered: its model loads now)"
    )

    # And a loaded app is never loaded again, whatever happens to the registry after
    shutil.move(artifact, aside)
    clock.now += 3600
    assert apps.handle(HEALTH)["statusCode"] == 200
    assert loads(caplog) == 1 and load_failures(caplog) == 1


def test_a_pin_that_keeps_failing_is_retried_once_per_pause_by_concurrent_requests(
    trained: TrainedModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the local API on a pin whose artifact is corrupt in the local registry
    registry = trained.copy_registry(tmp_path / "registry")
    artifact = registry / "models" / "fraud" / "versions" / str(trained.version.number)
    (artifact / "model.onnx").write_bytes(b"not a model")
    clock = Clock()
    caplog.set_level("INFO")
    apps = trained.serving_locally(
        tmp_path / "models.lock.json",
        registry_uri=registry.as_uri(),
        retry_failed_load_s=5.0,
        clock=clock,
    )
    assert apps.handle(HEALTH)["statusCode"] == 503

    # When the pause is over and many requests arrive at once, twice over
    statuses: list[int] = []

    def request(start: threading.Barrier) -> None:
        start.wait()
        statuses.append(int(apps.handle(HEALTH)["statusCode"]))

    for _ in range(2):
        clock.now += 5.0
        start = threading.Barrier(8)
        threads = [threading.Thread(target=request, args=(start,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=PATIENCE_S)

    # Then each pause ends in one reload, still failing, and every request is answered 503
    assert statuses == [503] * 16
    assert load_failures(caplog) == 3
    # and the log says "now serving no model" once, not at each failed retry
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("now serving")]
    assert len(said) == 1 and "sha256" in said[0], said


def test_a_lock_file_that_never_read_is_a_503_naming_it(
    trained: TrainedModel, tmp_path: Path
) -> None:
    # Given a lock file with conflict markers before the API has ever read it
    lock = tmp_path / "models.lock.json"
    apps = trained.serving_locally(lock)
    lock.write_text("<<<<<<< HEAD\n{}\n=======\n{}\n>>>>>>> theirs\n")

    # Then there is nothing to serve: 503, naming the file's problem
    response = apps.handle({"httpMethod": "GET", "path": "/health", "headers": {}, "body": None})
    assert response["statusCode"] == 503
    assert "merge conflict" in json.loads(response["body"])["message"]


def exchange(api: LocalApi, *requests: tuple[str, str]) -> list[tuple[int, dict[str, str], bytes]]:
    """Requests one after the other on one connection with http.client (which reads no body
    after HEAD, as RFC 9110 says): each answer's status, headers and body."""
    connection = http.client.HTTPConnection(*address(api), timeout=PATIENCE_S)
    answers: list[tuple[int, dict[str, str], bytes]] = []
    try:
        for method, path in requests:
            connection.request(method, path)
            response = connection.getresponse()
            body = response.read()
            headers = {k.lower(): v for k, v in response.getheaders()}
            answers.append((response.status, headers, body))
        return answers
    finally:
        connection.close()


@pytest.mark.parametrize("path", ["/health", "/model", "/openapi.json"])
def test_head_on_a_get_route_gets_its_status_and_headers_without_the_body(
    start_api: StartApi, path: str
) -> None:
    # Given the local API (API Gateway's ANY methods pass HEAD to the function)
    api = start_api()
    # When a client asks a GET route for GET, HEAD (a health check, `curl -I`), then GET again
    # on one connection
    got, headed, again = exchange(api, ("GET", path), ("HEAD", path), ("GET", path))
    # Then HEAD gets GET's status and headers, Content-Length the GET body's, and no body
    assert got[0] == 200 and len(got[2]) > 0
    assert (headed[0], undated(headed[1])) == (got[0], undated(got[1])) and headed[2] == b""
    assert int(headed[1]["content-length"]) == len(got[2])
    # And nothing of the body followed on the connection: the next answer reads whole
    assert (again[0], undated(again[1]), again[2]) == (got[0], undated(got[1]), got[2])


def undated(headers: dict[str, str]) -> dict[str, str]:
    """Headers but `Date`, which may tick between two answers."""
    return {k: v for k, v in headers.items() if k != "date"}


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("HEAD", "/predict", 405, "POST"),
        ("HEAD", "/events", 405, "POST"),
        ("HEAD", "/nowhere", 404, None),
        ("POST", "/health", 405, "GET, HEAD"),
        ("DELETE", "/openapi.json", 405, "GET, HEAD"),
    ],
)
def test_a_method_or_route_not_served_is_refused_and_allow_lists_head_with_get(
    start_api: StartApi, method: str, path: str, status: int, allow: str | None
) -> None:
    # Given the local API, when a route is asked for a method it does not take (or no route)
    api = start_api()
    [(answered, headers, body)] = exchange(api, (method, path))
    # Then it is refused (never a 5xx) with the methods it takes, HEAD wherever GET is
    assert answered == status
    assert headers.get("allow") == allow
    # And a HEAD answer has no body, whatever its status
    assert int(headers["content-length"]) > 0
    assert (body == b"") == (method == "HEAD")


# A documentation address (RFC 5737): the lines about it are this test's, whatever else other
# tests' servers still log meanwhile.
CLIENT = "192.0.2.7"


def test_a_client_that_goes_away_is_one_log_line_not_a_traceback(
    start_api: StartApi, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the local API, and a client gone while its request was answered (a reset)
    api = start_api()
    caplog.set_level("INFO", logger="sds.ops.local_api")
    # When the server meets the error
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except ConnectionResetError:
        api.server.handle_error(None, (CLIENT, 5))
    # Then it logs one line saying so, without a traceback
    (record,) = [r for r in caplog.records if CLIENT in r.getMessage()]
    assert record.getMessage() == (
        f"{CLIENT}: the client went away ([Errno 104] Connection reset by peer)"
    )
    assert record.exc_info is None
    # And an error that is not the client's is logged with its traceback
    caplog.clear()
    try:
        raise ValueError("a bug")
    except ValueError:
        api.server.handle_error(None, (CLIENT, 5))
    (record,) = [r for r in caplog.records if CLIENT in r.getMessage()]
    assert record.exc_info is not None


def wait_for_threads_up(count: int) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while handler_threads() < count:
        assert time.monotonic() < deadline, f"{handler_threads()} handler threads, {count} expected"
        time.sleep(0.01)


def busy(api: LocalApi, body: bytes = b"") -> tuple[int, dict[str, str], Any]:
    """A POST /predict on a fresh connection (http.client: the whole body, then the answer)."""
    return post(api, body or json.dumps({"events": [EVENT]}).encode())


def test_connections_beyond_the_limit_get_503_at_once_and_a_freed_slot_serves_again(
    start_api: StartApi, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the local API limited to 2 connections at once, both held: one kept alive after a
    # request, one a slow client still sending its headers
    api = start_api(limits=ConnectionLimits(limit_concurrency=2))
    caplog.set_level("WARNING", logger="sds.ops.local_api")
    before = handler_threads()  # other tests' connections still closing, if any
    kept_alive = http.client.HTTPConnection(*address(api), timeout=PATIENCE_S)
    kept_alive.request("GET", "/health")
    assert kept_alive.getresponse().read()
    slow = socket.create_connection(address(api), timeout=PATIENCE_S)
    try:
        slow.sendall(HEAD)
        threads_held = before + 2
        wait_for_threads_up(threads_held)

        # When a third client sends a request (a body of 1 MiB, all of it before reading)
        status, headers, body = busy(api, padded(1024 * 1024))

        # Then it is told 503 at once, when to retry, and why, in the API's error shape
        assert status == 503
        assert headers["retry-after"] == "1"
        assert headers["connection"] == "close"
        assert headers["content-type"] == "application/json"
        assert body == {
            "message": "the local API is handling its limit of 2 connections at once "
            "(sds serve --limit-concurrency); retry after 1 s"
        }
        # And no handler thread was started for it, and the log says so
        assert handler_threads() == threads_held
        assert api.server.refused == 1
        (warning,) = [r for r in caplog.records if "refused" in r.getMessage()]
        assert warning.levelname == "WARNING"
        assert "503" in warning.getMessage() and "--limit-concurrency" in warning.getMessage()

        # And when the kept-alive connection closes, a new connection is served
        kept_alive.close()
        wait_for_threads(threads_held - 1)
        assert_serves(api)
        # And the slow client was held, not dropped, all along: it can finish its request
        slow.sendall(b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
        said = bytearray()
        while chunk := slow.recv(65536):
            said += chunk
        status, _, _ = parse(bytes(said))
        assert status == 400
    finally:
        kept_alive.close()
        slow.close()


def test_a_burst_beyond_the_limit_starts_no_thread_and_logs_once_a_second(
    start_api: StartApi, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the local API limited to 1 connection, held by a client that sends nothing
    api = start_api(limits=ConnectionLimits(limit_concurrency=1))
    caplog.set_level("WARNING", logger="sds.ops.local_api")
    before = handler_threads()  # other tests' connections still closing, if any
    with socket.create_connection(address(api), timeout=PATIENCE_S):
        wait_for_threads_up(before + 1)
        # When 40 more clients connect at once
        statuses: list[int] = []
        peak = 0

        def client() -> None:
            statuses.append(busy(api)[0])

        clients = [threading.Thread(target=client) for _ in range(40)]
        for thread in clients:
            thread.start()
        for thread in clients:
            while thread.is_alive():
                peak = max(peak, handler_threads())
                thread.join(timeout=0.001)
        # Then every one is refused, without a handler thread of its own
        assert statuses == [503] * 40
        assert peak <= before + 1
        assert api.server.refused == 40
    # And the log has a line a second at most, each counting the refusals in all
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert 1 <= len(lines) < 40
    assert "; 1 refused in all" in lines[0]


def test_the_concurrency_limit_defaults_to_64_and_must_be_a_positive_whole_number() -> None:
    assert ConnectionLimits().limit_concurrency == 64
    for wrong in (0, -1):
        with pytest.raises(ValueError, match="limit_concurrency must be positive"):
            ConnectionLimits(limit_concurrency=wrong)
    with pytest.raises(ValueError, match="limit_concurrency must be a whole number"):
        ConnectionLimits(limit_concurrency=1.5)  # type: ignore[arg-type]
