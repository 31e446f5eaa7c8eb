"""The inference API's logic: routing, request validation, scoring and responses.

Takes API Gateway REST proxy events, returns proxy responses. Importable without AWS and free of
I/O at import time; `handler.py` builds one `InferenceApp` per execution environment.

Routes: POST /predict, GET /model, GET /health, GET /openapi.json (the OpenAPI document from
`sds.kernel.openapi`, served even without a model). Status codes: 200 scored; 400 invalid JSON or
events (every problem named, with field and reason); 404 unknown route; 405 wrong method; 413
body too large; 415 not JSON; 503 no model deployed or the model failed to load. Nothing a
client sends reaches a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from sds.kernel.features import (
    FIELD_NAMES,
    MAX_EVENT_ID_LENGTH,
    Problem,
    featurize,
    validate_event,
)
from sds.kernel.openapi import build_openapi
from sds.kernel.serving import LoadedModel, ModelUnavailable, load_model
from sds.kernel.settings import ServingSettings, SettingsError

logger = logging.getLogger("sds.inference")

MAX_PROBLEMS_LISTED = 1000
ROUTES: Mapping[str, tuple[str, ...]] = {
    "/predict": ("POST",),
    "/model": ("GET",),
    "/health": ("GET",),
    "/openapi.json": ("GET",),
}

Response = dict[str, Any]
MetricSink = Callable[[str, float, Mapping[str, str]], None]


def emf_metric(name: str, value: float, dimensions: Mapping[str, str]) -> None:
    """Emit one CloudWatch metric as an Embedded Metric Format log line (no API call)."""
    document = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": "sds/inference",
                    "Dimensions": [sorted(dimensions)],
                    "Metrics": [{"Name": name, "Unit": "Count"}],
                }
            ],
        },
        name: value,
        **dimensions,
    }
    sys.stdout.write(json.dumps(document) + "\n")


class RequestError(Exception):
    def __init__(
        self, status: int, code: str, message: str, problems: list[Problem] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = problems or []


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


class InferenceApp:
    """One model version behind the API, like one published Lambda version."""

    def __init__(
        self,
        settings: ServingSettings | None,
        *,
        loader: Callable[[ServingSettings], LoadedModel] = load_model,
        metrics: MetricSink = emf_metric,
        settings_error: str | None = None,
    ) -> None:
        self.settings = settings or ServingSettings(None, None, None, None)  # type: ignore[arg-type]
        self.metrics = metrics
        self.model: LoadedModel | None = None
        self.unavailable: str | None = settings_error
        if settings is None or settings_error is not None:
            self.unavailable = settings_error or "the function is misconfigured"
            self._metric("ModelLoadFailure")
            return
        started = time.perf_counter()
        try:
            self.model = loader(settings)
        except ModelUnavailable as exc:
            self.unavailable = str(exc)
            if settings.has_pin:
                logger.error("model load failed: %s", exc)
                self._metric("ModelLoadFailure")
        else:
            logger.info(
                "loaded model %s v%s in %.0f ms",
                self.model.name,
                self.model.version,
                (time.perf_counter() - started) * 1000,
            )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **kwargs: Any) -> InferenceApp:
        try:
            settings = ServingSettings.from_environ(environ)
        except SettingsError as exc:
            return cls(None, settings_error=f"the function is misconfigured: {exc}", **kwargs)
        return cls(settings, **kwargs)

    def _metric(self, name: str, value: float = 1.0) -> None:
        try:
            self.metrics(name, value, {"Environment": self.settings.environment or "unknown"})
        except Exception:  # metrics must never break serving
            logger.exception("could not emit metric %s", name)

    # Entry point ------------------------------------------------------------------------------

    def handle(self, event: Any, context: Any = None) -> Response:
        try:
            return self._route(event)
        except RequestError as exc:
            if exc.status == 400:
                self._metric("InvalidRequests")
            return self._error(exc)
        except Exception:
            # A bug or an infrastructure fault, never the client's input: say so without detail.
            logger.exception("unhandled error")
            self._metric("InternalErrors")
            return self._json(500, {"error": "internal_error", "message": "internal error"})

    def _route(self, event: Any) -> Response:
        if not isinstance(event, Mapping):
            raise RequestError(400, "bad_event", "not an API Gateway proxy event")
        path = event.get("path")
        method = event.get("httpMethod")
        if not isinstance(path, str) or not isinstance(method, str):
            raise RequestError(400, "bad_event", "not an API Gateway proxy event")
        normalized = "/" + path.strip("/")
        allowed = ROUTES.get(normalized)
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
        return self._predict(event)

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

    def _predict(self, event: Mapping[str, Any]) -> Response:
        body = self._json_body(event)
        events = self._events(body)
        model = self._require_model()
        vectors = [featurize(e) for e in events]
        scores = model.predict(vectors)
        predictions = []
        for source, score in zip(events, scores, strict=True):
            prediction: dict[str, Any] = {
                "fraud_probability": round(score, 6),
                "is_fraud": score >= model.threshold,
            }
            if "event_id" in source:
                prediction["event_id"] = source["event_id"]
            predictions.append(prediction)
        self._metric("Predictions", len(predictions))
        return self._json(
            200,
            {"model": {"name": model.name, "version": model.version}, "predictions": predictions},
        )

    # Request parsing --------------------------------------------------------------------------

    def _json_body(self, event: Mapping[str, Any]) -> Any:
        headers = event.get("headers") or {}
        if not isinstance(headers, Mapping):
            headers = {}
        content_type = next(
            (str(v) for k, v in headers.items() if str(k).lower() == "content-type"), ""
        )
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type and media_type != "application/json" and not media_type.endswith("+json"):
            raise RequestError(
                415,
                "unsupported_media_type",
                f"Content-Type must be application/json, got {media_type[:60]!r}",
            )
        raw = event.get("body")
        if raw is None or raw == "":
            raise RequestError(
                400, "empty_body", 'the request body is empty; send {"events": [...]}'
            )
        if not isinstance(raw, str):
            raise RequestError(400, "bad_event", "the request body must be a string")
        if event.get("isBase64Encoded") is True:
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise RequestError(400, "invalid_body", "the body is not valid base64") from None
        else:
            data = raw.encode("utf-8", errors="surrogatepass")
        if len(data) > self.settings.max_body_bytes:
            raise RequestError(
                413,
                "payload_too_large",
                f"the body has {len(data)} bytes; the limit is {self.settings.max_body_bytes}",
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(400, "invalid_body", "the body is not valid UTF-8") from None
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            raise RequestError(400, "invalid_json", "the JSON is nested too deeply") from None
        except ValueError as exc:
            message = str(exc).splitlines()[0][:200]
            raise RequestError(
                400, "invalid_json", f"the body is not valid JSON: {message}"
            ) from None

    def _events(self, body: Any) -> list[Mapping[str, Any]]:
        if not isinstance(body, dict):
            raise RequestError(
                400,
                "invalid_request",
                'the body must be a JSON object: {"events": [...]}',
                [Problem("body", "must be a JSON object")],
            )
        problems = [
            # An empty key would give a problem that names nothing.
            Problem(str(key)[:40] or '""', "is not a known field (expected only 'events')")
            for key in body
            if key != "events"
        ]
        events = body.get("events")
        limit = self.settings.max_events
        if "events" not in body:
            problems.insert(0, Problem("events", "is required"))
        elif not isinstance(events, list):
            problems.insert(0, Problem("events", "must be a list of events"))
        elif not events:
            problems.insert(0, Problem("events", "must contain at least one event"))
        elif len(events) > limit:
            problems.insert(0, Problem("events", f"has {len(events)} events; the limit is {limit}"))
        else:
            for index, item in enumerate(events):
                where = f"events[{index}]"
                problems.extend(validate_event(item, where=where, extra_fields=("event_id",)))
                if isinstance(item, Mapping) and "event_id" in item:
                    event_id = item["event_id"]
                    if (
                        not isinstance(event_id, str)
                        or not 0 < len(event_id) <= MAX_EVENT_ID_LENGTH
                    ):
                        problems.append(
                            Problem(
                                f"{where}.event_id",
                                f"must be a string of 1 to {MAX_EVENT_ID_LENGTH} characters",
                            )
                        )
        if problems:
            raise RequestError(
                400,
                "invalid_request",
                f"{len(problems)} problem(s) in the request; expected fields per event: "
                + ", ".join(FIELD_NAMES),
                problems,
            )
        assert isinstance(events, list)
        return events

    # Responses --------------------------------------------------------------------------------

    def _json(self, status: int, document: Mapping[str, Any]) -> Response:
        headers = {"Content-Type": "application/json"}
        if self.model is not None:
            headers["X-Model-Name"] = self.model.name
            headers["X-Model-Version"] = str(self.model.version)
        return {
            "statusCode": status,
            "headers": headers,
            "body": json.dumps(document, ensure_ascii=True),
            "isBase64Encoded": False,
        }

    def _error(self, error: RequestError) -> Response:
        document: dict[str, Any] = {"error": error.code, "message": error.message}
        if error.problems:
            listed = error.problems[:MAX_PROBLEMS_LISTED]
            document["problems"] = [p.to_dict() for p in listed]
            if len(error.problems) > len(listed):
                document["problems_not_listed"] = len(error.problems) - len(listed)
        return self._json(error.status, document)
