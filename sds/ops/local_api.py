"""A local API Gateway in front of the real Lambda handler logic.

Each HTTP request becomes an API Gateway REST proxy event for `InferenceApp.handle`, exactly
what Lambda receives behind API Gateway. Like a Lambda alias, the server follows the
environment's pin in models.lock.json: each pin gets its own app instance (a "published
version", loaded once), and every request is routed to the app of the current pin, so a
`promote` or `rollback` takes effect on the next request, without a restart. A pin whose model
failed to load (its artifact missing or corrupt in the registry) is loaded again by a request at
least `RETRY_FAILED_LOAD_S` after the failure, so fixing the registry is enough there too; a model
that loaded is never loaded again. The shadow pin is
followed the same way: `sds shadow` (or `--clear`) gives the next request an app with (or without)
the challenger scoring beside the live model. The handler
captures every scored payment through the same sink interface as on Lambda, into JSON Lines files
under `.sds/capture/<env>/` instead of stdout (`sds.ops.capture_store`), and `POST /events` takes
label events too (into `.sds/labels/<env>/`), as the environment's event bus does on AWS.

The HTTP side refuses what API Gateway refuses before the handler runs (bodies over its 10 MiB,
unreadable framing) the way mature servers do: the refusal goes out first (before `100 Continue`
when the client asked for it), with `Connection: close`, and what the client still sends is read
and discarded for a bounded time and amount ("lingering close", as nginx does), so a client that
sends its whole body before reading (Python's http.client) reads the 413 instead of a reset.
Each connection has its own thread, every read and write has a timeout, and a request's line and
headers (from its first byte) and its body each have a deadline, so a client that stalls, or
trickles a request in a byte at a time, holds up no other client and is let go in bounded time.
At most `ConnectionLimits.limit_concurrency` connections are handled at once (a kept-alive one
counts while it is open), as uvicorn's `--limit-concurrency` bounds them: one more is answered
`503` with `Retry-After` by the accepting thread at once, without a thread of its own, so a burst
of connections costs neither threads nor memory without bound.

Stopping is graceful, as uvicorn's and gunicorn's is: `stop(grace_s=...)` stops accepting
connections, answers what is in flight (with `Connection: close`), and waits up to `grace_s`
for it before returning; an idle keep-alive connection is not waited for.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import functools
import io
import json
import logging
import re
import selectors
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from lambdas.inference.app import (
    InferenceApp,
    MetricSink,
    RequestError,
    parse_json,
    request_body,
)
from sds.kernel.capture import CaptureSink
from sds.kernel.errors import SdsError, counted
from sds.kernel.events import (
    ACTIVITY_KINDS,
    KINDS,
    LABEL_KINDS,
    first_conflict,
    timed,
    validate_batch,
)
from sds.kernel.features import batch_envelope
from sds.kernel.featurestore import FeatureStoreError, open_feature_store
from sds.kernel.lock import LockFileError, Pin, read_lock
from sds.kernel.online import OnlineFeatures, ahead_of_clock, now_micros
from sds.kernel.openapi import EventsRoute, build_openapi
from sds.kernel.settings import ServingSettings
from sds.ops.capture_store import CaptureFiles, LabelFiles
from sds.ops.workspace import Workspace

logger = logging.getLogger("sds.ops.local_api")

# API Gateway's own payload limit; the handler enforces the (smaller) configured one.
GATEWAY_MAX_BODY = 10 * 1024 * 1024
# API Gateway's answer to a larger body: 413 with its REQUEST_TOO_LARGE gateway response.
GATEWAY_TOO_LARGE = "Request Too Long"
# How long a pin whose model failed to load answers 503 before a request loads it again: a
# broken pin costs one load attempt per pause, not one per request.
RETRY_FAILED_LOAD_S = 5.0
# How long a client has for a request's line and headers, from the request's first byte: nginx's
# `client_header_timeout` and Node's `headersTimeout` (60 s both). Each read waits at most the idle
# timeout too, so a client that sends a byte now and then cannot hold a thread past this deadline.
HEADER_TIMEOUT_S = 60.0
# How many connections are handled at once by default (`sds serve --limit-concurrency`): each has
# its own thread, so this bounds the threads too.
LIMIT_CONCURRENCY = 64
# How many refused connections are lingered on at once; past that one is closed at once (the
# client may then read a reset instead of the 503). It bounds the open sockets of a burst.
MAX_LINGERING = 256
# At most one log line per this many seconds about refused connections, so a burst (a load
# test) costs the accepting thread no more than one write to the log a second.
REFUSAL_LOG_INTERVAL_S = 1.0
# What a connection refused for the concurrency limit is told to wait before it tries again.
RETRY_AFTER_S = 1
SERVER_VERSION = "sds-local-api"


@dataclass(frozen=True)
class ConnectionLimits:
    """How long and how much the local API waits on one client, so none can hold a thread for
    good, and how many clients it handles at once.

    The defaults follow nginx: 60 s for any single read or write (`client_body_timeout`,
    `send_timeout`, and an idle keep-alive connection), a deadline for a request's line and
    headers (`client_header_timeout`, `HEADER_TIMEOUT_S`) and one for a whole body, and a bounded
    lingering close after a refusal (`lingering_time`). `limit_concurrency` is uvicorn's
    `--limit-concurrency`: the connections handled at once (a kept-alive one counts while it is
    open); one more is answered 503 at once, without a thread.
    """

    idle_timeout_s: float = 60.0
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = 60.0
    drain_timeout_s: float = 5.0
    drain_max_bytes: int = 64 * 1024 * 1024
    limit_concurrency: int = LIMIT_CONCURRENCY

    def __post_init__(self) -> None:
        if isinstance(self.limit_concurrency, bool) or not isinstance(self.limit_concurrency, int):
            raise ValueError(
                f"limit_concurrency must be a whole number, got {self.limit_concurrency!r}"
            )
        for name in (
            "idle_timeout_s",
            "header_timeout_s",
            "body_timeout_s",
            "drain_timeout_s",
            "drain_max_bytes",
            "limit_concurrency",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")


class _Refusal(SdsError):
    """A request answered before (or instead of) the handler: status and a message naming why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_DIGITS = re.compile(r"[0-9]{1,20}")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CHUNK_LINE_MAX = 4096  # a chunk-size line with its extensions, or one trailer field
_MAX_TRAILERS = 100  # as http.client's cap on header fields
_READ_SIZE = 64 * 1024


def _linger(sock: socket.socket, limits: ConnectionLimits) -> None:
    """Half-close, then discard what the client still sends until it closes, bounded in time and bytes.

    Closing a socket with unread data makes the kernel send a reset, and a client still writing
    its body (or one whose receive buffer the reset overtakes) then sees ECONNRESET or a broken
    pipe instead of the response that is already on its way.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    deadline = time.monotonic() + limits.drain_timeout_s
    budget = limits.drain_max_bytes
    buffer = bytearray(_READ_SIZE)
    try:
        while budget > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            sock.settimeout(remaining)
            received = sock.recv_into(buffer, min(len(buffer), budget))
            if received == 0:
                return  # the client closed: nothing more will come
            budget -= received
    except OSError:
        return  # too slow (timeout) or gone (reset): stop either way


class _SocketReader(io.RawIOBase):
    """A connection's socket as the handler's `rfile` reads it; while `deadline` is set (a request
    line and headers being read), no read waits past it, nor longer than the idle timeout.

    http.server reads the request line and headers through `rfile` with the socket's timeout per
    read only: a client that sends a byte now and then would hold its thread for good.
    """

    def __init__(self, sock: socket.socket, idle_timeout_s: float) -> None:
        self._sock = sock
        self._idle_timeout_s = idle_timeout_s
        self._retimed = False
        self.deadline: float | None = None
        self.timed_out = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is None:
            return self._sock.recv_into(buffer)
        try:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the request line and headers are late")
            self._sock.settimeout(min(self._idle_timeout_s, remaining))
            self._retimed = True
            return self._sock.recv_into(buffer)
        except TimeoutError:
            self.timed_out = True
            raise

    def arm(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.timed_out = False

    def disarm(self) -> None:
        """The head is in (or abandoned): reads wait the idle timeout again."""
        self.deadline = None
        if self._retimed:
            self._retimed = False
            self._sock.settimeout(self._idle_timeout_s)


class _BodyReader:
    """Reads one request body against a deadline; every wait is bounded by the time left."""

    def __init__(self, rfile: io.BufferedReader, sock: socket.socket, limits: ConnectionLimits):
        self._rfile = rfile
        self._sock = sock
        self._limits = limits
        self._deadline = time.monotonic() + limits.body_timeout_s

    def _arm(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise self._too_slow()
        self._sock.settimeout(min(self._limits.idle_timeout_s, remaining))

    def _too_slow(self) -> _Refusal:
        return _Refusal(
            408,
            f"the request body did not arrive in time (limits: {self._limits.body_timeout_s:g} s "
            f"in all, {self._limits.idle_timeout_s:g} s between reads)",
        )

    @staticmethod
    def _cut_short() -> _Refusal:
        return _Refusal(400, "the connection ended before the request body was complete")

    def exactly(self, length: int) -> bytes:
        parts: list[bytes] = []
        remaining = length
        while remaining > 0:
            self._arm()
            try:
                data = self._rfile.read1(min(remaining, _READ_SIZE))
            except TimeoutError:
                raise self._too_slow() from None
            if not data:
                raise self._cut_short()
            parts.append(data)
            remaining -= len(data)
        return b"".join(parts)

    def line(self) -> bytes:
        line = bytearray()
        while True:
            self._arm()
            try:
                buffered = self._rfile.peek(1)
            except TimeoutError:
                raise self._too_slow() from None
            if not buffered:
                raise self._cut_short()
            end = buffered.find(b"\n")
            take = end + 1 if end >= 0 else len(buffered)
            line += self._rfile.read(min(take, _CHUNK_LINE_MAX + 1 - len(line)))
            if line.endswith(b"\n"):
                return bytes(line)
            if len(line) > _CHUNK_LINE_MAX:
                raise _Refusal(400, "a line of the chunked body is too long")

    def chunked(self, limit: int) -> bytes:
        """A `Transfer-Encoding: chunked` body, decoded; over `limit` bytes is a 413."""
        body = bytearray()
        while True:
            size_text = self.line().split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise _Refusal(400, "invalid chunk size in the chunked request body")
            size = int(size_text, 16)
            if size == 0:
                break
            if len(body) + size > limit:
                raise _Refusal(413, GATEWAY_TOO_LARGE)
            body += self.exactly(size)
            if self.exactly(2) != b"\r\n":
                raise _Refusal(400, "a chunk of the request body is longer than its declared size")
        for _ in range(_MAX_TRAILERS + 1):
            if self.line().strip() == b"":
                return bytes(body)
        raise _Refusal(400, "too many trailer fields after the chunked request body")


def _no_metrics(values: Mapping[str, float], dimensions: Mapping[str, str]) -> None:
    logger.debug("metrics %s %s", dict(values), dict(dimensions))


class PinnedApps:
    """The app serving the current pin; a new pin gets a new app, like a new Lambda version.

    An app whose model failed to load is replaced by a new one (a new load) on the first request
    `retry_failed_load_s` or more after it was made, by `clock` (monotonic seconds): unlike a
    Lambda version, whose artifact the deploy checked, a local pin's registry can be fixed under
    a running server."""

    def __init__(
        self,
        *,
        lock_path: Path,
        model: str,
        env: str,
        registry_uri: str,
        max_events: int,
        max_body_bytes: int,
        feature_store_uri: str | None = None,
        when_features_unavailable: str = "refuse",
        metrics: MetricSink = _no_metrics,
        capture: CaptureSink | None = None,
        capture_sample_rate: float = 1.0,
        capture_exclude: tuple[str, ...] = (),
        labels: LabelFiles | None = None,
        retry_failed_load_s: float = RETRY_FAILED_LOAD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not retry_failed_load_s >= 0:
            raise ValueError(f"retry_failed_load_s must be >= 0, got {retry_failed_load_s!r}")
        self.lock_path = lock_path
        self.model = model
        self.env = env
        self.registry_uri = registry_uri
        self.max_events = max_events
        self.max_body_bytes = max_body_bytes
        self.feature_store_uri = feature_store_uri
        self.when_features_unavailable = when_features_unavailable
        self.metrics = metrics
        self.capture = capture
        self.capture_sample_rate = capture_sample_rate
        self.capture_exclude = capture_exclude
        # One store for every pinned app and for POST /events, like the one table on AWS.
        self.online: OnlineFeatures | None = None
        if feature_store_uri is not None:
            self.online = OnlineFeatures(open_feature_store(feature_store_uri))
        self.events = EventsEndpoint(self.online, labels)
        # One app per (live pin, shadow pin): a new shadow is a new "published version" too.
        self._apps: dict[tuple[Pin | None, Pin | None], InferenceApp] = {}
        # When each app whose pinned model failed to load was made (by `clock`).
        self._failed_at: dict[tuple[Pin | None, Pin | None], float] = {}
        self.retry_failed_load_s = retry_failed_load_s
        self.clock = clock
        # Loads happen under the mutex: concurrent requests wait for one load, never start two.
        self._mutex = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._pin: Pin | None = None
        self._shadow: Pin | None = None
        self._pin_error: str | None = None
        # What the log last said is served (the pins, and why nothing is, if nothing is): said
        # again at each change, a return to an app loaded before (a rollback) and a pin that
        # recovered from a failed load included.
        self._serving: tuple[Pin | None, Pin | None, str | None] | None = None

    @classmethod
    def for_environment(cls, ws: Workspace, env: str) -> PinnedApps:
        """What `sds serve --env ENV` serves: ENV's pin, registry and serving limits, capturing
        into ENV's local captures folder with ENV's capture settings."""
        config = ws.config.env(env)
        serving = config.serving
        return cls(
            lock_path=ws.lock_path,
            model=ws.model,
            env=env,
            registry_uri=ws.registry_uri(env),
            max_events=serving.max_events,
            max_body_bytes=serving.max_body_bytes,
            feature_store_uri=ws.feature_store_uri(env),
            when_features_unavailable=serving.when_features_unavailable,
            capture=CaptureFiles(ws.capture_dir(env)),
            capture_sample_rate=config.capture.sample_rate,
            capture_exclude=config.capture.exclude,
            labels=LabelFiles(ws.labels_dir(env)),
        )

    def _current_pin(self) -> Pin | None:
        try:
            stat = self.lock_path.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp or self._stamp is None:
            try:
                lock = read_lock(self.lock_path, model=self.model)
                self._pin, self._shadow = lock.pins.get(self.env), lock.shadows.get(self.env)
                self._pin_error = None
            except LockFileError as exc:
                if self._pin is None or self._pin_error is not None:
                    self._pin, self._shadow, self._pin_error = None, None, str(exc)
                else:
                    # As a deployed function does while its lock file is being merged: the last
                    # pin read keeps serving until the file reads again.
                    logger.warning(
                        "%s; still serving %s v%s, the last pin read, until the file is fixed",
                        exc,
                        self.model,
                        self._pin.version,
                    )
            self._stamp = stamp
        return self._pin

    def current(self) -> InferenceApp:
        with self._mutex:
            pin = self._current_pin()
            shadow = self._shadow
            key = (pin, shadow)
            app = self._apps.get(key)
            failed_at = self._failed_at.get(key)
            if app is None or (
                failed_at is not None and self.clock() - failed_at >= self.retry_failed_load_s
            ):
                settings = ServingSettings(
                    model_name=self.model,
                    model_version=None if pin is None else pin.version,
                    model_sha256=None if pin is None else pin.sha256,
                    registry_uri=self.registry_uri,
                    environment=self.env,
                    max_events=self.max_events,
                    max_body_bytes=self.max_body_bytes,
                    feature_store_uri=self.feature_store_uri,
                    when_features_unavailable=self.when_features_unavailable,
                    capture_sample_rate=self.capture_sample_rate,
                    capture_exclude=self.capture_exclude,
                    shadow_version=None if shadow is None else shadow.version,
                    shadow_sha256=None if shadow is None else shadow.sha256,
                    follows_lock_file=True,
                )
                if self._pin_error is not None:
                    app = InferenceApp(None, settings_error=self._pin_error, metrics=self.metrics)
                else:
                    app = InferenceApp(
                        settings, metrics=self.metrics, online=self.online, capture=self.capture
                    )
                    self._apps[key] = app
                    if pin is not None and app.model is None:
                        self._failed_at[key] = self.clock()
                    else:
                        self._failed_at.pop(key, None)
            serving = (pin, shadow, self._pin_error or app.unavailable)
            if serving != self._serving:
                previous, self._serving = self._serving, serving
                recovered = (
                    previous is not None and previous[:2] == serving[:2] and previous[2] is not None
                )
                self._log_serving(app, recovered=recovered)
            return app

    def _log_serving(self, app: InferenceApp, *, recovered: bool = False) -> None:
        if app.model is None:
            logger.warning("now serving no model: %s", app.unavailable)
            return
        if recovered:
            logger.info(
                "now serving %s v%s (recovered: its model loads now)", self.model, app.model.version
            )
        else:
            logger.info("now serving %s v%s", self.model, app.model.version)
        if app.shadow is not None:
            logger.info("shadowed by %s v%s", self.model, app.shadow.version)

    def handle(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """One API Gateway proxy event: POST /events feeds the feature store, the rest is the
        inference API of the current pin."""
        path = "/" + str(event.get("path", "")).strip("/")
        if path == EventsEndpoint.PATH:
            return self.events.handle(event)
        response = self.current().handle(event, None)
        if path == "/openapi.json" and response["statusCode"] == 200:
            # The handler's document, and this server's own route: POST /events.
            document = build_openapi(
                max_events=self.max_events,
                max_body_bytes=self.max_body_bytes,
                model_name=self.model,
                events=EventsRoute(self.events.kinds, EventsEndpoint.MAX_EVENTS),
            )
            response = {**response, "body": json.dumps(document)}
        return response


class EventsEndpoint:
    """`POST /events`: activity events into the feature store and label events into the labels
    folder, locally (on AWS they go to the environment's event bus). A batch with a problem is
    refused whole (400, every problem named), and so is one that reuses an event id the store
    already holds with other content (409, each such event named; an exact copy is a duplicate,
    counted); otherwise 202 with what the updater did and how many labels were stored. The
    envelope is checked as /predict checks it (`batch_envelope`: one key, 1 to `MAX_EVENTS`
    events), and the local API's `GET /openapi.json` documents the route (`EventsRoute`)."""

    PATH = "/events"
    MAX_EVENTS = 1000

    def __init__(self, online: OnlineFeatures | None, labels: LabelFiles | None = None) -> None:
        self.online = online
        self.labels = labels
        # The feature store's clock: what it may fold and what labels may be dated
        # (`ahead_of_clock`).
        self.clock = now_micros if online is None else online.clock
        # Labels are taken only where there is a folder to keep them.
        self.kinds = tuple(KINDS) if labels is not None else ACTIVITY_KINDS

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        if event.get("httpMethod") != "POST":
            refusal = {"error": "method_not_allowed", "message": "/events accepts POST"}
            return _proxy(405, refusal, {"Allow": "POST"})
        try:
            # The body read and parsed as /predict reads it: the same answers to the same faults.
            body = parse_json(request_body(event, None))
        except RequestError as exc:
            return _proxy(exc.status, exc.document())
        items, problems = batch_envelope(body, limit=self.MAX_EVENTS)
        if items is not None:
            # An event dated ahead of the clock is refused (an activity event as the feature
            # updater refuses it on AWS, a label as `sds label` refuses it), and named among the
            # batch's other problems, as /predict names it.
            not_ahead = functools.partial(ahead_of_clock, now=self.clock())
            problems.extend(validate_batch(items, kinds=self.kinds, check_time=not_ahead))
        if problems:
            message = f"{counted(len(problems), 'problem')}; nothing was stored"
            return _proxy(400, RequestError(400, "invalid_request", message, problems).document())
        assert items is not None
        labels = [item for item in items if item["type"] in LABEL_KINDS]
        activity = [item for item in items if item["type"] not in LABEL_KINDS]
        # One event id with two contents is refused as `sds ingest` and training refuse it; an
        # exact copy is a redelivery (the updater counts it once). Labels may differ: a review,
        # then a chargeback, label one payment twice.
        conflict = first_conflict(
            (f"events[{i}]", item)
            for i, item in enumerate(items)
            if item["type"] not in LABEL_KINDS
        )
        if conflict is not None:
            message = f"{conflict}; nothing was stored"
            return _proxy(400, {"error": "conflicting_events", "message": message})
        if activity and self.online is None:
            return _proxy(503, {"error": "no_feature_store", "message": "no feature store"})
        document: dict[str, Any] = {"accepted": len(items), "labels": len(labels)}
        if activity:
            assert self.online is not None
            located = [
                (f"events[{i}]", item)
                for i, item in enumerate(items)
                if item["type"] not in LABEL_KINDS
            ]
            # An id the store already holds with other content (an earlier request's) refuses
            # the whole batch before anything is stored; an exact copy is a duplicate.
            try:
                conflicts = self.online.recorded_conflicts(located)
            except FeatureStoreError as exc:
                return _proxy(503, {"error": "feature_store_unavailable", "message": str(exc)})
            if conflicts:
                return _proxy(409, _conflict_document(conflicts, stored=False))
            result = self.online.apply(timed(activity))
            document |= result.to_dict()
            if result.conflicts and not result.failed:
                # A writer raced this request with other content for an id: the rest of the
                # batch is stored (and its labels), the conflicting events never are.
                if labels and self.labels is not None:
                    self.labels.store(labels)
                where = {str(item["event_id"]): place for place, item in located}
                listed = [(where[i], message) for i, message in result.conflicts.items()]
                return _proxy(409, document | _conflict_document(listed, stored=True))
            if result.failed:
                # Nothing of the labels is stored either: the caller retries the whole batch,
                # and a retry of the activity counts each event once.
                failure = {
                    "error": "feature_store_unavailable",
                    "message": (
                        f"{counted(len(result.failed), 'event')} could not be stored; send the "
                        "whole batch again (what was stored is counted once)"
                    ),
                }
                return _proxy(503, failure | document)
        if labels and self.labels is not None:
            self.labels.store(labels)
        return _proxy(202, document)


def _conflict_document(conflicts: Sequence[tuple[str, str]], *, stored: bool) -> dict[str, Any]:
    """The 409 of `POST /events`: each event whose id is already stored with other content."""
    outcome = "the other events were stored" if stored else "nothing was stored"
    reuse = "reuses" if len(conflicts) == 1 else "reuse"
    return {
        "error": "conflicts_with_stored_events",
        "message": (
            f"{counted(len(conflicts), 'event')} {reuse} an event id already stored with "
            f"different content; {outcome}"
        ),
        "problems": [{"field": where, "reason": reason} for where, reason in conflicts[:1000]],
    }


def _proxy(
    status: int, document: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "body": json.dumps(document),
        "isBase64Encoded": False,
    }


def to_proxy_event(
    *,
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    body: bytes,
    source_ip: str,
) -> dict[str, Any]:
    """The REST API (v1) proxy event API Gateway would send for this request."""
    split = urlsplit(raw_path)
    query = parse_qs(split.query, keep_blank_values=True)
    text: str | None
    encoded = False
    if not body:
        text = None
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode("ascii"), True
    multi_headers: dict[str, list[str]] = {}
    for key, value in headers.items():
        multi_headers.setdefault(key, []).append(value)
    return {
        "resource": "/{proxy+}",
        "path": split.path,
        "httpMethod": method,
        "headers": dict(headers),
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": split.path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/local{split.path}",
            "stage": "local",
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": source_ip},
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


class InFlight:
    """The requests being answered (from their request line to their response's last byte), so
    a stopping server can wait for them; once `draining`, each response closes its connection."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()
        self.draining = False

    def begin(self) -> None:
        with self._changed:
            self._count += 1

    def end(self) -> None:
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    def drain(self, timeout_s: float) -> int:
        """From now on every response closes its connection; wait up to `timeout_s` for the
        requests in flight to be answered. Returns how many are still unanswered."""
        self.draining = True
        with self._changed:
            self._changed.wait_for(lambda: self._count == 0, timeout=timeout_s)
            return self._count


def make_handler(
    handle: Callable[[dict[str, Any]], Mapping[str, Any]],
    limits: ConnectionLimits | None = None,
    in_flight: InFlight | None = None,
) -> type[BaseHTTPRequestHandler]:
    connection_limits = limits or ConnectionLimits()
    requests = in_flight or InFlight()

    class Handler(BaseHTTPRequestHandler):
        server_version = SERVER_VERSION
        protocol_version = "HTTP/1.1"
        # Per read and write, and for an idle keep-alive connection (StreamRequestHandler applies it).
        timeout = connection_limits.idle_timeout_s
        _counted = False

        def setup(self) -> None:
            super().setup()
            # The same buffered reading, through a reader that can hold the head to a deadline.
            self.rfile.close()
            self._reader = _SocketReader(self.connection, connection_limits.idle_timeout_s)
            self.rfile = io.BufferedReader(self._reader)

        def parse_request(self) -> bool:
            # The request line is in: in flight until its response is written (below).
            requests.begin()
            self._counted = True
            parsed = super().parse_request()
            self._reader.disarm()  # and so are the headers
            return parsed

        def handle_one_request(self) -> None:
            # Between requests a connection waits up to the idle timeout for the next one to
            # start; once it has, its line and headers must be in by the header deadline.
            try:
                started = bool(cast(io.BufferedReader, self.rfile).peek(1))
            except TimeoutError:
                started = False  # idle: closed without a word, there is no request to answer
            if not started:
                self.close_connection = True
                return
            # Not the previous request's: a request line cut short leaves them as http.server
            # leaves them for a 414 (parse_request sets them once the line is in).
            self.requestline = self.request_version = self.command = ""
            self._reader.arm(connection_limits.header_timeout_s)
            try:
                super().handle_one_request()
            finally:
                self._reader.disarm()
                if self._counted:
                    self._counted = False
                    requests.end()
            if self._reader.timed_out:
                # http.server gives up on a read that timed out without a word: say why.
                self._head_too_slow()

        def _head_too_slow(self) -> None:
            self._refuse(
                _Refusal(
                    408,
                    "the request line and headers did not arrive in time (limits: "
                    f"{connection_limits.header_timeout_s:g} s in all, "
                    f"{connection_limits.idle_timeout_s:g} s between reads)",
                )
            )

        def _framing(self) -> int | None:
            """The body's length (None: chunked), or the refusal API Gateway would answer with."""
            codings = [
                coding.strip().lower()
                for value in self.headers.get_all("Transfer-Encoding") or []
                for coding in value.split(",")
                if coding.strip()
            ]
            lengths = {
                part.strip()
                for value in self.headers.get_all("Content-Length") or []
                for part in value.split(",")
            }
            if codings:
                if lengths:
                    raise _Refusal(400, "send either Content-Length or Transfer-Encoding, not both")
                if codings != ["chunked"]:
                    raise _Refusal(
                        501,
                        f"Transfer-Encoding {', '.join(codings)} is not supported; "
                        "send Content-Length or Transfer-Encoding: chunked",
                    )
                return None
            if not lengths:
                return 0
            text = lengths.pop() if len(lengths) == 1 else ""  # "5, 5" is one length, "5, 6" none
            if not _DIGITS.fullmatch(text):
                raise _Refusal(400, "invalid Content-Length: it must be one number of bytes")
            length = int(text)
            if length > GATEWAY_MAX_BODY:
                raise _Refusal(413, GATEWAY_TOO_LARGE)
            return length

        def handle_expect_100(self) -> bool:
            self._reader.disarm()  # the headers are in
            # Refuse before the client sends a body we would refuse anyway (RFC 9110, 10.1.1).
            try:
                self._framing()
            except _Refusal as refusal:
                self._refuse(refusal)
                return False
            return super().handle_expect_100()

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            # http.server's own refusals (malformed request line, unknown method, headers too
            # long) as JSON, with the same lingering close. A request line it could not read
            # leaves the version at HTTP/0.9, which has no status line: answer in HTTP/1.1.
            if self.request_version == "HTTP/0.9":
                self.request_version = "HTTP/1.1"
            self._refuse(_Refusal(code, message or self.responses.get(code, ("error",))[0]))

        def _read_body(self) -> bytes:
            length = self._framing()
            # StreamRequestHandler reads through a buffered reader (rbufsize -1): peek and read1.
            rfile = cast(io.BufferedReader, self.rfile)
            reader = _BodyReader(rfile, self.connection, connection_limits)
            body = reader.chunked(GATEWAY_MAX_BODY) if length is None else reader.exactly(length)
            self.connection.settimeout(connection_limits.idle_timeout_s)
            return body

        def _serve(self) -> None:
            try:
                body = self._read_body()
            except _Refusal as refusal:
                self._refuse(refusal)
                return
            event = to_proxy_event(
                method=self.command,
                raw_path=self.path,
                headers={k: v for k, v in self.headers.items()},
                body=body,
                source_ip=self.client_address[0],
            )
            try:
                response = handle(event)
            except Exception:
                # What API Gateway answers when the function raises: the client always gets an
                # answer, and the traceback stays in the server's log.
                logger.exception("%s %s: the handler raised", self.command, self.path)
                response = _proxy(502, {"message": "Internal server error"})
            payload = response.get("body") or ""
            data = (
                base64.b64decode(payload)
                if response.get("isBase64Encoded")
                else str(payload).encode()
            )
            self._send(int(response.get("statusCode", 502)), response.get("headers") or {}, data)

        def _refuse(self, refusal: _Refusal) -> None:
            """Answer, half-close, and discard the rest of the request (bounded) before closing."""
            self.close_connection = True
            data = json.dumps({"message": refusal.message}).encode()
            try:
                self.connection.settimeout(connection_limits.idle_timeout_s)
                self._send(refusal.status, {"Connection": "close"}, data)
            except OSError:
                return  # the client is gone: nobody to answer
            _linger(self.connection, connection_limits)

        def _send(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, str(value))
            if requests.draining and not self.close_connection:
                self.send_header("Connection", "close")  # the server is stopping
            if not any(k.lower() == "content-type" for k in headers):
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":  # its answer's headers only (RFC 9110, 9.3.2)
                self.wfile.write(data)

        # Every method goes to the handler, as API Gateway's ANY methods send it (HEAD too).
        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

        def log_message(self, format: str, *args: Any) -> None:
            logger.info("%s %s", self.address_string(), format % args)

    return Handler


def _address_family(host: str, port: int) -> socket.AddressFamily:
    """IPv4 where the host has an IPv4 address (as before: `localhost` is 127.0.0.1), IPv6 where
    it has only IPv6 ones (`::1`, `::`); a host that does not resolve is named by the bind."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return socket.AF_INET
    families = {family for family, *_ in found}
    return socket.AF_INET6 if families == {socket.AF_INET6} else socket.AF_INET


def host_in_url(host: str) -> str:
    """A host as a URL writes it: an IPv6 address in brackets (RFC 3986)."""
    return f"[{host}]" if ":" in host else host


class _Lingerer:
    """Lingers on refused connections, all of them in one thread (a selector), each as `_linger`
    does for one: what the client still sends is discarded until it closes, for at most
    `drain_timeout_s` and `drain_max_bytes`, then the socket is closed. A thread per refused
    connection would bring back the unbounded threads the concurrency limit is there to prevent;
    at most `max_sockets` are lingered on at once, one more is closed at once."""

    def __init__(self, limits: ConnectionLimits, max_sockets: int = MAX_LINGERING) -> None:
        self._limits = limits
        self._max_sockets = max_sockets
        self._mutex = threading.Lock()
        self._arrived: list[socket.socket] = []
        self._count = 0  # arrived or lingered on
        self._closed = False
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_write.setblocking(False)
        self._thread: threading.Thread | None = None

    def add(self, sock: socket.socket) -> None:
        """Take over a refused connection, answered and half-closed: it is closed from here on."""
        with self._mutex:
            if self._closed or self._count >= self._max_sockets:
                sock.close()
                return
            self._arrived.append(sock)
            self._count += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sds-local-api-linger", daemon=True
                )
                self._thread.start()
        self._wake()

    def close(self) -> None:
        """Close every connection lingered on, and stop the thread."""
        with self._mutex:
            self._closed = True
            thread = self._thread
        self._wake()
        if thread is not None:
            thread.join(timeout=5)
        self._wake_read.close()
        self._wake_write.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full buffer: a wake-up is pending already
            self._wake_write.send(b"\0")

    def _run(self) -> None:
        buffer = bytearray(_READ_SIZE)
        # Each socket lingered on: its deadline and how many more bytes it may send.
        lingering: dict[socket.socket, tuple[float, int]] = {}
        with selectors.DefaultSelector() as selector:

            def done(sock: socket.socket) -> None:
                selector.unregister(sock)
                sock.close()
                del lingering[sock]
                with self._mutex:
                    self._count -= 1

            selector.register(self._wake_read, selectors.EVENT_READ)
            while True:
                timeout = None
                if lingering:
                    first = min(deadline for deadline, _ in lingering.values())
                    timeout = max(0.0, first - time.monotonic())
                for key, _ in selector.select(timeout):
                    sock = cast(socket.socket, key.fileobj)
                    if sock is self._wake_read:
                        with contextlib.suppress(OSError):
                            sock.recv(4096)
                        continue
                    deadline, budget = lingering[sock]
                    try:
                        received = sock.recv_into(buffer, min(len(buffer), budget))
                    except BlockingIOError:
                        continue
                    except OSError:
                        received = 0  # reset: gone
                    if received == 0 or received >= budget:
                        done(sock)  # the client closed, or sent too much: stop either way
                    else:
                        lingering[sock] = (deadline, budget - received)
                now = time.monotonic()
                for sock in [s for s, (deadline, _) in lingering.items() if deadline <= now]:
                    done(sock)  # too slow to close
                with self._mutex:
                    arrived, self._arrived = self._arrived, []
                    closed = self._closed
                for sock in arrived:
                    sock.setblocking(False)
                    lingering[sock] = (
                        now + self._limits.drain_timeout_s,
                        self._limits.drain_max_bytes,
                    )
                    selector.register(sock, selectors.EVENT_READ)
                if closed:
                    for sock in list(lingering):
                        done(sock)
                    return


class _Server(ThreadingHTTPServer):
    """One thread per connection, `limits.limit_concurrency` of them at most: a connection
    accepted beyond that is answered `503` with `Retry-After` by the accepting thread itself, and
    lingered on by one thread for all of them (`_Lingerer`), so a burst costs no thread and a
    bounded number of sockets."""

    daemon_threads = True
    # The listen backlog, uvicorn's and gunicorn's default (`--backlog 2048`; the kernel may cap
    # it, at net.core.somaxconn on Linux): socketserver's 5 drops a burst's connections before
    # they are accepted, and their clients retry a second or more later instead of reading a 503.
    request_queue_size = 2048

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        limits: ConnectionLimits,
    ) -> None:
        self.address_family = _address_family(*address)
        self.limits = limits
        # A slot per connection being handled, taken as it is accepted, given back as it closes.
        self._slots = threading.BoundedSemaphore(limits.limit_concurrency)
        self._lingerer = _Lingerer(limits)
        self.refused = 0  # connections refused with 503 (counted by the accepting thread only)
        self._refusals_logged = 0
        self._refusal_logged_at = -REFUSAL_LOG_INTERVAL_S
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request, client_address)
            return
        try:
            super().process_request(request, client_address)  # starts its thread
        except BaseException:
            self._slots.release()  # no thread ("can't start new thread"): the slot is free
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, sock: socket.socket, client_address: Any) -> None:
        """Answer 503 without reading the request (the accepting thread must never wait on a
        client), half-close, and hand the socket to the lingerer."""
        self.refused += 1
        limit = self.limits.limit_concurrency
        # Said before the answer: whoever reads the 503 finds the line in the log.
        now = time.monotonic()
        if now - self._refusal_logged_at >= REFUSAL_LOG_INTERVAL_S:
            self._refusal_logged_at = now
            self._refusals_logged = self.refused
            logger.warning(
                "%s: connection refused with 503: already handling %d connections, the limit "
                "(sds serve --limit-concurrency); %d refused in all, logged once a second at most",
                client_address[0],
                limit,
                self.refused,
            )
        data = json.dumps(
            {
                "message": f"the local API is handling its limit of {limit} connections at once "
                f"(sds serve --limit-concurrency); retry after {RETRY_AFTER_S} s"
            }
        ).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\n"
            f"Server: {SERVER_VERSION}\r\n"
            f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
            f"Retry-After: {RETRY_AFTER_S}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        try:
            sock.setblocking(False)
            # A new connection's send buffer (kilobytes at the least) takes these bytes whole.
            answered = sock.send(head.encode("latin-1") + data) == len(head) + len(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            answered = False  # gone already (a reset), or the buffer was full: nobody to answer
        if answered:
            self._lingerer.add(sock)
        else:
            sock.close()

    def server_close(self) -> None:
        super().server_close()
        self._lingerer.close()
        if self.refused > self._refusals_logged:
            logger.warning(
                "%s refused with 503 since the last line about it; %d in all",
                counted(self.refused - self._refusals_logged, "connection"),
                self.refused,
            )

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # `::` takes IPv4 clients too, as `python -m http.server --bind ::` does.
            with contextlib.suppress(OSError, AttributeError):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that goes away mid-request (a reset, a broken pipe) is one log line, not a
        traceback; anything else is a bug, logged with its traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            logger.info("%s: the client went away (%s)", client_address[0], error)
            return
        logger.exception("error answering %s", client_address[0])


class LocalApi:
    """A running local API: `with LocalApi(...) as api: requests to api.url`."""

    def __init__(
        self,
        apps: PinnedApps,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.apps = apps
        self.in_flight = InFlight()
        connection_limits = limits or ConnectionLimits()
        handler = make_handler(apps.handle, connection_limits, self.in_flight)
        self.server = _Server((host, port), handler, connection_limits)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host_in_url(str(host))}:{port}"

    def start(self) -> LocalApi:
        self.apps.current()  # load the pinned model now, not on the first request
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def wait(self) -> None:
        """Until the server stops (interruptible: Ctrl-C, or SIGTERM made an interruption)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def stop(self, *, grace_s: float = 0.0) -> int:
        """Stop accepting connections and wait up to `grace_s` for the requests in flight to be
        answered; returns how many were not (left to die with the process)."""
        thread = self._thread
        if thread is not None and thread.ident is not None:
            # Only a loop that started can acknowledge a shutdown (stopped while starting,
            # before it did, it would wait for good).
            self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return self.in_flight.drain(grace_s)

    def __enter__(self) -> LocalApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
