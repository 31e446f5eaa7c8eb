"""Model integrity: a damaged, substituted or missing model is never served, and is reported.

Given the registry of a real trained version, when an object is tampered with, truncated,
removed, or its manifest disagrees with it (or with the pin deployed with the code), then:
the handler answers 503 on every route that needs the model, with the reason, and emits one
`ModelLoadFailure` metric; ONNX Runtime is never handed unverified bytes; and the CLI
(`python -m sds show/promote/rollback/serve`) refuses with one clear line on stderr.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import sds.kernel.serving
from lambdas.inference.app import InferenceApp
from sds.kernel.lock import Pin, read_lock, write_pin
from tests.security.security_report import record
from tests.security.tampering import TAMPERS
from tests.support.trained_model import MODEL, TrainedModel

ROOT = Path(__file__).resolve().parents[2]
EVENT = {
    "event_id": "evt-1",
    "account_id": "acct-1",
    "occurred_at": "2026-03-01T12:00:00Z",
    "amount": 10.0,
    "currency": "USD",
    "merchant_category": "fuel",
    "country": "US",
    "card_country": "US",
    "hour_of_day": 9,
    "account_age_days": 400,
    "is_new_device": False,
}
PREDICT = {
    "path": "/predict",
    "httpMethod": "POST",
    "headers": {"Content-Type": "application/json"},
    "body": json.dumps({"events": [EVENT]}),
    "isBase64Encoded": False,
}


@pytest.fixture
def onnx_sessions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the bytes ever handed to ONNX Runtime (a spy around LoadedModel)."""
    opened: list[int] = []
    real = sds.kernel.serving.LoadedModel

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, onnx_bytes: bytes, manifest: Any) -> None:
            opened.append(len(onnx_bytes))
            super().__init__(onnx_bytes, manifest)

    monkeypatch.setattr(sds.kernel.serving, "LoadedModel", Spy)
    return opened


def call(app: InferenceApp, path: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    event = dict(PREDICT) if path == "/predict" else {"path": path, "httpMethod": method}
    response = app.handle(event, None)
    return response["statusCode"], json.loads(response["body"])


@pytest.mark.parametrize("damage", list(TAMPERS), ids=list(TAMPERS))
def test_handler_refuses_a_damaged_model_with_503_and_a_metric(
    damage: str, tmp_registry: TrainedModel, metrics: Any, onnx_sessions: list[int]
) -> None:
    version = tmp_registry.version.number
    what = TAMPERS[damage](tmp_registry.registry_root, version)

    app = InferenceApp(tmp_registry.settings(), metrics=metrics)

    assert app.model is None, what
    assert onnx_sessions == [], f"{what}: unverified bytes reached ONNX Runtime"
    assert metrics.names() == ["ModelLoadFailure"]
    assert metrics.emitted[0][2] == {"Environment": tmp_registry.settings().environment}
    for path, method in (("/predict", "POST"), ("/model", "GET"), ("/health", "GET")):
        status, body = call(app, path, method)
        assert status == 503, (what, path, body)
        assert f"v{version}" in body["message"] or f"version {version}" in body["message"], body
        assert "\n" not in body["message"]
    status, body = call(app, "/predict", "POST")
    assert body["error"] == "model_unavailable"
    record("model integrity: handler refusals (503 + ModelLoadFailure)", damage)


@pytest.mark.parametrize(
    ("pin", "reason"),
    [
        (Pin(version=1, sha256="f" * 64), "does not match the deployed pin"),
        (Pin(version=99, sha256="f" * 64), "has no version 99"),
    ],
    ids=["pin sha256 of another model", "pin of a version that does not exist"],
)
def test_handler_serves_only_what_the_pin_names(
    pin: Pin, reason: str, trained: TrainedModel, metrics: Any, onnx_sessions: list[int]
) -> None:
    app = InferenceApp(
        trained.settings(model_version=pin.version, model_sha256=pin.sha256),
        metrics=metrics,
    )
    status, body = call(app, "/predict", "POST")
    assert status == 503 and reason in body["message"], body
    assert onnx_sessions == [] and metrics.names() == ["ModelLoadFailure"]
    record("model integrity: handler refusals (503 + ModelLoadFailure)", "pin: " + reason)


def test_the_lambda_entry_point_reports_a_tampered_model_as_an_emf_metric(
    tmp_registry: TrainedModel, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real handler module, initialised from its environment, as Lambda does at cold start."""
    TAMPERS["tampered artifact (sha256 mismatch)"](
        tmp_registry.registry_root, tmp_registry.version.number
    )
    environ = {
        "MODEL_NAME": MODEL,
        "MODEL_VERSION": str(tmp_registry.version.number),
        "MODEL_SHA256": tmp_registry.version.sha256,
        "REGISTRY_URI": tmp_registry.registry_uri,
        "ENVIRONMENT": "prod",
    }
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    sys.modules.pop("lambdas.inference.handler", None)
    handler = importlib.import_module("lambdas.inference.handler")
    response = handler.lambda_handler(dict(PREDICT), None)
    assert response["statusCode"] == 503
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    emitted = [d for d in documents if "ModelLoadFailure" in d]
    assert len(emitted) == 1
    metric = emitted[0]["_aws"]["CloudWatchMetrics"][0]
    assert metric["Namespace"] == "sds/inference"
    assert metric["Metrics"] == [{"Name": "ModelLoadFailure", "Unit": "Count"}]
    assert emitted[0]["Environment"] == "prod"
    sys.modules.pop("lambdas.inference.handler", None)  # built from this test's environment


# The CLI ----------------------------------------------------------------------------------------


@dataclass
class CliProject:
    path: Path
    env: dict[str, str]

    def sds(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sds", *args],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    @property
    def lock_path(self) -> Path:
        return self.path / "models.lock.json"

    def registry(self, env: str) -> Path:
        return self.path / ".sds" / "registries" / env


@pytest.fixture
def project(tmp_path: Path, trained: TrainedModel) -> CliProject:
    """A throwaway project whose dev registry holds the trained version."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "cdk.json", root / "cdk.json")
    trained.copy_registry(root / ".sds" / "registries" / "dev")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDS_", "AWS_", "MODEL_"))}
    env.update({"SDS_ACTOR": "security-suite", "PYTHONPATH": str(ROOT)})
    return CliProject(root, env)


def one_line_refusal(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode in (1, 3), (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("sds: "), lines
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.mark.parametrize(
    "damage",
    [
        "tampered artifact (sha256 mismatch)",
        "truncated object",
        "manifest/artifact mismatch",
        "manifest of another shape",
    ],
)
def test_cli_show_and_promote_refuse_a_damaged_version(damage: str, project: CliProject) -> None:
    TAMPERS[damage](project.registry("dev"), 1)

    shown = one_line_refusal(project.sds("show", "1", "--env", "dev"))
    promoted = one_line_refusal(project.sds("promote", "1", "--to", "dev", "--reason", "x"))

    for line in (shown, promoted):
        assert "version 1" in line, line
    assert not project.lock_path.exists() or read_lock(project.lock_path, model=MODEL).pins == {}
    assert not (project.registry("dev") / "models" / MODEL / "aliases").exists()
    record("model integrity: CLI refusals (one line, non-zero exit)", f"show + promote: {damage}")


def test_cli_never_copies_a_damaged_version_up_the_chain(project: CliProject) -> None:
    assert project.sds("promote", "1", "--to", "dev").returncode == 0
    TAMPERS["consistent substitution (only the pin catches it)"](project.registry("dev"), 1)
    TAMPERS["tampered artifact (sha256 mismatch)"](project.registry("dev"), 1)

    line = one_line_refusal(project.sds("promote", "--from", "dev", "--to", "staging"))

    assert "version 1" in line
    assert not (project.registry("staging") / "models" / MODEL / "versions" / "1").exists()
    assert "staging" not in read_lock(project.lock_path, model=MODEL).pins
    record(
        "model integrity: CLI refusals (one line, non-zero exit)", "promote --from: damaged source"
    )


def test_cli_refuses_an_alias_that_points_at_nothing(project: CliProject) -> None:
    assert project.sds("promote", "1", "--to", "dev").returncode == 0
    alias = project.registry("dev") / "models" / MODEL / "aliases" / "dev.json"
    document = json.loads(alias.read_text())
    alias.write_text(json.dumps({**document, "version": 99, "history": [98]}))
    pins_before = project.lock_path.read_text()

    promoted = one_line_refusal(project.sds("promote", "--from", "dev", "--to", "staging"))
    rolled = one_line_refusal(project.sds("rollback", "--env", "dev", "--reason", "x"))

    assert "version 99" in promoted and "version 98" in rolled, (promoted, rolled)
    assert project.lock_path.read_text() == pins_before
    record("model integrity: CLI refusals (one line, non-zero exit)", "alias points at nothing")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serving(project: CliProject) -> Iterator[tuple[str, str]]:
    """`sds serve --env dev` on a free loopback port: (url, the first line it printed)."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sds", "serve", "--env", "dev", "--port", str(port)],
        cwd=project.path,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # answering (503 is an answer)
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, first
                time.sleep(0.05)
        yield url, first
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_sds_serve_refuses_to_score_with_a_damaged_pinned_model(project: CliProject) -> None:
    write_pin(
        project.lock_path,
        model=MODEL,
        env="dev",
        pin=Pin(
            version=1,
            sha256=json.loads(
                (
                    project.registry("dev") / "models" / MODEL / "versions" / "1" / "manifest.json"
                ).read_text()
            )["sha256"],
        ),
    )
    TAMPERS["tampered artifact (sha256 mismatch)"](project.registry("dev"), 1)

    with serving(project) as (url, first_line):
        request = urllib.request.Request(
            f"{url}/predict",
            data=json.dumps({"events": [EVENT]}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=10)
        body = json.loads(answer.value.read())

    assert "no model" in first_line and "does not match its manifest" in first_line, first_line
    assert answer.value.code == 503
    assert body["error"] == "model_unavailable" and "does not match" in body["message"]
    record("model integrity: CLI refusals (one line, non-zero exit)", "serve: 503 + reason printed")


def test_promote_from_refuses_a_version_replaced_after_it_went_live(project: CliProject) -> None:
    """A writer with access to dev's versions rewrites v1's model and manifest consistently: the
    version still verifies, but it is not what dev's alias made live, so it must not travel."""
    assert project.sds("promote", "1", "--to", "dev").returncode == 0
    TAMPERS["consistent substitution (only the pin catches it)"](project.registry("dev"), 1)

    line = one_line_refusal(project.sds("promote", "--from", "dev", "--to", "staging"))

    assert "not the model made live in dev" in line, line
    assert not (project.registry("staging") / "models" / MODEL / "versions" / "1").exists()
    record("model integrity: CLI refusals (one line, non-zero exit)", "promote --from: substituted")
