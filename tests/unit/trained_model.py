"""The small trained model the unit tests share (built by the `trained` fixture in conftest)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sds.kernel.registry import Registry, Version, open_registry
from sds.kernel.settings import ServingSettings
from training.train import TrainParams

MODEL = "fraud"
TRAINER = "trainer@ci"
SMALL_PARAMS = TrainParams(max_iter=20, seed=1)


@dataclass(frozen=True)
class TrainedModel:
    data: Path
    registry_root: Path
    version: Version
    feature_store: Path  # the (empty unless a test fills it) SQLite store the app reads

    @property
    def feature_store_uri(self) -> str:
        return f"sqlite://{self.feature_store}"

    @property
    def registry_uri(self) -> str:
        return self.registry_root.as_uri()

    def registry(self) -> Registry:
        return open_registry(self.registry_uri, MODEL)

    def copy_registry(self, destination: Path) -> Path:
        """A private copy of the registry, for tests that change or tamper with it."""
        shutil.copytree(self.registry_root, destination)
        return destination

    def settings(self, **overrides: object) -> ServingSettings:
        """Serving settings pinned to this version, as the CDK app would deploy them."""
        values: dict[str, object] = {
            "model_name": MODEL,
            "model_version": self.version.number,
            "model_sha256": self.version.sha256,
            "registry_uri": self.registry_uri,
            "environment": "test",
            "feature_store_uri": self.feature_store_uri,
        }
        values.update(overrides)
        return ServingSettings(**values)  # type: ignore[arg-type]

    def environ(self) -> dict[str, str]:
        """The Lambda environment variables for this version."""
        return {
            "MODEL_NAME": MODEL,
            "MODEL_VERSION": str(self.version.number),
            "MODEL_SHA256": self.version.sha256,
            "REGISTRY_URI": self.registry_uri,
            "ENVIRONMENT": "test",
            "FEATURE_STORE_URI": self.feature_store_uri,
        }
