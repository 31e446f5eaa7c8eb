"""Shared unit-test fixtures: one small model, trained once per session on generated events.

Training on 4000 payments (and the logins around them) with 20 trees takes a few seconds on 2 cores; every test that needs a
real registered model (training, ONNX parity, the inference handler) shares this one, and copies
the registry first if it wants to change it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from trained_model import MODEL, SMALL_PARAMS, TRAINER, TrainedModel

from lambdas.inference.app import InferenceApp
from sds.kernel.registry import open_registry
from training.data import write_jsonl
from training.synthetic import generate_activity
from training.train import STEPS, Progress, train


@pytest.fixture(scope="session")
def small_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(
        generate_activity(4000, seed=3), tmp_path_factory.mktemp("data") / "history.jsonl"
    )


@pytest.fixture(scope="session")
def trained(small_history: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    root = tmp_path_factory.mktemp("registry")
    version = train(
        data=small_history,
        registry=open_registry(root.as_uri(), MODEL),
        params=SMALL_PARAMS,
        actor=TRAINER,
        reason="session fixture",
        progress=Progress(STEPS, enabled=False),
    )
    features = tmp_path_factory.mktemp("features") / "features.db"
    return TrainedModel(
        data=small_history, registry_root=root, version=version, feature_store=features
    )


@pytest.fixture(scope="session")
def served(trained: TrainedModel) -> InferenceApp:
    """The inference app serving the trained version, as one Lambda execution environment."""
    app = InferenceApp(trained.settings(), metrics=lambda values, dimensions: None)
    assert app.model is not None, app.unavailable
    return app
