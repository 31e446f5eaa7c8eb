"""Typed, frozen project configuration: the one loader for the `environments` context in cdk.json.

The CDK app (through `app.py`) and the CLI both read environments through `load_project`, so a gate
or a setting means the same thing at deploy time and at promotion time. Unknown keys are errors:
a typo in cdk.json must not silently fall back to a default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

DEFAULT_MODEL_NAME = "fraud"


class ConfigError(ValueError):
    """cdk.json (or a value derived from it) is invalid; the message names the key."""


T = TypeVar("T")


def _build(cls: type[T], where: str, raw: Any) -> T:
    """Build a flat frozen dataclass from a mapping, rejecting unknown keys and wrong types."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected an object, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        expected = known[name].type
        _check_type(f"{where}.{name}", value, str(expected))
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _check_type(where: str, value: Any, annotation: str) -> None:
    optional = "None" in annotation
    if value is None:
        if not optional:
            raise ConfigError(f"{where}: must not be null")
        return
    base = annotation.replace("| None", "").replace("None |", "").strip()
    checks: dict[str, tuple[type, ...]] = {
        "int": (int,),
        "float": (int, float),
        "str": (str,),
        "bool": (bool,),
    }
    if base in checks:
        allowed = checks[base]
        if isinstance(value, bool) and base != "bool":
            raise ConfigError(f"{where}: expected {base}, got a boolean")
        if not isinstance(value, allowed):
            raise ConfigError(f"{where}: expected {base}, got {type(value).__name__}")
    elif base.startswith("tuple[str") and not (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    ):
        raise ConfigError(f"{where}: expected a list of strings")


@dataclass(frozen=True)
class Gates:
    """Conditions a model version must meet before an environment's alias may point at it."""

    min_roc_auc: float | None = None
    min_pr_auc: float | None = None
    min_precision_at_alert_rate: float | None = None
    max_calibration_error: float | None = None
    require_live_in: str | None = None


@dataclass(frozen=True)
class Serving:
    """Limits the inference handler enforces (they become Lambda environment variables)."""

    max_events: int = 100
    max_body_bytes: int = 262_144

    def __post_init__(self) -> None:
        if self.max_events < 1:
            raise ValueError("max_events must be >= 1")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be >= 1024")


@dataclass(frozen=True)
class Infra:
    """Infrastructure settings for one environment's stacks (read by the CDK app only)."""

    account: str | None = None
    region: str = "us-east-1"
    memory_mb: int = 1024
    architecture: str = "x86_64"
    reserved_concurrency: int | None = None
    snapstart: bool = False
    throttle_rate_limit: float = 50.0
    throttle_burst_limit: int = 100
    api_auth: str = "iam"
    deployment_strategy: str = "all_at_once"
    alarm_error_rate_percent: float = 5.0
    alarm_p99_duration_ms: int = 1000
    alarm_throttles: int = 5
    alarm_api_5xx: int = 5
    alarm_topic_email: str | None = None
    log_retention_days: int = 30
    retain_data: bool = True
    isolated_network: bool = True
    training_schedule: str | None = None
    training_cpu: int = 2048
    training_memory_mb: int = 8192
    training_data_prefix: str = "training-data/"
    lambda_versions_to_keep: int = 10
    timeout_seconds: int = 10
    network_azs: int = 2
    dashboard: bool = True
    registry_noncurrent_version_days: int = 90
    access_log_expiration_days: int = 365

    # Names the CDK app maps to CodeDeploy's predefined Lambda deployment configurations.
    DEPLOYMENT_STRATEGIES: ClassVar[tuple[str, ...]] = (
        "all_at_once",
        "canary_10_percent_5_minutes",
        "canary_10_percent_10_minutes",
        "canary_10_percent_15_minutes",
        "canary_10_percent_30_minutes",
        "linear_10_percent_every_1_minute",
        "linear_10_percent_every_2_minutes",
        "linear_10_percent_every_3_minutes",
        "linear_10_percent_every_10_minutes",
    )
    # The retention periods CloudWatch Logs accepts.
    LOG_RETENTION_DAYS: ClassVar[tuple[int, ...]] = (
        1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
        2557, 2922, 3288, 3653,
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.architecture not in ("x86_64", "arm64"):
            raise ValueError("architecture must be x86_64 or arm64")
        if self.api_auth not in ("iam", "api_key"):
            raise ValueError("api_auth must be iam or api_key")
        if self.memory_mb < 128 or self.memory_mb > 10240:
            raise ValueError("memory_mb must be between 128 and 10240")
        self._check_infra()

    def _check_infra(self) -> None:
        if self.deployment_strategy not in self.DEPLOYMENT_STRATEGIES:
            known = ", ".join(self.DEPLOYMENT_STRATEGIES)
            raise ValueError(f"deployment_strategy must be one of {known}")
        if self.log_retention_days not in self.LOG_RETENTION_DAYS:
            raise ValueError(f"log_retention_days must be one of {self.LOG_RETENTION_DAYS}")
        if self.reserved_concurrency is not None and self.reserved_concurrency < 1:
            raise ValueError("reserved_concurrency must be >= 1 (or null for unreserved)")
        if self.training_schedule is not None and not (
            self.training_schedule.startswith(("cron(", "rate("))
            and self.training_schedule.endswith(")")
        ):
            raise ValueError(
                "training_schedule must be an EventBridge cron(...) or rate(...) expression"
            )
        if not 1 <= self.timeout_seconds <= 29:
            raise ValueError(
                "timeout_seconds must be between 1 and 29 (API Gateway waits at most 29 s)"
            )
        if not 1 <= self.network_azs <= 3:
            raise ValueError("network_azs must be between 1 and 3")
        if self.throttle_rate_limit <= 0 or self.throttle_burst_limit < 1:
            raise ValueError("throttle_rate_limit must be > 0 and throttle_burst_limit >= 1")
        if self.alarm_error_rate_percent <= 0 or self.alarm_p99_duration_ms < 1:
            raise ValueError("alarm_error_rate_percent and alarm_p99_duration_ms must be positive")
        if self.alarm_throttles < 1 or self.alarm_api_5xx < 1:
            raise ValueError("alarm_throttles and alarm_api_5xx must be >= 1")
        if self.training_cpu not in (256, 512, 1024, 2048, 4096, 8192, 16384):
            raise ValueError("training_cpu must be a Fargate CPU size (256 ... 16384)")
        if not 512 <= self.training_memory_mb <= 122880:
            raise ValueError("training_memory_mb must be between 512 and 122880")
        if not self.training_data_prefix.endswith("/") or self.training_data_prefix.startswith(
            ("/", "models/")
        ):
            raise ValueError(
                "training_data_prefix must be a relative prefix ending in '/', outside models/"
            )
        if self.lambda_versions_to_keep < 2:
            raise ValueError(
                "lambda_versions_to_keep must be >= 2 (rollback needs a previous version)"
            )
        if self.registry_noncurrent_version_days < 1 or self.access_log_expiration_days < 1:
            raise ValueError(
                "registry_noncurrent_version_days and access_log_expiration_days must be >= 1"
            )


@dataclass(frozen=True)
class EnvironmentConfig:
    name: str
    promote_from: str | None
    gates: Gates
    serving: Serving
    infra: Infra


@dataclass(frozen=True)
class ProjectConfig:
    model_name: str
    environments: Mapping[str, EnvironmentConfig] = field(default_factory=dict)

    def env(self, name: str) -> EnvironmentConfig:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(self.environments) or "none"
            raise ConfigError(f"unknown environment {name!r} (known: {known})") from None

    @property
    def first_environment(self) -> str:
        """The environment new versions are registered in: the one nothing is promoted into."""
        for name, env in self.environments.items():
            if env.promote_from is None:
                return name
        raise ConfigError("no environment without promote_from: the promotion chain has no start")


_ENV_KEYS = {"promote_from", "gates", "serving", "infra"}


def parse_environment(name: str, raw: Any) -> EnvironmentConfig:
    where = f"environments.{name}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected an object")
    unknown = sorted(set(raw) - _ENV_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    promote_from = raw.get("promote_from")
    if promote_from is not None and not isinstance(promote_from, str):
        raise ConfigError(f"{where}.promote_from: expected an environment name")
    return EnvironmentConfig(
        name=name,
        promote_from=promote_from,
        gates=_build(Gates, f"{where}.gates", raw.get("gates")),
        serving=_build(Serving, f"{where}.serving", raw.get("serving")),
        infra=_build(Infra, f"{where}.infra", raw.get("infra")),
    )


def parse_project(context: Mapping[str, Any]) -> ProjectConfig:
    """Build the project config from the CDK context (the `context` object of cdk.json)."""
    model_name = context.get("model_name", DEFAULT_MODEL_NAME)
    if not isinstance(model_name, str) or not model_name.replace("-", "").isalnum():
        raise ConfigError("model_name: expected letters, digits and dashes")
    raw_envs = context.get("environments")
    if not isinstance(raw_envs, Mapping) or not raw_envs:
        raise ConfigError("environments: expected a non-empty object of environment settings")
    envs: dict[str, EnvironmentConfig] = {}
    for name, raw in raw_envs.items():
        if not name.isalnum() or not name.islower():
            raise ConfigError(f"environments.{name}: names are lowercase letters and digits")
        envs[name] = parse_environment(name, raw)
    for env in envs.values():
        for ref, label in (
            (env.promote_from, "promote_from"),
            (env.gates.require_live_in, "gates.require_live_in"),
        ):
            if ref is not None and ref not in envs:
                raise ConfigError(f"environments.{env.name}.{label}: unknown environment {ref!r}")
    _check_chain(envs)
    return ProjectConfig(model_name=model_name, environments=envs)


def _check_chain(envs: Mapping[str, EnvironmentConfig]) -> None:
    for start in envs:
        seen = [start]
        current = envs[start].promote_from
        while current is not None:
            if current in seen:
                raise ConfigError(
                    f"environments: promote_from forms a cycle: {' -> '.join([*seen, current])}"
                )
            seen.append(current)
            current = envs[current].promote_from


def load_project(cdk_json: Path) -> ProjectConfig:
    try:
        document = json.loads(cdk_json.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{cdk_json}: not found (run sds from the project directory)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{cdk_json}: invalid JSON: {exc}") from None
    return parse_project(document.get("context", {}))
