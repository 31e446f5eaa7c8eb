"""A minimal Lambda Runtime API endpoint: what the Lambda service offers a runtime, no more.

`awslambdaric` (the runtime interface client the Python Lambda runtime runs) polls
`GET /2018-06-01/runtime/invocation/next`, and posts each result to `.../{id}/response` (or
`.../{id}/error`), or an init failure to `/runtime/init/error`. Events are handed out one at a
time, in order; the test queues them and waits for their answers.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2018-06-01/runtime"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:sds-test-inference:live"


@dataclass
class Invocation:
    request_id: str
    event: dict[str, Any]
    handed_out: float = 0.0
    answered: float = 0.0
    result: Any = None
    error: Any = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def duration_ms(self) -> float:
        return (self.answered - self.handed_out) * 1000


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the function process is killed mid-poll at the end of each test: expected


class RuntimeApi:
    def __init__(self) -> None:
        self.pending: queue.Queue[Invocation] = queue.Queue()
        self.invocations: dict[str, Invocation] = {}
        self.init_errors: list[Any] = []
        self.first_poll = threading.Event()
        self.first_poll_at = 0.0
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def _reply(
                self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != f"{PREFIX}/invocation/next":
                    self._reply(404)
                    return
                if not api.first_poll.is_set():
                    api.first_poll_at = time.monotonic()
                    api.first_poll.set()
                invocation = api.pending.get()  # blocks like the real API until there is work
                invocation.handed_out = time.monotonic()
                self._reply(
                    200,
                    json.dumps(invocation.event).encode(),
                    {
                        "Content-Type": "application/json",
                        "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
                        "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 30_000),
                        "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
                        "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
                    },
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.path == f"{PREFIX}/init/error":
                    api.init_errors.append(json.loads(body or b"null"))
                    self._reply(202, b"{}")
                    return
                parts = self.path[len(f"{PREFIX}/invocation/") :].split("/")
                invocation = api.invocations.get(parts[0]) if len(parts) == 2 else None
                if invocation is None or parts[1] not in ("response", "error"):
                    self._reply(404)
                    return
                invocation.answered = time.monotonic()
                if parts[1] == "response":
                    invocation.result = json.loads(body)
                else:
                    invocation.error = json.loads(body or b"null")
                invocation.done.set()
                self._reply(202, b"{}")

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def invoke(self, event: dict[str, Any], timeout: float = 60) -> Invocation:
        invocation = Invocation(request_id=str(uuid.uuid4()), event=event)
        self.invocations[invocation.request_id] = invocation
        self.pending.put(invocation)
        if not invocation.done.wait(timeout):
            raise TimeoutError(f"no answer to {event.get('path')} within {timeout} s")
        return invocation

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
