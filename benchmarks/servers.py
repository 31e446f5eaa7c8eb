"""Local protocol servers the benchmarks run against: S3 (moto's server mode) and a minimal
Lambda Runtime API that hands one event to a runtime interface client and takes its response."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sds.kernel.batch.local import vm_hwm_bytes

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # Nothing on this machine may add a credential lookup (IMDS, files) to what is measured.
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server(venv_bin: Path) -> Iterator[str]:
    """A moto server on a free port; yields its endpoint URL."""
    port = free_port()
    process = subprocess.Popen(
        [str(venv_bin / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A killed runtime client resets its pending GET /next: expected, not worth a traceback.
        return


class RuntimeApi:
    """GET /2018-06-01/runtime/invocation/next and POST .../invocation/{id}/response|error.

    Each `invoke()` queues one event; the client's next GET /next gets it, and the response
    POST resolves it. Later GET /next calls wait (a frozen environment) until `close()`.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._pending: list[tuple[str, bytes]] = []
        self._results: dict[str, tuple[str, float, bytes]] = {}
        self._closed = False
        self.init_errors: list[bytes] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                if not self.path.endswith("/runtime/invocation/next"):
                    self._reply(404, b"{}")
                    return
                item = api._next_event()
                if item is None:
                    self._reply(503, b"{}")
                    return
                request_id, body = item
                self._reply(
                    200,
                    body,
                    {
                        "Lambda-Runtime-Aws-Request-Id": request_id,
                        "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 30_000),
                        "Lambda-Runtime-Invoked-Function-Arn": (
                            "arn:aws:lambda:us-east-1:123456789012:function:bench"
                        ),
                        "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
                    },
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                received = time.perf_counter()
                parts = self.path.strip("/").split("/")
                if parts[-1] == "error" and "init" in parts:
                    api.init_errors.append(body)
                    with api._lock:
                        api._lock.notify_all()
                elif len(parts) >= 2 and parts[-1] in ("response", "error"):
                    with api._lock:
                        api._results[parts[-2]] = (parts[-1], received, body)
                        api._lock.notify_all()
                self._reply(202, b'{"status": "OK"}')

            def _reply(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _next_event(self) -> tuple[str, bytes] | None:
        with self._lock:
            while not self._pending and not self._closed:
                self._lock.wait(timeout=1)
            if self._closed and not self._pending:
                return None
            return self._pending.pop(0)

    def queue(self, event: Any) -> str:
        request_id = str(uuid.uuid4())
        with self._lock:
            self._pending.append((request_id, json.dumps(event).encode()))
            self._lock.notify_all()
        return request_id

    def wait(self, request_id: str, timeout: float = 120) -> tuple[str, float, bytes]:
        """(kind, perf_counter when the POST arrived, body) for one invocation."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while request_id not in self._results:
                if self.init_errors:
                    raise RuntimeError(f"init error: {self.init_errors[-1][:500]!r}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no response from the runtime client")
                self._lock.wait(timeout=min(remaining, 0.5))
            return self._results.pop(request_id)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._server.shutdown()
        self._server.server_close()


def peak_rss_bytes(pid: int) -> int:
    """VmHWM of a running process: its peak resident set, what Lambda reports as Max Memory
    Used (`sds.kernel.batch.local.vm_hwm_bytes`); an error if it cannot be read."""
    peak = vm_hwm_bytes(pid)
    if not peak:
        raise RuntimeError(f"no VmHWM for pid {pid}")
    return peak


def base_env(endpoint: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(FAKE_CREDENTIALS)
    env["AWS_ENDPOINT_URL"] = endpoint
    return env
