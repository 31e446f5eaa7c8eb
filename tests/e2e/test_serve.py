"""`sds serve` over real HTTP: the real handler behind a local API that follows the pin."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tests.e2e.cli_project import Project

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def predict(url: str, events: list[dict[str, Any]]) -> tuple[int, dict[str, str], Any]:
    body = json.dumps({"events": events}).encode()
    return call(f"{url}/predict", "POST", body, {"Content-Type": "application/json"})


@contextmanager
def serving(project: Project, env: str = "dev") -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sds", "serve", "--env", env, "--port", str(port)],
        cwd=project.path,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read() if process.stdout else ""
                    raise AssertionError(f"sds serve did not start: {output}") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def wait_for_version(url: str, version: int, budget_s: float = 1.0) -> float:
    started = time.monotonic()
    while True:
        status, headers, body = predict(url, [EVENT])
        if status == 200 and body["model"]["version"] == version:
            assert headers["X-Model-Version"] == str(version)
            return time.monotonic() - started
        assert time.monotonic() - started < budget_s, (status, body)
        time.sleep(0.02)


def test_serves_the_pin_and_follows_promote_and_rollback_without_restart(
    fresh_copy: Callable[[], Project],
) -> None:
    project = fresh_copy()
    with serving(project) as url:
        # No pin yet: the API is up and says clearly that nothing is pinned, and that a
        # promotion is enough here (nothing to deploy: the server follows the pin).
        status, _, body = predict(url, [EVENT])
        assert status == 503
        assert body["message"] == (
            "no model is pinned for environment 'dev': promote a version "
            "(sds promote VERSION --to dev); this server serves it on the next request"
        )

        project.sds("promote", "1", "--to", "dev")
        wait_for_version(url, 1)
        status, _headers, body = predict(url, [EVENT, {**EVENT, "event_id": "b"}])
        assert status == 200 and len(body["predictions"]) == 2
        assert body["predictions"][1]["event_id"] == "b"
        assert 0 <= body["predictions"][0]["fraud_probability"] <= 1

        project.sds("promote", "2", "--to", "dev")
        wait_for_version(url, 2)
        project.sds("rollback", "--env", "dev", "--reason", "while serving")
        wait_for_version(url, 1)

        status, _, body = call(f"{url}/health")
        assert status == 200 and body["model"]["version"] == 1
        status, _, body = call(f"{url}/model")
        assert status == 200 and body["version"] == 1 and "roc_auc" in body["metrics"]


def test_http_errors_are_4xx_that_name_the_problem(fresh_copy: Callable[[], Project]) -> None:
    project = fresh_copy()
    project.sds("promote", "1", "--to", "dev")
    with serving(project) as url:
        status, _, body = predict(url, [{**EVENT, "amount": -5, "currency": "XXX"}])
        assert status == 400
        fields = {p["field"] for p in body["problems"]}
        assert fields == {"events[0].amount", "events[0].currency"}
        status, _, body = call(
            f"{url}/predict", "POST", b"\xff\xfe{", {"Content-Type": "application/json"}
        )
        assert status == 400 and "UTF-8" in body["message"]
        status, _, body = call(f"{url}/predict", "POST", b"a=b", {"Content-Type": "text/plain"})
        assert status == 415
        status, headers, _ = call(f"{url}/predict")
        assert status == 405 and headers["Allow"] == "POST"
        status, _, _ = call(f"{url}/nope")
        assert status == 404
        big = json.dumps({"events": [EVENT] * 5000}).encode()
        status, _, body = call(f"{url}/predict", "POST", big, {"Content-Type": "application/json"})
        assert status == 413 and "limit" in body["message"]
        # Over API Gateway's 10 MiB, refused before the handler: urllib writes the whole body
        # before reading, and still reads the 413 (no connection reset)
        huge = b" " * (10 * 1024 * 1024 + 1)
        status, headers, body = call(
            f"{url}/predict", "POST", huge, {"Content-Type": "application/json"}
        )
        assert status == 413 and body == {"message": "Request Too Long"}
        assert headers["Connection"] == "close"
        status, _, body = predict(url, [EVENT] * 101)
        assert status == 400 and "the limit is 100" in body["problems"][0]["reason"]
