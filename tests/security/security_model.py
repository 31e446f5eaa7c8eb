"""The small real model the security suites serve, attack and promote (trained once a session)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sds.kernel.registry import Registry, Version, open_registry
from sds.kernel.settings import ServingSettings

MODEL = "fraud"
TRAINER = "security-suite@ci"


@dataclass(frozen=True)
class SecurityModel:
    registry_root: Path
    version: Version
    feature_store: Path  # an empty SQLite feature store: every aggregate reads as 0

    @property
    def feature_store_uri(self) -> str:
        return f"sqlite://{self.feature_store}"

    @property
    def registry_uri(self) -> str:
        return self.registry_root.as_uri()

    def registry(self) -> Registry:
        return open_registry(self.registry_uri, MODEL)

    def copy_registry(self, destination: Path) -> Path:
        """A private copy, for tests that tamper with objects."""
        shutil.copytree(self.registry_root, destination)
        return destination

    def settings(self, **overrides: object) -> ServingSettings:
        values: dict[str, object] = {
            "model_name": MODEL,
            "model_version": self.version.number,
            "model_sha256": self.version.sha256,
            "registry_uri": self.registry_uri,
            "environment": "security",
            "feature_store_uri": self.feature_store_uri,
        }
        values.update(overrides)
        return ServingSettings(**values)  # type: ignore[arg-type]
