"""Typed, frozen inputs of the CDK stacks.

Environment settings come from the one loader in `sds.config` (re-exported here so stacks import
their configuration from one place); `EnvironmentSpec` adds what `app.py` resolves outside the
construct tree: the model pin from models.lock.json and the built Lambda code folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sds.config import EnvironmentConfig, Infra, ProjectConfig, Serving
from sds.kernel.lock import Pin

__all__ = [
    "EnvironmentConfig",
    "EnvironmentSpec",
    "Infra",
    "Pin",
    "ProjectConfig",
    "Serving",
    "TrainingImage",
]


@dataclass(frozen=True)
class TrainingImage:
    """Where the training container is built from (a Docker image asset; synth needs no Docker)."""

    context_dir: Path
    dockerfile: str = "training/Dockerfile"


@dataclass(frozen=True)
class EnvironmentSpec:
    """Everything one environment's stacks are built from."""

    model_name: str
    environment: EnvironmentConfig
    pin: Pin | None
    lambda_code_dir: Path
    training_image: TrainingImage

    @property
    def name(self) -> str:
        return self.environment.name

    @property
    def infra(self) -> Infra:
        return self.environment.infra
