"""Lambda entry point of the baseline: the common scikit-learn-in-Lambda approach.

Same routes, validation, feature function and responses as `lambdas.inference.handler` (it is
the same `InferenceApp`); only the model differs: the estimator is fetched from the registry's
version folder as `model.joblib`, verified by sha256 like ours, loaded with `joblib.load` and
scored with `predict_proba`. Benchmarks only; never deployed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from lambdas.inference.app import InferenceApp
from sds.kernel.features import feature_schema
from sds.kernel.registry import open_store
from sds.kernel.registry.core import Registry
from sds.kernel.serving import ModelUnavailable
from sds.kernel.settings import ServingSettings

ARTIFACT = "model.joblib"

logging.getLogger().setLevel(os.environ.get("LOG_LEVEL", "INFO"))


def artifact_key(model: str, version: int) -> str:
    """Where the harness puts the joblib file: next to the version's ONNX model."""
    return f"models/{model}/versions/{version}/{ARTIFACT}"


class JoblibModel:
    """The estimator behind the same interface as `sds.kernel.serving.LoadedModel`."""

    def __init__(self, estimator: Any, manifest: Mapping[str, Any], sha256: str) -> None:
        import numpy as np

        self._np = np
        self.estimator = estimator
        self.manifest = manifest
        self.name = str(manifest["model"])
        self.version = int(manifest["version"])
        self.sha256 = sha256
        self.threshold = float(manifest["decision_threshold"])

    def predict(self, vectors: Sequence[Sequence[float]]) -> list[float]:
        matrix = self._np.asarray(vectors, dtype=self._np.float32)
        return [float(p) for p in self.estimator.predict_proba(matrix)[:, 1]]

    # What the handler calls on its own float32 matrix (`LoadedModel.score_matrix`).
    score_matrix = predict

    def score_row(self, row: Sequence[Any], *, keep: bool = False) -> tuple[float, Any]:
        """What the handler calls for a one-payment request (`LoadedModel.score_row`)."""
        matrix = self._np.array((row,), dtype=self._np.float32)
        return self.predict(matrix)[0], matrix if keep else None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "metrics": self.manifest.get("metrics", {}),
            "decision_threshold": self.threshold,
            "feature_schema": self.manifest.get("feature_schema"),
        }


def load_joblib_model(settings: ServingSettings) -> Any:
    """The pinned version's manifest and joblib file, verified, loaded with joblib."""
    if settings.model_version is None or settings.registry_uri is None:
        raise ModelUnavailable("no model is deployed")
    try:
        store = open_store(settings.registry_uri)
        version = Registry(store, settings.model_name).get_version(settings.model_version)
        data = store.get(artifact_key(settings.model_name, settings.model_version)).data
    except Exception as exc:
        raise ModelUnavailable(f"the baseline model could not be fetched: {exc}") from exc
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 != settings.model_sha256:
        raise ModelUnavailable(f"{ARTIFACT} sha256 {sha256[:12]}... does not match the pin")
    if version.manifest.get("feature_schema", {}).get("features") != feature_schema()["features"]:
        raise ModelUnavailable("the model was trained on different features")
    import joblib

    return JoblibModel(joblib.load(io.BytesIO(data)), version.manifest, sha256)


app = InferenceApp.from_environ(os.environ, loader=load_joblib_model)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.handle(event, context)
