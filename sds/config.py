"""Typed, frozen project configuration: the one loader for the `environments` context in cdk.json.

The CDK app (through `app.py`) and the CLI both read environments through `load_project`, so a gate
or a setting means the same thing at deploy time and at promotion time. Unknown keys are errors:
a typo in cdk.json must not silently fall back to a default.

An environment's infrastructure settings (`environments.<env>.infra`) are a few stack-wide keys
and one group per part of the system (`lambda`, `api`, `deployment`, `alarms`, `training`,
`network`, `registry`, `features`, `batch`); each construct receives only its group. Besides `gates`,
`serving` and `infra`, an environment has `capture` (what the handler records of each scored
payment, and how long it is kept), `labels` (when a label counts as final for training from
capture), `monitor` (the scheduled drift monitor and its alarms) and `shadow` (the gates a version
passes before it may shadow the live model: `sds shadow`). Each group checks its own keys
and names the one that is wrong. A new key is one field (and its check) in its group; a new group
is one dataclass and one field of `Infra`.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from sds.kernel.aggregates import DAY, LATENESS, LONGEST_WINDOW
from sds.kernel.capture import CaptureError, check_exclude, check_sample_rate
from sds.kernel.errors import SdsError, plural
from sds.kernel.settings import FEATURES_UNAVAILABLE_POLICIES

DEFAULT_MODEL_NAME = "fraud"


# The training task's environment (stacks: TrainingJob writes it, training.train reads it): the
# ARN of the task's own role, which it records as who registered a version. Here, not in the
# kernel, so it never changes the inference bundle.
TASK_ROLE_ARN = "SDS_TASK_ROLE_ARN"
# And what code it runs, which its manifests record as their `code_version`: the image has no git,
# so its stack names the image by its content hash (`training_code_version`).
CODE_VERSION = "SDS_CODE_VERSION"


def training_code_version(image_hash: str) -> str:
    """The training image's code version: its content hash (which is also its tag), marked so
    that it is never taken for a git revision. It changes only when the image does."""
    return f"image:{image_hash}"


class ConfigError(SdsError, ValueError):
    """cdk.json (or a value derived from it) is invalid; the message names the key."""


T = TypeVar("T")

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
_ACCOUNT = re.compile(r"\d{12}")
_SNS_TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z]{2}(-[a-z]+)+-\d:\d{12}:[A-Za-z0-9_-]{1,256}")


class _Invalid(ConfigError):
    """A setting breaks its group's rule; the loader prefixes the group's path in cdk.json."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key} {problem}")
        self.key = key
        self.problem = problem


def _require(condition: bool, key: str, problem: str) -> None:
    if not condition:
        raise _Invalid(key, problem)


def _key(f: Any) -> str:
    """A field's key in cdk.json: its name, unless that is a Python keyword (`lambda_`)."""
    return str(f.metadata.get("key", f.name))


def _build(cls: type[T], where: str, raw: Any) -> T:
    """Build a frozen settings dataclass (and its groups) from a mapping, naming any bad key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected an object, got {type(raw).__name__}")
    known = {_key(f): f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown {plural(len(unknown), 'key')} {', '.join(unknown)}; "
            f"known: {', '.join(known)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {
        known[key].name: _value(f"{where}.{key}", value, hints[known[key].name])
        for key, value in raw.items()
    }
    try:
        return cls(**kwargs)
    except _Invalid as exc:
        raise ConfigError(f"{where}.{exc.key}: {exc.problem}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


_SCALARS: dict[type, tuple[type, ...]] = {
    int: (int,),
    float: (int, float),
    str: (str,),
    bool: (bool,),
}


def _value(where: str, value: Any, hint: Any) -> Any:
    """Check one value against its field's type (a group is built recursively, a list of
    strings becomes a tuple)."""
    if isinstance(hint, type) and is_dataclass(hint):
        return _build(hint, where, value)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings")
        return tuple(value)
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    members = typing.get_args(hint) if union else (hint,)
    base = next(m for m in members if m is not type(None))
    if isinstance(base, type) and is_dataclass(base):  # an optional group
        return None if value is None else _build(base, where, value)
    if base not in _SCALARS:
        raise TypeError(f"{where}: the loader cannot read settings of type {hint}")
    if value is None:
        if type(None) not in members:
            raise ConfigError(f"{where}: must not be null")
        return None
    if isinstance(value, bool) and base is not bool:
        raise ConfigError(f"{where}: expected {base.__name__}, got a boolean")
    if base is str and isinstance(value, (int, float)):
        # An account id or a name that looks like a number, written without quotes.
        raise ConfigError(
            f'{where}: expected a string, got the number {value!r}; write it in quotes: "{value}"'
        )
    if not isinstance(value, _SCALARS[base]):
        raise ConfigError(f"{where}: expected {base.__name__}, got {type(value).__name__}")
    return value


# Holdout metrics `must_beat_live` may compare, and whether more is better.
COMPARED_METRICS: Mapping[str, bool] = {
    "roc_auc": True,
    "pr_auc": True,
    "precision_at_alert_rate": True,
    "recall_at_alert_rate": True,
    "expected_calibration_error": False,
    "brier_score": False,
}


@dataclass(frozen=True)
class MustBeatLive:
    """`gates.must_beat_live`: the version must beat the model live in the environment on the
    same served traffic (the out-of-time holdout of a training from capture, whose captures hold
    the live model's scores) by more than `margin` in `metric`."""

    metric: str = "pr_auc"
    margin: float = 0.0

    def __post_init__(self) -> None:
        _require(
            self.metric in COMPARED_METRICS,
            "metric",
            f"must be one of {', '.join(COMPARED_METRICS)}",
        )
        # Every compared metric is a fraction: a margin of 1 or more no version can beat.
        _require(0 <= self.margin < 1, "margin", "must be >= 0 and below 1")

    @property
    def higher_is_better(self) -> bool:
        return COMPARED_METRICS[self.metric]


@dataclass(frozen=True)
class ShadowedIn:
    """`gates.shadowed_in`: the version must have shadowed the model live in `env` (the target
    environment when unset) on at least `min_events` matured payments and beaten it on them by
    more than `margin` in `metric` (both models' scores captured for the same payments)."""

    env: str | None = None
    min_events: int = 1000
    metric: str = "pr_auc"
    margin: float = 0.0

    def __post_init__(self) -> None:
        _require(self.min_events >= 1, "min_events", "must be >= 1")
        _require(
            self.metric in COMPARED_METRICS,
            "metric",
            f"must be one of {', '.join(COMPARED_METRICS)}",
        )
        # Every compared metric is a fraction: a margin of 1 or more no version can beat.
        _require(0 <= self.margin < 1, "margin", "must be >= 0 and below 1")

    @property
    def higher_is_better(self) -> bool:
        return COMPARED_METRICS[self.metric]


@dataclass(frozen=True)
class Gates:
    """Conditions a model version must meet before an environment's alias may point at it."""

    min_roc_auc: float | None = None
    min_pr_auc: float | None = None
    min_precision_at_alert_rate: float | None = None
    max_calibration_error: float | None = None
    require_live_in: str | None = None
    must_beat_live: MustBeatLive | None = None
    shadowed_in: ShadowedIn | None = None

    def __post_init__(self) -> None:
        # Each metric is a fraction (evaluate.py): a bound outside [0, 1] no version can meet,
        # so every promotion would fail on a typo rather than on the model.
        for key in (
            "min_roc_auc",
            "min_pr_auc",
            "min_precision_at_alert_rate",
            "max_calibration_error",
        ):
            bound = getattr(self, key)
            _require(bound is None or 0 <= bound <= 1, key, "must be from 0 to 1")


@dataclass(frozen=True)
class ShadowSettings:
    """`shadow`: what a version must pass before `sds shadow` lets it score beside the live model
    (it decides nothing, so these are usually looser than the promotion gates)."""

    gates: Gates = field(default_factory=Gates)


@dataclass(frozen=True)
class CaptureSettings:
    """`capture`: what the inference handler records of each scored payment (sds.kernel.capture),
    and how long the records are kept."""

    # The share of scored payments captured, chosen per event id (a replay captures the same ones).
    sample_rate: float = 1.0
    # Fields left out of every record: request_id, latency_ms, features, event, or a payment field.
    exclude: tuple[str, ...] = ()
    # Days the captures bucket keeps a record (S3 lifecycle); the function's log group keeps its
    # copy for the environment's log_retention_days.
    retention_days: int = 365

    def __post_init__(self) -> None:
        try:
            check_sample_rate(self.sample_rate)
        except CaptureError:
            raise _Invalid("sample_rate", "must be a number from 0 to 1") from None
        try:
            check_exclude(self.exclude)
        except CaptureError as exc:
            raise _Invalid("exclude", str(exc).removeprefix("capture ")) from None
        _require(self.retention_days >= 1, "retention_days", "must be >= 1")


@dataclass(frozen=True)
class LabelSettings:
    """`labels`: the label-maturity policy of training from capture."""

    # A payment younger than this may still get a chargeback: it is left out of training.
    maturity_days: int = 30
    # A matured payment without a label: "legitimate" (no chargeback came) or "exclude".
    unlabelled: str = "legitimate"

    UNLABELLED: ClassVar[tuple[str, ...]] = ("legitimate", "exclude")

    def __post_init__(self) -> None:
        _require(self.maturity_days >= 0, "maturity_days", "must be >= 0")
        _require(
            self.unlabelled in self.UNLABELLED,
            "unlabelled",
            f"must be one of {', '.join(self.UNLABELLED)}",
        )


@dataclass(frozen=True)
class MonitorSettings:
    """`monitor`: the drift monitor that runs on AWS on a schedule (`sds.kernel.drift`, the
    figures `sds monitor` reports), and the alarms on what it publishes."""

    # An EventBridge cron(...) or rate(...) expression; null: no scheduled monitor.
    schedule: str | None = "cron(0 6 * * ? *)"
    # Whole UTC days before the run it reports (1: yesterday).
    days: int = 1
    # Alarm when any version's score PSI reaches this (0.25: the conventional "drift" line).
    score_psi_alarm: float = 0.25
    # Alarm when a version's alert rate leaves this band around the rate its manifest expects.
    alert_rate_ratio_max: float = 2.0
    alert_rate_ratio_min: float = 0.5
    # Alarm when a day's payments (all versions, estimated from the captures) are fewer than
    # this; null: no volume alarm (an idle dev would raise it every day).
    min_daily_payments: int | None = None

    def __post_init__(self) -> None:
        _require(
            self.schedule is None
            or (self.schedule.startswith(("cron(", "rate(")) and self.schedule.endswith(")")),
            "schedule",
            "must be an EventBridge cron(...) or rate(...) expression, or null",
        )
        _require(1 <= self.days <= 31, "days", "must be from 1 to 31")
        _require(self.score_psi_alarm > 0, "score_psi_alarm", "must be > 0")
        _require(
            0 <= self.alert_rate_ratio_min < 1 < self.alert_rate_ratio_max,
            "alert_rate_ratio_min",
            "and alert_rate_ratio_max must bracket 1 (min < 1 < max)",
        )
        _require(
            self.min_daily_payments is None or self.min_daily_payments >= 1,
            "min_daily_payments",
            "must be a whole number >= 1, or null (no volume alarm)",
        )
        _require(
            self.min_daily_payments is None or self.schedule is not None,
            "min_daily_payments",
            "needs monitor.schedule (the scheduled monitor publishes the daily payments it "
            "compares); set a schedule, or leave min_daily_payments out",
        )


@dataclass(frozen=True)
class Serving:
    """Limits the inference handler enforces (they become Lambda environment variables)."""

    max_events: int = 100
    max_body_bytes: int = 262_144
    # When the feature store cannot answer: "refuse" (503; the caller's fallback decides) or
    # "score" without the account aggregates, flagged in the response and counted in a metric.
    when_features_unavailable: str = "refuse"
    # Each attempt's connect and read timeout of the feature store read (two attempts at most).
    feature_store_timeout_ms: int = 500

    def __post_init__(self) -> None:
        _require(self.max_events >= 1, "max_events", "must be >= 1")
        _require(
            10 <= self.feature_store_timeout_ms <= 2000,
            "feature_store_timeout_ms",
            "must be between 10 and 2000 (two attempts must fit well inside the function's "
            "timeout)",
        )
        _require(self.max_body_bytes >= 1024, "max_body_bytes", "must be >= 1024")
        _require(
            self.when_features_unavailable in FEATURES_UNAVAILABLE_POLICIES,
            "when_features_unavailable",
            f"must be one of {', '.join(FEATURES_UNAVAILABLE_POLICIES)}",
        )


@dataclass(frozen=True)
class LambdaSettings:
    """`infra.lambda`: the inference function."""

    memory_mb: int = 1024
    architecture: str = "x86_64"
    timeout_seconds: int = 10
    reserved_concurrency: int | None = None
    snapstart: bool = False
    # Published versions the pruner keeps besides rollback targets; also how many models deep in
    # the registry alias history rollback targets are kept (sds.kernel.retention).
    versions_to_keep: int = 10

    ARCHITECTURES: ClassVar[tuple[str, ...]] = ("x86_64", "arm64")

    def __post_init__(self) -> None:
        _require(self.architecture in self.ARCHITECTURES, "architecture", "must be x86_64 or arm64")
        _require(128 <= self.memory_mb <= 10240, "memory_mb", "must be between 128 and 10240")
        _require(
            1 <= self.timeout_seconds <= 29,
            "timeout_seconds",
            "must be between 1 and 29 (API Gateway waits at most 29 s)",
        )
        _require(
            self.reserved_concurrency is None or self.reserved_concurrency >= 1,
            "reserved_concurrency",
            "must be >= 1 (or null for unreserved)",
        )
        _require(
            self.versions_to_keep >= 2,
            "versions_to_keep",
            "must be >= 2 (rollback needs a previous version)",
        )


@dataclass(frozen=True)
class ApiSettings:
    """`infra.api`: the REST API in front of the function."""

    throttle_rate_limit: float = 50.0
    throttle_burst_limit: int = 100
    auth: str = "iam"
    # An AWS WAF web ACL on the stage (5 USD a month plus 1 USD per rule): a rate-based rule
    # that blocks a source address sending more than `waf_rate_limit` requests in 5 minutes.
    waf: bool = False
    # Requests per source IP per 5 minutes; null: the whole stage's rate over that window
    # (throttle_rate_limit x 300), so only an address that alone exceeds the stage is blocked.
    waf_rate_limit: int | None = None

    AUTH_MODES: ClassVar[tuple[str, ...]] = ("iam", "api_key")
    WAF_WINDOW_SECONDS: ClassVar[int] = 300
    # AWS WAF's bounds for a rate-based rule's limit.
    WAF_RATE_LIMITS: ClassVar[tuple[int, int]] = (10, 2_000_000_000)

    def __post_init__(self) -> None:
        _require(self.auth in self.AUTH_MODES, "auth", "must be iam or api_key")
        _require(self.throttle_rate_limit > 0, "throttle_rate_limit", "must be > 0")
        _require(self.throttle_burst_limit >= 1, "throttle_burst_limit", "must be >= 1")
        low, high = self.WAF_RATE_LIMITS
        _require(
            self.waf_rate_limit is None or low <= self.waf_rate_limit <= high,
            "waf_rate_limit",
            f"must be between {low} and {high:,} requests per 5 minutes (AWS WAF's bounds)",
        )

    @property
    def waf_rate(self) -> int:
        """The rate-based rule's limit: requests per source IP per 5 minutes."""
        if self.waf_rate_limit is not None:
            return self.waf_rate_limit
        stage = int(self.throttle_rate_limit * self.WAF_WINDOW_SECONDS)
        return min(max(stage, self.WAF_RATE_LIMITS[0]), self.WAF_RATE_LIMITS[1])


@dataclass(frozen=True)
class DeploymentSettings:
    """`infra.deployment`: how CodeDeploy shifts alias `live` to a new version."""

    strategy: str = "all_at_once"

    # Names the CDK app maps to CodeDeploy's predefined Lambda deployment configurations.
    STRATEGIES: ClassVar[tuple[str, ...]] = (
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

    def __post_init__(self) -> None:
        _require(
            self.strategy in self.STRATEGIES,
            "strategy",
            f"must be one of {', '.join(self.STRATEGIES)}",
        )


@dataclass(frozen=True)
class AlertRateAlarmSettings:
    """`infra.alarms.alert_rate`: two alarms on the pinned model version's own alert rate (the
    fraction of events it flags), against the rate its manifest expects (carried by the pin).

    Neither alarm fires on less evidence than `min_expected_flags` flags: "too high" judges a
    period once its threshold means that many flags, "too low" once that many were expected; a
    quieter period reads as expected, so a canary's first few requests never decide. Each alarm
    fires on 2 of 3 periods out of band."""

    enabled: bool = True
    # Out of band: above max_ratio x, or below min_ratio x, the expected rate.
    max_ratio: float = 3.0
    min_ratio: float = 0.33
    min_expected_flags: int = 20
    period_minutes: int = 1

    def __post_init__(self) -> None:
        _require(self.max_ratio > 1, "max_ratio", "must be > 1 (a multiple of the expected rate)")
        _require(0 < self.min_ratio < 1, "min_ratio", "must be between 0 and 1 (a fraction of it)")
        _require(self.min_expected_flags >= 1, "min_expected_flags", "must be >= 1")
        _require(
            1 <= self.period_minutes <= 60,
            "period_minutes",
            "must be between 1 and 60 (the alarm judges 3 periods)",
        )


@dataclass(frozen=True)
class AlarmSettings:
    """`infra.alarms`: the alarms that roll a deployment back, and who hears about them."""

    error_rate_percent: float = 5.0
    p99_duration_ms: int = 1000
    throttles: int = 5
    api_5xx: int = 5
    alert_rate: AlertRateAlarmSettings = field(default_factory=AlertRateAlarmSettings)
    # An e-mail address subscribed to a KMS-encrypted SNS topic every alarm notifies.
    topic_email: str | None = None
    # An existing SNS topic (same region) every alarm notifies too, e.g. a team's paging topic.
    topic_arn: str | None = None
    # Refuse to build the environment unless its alarms reach a person (topic_email/topic_arn).
    require_notification: bool = False

    def __post_init__(self) -> None:
        _require(self.error_rate_percent > 0, "error_rate_percent", "must be positive")
        _require(self.p99_duration_ms >= 1, "p99_duration_ms", "must be positive")
        _require(self.throttles >= 1, "throttles", "must be >= 1")
        _require(self.api_5xx >= 1, "api_5xx", "must be >= 1")
        _require(
            self.topic_email is None or _EMAIL.fullmatch(self.topic_email) is not None,
            "topic_email",
            "must be an e-mail address (name@domain)",
        )
        _require(
            self.topic_arn is None or _SNS_TOPIC_ARN.fullmatch(self.topic_arn) is not None,
            "topic_arn",
            "must be an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)",
        )
        _require(
            not self.require_notification or bool(self.topic_email or self.topic_arn),
            "require_notification",
            "is true, so the alarms must reach a person: set alarms.topic_email (an address "
            "to e-mail) or alarms.topic_arn (an existing SNS topic), or both",
        )

    @property
    def topic_region(self) -> str | None:
        """The region of `topic_arn` (alarms can only notify a topic in their own region)."""
        return None if self.topic_arn is None else self.topic_arn.split(":")[3]


@dataclass(frozen=True)
class TrainingSettings:
    """`infra.training`: the Fargate training task and its schedule."""

    schedule: str | None = None
    cpu: int = 2048
    memory_mb: int = 8192
    data_prefix: str = "training-data/"
    # Negative downsampling for the task (`--negative-rate`): below 1 once fitting the whole
    # history takes too long (README, "When you outgrow one machine").
    negative_rate: float = 1.0
    # What the task trains on: "history" (activity events under data_prefix) or "capture" (the
    # environment's captures joined with its labels, the `window_days` before now).
    source: str = "history"
    window_days: int = 90
    # Training from capture: the out-of-time holdout is the most recent matured days.
    holdout_days: int = 7
    # The task's local disk, where training partitions the history while it reads it (about
    # 270 bytes per activity event): Fargate gives 20 GiB; more is billed per GB-hour of a run.
    ephemeral_storage_gib: int = 20

    FARGATE_CPU: ClassVar[tuple[int, ...]] = (256, 512, 1024, 2048, 4096, 8192, 16384)
    SOURCES: ClassVar[tuple[str, ...]] = ("history", "capture")

    def __post_init__(self) -> None:
        _require(
            self.schedule is None
            or (self.schedule.startswith(("cron(", "rate(")) and self.schedule.endswith(")")),
            "schedule",
            "must be an EventBridge cron(...) or rate(...) expression",
        )
        _require(self.cpu in self.FARGATE_CPU, "cpu", "must be a Fargate CPU size (256 ... 16384)")
        _require(512 <= self.memory_mb <= 122880, "memory_mb", "must be between 512 and 122880")
        _require(
            self.data_prefix.endswith("/") and not self.data_prefix.startswith("/"),
            "data_prefix",
            "must be a relative prefix ending in '/' (in the training-data bucket)",
        )
        _require(
            0.001 <= self.negative_rate <= 1,
            "negative_rate",
            "must be between 0.001 and 1 (1 keeps every payment)",
        )
        _require(self.source in self.SOURCES, "source", "must be history or capture")
        _require(
            self.source == "history" or self.negative_rate == 1,
            "negative_rate",
            "applies to training from history only (training from capture weights what was "
            "sampled at capture instead)",
        )
        _require(self.window_days >= 1, "window_days", "must be >= 1")
        _require(
            20 <= self.ephemeral_storage_gib <= 200,
            "ephemeral_storage_gib",
            "must be between 20 (Fargate's default) and 200",
        )
        _require(
            1 <= self.holdout_days < self.window_days,
            "holdout_days",
            "must be >= 1 and less than window_days",
        )


@dataclass(frozen=True)
class NetworkSettings:
    """`infra.network`: the training network (isolated subnets with endpoints, or public).

    `endpoints` says when an isolated network has its interface endpoints (ECR API, ECR Docker,
    CloudWatch Logs): `always` (in the template, billed every hour of the month) or
    `during_runs` (created by the training run's state machine before its task starts and
    deleted after it stops: billed only while a run lasts). A network that is not isolated has
    no interface endpoints at all, so `during_runs` there is refused rather than ignored.
    """

    isolated: bool = True
    azs: int = 2
    endpoints: str = "always"

    ENDPOINTS: ClassVar[tuple[str, ...]] = ("always", "during_runs")

    def __post_init__(self) -> None:
        _require(1 <= self.azs <= 3, "azs", "must be between 1 and 3")
        _require(
            self.endpoints in self.ENDPOINTS,
            "endpoints",
            f"must be one of {', '.join(self.ENDPOINTS)}",
        )
        _require(
            self.isolated or self.endpoints == "always",
            "endpoints",
            "during_runs needs isolated: true (a network that is not isolated has no interface "
            "endpoints to create during runs)",
        )

    @property
    def leased_endpoints(self) -> bool:
        """The interface endpoints exist only while a training run needs them."""
        return self.isolated and self.endpoints == "during_runs"


@dataclass(frozen=True)
class RegistrySettings:
    """`infra.registry`: the stateful buckets (model registry, training data): how they are
    encrypted, whether they outlive their stack, how long overwritten objects and access logs
    are kept."""

    noncurrent_version_days: int = 90
    access_log_expiration_days: int = 365
    # A customer-managed KMS key (rotated yearly, 1 USD a month) for the registry and the
    # training data instead of S3-managed keys.
    kms: bool = False
    # "retain" keeps both buckets (and their key) when the stack is deleted; "destroy" empties
    # and deletes them with it: every model version and all training data are gone.
    removal_policy: str = "retain"

    REMOVAL_POLICIES: ClassVar[tuple[str, ...]] = ("retain", "destroy")

    def __post_init__(self) -> None:
        _require(self.noncurrent_version_days >= 1, "noncurrent_version_days", "must be >= 1")
        _require(self.access_log_expiration_days >= 1, "access_log_expiration_days", "must be >= 1")
        _require(
            self.removal_policy in self.REMOVAL_POLICIES,
            "removal_policy",
            "must be retain or destroy",
        )

    @property
    def retain(self) -> bool:
        return self.removal_policy == "retain"


# Days of archive a replay needs to rebuild every aggregate's window from nothing.
REPLAY_DAYS = -(-(LONGEST_WINDOW + LATENESS) // DAY)


@dataclass(frozen=True)
class FeatureSettings:
    """`infra.features`: the activity event path (bus archive, queue, feature updater)."""

    # How long the bus archive keeps events (0: forever); a replay rebuilds aggregates from it.
    archive_retention_days: int = 30
    # SQS messages per updater invocation, and how long Lambda waits to fill a batch.
    batch_size: int = 100
    batching_window_seconds: int = 1
    # Deliveries of a message before it moves to the dead-letter queue (and the alarm fires).
    max_receive_count: int = 5
    updater_memory_mb: int = 512

    def __post_init__(self) -> None:
        _require(
            self.archive_retention_days == 0 or self.archive_retention_days >= REPLAY_DAYS,
            "archive_retention_days",
            f"must be 0 (keep forever) or at least {REPLAY_DAYS}: a replay must hold the "
            "longest window, plus its lateness, to rebuild the aggregates",
        )
        _require(1 <= self.batch_size <= 10000, "batch_size", "must be between 1 and 10000")
        _require(
            0 <= self.batching_window_seconds <= 300,
            "batching_window_seconds",
            "must be between 0 and 300",
        )
        _require(
            self.batch_size <= 10 or self.batching_window_seconds >= 1,
            "batching_window_seconds",
            "must be at least 1 when batch_size is over 10 (an SQS event source rule)",
        )
        _require(
            1 <= self.max_receive_count <= 1000,
            "max_receive_count",
            "must be between 1 and 1000",
        )
        _require(
            128 <= self.updater_memory_mb <= 10240,
            "updater_memory_mb",
            "must be between 128 and 10240",
        )


@dataclass(frozen=True)
class BatchSettings:
    """`infra.batch`: batch scoring and feature backfill on AWS (`sds --aws score`, `sds --aws
    backfill`): the state machine's Distributed Maps and the batch function they invoke."""

    memory_mb: int = 2048
    timeout_seconds: int = 900
    # /tmp, where a shuffle item spools its partitions: its range of a .jsonl object (64 MiB),
    # or of a .jsonl.gz object's content (64 MiB; a 16th of it, for one of more than 1 GiB).
    ephemeral_storage_mb: int = 4096
    # Items (input ranges, then partitions) processed at once: the cap on concurrent functions.
    max_concurrency: int = 100
    # Parts that may fail before the run fails (they are named in its summary and recomputed
    # by the next run); the shuffle tolerates none, since a lost range would skew every part.
    tolerated_failure_percent: float = 0.0
    # Runs read anywhere in the training-data bucket and write only under this prefix.
    output_prefix: str = "batch/"

    def __post_init__(self) -> None:
        _require(128 <= self.memory_mb <= 10240, "memory_mb", "must be between 128 and 10240")
        _require(
            1 <= self.timeout_seconds <= 900,
            "timeout_seconds",
            "must be between 1 and 900 (Lambda's longest)",
        )
        _require(
            512 <= self.ephemeral_storage_mb <= 10240,
            "ephemeral_storage_mb",
            "must be between 512 and 10240",
        )
        _require(
            1 <= self.max_concurrency <= 10000,
            "max_concurrency",
            "must be between 1 and 10000 (a Distributed Map's most)",
        )
        _require(
            0 <= self.tolerated_failure_percent <= 100,
            "tolerated_failure_percent",
            "must be between 0 and 100",
        )
        _require(
            self.output_prefix.endswith("/")
            and not self.output_prefix.startswith("/")
            and len(self.output_prefix) > 1,
            "output_prefix",
            "must be a relative prefix ending in '/' (in the training-data bucket)",
        )


@dataclass(frozen=True)
class LogSettings:
    """What every log group of an environment shares: retention, and whether it outlives its
    stack (derived from the stack-wide `log_retention_days` and `retain_data`)."""

    retention_days: int
    retain: bool


@dataclass(frozen=True)
class Infra:
    """`environments.<env>.infra`: stack-wide settings, then one group per part of the system
    (read by the CDK app; each construct receives its group only)."""

    account: str | None = None
    region: str = "us-east-1"
    retain_data: bool = True
    log_retention_days: int = 30
    dashboard: bool = True
    lambda_: LambdaSettings = field(default_factory=LambdaSettings, metadata={"key": "lambda"})
    api: ApiSettings = field(default_factory=ApiSettings)
    deployment: DeploymentSettings = field(default_factory=DeploymentSettings)
    alarms: AlarmSettings = field(default_factory=AlarmSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)

    # The retention periods CloudWatch Logs accepts.
    LOG_RETENTION_DAYS: ClassVar[tuple[int, ...]] = (
        1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
        2557, 2922, 3288, 3653,
    )  # fmt: skip

    def __post_init__(self) -> None:
        _require(
            self.account is None or _ACCOUNT.fullmatch(self.account) is not None,
            "account",
            'must be a 12-digit AWS account id, as a string ("111111111111")',
        )
        _require(
            self.log_retention_days in self.LOG_RETENTION_DAYS,
            "log_retention_days",
            f"must be one of {', '.join(map(str, self.LOG_RETENTION_DAYS))}",
        )
        _require(
            not self.batch.output_prefix.startswith(self.training.data_prefix)
            and not self.training.data_prefix.startswith(self.batch.output_prefix),
            "batch.output_prefix",
            f"{self.batch.output_prefix!r} overlaps training.data_prefix "
            f"{self.training.data_prefix!r}: training would read batch results as history",
        )
        _require(
            self.alarms.topic_region in (None, self.region),
            "alarms.topic_arn",
            f"is in {self.alarms.topic_region}, but CloudWatch alarms can only notify a topic in "
            f"their own region ({self.region})",
        )

    @property
    def logs(self) -> LogSettings:
        return LogSettings(retention_days=self.log_retention_days, retain=self.retain_data)


# The flat `infra` keys of earlier releases and where each lives now: an upgrade fails naming the
# new place instead of "unknown key". A test checks that every target is a real setting.
MOVED_INFRA_KEYS: Mapping[str, str] = {
    "memory_mb": "lambda.memory_mb",
    "architecture": "lambda.architecture",
    "timeout_seconds": "lambda.timeout_seconds",
    "reserved_concurrency": "lambda.reserved_concurrency",
    "snapstart": "lambda.snapstart",
    "lambda_versions_to_keep": "lambda.versions_to_keep",
    "throttle_rate_limit": "api.throttle_rate_limit",
    "throttle_burst_limit": "api.throttle_burst_limit",
    "api_auth": "api.auth",
    "deployment_strategy": "deployment.strategy",
    "alarm_error_rate_percent": "alarms.error_rate_percent",
    "alarm_p99_duration_ms": "alarms.p99_duration_ms",
    "alarm_throttles": "alarms.throttles",
    "alarm_api_5xx": "alarms.api_5xx",
    "alarm_topic_email": "alarms.topic_email",
    "training_schedule": "training.schedule",
    "training_cpu": "training.cpu",
    "training_memory_mb": "training.memory_mb",
    "training_data_prefix": "training.data_prefix",
    "isolated_network": "network.isolated",
    "network_azs": "network.azs",
    "registry_noncurrent_version_days": "registry.noncurrent_version_days",
    "access_log_expiration_days": "registry.access_log_expiration_days",
}


def _reject_moved_keys(where: str, raw: Any) -> None:
    if not isinstance(raw, Mapping):
        return
    moved = [key for key in raw if key in MOVED_INFRA_KEYS]
    if moved:
        hints = "; ".join(
            f"{where}.{key} has moved to {where}.{MOVED_INFRA_KEYS[key]}" for key in moved
        )
        raise ConfigError(
            f"{hints} (infra settings are grouped: see Configuration in docs/infrastructure.md)"
        )


# IAM role names are at most 64 characters.
_ROLE_NAME_LIMIT = 64


def promotion_source_role_name(model_name: str, environment: str) -> str:
    """The name of `environment`'s promotion source role: the read-only role that promoters in
    other accounts assume to read its registry (docs/multi-account.md).

    A fixed, documented name rather than a generated one: the accounts that assume it (and their
    promoter policies, and the CLI) must know its ARN before anything is deployed, the way CDK's
    own bootstrap roles are named (`cdk-hnb659fds-deploy-role-<account>-<region>`).
    """
    return f"sds-{model_name}-{environment}-promotion-source"


@dataclass(frozen=True)
class PromotionSource:
    """An environment in another account whose registry a promotion reads: the target's
    `promote_from`, or the environment its `require_live_in` gate looks at."""

    env: str
    account: str
    region: str


@dataclass(frozen=True)
class CrossAccountPromotion:
    """How one environment takes part in promotions across accounts (derived from cdk.json).

    `readers` are the accounts whose promoters read this environment's registry: it gets a
    read-only promotion source role that trusts them. `sources` are the environments in other
    accounts this environment's promoters read, through those roles. `unplaced` names the
    environments it reads, or that read it, where only one side has an account in cdk.json:
    they may be in different accounts, but no role can be trusted by an unknown account, so
    the CDK app warns instead of wiring anything.
    """

    readers: tuple[str, ...] = ()
    sources: tuple[PromotionSource, ...] = ()
    unplaced: tuple[str, ...] = ()


@dataclass(frozen=True)
class EnvironmentConfig:
    name: str
    promote_from: str | None
    gates: Gates
    serving: Serving
    infra: Infra
    # Where the environment's promotion chain starts (itself, if nothing is promoted into it):
    # the one registry that allocates version numbers for it. Training, scheduled or not,
    # registers there; the environments above receive versions only by promotion, under the
    # same number (docs/decisions.md, 3).
    chain_start: str
    # Whether the environment has a training task. Not in another account or region than its
    # chain start: its task could not register there without cross-account wiring.
    has_training: bool
    # Promotions into or out of this environment that cross accounts (docs/multi-account.md).
    cross_account: CrossAccountPromotion = field(default_factory=CrossAccountPromotion)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    labels: LabelSettings = field(default_factory=LabelSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    shadow: ShadowSettings = field(default_factory=ShadowSettings)

    @property
    def allocates_versions(self) -> bool:
        return self.chain_start == self.name


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
        """The first environment (in cdk.json order) that starts a promotion chain: where new
        versions are registered when no environment is named."""
        for name, env in self.environments.items():
            if env.promote_from is None:
                return name
        raise ConfigError("no environment without promote_from: the promotion chain has no start")


# In the order the error for an unknown key lists them, as every group's error does.
_ENV_KEYS = ("promote_from", "gates", "serving", "infra", "capture", "labels", "monitor", "shadow")


def parse_environment(
    name: str, raw: Mapping[str, Any], *, chain_start: str, start: EnvironmentConfig | None
) -> EnvironmentConfig:
    """One environment; `start` is its chain start's config (None if it starts its chain)."""
    where = f"environments.{name}"
    unknown = sorted(set(raw) - set(_ENV_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown {plural(len(unknown), 'key')} {', '.join(unknown)}; "
            f"known: {', '.join(_ENV_KEYS)}"
        )
    _reject_moved_keys(f"{where}.infra", raw.get("infra"))
    infra = _build(Infra, f"{where}.infra", raw.get("infra"))
    has_training = start is None or (infra.account, infra.region) == (
        start.infra.account,
        start.infra.region,
    )
    if not has_training:
        raw_infra = raw.get("infra") or {}
        if "training" in raw_infra:
            raise ConfigError(
                f"{where}.infra.training: {name} is in another account or region than "
                f"{chain_start}, where its versions are allocated, so it has no training task "
                f"(its task could not register versions in {chain_start}); remove the setting "
                f"and train in {chain_start}"
            )
    elif start is not None and start.infra.registry.kms:
        # Its task and its training operator would need the chain start's key, which only the
        # chain start's own stacks are granted.
        raise ConfigError(
            f"environments.{chain_start}.infra.registry.kms: is true, but {name}'s training task "
            f"registers its versions in {chain_start}'s registry (versions are allocated only "
            f"where the promotion chain starts), and no stack of {name} is granted {chain_start}'s "
            f"key: KMS would refuse its registrations and its training operator's reads. Set it "
            f"to false for {chain_start} ({name} may keep its own), or place {name} in another "
            f"account or region than {chain_start} (it then has no training task)"
        )
    elif (
        start is not None
        and infra.training.schedule is not None
        and infra.training.source != "capture"
    ):
        # Above the chain start a schedule retrains from the environment's own served traffic
        # (registering in the chain start, like any run of its task); on history it would only
        # repeat the chain start's schedule.
        raise ConfigError(
            f"{where}.infra.training.schedule: scheduled training registers new versions, and "
            f"versions are allocated only where the promotion chain starts ({chain_start}); "
            f"{name} receives them by promotion. Move the schedule to "
            f"environments.{chain_start}.infra.training.schedule, or retrain {name} from what it "
            f"serves (infra.training.source: capture), which registers in {chain_start}"
        )
    # Built in the order of _ENV_KEYS, so that of two bad groups the first one is named.
    gates = _build(Gates, f"{where}.gates", raw.get("gates"))
    serving = _build(Serving, f"{where}.serving", raw.get("serving"))
    capture = _build(CaptureSettings, f"{where}.capture", raw.get("capture"))
    labels = _build(LabelSettings, f"{where}.labels", raw.get("labels"))
    monitor = _build(MonitorSettings, f"{where}.monitor", raw.get("monitor"))
    shadow = _build(ShadowSettings, f"{where}.shadow", raw.get("shadow"))
    if monitor.min_daily_payments is not None and capture.sample_rate == 0:
        # The monitor counts what was captured: every day would count 0 and raise the alarm.
        raise ConfigError(
            f"{where}.monitor.min_daily_payments: is {monitor.min_daily_payments}, but "
            "capture.sample_rate is 0: the monitor counts payments from their captures, so every "
            "day would count 0 and raise the volume alarm. Capture some payments (a sample_rate "
            "above 0; each record then stands for 1 / sample_rate payments), or leave "
            "min_daily_payments out"
        )
    return EnvironmentConfig(
        name=name,
        promote_from=raw.get("promote_from"),
        gates=gates,
        serving=serving,
        infra=infra,
        chain_start=chain_start,
        has_training=has_training,
        capture=capture,
        labels=labels,
        monitor=monitor,
        shadow=shadow,
    )


# The project's own keys at the top of the CDK context. Beside them the context holds CDK's feature
# flags and any value a user passes with `cdk -c`, which are not ours to refuse; a key spelled
# nearly like one of ours is refused instead, since it would silently leave ours at its default
# (a misspelled model_name deploys stacks, roles and a registry prefix under "fraud").
PROJECT_KEYS = ("model_name", "environments")


def _reject_misspelled_keys(context: Mapping[str, Any]) -> None:
    for key in context:
        if not isinstance(key, str) or key in PROJECT_KEYS:
            continue
        near = difflib.get_close_matches(key.lower(), PROJECT_KEYS, n=1, cutoff=0.8)
        if near:
            raise ConfigError(
                f"{key}: not a key of this project; did you mean {near[0]}? (misspelled, it "
                "would be ignored and its default used)"
            )


def parse_project(context: Mapping[str, Any]) -> ProjectConfig:
    """Build the project config from the CDK context (the `context` object of cdk.json, or all of
    an app's context: other keys are CDK's, refused only when spelled nearly like ours)."""
    _reject_misspelled_keys(context)
    model_name = context.get("model_name", DEFAULT_MODEL_NAME)
    if not isinstance(model_name, str) or not model_name.replace("-", "").isalnum():
        raise ConfigError("model_name: expected letters, digits and dashes")
    raw_envs = context.get("environments")
    if not isinstance(raw_envs, Mapping) or not raw_envs:
        raise ConfigError("environments: expected a non-empty object of environment settings")
    promote_from: dict[str, str | None] = {}
    for name, raw in raw_envs.items():
        if not name.isalnum() or not name.islower():
            raise ConfigError(f"environments.{name}: names are lowercase letters and digits")
        if not isinstance(raw, Mapping):
            raise ConfigError(f"environments.{name}: expected an object")
        source = raw.get("promote_from")
        if source is not None and not isinstance(source, str):
            raise ConfigError(f"environments.{name}.promote_from: expected an environment name")
        if source is not None and source not in raw_envs:
            raise ConfigError(f"environments.{name}.promote_from: unknown environment {source!r}")
        promote_from[name] = source
    starts = _chain_starts(promote_from)
    # Chain starts first: every other environment is checked against its start's placement.
    envs: dict[str, EnvironmentConfig] = {}
    for name in sorted(raw_envs, key=lambda n: starts[n] != n):
        start = None if starts[name] == name else envs[starts[name]]
        envs[name] = parse_environment(name, raw_envs[name], chain_start=starts[name], start=start)
    for env in envs.values():
        for where, gates in (("gates", env.gates), ("shadow.gates", env.shadow.gates)):
            ref = gates.require_live_in
            if ref is not None and ref not in envs:
                raise ConfigError(
                    f"environments.{env.name}.{where}.require_live_in: unknown environment {ref!r}"
                )
            shadowed = gates.shadowed_in
            if shadowed is not None and shadowed.env is not None and shadowed.env not in envs:
                raise ConfigError(
                    f"environments.{env.name}.{where}.shadowed_in.env: unknown environment "
                    f"{shadowed.env!r}"
                )
    envs = _cross_account_promotions(model_name, envs)
    return ProjectConfig(model_name=model_name, environments={n: envs[n] for n in raw_envs})


def _cross_account_promotions(
    model_name: str, envs: Mapping[str, EnvironmentConfig]
) -> dict[str, EnvironmentConfig]:
    """Who reads whose registry across accounts: a promotion into T reads T's `promote_from`
    and the environment its `require_live_in` gate names. A role is wired only between two
    accounts cdk.json names; with one named and one not, both environments are `unplaced`."""
    readers: dict[str, set[str]] = {name: set() for name in envs}
    sources: dict[str, list[PromotionSource]] = {name: [] for name in envs}
    unplaced: dict[str, list[str]] = {name: [] for name in envs}
    for env in envs.values():
        for name in dict.fromkeys(r for r in (env.promote_from, env.gates.require_live_in) if r):
            source = envs[name]
            mine, theirs = env.infra.account, source.infra.account
            if name == env.name or mine == theirs:
                continue
            if mine is None or theirs is None:
                unplaced[env.name].append(name)
                unplaced[name].append(env.name)
                continue
            sources[env.name].append(PromotionSource(name, theirs, source.infra.region))
            readers[name].add(mine)
    for name, accounts in readers.items():
        role = promotion_source_role_name(model_name, name)
        if accounts and len(role) > _ROLE_NAME_LIMIT:
            raise ConfigError(
                f"model_name: {name}'s promotion source role would be named {role} "
                f"({len(role)} characters; IAM allows {_ROLE_NAME_LIMIT}): use a shorter "
                "model name or environment name"
            )
    return {
        name: replace(
            env,
            cross_account=CrossAccountPromotion(
                readers=tuple(sorted(readers[name])),
                sources=tuple(sources[name]),
                unplaced=tuple(dict.fromkeys(unplaced[name])),
            ),
        )
        for name, env in envs.items()
    }


def _chain_starts(promote_from: Mapping[str, str | None]) -> dict[str, str]:
    """Each environment's chain start: follow promote_from until an environment has none."""
    starts: dict[str, str] = {}
    for name in promote_from:
        seen = [name]
        current = promote_from[name]
        while current is not None:
            if current in seen:
                raise ConfigError(
                    f"environments: promote_from forms a cycle: {' -> '.join([*seen, current])}"
                )
            seen.append(current)
            current = promote_from[current]
        starts[name] = seen[-1]
    return starts


def load_project(cdk_json: Path) -> ProjectConfig:
    """The project config in `cdk_json`; a ConfigError names the file and what is wrong there."""
    try:
        document = json.loads(cdk_json.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{cdk_json}: not found (run sds from the project directory)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{cdk_json}: invalid JSON: {exc}") from None
    context = document.get("context", {}) if isinstance(document, dict) else None
    if not isinstance(context, dict):
        raise ConfigError(
            f'{cdk_json}: expected a JSON object with a "context" object holding the project\'s '
            "settings"
        )
    try:
        return parse_project(context)
    except ConfigError as exc:
        raise ConfigError(f"{cdk_json}: {exc}") from None
