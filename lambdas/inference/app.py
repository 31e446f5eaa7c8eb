"""The inference API's logic: routing, request validation, scoring and responses.

Takes API Gateway REST proxy events, returns proxy responses. Importable without AWS and free of
I/O at import time; `handler.py` builds one `InferenceApp` per execution environment.

Routes: POST /predict, GET /model, GET /health, GET /openapi.json (the OpenAPI document from
`sds.kernel.openapi`, served even without a model), and HEAD wherever GET, answered as GET (its
body left out by API Gateway, or `sds serve`). Status codes: 200 scored; 400 invalid JSON or
events (every problem named, with field and reason), a payment dated more than
`sds.kernel.online.FUTURE_TOLERANCE` ahead of the app's clock among them; 404 unknown route; 405 wrong method; 413
body too large; 415 not JSON; 503 no model deployed, the model failed to load, or the account
aggregates could not be read (when the environment refuses to score without them). Nothing a
client sends reaches a 500.

Each payment is scored with its account's aggregates (`sds.kernel.aggregates`) as of its
`occurred_at`, read from the feature store in one round trip for the whole request
(`sds.kernel.online.OnlineFeatures.read_columns`). A payment dated ahead of the clock is refused
(`ahead_of_clock`, as the feature updater refuses such an event): no event after the clock has been
folded yet, so its window would read empty and its score would mislead. The clock is read once
per request, and the warm path compares it with the latest time of the batch only.

The warm path is built for the requests that are almost all of them, valid ones: the body is
read straight into columns, parsed and validated together in C (`sds.kernel.features.BatchDecoder`,
msgspec), the events are featurized together (`featurize_columns`: a few in one generated pass
over their rows, more column by column), and the response is written with orjson. Anything that
path does not accept is answered by the reference path, the standard library's parser and
`validate_event` per event, so every error a client can see (status, code, message, problems in
order) is exactly what that reference gives.

Metrics are Embedded Metric Format lines on stdout (no API call): a scored request writes the
served version's behaviour (`sds.kernel.behaviour`: predictions, flagged, score histogram) with
the dimensions Environment, Model and ModelVersion, which the deployment's alert-rate alarms
watch (on Lambda written from a template made once per version, `BehaviourLine`); the function's
own health (invalid requests, internal errors, model load failures, feature
store outages) is counted per Environment, in one line at the end of the request.

Each scored payment is captured (`sds.kernel.capture`: the event, the feature vector as scored,
the model, score and decision), sampled per event id at the environment's CAPTURE_SAMPLE_RATE,
as one line per payment to the capture sink: stdout on Lambda, where the function's log
subscription ships them to S3, a JSON Lines file under `sds serve`. Capture runs once the
response is built (its latency field ends at the decision). Capture never fails a request: a
sink that raises is logged and counted (`CaptureFailures`). On Lambda a request's metric lines
and capture records reach stdout in one write at its end (`StdoutLines`): the runtime flushes
every write, a system call each.

With a shadow pin (SHADOW_MODEL_VERSION), a challenger is loaded at cold start beside the live
model, the same way (same registry, same sha256 and feature-schema checks). When capture is on it
scores the same float32 matrix the live model scored (the account aggregates are read once),
right after the live model, and its score and decision go into the capture
record beside the live ones (`sds.kernel.capture`). The live model alone decides: the response is
built from the live scores only, byte for byte what it is without a shadow. The bound on what a
challenger costs a request: one ONNX Runtime run on the request's matrix when it works (`make bench`
measures it), the time to raise when it fails. A challenger that fails to load serves nothing and
is counted once (`ShadowLoadFailure`); one that raises while scoring is counted per request
(`ShadowFailures`) and, after `SHADOW_FAILURE_LIMIT` failures in a row, switched off for the life
of the execution environment (`ShadowDisabled`). With capture off nothing would record its scores,
so it does not score.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from sds.kernel.aggregates import NAMES as AGGREGATES
from sds.kernel.behaviour import (
    BEHAVIOUR_METRICS,
    NAMESPACE,
    behaviour_counts,
    behaviour_values,
    score_bucket,
    version_dimensions,
)
from sds.kernel.capture import Capturer, CaptureSink
from sds.kernel.errors import counted
from sds.kernel.features import (
    FIELD_NAMES,
    TIME_US,
    BatchDecoder,
    Columns,
    Problem,
    batch_envelope,
    featurize_columns,
    featurize_row,
    json_int,
    parse_time,
    validate_event,
)
from sds.kernel.featurestore import FeatureStoreError, open_feature_store
from sds.kernel.online import OnlineFeatures, ahead_of_clock, now_micros
from sds.kernel.openapi import build_openapi
from sds.kernel.serving import LoadedModel, ModelUnavailable, load_model, shown_score, shown_scores
from sds.kernel.settings import ServingSettings, SettingsError

logger = logging.getLogger("sds.inference")

MAX_PROBLEMS_LISTED = 1000
ROUTES: Mapping[str, tuple[str, ...]] = {
    "/predict": ("POST",),
    "/model": ("GET",),
    "/health": ("GET",),
    "/openapi.json": ("GET",),
}
# What each route answers: its methods, and HEAD wherever GET, answered as GET (RFC 9110, 9.3.2)
# for health checks and `curl -I`; the HTTP layer (API Gateway, `sds serve`) sends that answer's
# status and headers without its body.
ALLOWED_METHODS: Mapping[str, tuple[str, ...]] = {
    path: (*methods, "HEAD") if "GET" in methods else methods for path, methods in ROUTES.items()
}

Response = dict[str, Any]
# A request's metrics (name -> value) and their dimensions, emitted together.
MetricSink = Callable[[Mapping[str, float], Mapping[str, str]], None]
# Where rendered Embedded Metric Format lines go (stdout on Lambda).
LineSink = Callable[[bytes], None]
# A payment sent to /predict may say what it is, as on the event bus.
OPTIONAL_FIELDS = ("type",)
PAYMENT = "payment"
# A one-payment request's aggregates when the store cannot answer and the environment scores.
_NO_AGGREGATES = (0.0,) * len(AGGREGATES)
_OCCURRED_AT = FIELD_NAMES.index("occurred_at")
# A challenger that raises this many times in a row is switched off for the execution environment.
SHADOW_FAILURE_LIMIT = 3


@functools.lru_cache(maxsize=64)
def _emf_directive(names: tuple[str, ...], dimensions: tuple[str, ...]) -> orjson.Fragment:
    """The metric directive, serialized once per set of names: a request's line only inserts it
    (the behaviour line names 13 metrics, most of its bytes)."""
    directive = [
        {
            "Namespace": NAMESPACE,
            "Dimensions": [list(dimensions)],
            "Metrics": [{"Name": name, "Unit": "Count"} for name in names],
        }
    ]
    return orjson.Fragment(orjson.dumps(directive))


def emf_line(values: Mapping[str, float], dimensions: Mapping[str, str]) -> bytes:
    """A request's CloudWatch metrics as one Embedded Metric Format log line (no API call)."""
    document = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": _emf_directive(tuple(values), tuple(sorted(dimensions))),
        },
        **values,
        **dimensions,
    }
    return orjson.dumps(document, option=orjson.OPT_APPEND_NEWLINE)


class BehaviourLine:
    """One version's behaviour line, `emf_line(behaviour_counts(scores, threshold), dimensions)`
    byte for byte, written from a template made once: the line every scored request writes,
    without a dict of its 12 metrics or a serialization per request (measured in the handler,
    about 7 us of a 1-event request: docs/decisions.md 48). All a 1-score line holds but its
    timestamp is written in advance, one per bucket and decision: the most common request's.
    """

    __slots__ = ("_after_time", "_one_score")

    def __init__(self, dimensions: Mapping[str, str]) -> None:
        if "_aws" in dimensions or not set(dimensions).isdisjoint(BEHAVIOUR_METRICS):
            raise ValueError(f"dimension names {sorted(dimensions)} clash with the line's keys")

        def literal(document: Any) -> bytes:  # JSON, as text for a %-format
            return orjson.dumps(document).replace(b"%", b"%%")

        directive = literal(_emf_directive(BEHAVIOUR_METRICS, tuple(sorted(dimensions))))
        values = b"".join(b",%s:%%d" % literal(name) for name in BEHAVIOUR_METRICS)
        named = b"," + literal(dimensions)[1:-1] if dimensions else b""
        # All of the line after its timestamp, a %d per value in `BEHAVIOUR_METRICS` order.
        self._after_time = b',"CloudWatchMetrics":' + directive + b"}" + values + named + b"}\n"
        buckets = len(BEHAVIOUR_METRICS) - 2
        self._one_score = tuple(
            tuple(
                self._after_time % (1, flagged, *(int(i == bucket) for i in range(buckets)))
                for flagged in (0, 1)
            )
            for bucket in range(buckets)
        )

    def render(self, scores: Sequence[float], threshold: float) -> bytes:
        """The line for a request's scores, at its version's decision threshold."""
        if len(scores) == 1:
            score = scores[0]
            after_time = self._one_score[score_bucket(score)][score >= threshold]
        else:
            after_time = self._after_time % behaviour_values(scores, threshold)
        return b'{"_aws":{"Timestamp":%d%b' % (int(time.time() * 1000), after_time)


def emf_metrics(values: Mapping[str, float], dimensions: Mapping[str, str]) -> None:
    """Write a request's metrics line to stdout at once (`StdoutLines` batches them instead)."""
    sys.stdout.write(emf_line(values, dimensions).decode())


class StdoutLines:
    """What the function writes to stdout, its metric lines and its capture records, kept and
    written in one write at the end of each request (`flush`).

    On Lambda the runtime flushes stdout after every write (awslambdaric wraps it in
    `Unbuffered`), so each write is a system call to the pipe the platform reads logs from: one
    per request instead of one per line (a metrics line, then the capture records). Lines keep
    their order; a request's lines are flushed even when it fails.

    Under that wrapper (`_unbuffered_fd`) the bytes go straight to its file descriptor
    (`os.write`), without the text layer's decode, encode and flush around the same system call
    (measured, 3 us a request: docs/decisions.md 67). That keeps the order of everything written
    to stdout because the wrapper leaves nothing in its buffers between writes. Anywhere else
    (stdout replaced after this was made, a stream that buffers, one without a descriptor) the
    lines are written as text to whatever `sys.stdout` is at the time.
    """

    __slots__ = ("_fd", "_pending", "_stream")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._stream = sys.stdout
        self._fd = _unbuffered_fd(self._stream)

    def metrics(self, values: Mapping[str, float], dimensions: Mapping[str, str]) -> None:
        """A `MetricSink`."""
        self._pending.append(emf_line(values, dimensions))

    def capture(self, lines: bytes) -> None:
        """A `CaptureSink`; also the `LineSink` of rendered metric lines (`line`)."""
        self._pending.append(lines)

    line = capture  # a metrics line already rendered (`BehaviourLine`) is kept the same way

    def flush(self) -> None:
        """Write what is pending in one write; never raises (logging must not fail serving)."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        try:
            if self._fd is not None and sys.stdout is self._stream:
                _write_all(self._fd, data)
            else:
                sys.stdout.write(data.decode())
        except Exception:
            logger.exception("could not write %d bytes of metrics and capture records", len(data))


def _unbuffered_fd(stream: Any) -> int | None:
    """The file descriptor under `stream` if it is the Lambda runtime's stdout, which flushes
    every write at once (awslambdaric's `Unbuffered` around a text stream); else None."""
    if type(stream).__name__ != "Unbuffered":
        return None
    try:
        fd = stream.stream.fileno()
    except (AttributeError, OSError, ValueError):  # no inner stream, or not a file
        return None
    return fd if isinstance(fd, int) else None


def _write_all(fd: int, data: bytes) -> None:
    """`data` written to `fd` whole: a pipe may take a large write in parts."""
    written = os.write(fd, data)
    if written == len(data):  # nearly always, in one system call
        return
    view = memoryview(data)[written:]
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(f"stdout took none of the last {len(view)} bytes")
        view = view[written:]


def _dumps(document: Mapping[str, Any]) -> str:
    try:
        return orjson.dumps(document).decode()
    except orjson.JSONEncodeError:
        # What orjson refuses (a lone surrogate echoed from a key, an integer beyond 64 bits in a
        # manifest) the standard library writes as escapes.
        return json.dumps(document, ensure_ascii=True)


class RequestError(Exception):
    def __init__(
        self, status: int, code: str, message: str, problems: list[Problem] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = problems or []

    def document(self) -> dict[str, Any]:
        """The error body clients get: the code, the message, and the first
        `MAX_PROBLEMS_LISTED` problems with a count of the rest."""
        document: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.problems:
            listed = self.problems[:MAX_PROBLEMS_LISTED]
            document["problems"] = [p.to_dict() for p in listed]
            if len(self.problems) > len(listed):
                document["problems_not_listed"] = len(self.problems) - len(listed)
        return document


def _content_type(headers: Any) -> str:
    """The first Content-Type header, whatever its case ("" if none)."""
    if type(headers) is not dict and not isinstance(headers, Mapping):  # dict: no ABC check
        return ""
    # API Gateway passes every header of the request; the loop stops at the one it wants,
    # cheaper than lowering every name first (docs/decisions.md 63).
    for name, value in headers.items():
        if str(name).lower() == "content-type":
            return str(value)
    return ""


def unsupported_media_type(headers: Any) -> str | None:
    """Why a body of the request's Content-Type is refused (None: JSON, or none given): the one
    rule of `POST /predict` and of the local API's `POST /events` (`sds.ops.local_api`), so a
    `curl -d` without `-H 'Content-Type: application/json'` gets the same 415 from both."""
    given = _content_type(headers)
    if given == "application/json":  # what nearly every client sends, as it is sent
        return None
    media_type = given.split(";", 1)[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        return f"Content-Type must be application/json, got {media_type[:60]!r}"
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def _not_a_payment(kind: Any) -> str:
    """Why an event of another `type` is not scored (a kind named, anything else described)."""
    if isinstance(kind, str):
        return f"{kind[:40]!r}: only payments are scored"
    return 'must be "payment": only payments are scored'


def request_body(event: Mapping[str, Any], max_body_bytes: int | None) -> bytes:
    """A proxy event's body as bytes (base64 decoded); RequestError says what is wrong with it:
    the media type, an empty body, a body over `max_body_bytes` (None: no limit of its own).
    The one reader of a request body, /predict's and the local API's /events."""
    unsupported = unsupported_media_type(event.get("headers"))
    if unsupported is not None:
        raise RequestError(415, "unsupported_media_type", unsupported)
    raw = event.get("body")
    if raw is None or raw == "":
        raise RequestError(400, "empty_body", 'the request body is empty; send {"events": [...]}')
    if not isinstance(raw, str):
        raise RequestError(400, "bad_event", "the request body must be a string")
    if event.get("isBase64Encoded") is True:
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, "invalid_body", "the body is not valid base64") from None
    else:
        data = raw.encode("utf-8", errors="surrogatepass")
    if max_body_bytes is not None and len(data) > max_body_bytes:
        raise RequestError(
            413,
            "payload_too_large",
            f"the body has {len(data)} bytes; the limit is {max_body_bytes}",
        )
    return data


def parse_json(data: bytes) -> Any:
    """The reference parser, the standard library's: its errors are the messages clients see,
    and it decides what the fast reader declines (an integer beyond 64 bits; a lone surrogate
    escape). An integer too long for Python to convert is read so that its field's range check
    names it (`json_int`)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(400, "invalid_body", "the body is not valid UTF-8") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_int=json_int)
    except RecursionError:
        raise RequestError(400, "invalid_json", "the JSON is nested too deeply") from None
    except ValueError as exc:
        message = str(exc).splitlines()[0][:200]
        raise RequestError(400, "invalid_json", f"the body is not valid JSON: {message}") from None


class InferenceApp:
    """One model version behind the API, like one published Lambda version."""

    def __init__(
        self,
        settings: ServingSettings | None,
        *,
        loader: Callable[[ServingSettings], LoadedModel] = load_model,
        metrics: MetricSink = emf_metrics,
        settings_error: str | None = None,
        online: OnlineFeatures | None = None,
        capture: CaptureSink | None = None,
        lines: LineSink | None = None,
        clock: Callable[[], int] = now_micros,
    ) -> None:
        self.settings = settings or ServingSettings(None, None, None, None)  # type: ignore[arg-type]
        self.metrics = metrics
        # Microseconds since the epoch: when a request was received, and the latest a payment
        # it scores may be dated (with `ahead_of_clock`'s tolerance).
        self.clock = clock
        self.capturer: Capturer | None = None
        self.online = online
        self.online_error: str | None = None
        if online is None and settings is not None:
            self._open_feature_store(settings)
        self.dimensions = {"Environment": self.settings.environment or "unknown"}
        # The served version's behaviour metrics carry its name and number too.
        self.version_dimensions: dict[str, str] = {}
        # With a sink for rendered lines, the behaviour line goes there from its template.
        self.lines = lines
        self._behaviour_line: BehaviourLine | None = None
        self.model: LoadedModel | None = None
        self.unavailable: str | None = settings_error
        self._headers = {"Content-Type": "application/json"}
        self._model_ref: dict[str, Any] = {}
        self.shadow: LoadedModel | None = None
        self.shadow_unavailable: str | None = None
        self._shadow_failures = 0
        # The warm path's reader: a body it declines is read by the reference path (`_events`).
        self.decoder = BatchDecoder(
            max_events=self.settings.max_events, optional={"type": (PAYMENT,)}
        )
        # A one-payment request is scored as a row, its aggregates in the features' order.
        self._rows = self.online is None or self.online.names == AGGREGATES
        if settings is None or settings_error is not None:
            self.unavailable = settings_error or "the function is misconfigured"
            self._emit({"ModelLoadFailure": 1.0})
            return
        started = time.perf_counter()
        try:
            self.model = loader(settings)
        except ModelUnavailable as exc:
            self.unavailable = str(exc)
            if settings.has_pin:
                logger.error("model load failed: %s", exc)
                self._emit({"ModelLoadFailure": 1.0})
        else:
            self._model_ref = {"name": self.model.name, "version": self.model.version}
            self.version_dimensions = version_dimensions(
                environment=self.dimensions["Environment"],
                model=self.model.name,
                version=self.model.version,
            )
            if lines is not None:
                self._behaviour_line = BehaviourLine(self.version_dimensions)
            if capture is not None and settings.capture_sample_rate > 0:
                self.capturer = Capturer(
                    env=self.settings.environment,
                    model={**self._model_ref, "sha256": self.model.sha256},
                    threshold=self.model.threshold,
                    sink=capture,
                    sample_rate=settings.capture_sample_rate,
                    exclude=settings.capture_exclude,
                )
            self._headers |= {
                "X-Model-Name": self.model.name,
                "X-Model-Version": str(self.model.version),
            }
            logger.info(
                "loaded model %s v%s in %.0f ms",
                self.model.name,
                self.model.version,
                (time.perf_counter() - started) * 1000,
            )
            self._load_shadow(settings, loader)

    def _load_shadow(
        self, settings: ServingSettings, loader: Callable[[ServingSettings], LoadedModel]
    ) -> None:
        """Load the challenger, if one is pinned; its failure is logged and counted, and the live
        model serves exactly as it would without it."""
        shadow_settings = settings.for_shadow()
        if shadow_settings is None and settings.shadow_error is None:
            return
        started = time.perf_counter()
        try:
            if shadow_settings is None:
                raise ModelUnavailable(f"the shadow pin is invalid: {settings.shadow_error}")
            shadow = loader(shadow_settings)
        except Exception as exc:  # a challenger must never stop the live model from serving
            self.shadow_unavailable = f"shadow: {exc}"
            logger.error("shadow model load failed (serving without it): %s", exc)
            self._emit({"ShadowLoadFailure": 1.0})
            pin = settings.shadow_pin
            if self.capturer is not None and pin is not None:
                # Each record then says the pinned challenger did not score it, and why.
                self.capturer.with_shadow(
                    model={
                        "name": settings.model_name,
                        "version": pin.version,
                        "sha256": pin.sha256,
                    },
                    threshold=0.0,
                )
            return
        if self.capturer is None:
            self.shadow_unavailable = "shadow: capture is off, so nothing would record its scores"
            logger.warning(
                "shadow model v%s loaded but capture is off: it does not score", shadow.version
            )
            return
        self.shadow = shadow
        self.capturer.with_shadow(
            model={"name": shadow.name, "version": shadow.version, "sha256": shadow.sha256},
            threshold=shadow.threshold,
        )
        logger.info(
            "loaded shadow model %s v%s in %.0f ms (scores for the capture, decides nothing)",
            shadow.name,
            shadow.version,
            (time.perf_counter() - started) * 1000,
        )

    def _open_feature_store(self, settings: ServingSettings) -> None:
        if settings.feature_store_uri is None:
            self.online_error = "no feature store is configured (FEATURE_STORE_URI)"
            return
        try:
            self.online = OnlineFeatures(
                open_feature_store(
                    settings.feature_store_uri,
                    timeout=settings.feature_store_timeout_ms / 1000,
                )
            )
        except FeatureStoreError as exc:
            self.online_error = str(exc)
            logger.error("feature store unavailable: %s", exc)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **kwargs: Any) -> InferenceApp:
        try:
            settings = ServingSettings.from_environ(environ)
        except SettingsError as exc:
            return cls(None, settings_error=f"the function is misconfigured: {exc}", **kwargs)
        return cls(settings, **kwargs)

    def _emit(
        self, values: Mapping[str, float], dimensions: Mapping[str, str] | None = None
    ) -> None:
        try:
            self.metrics(values, self.dimensions if dimensions is None else dimensions)
        except Exception:  # metrics must never break serving
            logger.exception("could not emit metrics %s", ", ".join(values))

    def _emit_behaviour(self, scores: list[float], threshold: float) -> None:
        """The served version's behaviour line: rendered to `lines`, or as values to `metrics`."""
        line = self._behaviour_line
        if line is None or self.lines is None:
            self._emit(behaviour_counts(scores, threshold), self.version_dimensions)
            return
        try:
            self.lines(line.render(scores, threshold))
        except Exception:  # metrics must never break serving
            logger.exception("could not emit the behaviour of %d scores", len(scores))

    # Entry point ------------------------------------------------------------------------------

    def handle(self, event: Any, context: Any = None) -> Response:
        metrics: dict[str, float] = {}  # this request's, emitted as one line at the end
        try:
            response = self._route(event, metrics)
        except RequestError as exc:
            if exc.status == 400:
                metrics["InvalidRequests"] = 1.0
            response = self._error(exc)
        except Exception:
            # A bug or an infrastructure fault, never the client's input: say so without detail.
            logger.exception("unhandled error")
            metrics["InternalErrors"] = 1.0
            response = self._json(500, {"error": "internal_error", "message": "internal error"})
        if metrics:
            self._emit(metrics)
        return response

    def _route(self, event: Any, metrics: dict[str, float]) -> Response:
        if type(event) is not dict and not isinstance(event, Mapping):  # dict: no ABC check
            raise RequestError(400, "bad_event", "not an API Gateway proxy event")
        path = event.get("path")
        method = event.get("httpMethod")
        if path == "/predict" and method == "POST":  # the route nearly every request takes
            return self._predict(event, metrics)
        if not isinstance(path, str) or not isinstance(method, str):
            raise RequestError(400, "bad_event", "not an API Gateway proxy event")
        normalized = "/" + path.strip("/")
        allowed = ALLOWED_METHODS.get(normalized)
        if allowed is None:
            raise RequestError(404, "not_found", f"no route {normalized[:100]}; try POST /predict")
        if method.upper() not in allowed:
            response = self._error(
                RequestError(
                    405, "method_not_allowed", f"{normalized} accepts {', '.join(allowed)}"
                )
            )
            response["headers"]["Allow"] = ", ".join(allowed)
            return response
        if normalized == "/health":
            return self._health()
        if normalized == "/model":
            return self._json(200, self._require_model().describe())
        if normalized == "/openapi.json":
            return self._json(200, self._openapi())
        return self._predict(event, metrics)

    # Routes -----------------------------------------------------------------------------------

    def _health(self) -> Response:
        if self.model is None:
            return self._json(
                503,
                {"status": "unavailable", "message": self.unavailable, "model": None},
            )
        return self._json(
            200,
            {"status": "ok", "model": {"name": self.model.name, "version": self.model.version}},
        )

    def _openapi(self) -> dict[str, Any]:
        return build_openapi(
            max_events=self.settings.max_events,
            max_body_bytes=self.settings.max_body_bytes,
            model_name=self.settings.model_name,
        )

    def _require_model(self) -> LoadedModel:
        if self.model is None:
            raise RequestError(503, "model_unavailable", self.unavailable or "no model loaded")
        return self.model

    def _predict(self, event: Mapping[str, Any], metrics: dict[str, float]) -> Response:
        received_us, started_ns = self.clock(), time.perf_counter_ns()
        data = request_body(event, self.settings.max_body_bytes)
        payments = self.decoder.events(data)
        one: tuple[tuple[Any, ...], int] | None = None  # a one-payment request's fields and time
        columns: Columns | None = None
        if payments is not None:
            if len(payments) == 1 and self._rows:
                one = self._one(payments[0], received_us)
            else:
                columns = self._columns(payments, received_us)
            if one is None and columns is None:
                payments = None  # a time the reader cannot vouch for: the reference path decides
        events: Sequence[Mapping[str, Any]] | None = None  # the payments as JSON, if parsed
        if payments is None:
            # Not certainly valid: the reference path decides, and names every problem.
            events = self._events(parse_json(data), received_us)
            columns = Columns.of(events)
        model = self._require_model()
        capturer = self.capturer
        event_ids: Sequence[Any]
        if one is not None:
            # One payment, the most common request: scored as a row from its fields, without
            # columns or a matrix of its own (docs/decisions.md 61).
            fields, occurred_us = one
            computed, missing = self._row_aggregates(fields[1], occurred_us, metrics)
            score, features = model.score_row(
                featurize_row(fields, computed), keep=capturer is not None
            )
            scores, event_ids = [score], [fields[0]]
        else:
            assert columns is not None
            columns, missing = self._with_aggregates(columns, metrics)
            features = featurize_columns(columns)
            # The handler's own matrix: C-contiguous float32 in the verified layout, scored
            # without the wrapper's per-call checks (`LoadedModel.score_matrix`).
            scores = model.score_matrix(features)
            event_ids = columns["event_id"]
        decided_ns = time.perf_counter_ns()
        # The challenger scores right after the live model, before the response is built.
        shadow = (
            self._shadow_scores(features, metrics)
            if capturer is not None and capturer.shadowing
            else None
        )
        threshold = model.threshold
        # Each score rounded toward its decision: is_fraud is fraud_probability >= the threshold.
        if one is not None:  # without the lists and the zip a batch needs
            flagged = scores[0] >= threshold
            predictions = [
                {
                    "fraud_probability": shown_score(scores[0], flagged),
                    "is_fraud": flagged,
                    "event_id": event_ids[0],
                }
            ]
        else:
            shown = shown_scores(scores, threshold)
            predictions = [
                {"fraud_probability": value, "is_fraud": score >= threshold, "event_id": i}
                for score, value, i in zip(scores, shown, event_ids, strict=True)
            ]
        self._emit_behaviour(scores, threshold)
        document: dict[str, Any] = {"model": self._model_ref, "predictions": predictions}
        if missing is not None:
            document["online_features"] = {"available": False, "reason": missing}
        response = self._json(200, document)
        if capturer is not None:
            if events is None:
                assert payments is not None  # the reader's: made JSON objects for the capture only
                events = self.decoder.as_dicts(payments)
            # Once the response is built (the record's latency ends at the decision): measured,
            # capture costs a request less here than between scoring and the response
            # (benchmarks/README.md, section 12).
            self._capture(
                event,
                received_us,
                started_ns,
                decided_ns,
                events,
                features,
                scores,
                missing,
                metrics,
                shadow,
            )
        return response

    def _capture(
        self,
        event: Mapping[str, Any],
        received_us: int,
        started_ns: int,
        decided_ns: int,
        events: Sequence[Mapping[str, Any]],
        features: Any,
        scores: list[float],
        missing: str | None,
        metrics: dict[str, float],
        shadow: tuple[list[float] | None, int, str | None] | None = None,
    ) -> None:
        """Capture the request's scored events: scoring started at `received_us` (wall clock,
        microseconds) and `started_ns` (perf counter, nanoseconds), the decision was made at
        `decided_ns`; `shadow` is the challenger's scores, scoring time in nanoseconds and error
        (`_shadow_scores`)."""
        assert self.capturer is not None
        context = event.get("requestContext")
        # A proxy event is parsed JSON, its requestContext a dict: no ABC check needed.
        request_id = context.get("requestId") if isinstance(context, dict) else None
        shadow_scores, shadow_ns, shadow_error = shadow or (None, 0, None)
        try:
            self.capturer.capture(
                request_id=request_id if isinstance(request_id, str) else None,
                received_us=received_us,
                started_ns=started_ns,
                decided_ns=decided_ns,
                events=events,
                features=features,
                scores=scores,
                online_features=missing is None,
                shadow_scores=shadow_scores,
                shadow_ns=shadow_ns,
                shadow_error=shadow_error,
            )
        except Exception:  # capture must never break serving
            logger.exception("could not capture %d scored events", len(events))
            metrics["CaptureFailures"] = 1.0

    def _shadow_scores(
        self, features: Any, metrics: dict[str, float]
    ) -> tuple[list[float] | None, int, str | None]:
        """The challenger's scores for the matrix the live model scored, the time they took (ns),
        and what went wrong if they could not be had. Never raises."""
        shadow = self.shadow
        if shadow is None:
            return None, 0, self.shadow_unavailable or "switched off"
        started = time.perf_counter_ns()
        try:
            scores = shadow.score_matrix(features)
            if len(scores) != len(features):
                raise ValueError(f"{len(scores)} scores for {len(features)} payments")
        except Exception as exc:  # the challenger never decides, and never fails a request
            took = time.perf_counter_ns() - started
            self._shadow_failures += 1
            metrics["ShadowFailures"] = 1.0
            logger.warning("shadow model v%s failed to score: %s", shadow.version, exc)
            if self._shadow_failures >= SHADOW_FAILURE_LIMIT:
                self.shadow = None
                self.shadow_unavailable = (
                    f"shadow: switched off after {SHADOW_FAILURE_LIMIT} failures in a row: {exc}"
                )
                metrics["ShadowDisabled"] = 1.0
                logger.error("%s", self.shadow_unavailable)
            return None, took, f"{type(exc).__name__}: {str(exc)[:200]}"
        self._shadow_failures = 0
        return scores, time.perf_counter_ns() - started, None

    def _one(self, payment: Any, received_us: int) -> tuple[tuple[Any, ...], int] | None:
        """A decoded payment's fields and time (microseconds), if its time is valid and not ahead
        of the clock; else None (the reference path names the problem)."""
        fields = self.decoder.fields(payment)
        try:
            occurred_us = parse_time(fields[_OCCURRED_AT])
        except ValueError:
            return None
        if ahead_of_clock(occurred_us, received_us) is not None:
            return None
        return fields, occurred_us

    def _columns(self, payments: list[Any], received_us: int) -> Columns | None:
        """Decoded payments as columns, if every time is valid and none is ahead of the clock
        (the clock is compared with the latest time only); else None."""
        columns = self.decoder.columns(payments)
        if columns is None or ahead_of_clock(max(columns[TIME_US]), received_us) is not None:
            return None
        return columns

    def _row_aggregates(
        self, account: str, occurred_us: int, metrics: dict[str, float]
    ) -> tuple[tuple[float, ...], str | None]:
        """`_with_aggregates` for one payment: its account's aggregates as a row, in
        `AGGREGATES` order."""
        reason = self.online_error
        if self.online is not None:
            try:
                return self.online.read_row(account, occurred_us), None
            except FeatureStoreError as exc:
                reason = str(exc)
        self._aggregates_unavailable(reason, metrics)
        return _NO_AGGREGATES, reason

    def _with_aggregates(
        self, columns: Columns, metrics: dict[str, float]
    ) -> tuple[Columns, str | None]:
        """The batch with each payment's account aggregates as of its time, read in one round
        trip; if the store cannot answer, a 503 or zeros flagged (WHEN_FEATURES_UNAVAILABLE)."""
        reason = self.online_error
        if self.online is not None:
            try:
                values = self.online.read_columns(columns["account_id"], columns[TIME_US])
            except FeatureStoreError as exc:
                reason = str(exc)
            else:
                return columns.with_inputs(values), None
        self._aggregates_unavailable(reason, metrics)
        return columns.with_inputs({name: [0.0] * columns.size for name in AGGREGATES}), reason

    def _aggregates_unavailable(self, reason: str | None, metrics: dict[str, float]) -> None:
        """Count and log that the store could not answer; raise the 503 unless the environment
        scores with zeros (WHEN_FEATURES_UNAVAILABLE)."""
        metrics["OnlineFeaturesUnavailable"] = 1.0
        logger.warning("account aggregates unavailable: %s", reason)
        if self.settings.when_features_unavailable != "score":
            raise RequestError(
                503,
                "features_unavailable",
                f"the account aggregates could not be read: {reason}; retry, or use your "
                "fallback decision",
            )

    # Request parsing --------------------------------------------------------------------------

    def _events(self, body: Any, now: int) -> list[Mapping[str, Any]]:
        """The request's payments, valid and not dated ahead of `now`; else RequestError naming
        every problem."""
        events, problems = batch_envelope(body, limit=self.settings.max_events)
        if not isinstance(body, dict):  # the one problem, with its own message
            raise RequestError(
                400,
                "invalid_request",
                'the body must be a JSON object: {"events": [...]}',
                problems,
            )
        not_ahead = functools.partial(ahead_of_clock, now=now)
        for index, item in enumerate(events or ()):
            where = f"events[{index}]"
            problems.extend(
                validate_event(
                    item, where=where, extra_fields=OPTIONAL_FIELDS, check_time=not_ahead
                )
            )
            if isinstance(item, Mapping) and item.get("type", PAYMENT) != PAYMENT:
                problems.append(Problem(f"{where}.type", _not_a_payment(item["type"])))
        if problems:
            raise RequestError(
                400,
                "invalid_request",
                f"{counted(len(problems), 'problem')} in the request; expected fields per event: "
                + ", ".join(FIELD_NAMES),
                problems,
            )
        assert isinstance(events, list)
        return events

    # Responses --------------------------------------------------------------------------------

    def _json(self, status: int, document: Mapping[str, Any]) -> Response:
        return {
            "statusCode": status,
            "headers": dict(self._headers),
            "body": _dumps(document),
            "isBase64Encoded": False,
        }

    def _error(self, error: RequestError) -> Response:
        return self._json(error.status, error.document())
