"""Unit-test fixtures on top of the session's model (`trained`, tests/conftest.py).

Every test that needs a real registered model (training, ONNX parity, the inference handler)
shares that one, and copies the registry first if it wants to change it. `project` is a throwaway
project for the CLI run in-process (`tests.unit.cli_run`); a module may define its own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lambdas.inference.app import InferenceApp
from tests.support.trained_model import TrainedModel

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def small_history(trained: TrainedModel) -> Path:
    """The generated history (payments and logins) the session's model was trained on."""
    return trained.data


@pytest.fixture(scope="session")
def served(trained: TrainedModel) -> InferenceApp:
    """The inference app serving the trained version, as one Lambda execution environment."""
    app = InferenceApp(trained.settings(), metrics=lambda values, dimensions: None)
    assert app.model is not None, app.unavailable
    return app


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The repository's cdk.json in a temporary folder, with local state and lock file there,
    and the working directory: a relative path a command is given (`--out out`) lands there, where
    the test looks for it, never in the repository."""
    shutil.copy(ROOT / "cdk.json", tmp_path / "cdk.json")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SDS_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("SDS_ACTOR", "tester")
    for name in ("SDS_HOME", "SDS_LOCK_FILE", "SDS_TARGET"):
        monkeypatch.delenv(name, raising=False)
    for env in ("DEV", "STAGING", "PROD"):
        monkeypatch.delenv(f"SDS_REGISTRY_{env}", raising=False)
    return tmp_path
