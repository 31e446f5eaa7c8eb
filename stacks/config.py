"""Typed, frozen inputs of the CDK stacks.

Environment settings come from the one loader in `sds.config` (re-exported here so stacks import
their configuration from one place); `EnvironmentSpec` adds what `app.py` resolves outside the
construct tree: the model pin from models.lock.json and the built Lambda code folders. The stage
reads the groups here (`spec.lambda_`, `spec.api`, ...) and hands each stack, and each stack each
construct, only the groups it uses, never the whole environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sds.config import (
    AlarmSettings,
    AlertRateAlarmSettings,
    ApiSettings,
    BatchSettings,
    CaptureSettings,
    CrossAccountPromotion,
    DeploymentSettings,
    EnvironmentConfig,
    FeatureSettings,
    Infra,
    LabelSettings,
    LambdaSettings,
    LogSettings,
    MonitorSettings,
    NetworkSettings,
    ProjectConfig,
    PromotionSource,
    RegistrySettings,
    Serving,
    TrainingSettings,
    promotion_source_role_name,
)
from sds.kernel.lock import Pin

__all__ = [
    "AlarmSettings",
    "AlertRateAlarmSettings",
    "ApiSettings",
    "BatchSettings",
    "CaptureSettings",
    "CrossAccountPromotion",
    "DeploymentSettings",
    "EnvironmentConfig",
    "EnvironmentSpec",
    "FeatureSettings",
    "Infra",
    "LabelSettings",
    "LambdaSettings",
    "LogSettings",
    "MonitorSettings",
    "NetworkSettings",
    "Pin",
    "ProjectConfig",
    "PromotionSource",
    "RegistrySettings",
    "Serving",
    "TrainingImage",
    "TrainingSettings",
    "promotion_source_role_name",
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
    # The feature updater's code folder (the kernel, its handler and numpy).
    updater_code_dir: Path
    # The drift monitor's code folder (the kernel, its handler, numpy and orjson; arm64).
    monitor_code_dir: Path
    # The challenger the function loads beside the pinned model (`sds shadow`), if any.
    shadow: Pin | None = None

    @property
    def name(self) -> str:
        return self.environment.name

    @property
    def infra(self) -> Infra:
        """The stack-wide settings (account, region, retain_data, dashboard) and every group."""
        return self.environment.infra

    @property
    def serving(self) -> Serving:
        return self.environment.serving

    @property
    def monitor(self) -> MonitorSettings:
        return self.environment.monitor

    @property
    def capture(self) -> CaptureSettings:
        return self.environment.capture

    @property
    def labels(self) -> LabelSettings:
        return self.environment.labels

    @property
    def lambda_(self) -> LambdaSettings:
        return self.infra.lambda_

    @property
    def api(self) -> ApiSettings:
        return self.infra.api

    @property
    def deployment(self) -> DeploymentSettings:
        return self.infra.deployment

    @property
    def alarms(self) -> AlarmSettings:
        return self.infra.alarms

    @property
    def training(self) -> TrainingSettings:
        return self.infra.training

    @property
    def network(self) -> NetworkSettings:
        return self.infra.network

    @property
    def registry(self) -> RegistrySettings:
        return self.infra.registry

    @property
    def logs(self) -> LogSettings:
        return self.infra.logs

    @property
    def cross_account(self) -> CrossAccountPromotion:
        return self.environment.cross_account

    @property
    def features(self) -> FeatureSettings:
        return self.infra.features

    @property
    def batch(self) -> BatchSettings:
        return self.infra.batch
