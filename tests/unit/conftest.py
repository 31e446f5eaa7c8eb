"""Unit-test fixtures on top of the session's model (`trained`, tests/conftest.py).

Every test that needs a real registered model (training, ONNX parity, the inference handler)
shares that one, and copies the registry first if it wants to change it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lambdas.inference.app import InferenceApp
from tests.support.trained_model import TrainedModel


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
