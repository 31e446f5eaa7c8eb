"""A local API Gateway in front of the real Lambda handler logic.

Each HTTP request becomes an API Gateway REST proxy event for `InferenceApp.handle`, exactly
what Lambda receives behind API Gateway. Like a Lambda alias, the server follows the
environment's pin in models.lock.json: each pin gets its own app instance (a "published
version", loaded once), and every request is routed to the app of the current pin, so a
`promote` or `rollback` takes effect on the next request, without a restart.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lambdas.inference.app import InferenceApp, MetricSink
from sds.kernel.lock import LockFileError, Pin, read_pin
from sds.kernel.settings import ServingSettings
from sds.ops.workspace import Workspace

logger = logging.getLogger("sds.ops.local_api")

# API Gateway's own payload limit; the handler enforces the (smaller) configured one.
GATEWAY_MAX_BODY = 10 * 1024 * 1024


def _no_metrics(name: str, value: float, dimensions: Mapping[str, str]) -> None:
    logger.debug("metric %s=%s %s", name, value, dict(dimensions))


class PinnedApps:
    """The app serving the current pin; a new pin gets a new app, like a new Lambda version."""

    def __init__(
        self,
        *,
        lock_path: Path,
        model: str,
        env: str,
        registry_uri: str,
        max_events: int,
        max_body_bytes: int,
        metrics: MetricSink = _no_metrics,
    ) -> None:
        self.lock_path = lock_path
        self.model = model
        self.env = env
        self.registry_uri = registry_uri
        self.max_events = max_events
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self._apps: dict[Pin | None, InferenceApp] = {}
        self._mutex = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._pin: Pin | None = None
        self._pin_error: str | None = None

    @classmethod
    def for_environment(cls, ws: Workspace, env: str) -> PinnedApps:
        """What `sds serve --env ENV` serves: ENV's pin, registry and serving limits."""
        serving = ws.config.env(env).serving
        return cls(
            lock_path=ws.lock_path,
            model=ws.model,
            env=env,
            registry_uri=ws.registry_uri(env),
            max_events=serving.max_events,
            max_body_bytes=serving.max_body_bytes,
        )

    def _current_pin(self) -> Pin | None:
        try:
            stat = self.lock_path.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp or self._stamp is None:
            try:
                self._pin = read_pin(self.lock_path, model=self.model, env=self.env)
                self._pin_error = None
            except LockFileError as exc:
                self._pin, self._pin_error = None, str(exc)
            self._stamp = stamp
        return self._pin

    def current(self) -> InferenceApp:
        with self._mutex:
            pin = self._current_pin()
            app = self._apps.get(pin)
            if app is None:
                settings = ServingSettings(
                    model_name=self.model,
                    model_version=None if pin is None else pin.version,
                    model_sha256=None if pin is None else pin.sha256,
                    registry_uri=self.registry_uri,
                    environment=self.env,
                    max_events=self.max_events,
                    max_body_bytes=self.max_body_bytes,
                )
                if self._pin_error is not None:
                    app = InferenceApp(None, settings_error=self._pin_error, metrics=self.metrics)
                else:
                    app = InferenceApp(settings, metrics=self.metrics)
                    self._apps[pin] = app
                if pin is not None and app.model is not None:
                    logger.info("now serving %s v%s", self.model, pin.version)
            return app


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


def make_handler(apps: Callable[[], InferenceApp]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "sds-local-api"
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length_text = self.headers.get("Content-Length", "0") or "0"
            try:
                length = int(length_text)
            except ValueError:
                self._send(400, {}, json.dumps({"message": "invalid Content-Length"}).encode())
                return
            if length > GATEWAY_MAX_BODY:
                self.close_connection = True
                self._send(413, {}, json.dumps({"message": "Request Too Long"}).encode())
                return
            body = self.rfile.read(length) if length > 0 else b""
            event = to_proxy_event(
                method=self.command,
                raw_path=self.path,
                headers={k: v for k, v in self.headers.items()},
                body=body,
                source_ip=self.client_address[0],
            )
            response = apps().handle(event, None)
            payload = response.get("body") or ""
            data = (
                base64.b64decode(payload)
                if response.get("isBase64Encoded")
                else str(payload).encode()
            )
            self._send(int(response.get("statusCode", 502)), response.get("headers") or {}, data)

        def _send(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, str(value))
            if not any(k.lower() == "content-type" for k in headers):
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

        def log_message(self, format: str, *args: Any) -> None:
            logger.info("%s %s", self.address_string(), format % args)

    return Handler


class LocalApi:
    """A running local API: `with LocalApi(...) as api: requests to api.url`."""

    def __init__(self, apps: PinnedApps, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.apps = apps
        self.server = ThreadingHTTPServer((host, port), make_handler(apps.current))
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LocalApi:
        self.apps.current()  # load the pinned model now, not on the first request
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.apps.current()
        self.server.serve_forever()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LocalApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
