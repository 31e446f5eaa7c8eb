"""Infrastructure settings are validated when cdk.json is loaded, naming the bad key.

`environments.<env>.infra` is a few stack-wide keys and one group per part of the system; every
error names the full cdk.json path of the key, and the flat keys of earlier releases fail with
the place they moved to.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest

import app as cdk_app
from sds.config import (
    MOVED_INFRA_KEYS,
    ConfigError,
    DeploymentSettings,
    Infra,
    parse_project,
)
from stacks.components.retention import retention
from stacks.components.safe_deployment import DEPLOYMENT_CONFIGS
from tests.infra.synth import cdk_context

ROOT = Path(__file__).resolve().parents[2]


def _with_infra(**settings: Any) -> dict[str, Any]:
    """cdk.json's context with dev's infra changed; a group (a dict) is merged key by key."""
    context = copy.deepcopy(cdk_context())
    infra = context["environments"]["dev"]["infra"]
    for key, value in settings.items():
        if isinstance(value, dict) and isinstance(infra.get(key), dict):
            infra[key].update(value)
        else:
            infra[key] = value
    return context


def _settings(cls: type = Infra, prefix: str = "") -> dict[str, Any]:
    """Every setting of `infra` as its dotted cdk.json key and its default."""
    found: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = prefix + f.metadata.get("key", f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            found.update(_settings(type(default), f"{key}."))
        else:
            found[key] = default
    return found


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"deployment": {"strategy": "canary_50_percent"}},
            "environments.dev.infra.deployment.strategy: must be one of all_at_once, canary_",
        ),
        ({"log_retention_days": 10}, "environments.dev.infra.log_retention_days: must be one of"),
        (
            {"training": {"schedule": "every monday"}},
            "environments.dev.infra.training.schedule: must be an EventBridge cron(...) or rate(",
        ),
        (
            {"lambda": {"timeout_seconds": 60}},
            "environments.dev.infra.lambda.timeout_seconds: must be between 1 and 29",
        ),
        ({"lambda": {"memory_mb": 64}}, "infra.lambda.memory_mb: must be between 128 and 10240"),
        ({"lambda": {"architecture": "arm"}}, "infra.lambda.architecture: must be x86_64 or arm64"),
        (
            {"lambda": {"reserved_concurrency": 0}},
            "infra.lambda.reserved_concurrency: must be >= 1",
        ),
        ({"lambda": {"versions_to_keep": 1}}, "infra.lambda.versions_to_keep: must be >= 2"),
        ({"lambda": {"snapstart": "yes"}}, "infra.lambda.snapstart: expected bool, got str"),
        ({"api": {"auth": "oauth"}}, "environments.dev.infra.api.auth: must be iam or api_key"),
        ({"api": {"throttle_rate_limit": 0}}, "infra.api.throttle_rate_limit: must be > 0"),
        ({"api": {"throttle_burst_limit": 0}}, "infra.api.throttle_burst_limit: must be >= 1"),
        (
            {"alarms": {"error_rate_percent": 0}},
            "infra.alarms.error_rate_percent: must be positive",
        ),
        ({"alarms": {"p99_duration_ms": 0}}, "infra.alarms.p99_duration_ms: must be positive"),
        ({"alarms": {"throttles": 0}}, "infra.alarms.throttles: must be >= 1"),
        ({"alarms": {"api_5xx": 0}}, "infra.alarms.api_5xx: must be >= 1"),
        (
            {"alarms": {"alert_rate": {"max_ratio": 1}}},
            "infra.alarms.alert_rate.max_ratio: must be > 1 (a multiple of the expected rate)",
        ),
        (
            {"alarms": {"alert_rate": {"min_ratio": 1.5}}},
            "infra.alarms.alert_rate.min_ratio: must be between 0 and 1 (a fraction of it)",
        ),
        (
            {"alarms": {"alert_rate": {"min_expected_flags": 0}}},
            "infra.alarms.alert_rate.min_expected_flags: must be >= 1",
        ),
        (
            {"alarms": {"alert_rate": {"period_minutes": 90}}},
            "infra.alarms.alert_rate.period_minutes: must be between 1 and 60",
        ),
        (
            {"alarms": {"alert_rate": {"enabled": "no"}}},
            "infra.alarms.alert_rate.enabled: expected bool, got str",
        ),
        (
            {"alarms": {"alert_rate": {"ratio": 2}}},
            "environments.dev.infra.alarms.alert_rate: unknown key ratio; known: enabled",
        ),
        ({"training": {"cpu": 3000}}, "infra.training.cpu: must be a Fargate CPU size"),
        ({"training": {"memory_mb": 256}}, "infra.training.memory_mb: must be between 512 and"),
        ({"training": {"data_prefix": "/history/"}}, "infra.training.data_prefix: must be a"),
        ({"training": {"data_prefix": "history"}}, "infra.training.data_prefix: must be a"),
        ({"network": {"azs": 0}}, "environments.dev.infra.network.azs: must be between 1 and 3"),
        ({"network": {"azs": "2"}}, "environments.dev.infra.network.azs: expected int, got str"),
        (
            {"network": {"isolated": None}},
            "environments.dev.infra.network.isolated: must not be null",
        ),
        (
            {"network": {"endpoints": "weekly"}},
            "environments.dev.infra.network.endpoints: must be one of always, during_runs",
        ),
        (
            # dev's network is not isolated: it has no interface endpoints to lease
            {"network": {"endpoints": "during_runs"}},
            "environments.dev.infra.network.endpoints: during_runs needs isolated: true",
        ),
        (
            {"registry": {"noncurrent_version_days": 0}},
            "infra.registry.noncurrent_version_days: must be >= 1",
        ),
        (
            {"registry": {"access_log_expiration_days": 0}},
            "infra.registry.access_log_expiration_days: must be >= 1",
        ),
        (
            {"registry": {"removal_policy": "delete"}},
            "environments.dev.infra.registry.removal_policy: must be retain or destroy",
        ),
        ({"registry": {"kms": "yes"}}, "infra.registry.kms: expected bool, got str"),
        (
            {"alarms": {"topic_email": "ops-team"}},
            "environments.dev.infra.alarms.topic_email: must be an e-mail address",
        ),
        (
            {"alarms": {"topic_arn": "arn:aws:sqs:us-east-1:123456789012:alarms"}},
            "environments.dev.infra.alarms.topic_arn: must be an SNS topic ARN",
        ),
        (
            {"alarms": {"topic_arn": "arn:aws:sns:eu-west-1:123456789012:pager"}},
            "environments.dev.infra.alarms.topic_arn: is in eu-west-1, but CloudWatch alarms "
            "can only notify a topic in their own region (us-east-1)",
        ),
        (
            {"alarms": {"require_notification": True}},
            "environments.dev.infra.alarms.require_notification: is true, so the alarms must "
            "reach a person: set alarms.topic_email (an address to e-mail) or alarms.topic_arn",
        ),
        (
            {"lambda": {"memory": 512}},
            "environments.dev.infra.lambda: unknown key memory; known: memory_mb, architecture",
        ),
        ({"lambda": 1024}, "environments.dev.infra.lambda: expected an object, got int"),
        ({"alarm": {"throttles": 3}}, "environments.dev.infra: unknown key alarm; known: "),
    ],
)
def test_invalid_infra_settings_are_rejected_with_the_full_key_named(
    settings: dict[str, Any], message: str
) -> None:
    # Given dev's infra block with one bad setting
    context = _with_infra(**settings)
    # When cdk.json is loaded, Then the error names the key where it lives in cdk.json
    with pytest.raises(ConfigError) as error:
        parse_project(context)
    assert message in str(error.value)


def test_a_group_left_out_takes_every_default() -> None:
    # Given an environment that sets only one key of one group
    context = _with_infra()
    context["environments"]["qa"] = {
        "promote_from": "dev",
        "infra": {"lambda": {"memory_mb": 2048}},
    }
    # When it is loaded
    infra = parse_project(context).env("qa").infra
    # Then that key is set, and everything else (the rest of its group, the other groups) is
    # the default: no setting is ever left unset
    assert infra.lambda_.memory_mb == 2048
    assert dataclasses.replace(infra.lambda_, memory_mb=1024) == Infra().lambda_
    assert dataclasses.replace(infra, lambda_=Infra().lambda_) == Infra()


@pytest.mark.parametrize(("old", "new"), sorted(MOVED_INFRA_KEYS.items()))
def test_a_flat_key_of_an_earlier_release_names_where_it_moved(old: str, new: str) -> None:
    # Given dev's infra block with a key written the way earlier releases wanted it
    context = _with_infra(**{old: _settings()[new]})
    # When cdk.json is loaded
    with pytest.raises(ConfigError) as error:
        parse_project(context)
    # Then the error names the key and its new place
    assert f"environments.dev.infra.{old} has moved to environments.dev.infra.{new}" in str(
        error.value
    )
    # and the new place is a real setting: written there, the same value loads
    assert parse_project(_with_infra(**_nested(new, _settings()[new])))


def test_an_old_flat_environment_is_fixed_by_following_the_error() -> None:
    # Given prod's infra block as earlier releases wrote it (every grouped key flat; settings
    # added since the grouping, which never had a flat name, stay in their group)
    context = copy.deepcopy(cdk_context())
    grouped = context["environments"]["prod"]["infra"]
    flat = {k: v for k, v in grouped.items() if not isinstance(v, dict)}
    newer: dict[str, dict[str, Any]] = {}
    where_now = {new: old for old, new in MOVED_INFRA_KEYS.items()}
    for group, values in grouped.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if f"{group}.{key}" in where_now:
                    flat[where_now[f"{group}.{key}"]] = value
                else:
                    newer.setdefault(group, {})[key] = value
    context["environments"]["prod"]["infra"] = {**flat, **newer}
    # When it is loaded, Then one error names every moved key
    with pytest.raises(ConfigError) as error:
        parse_project(context)
    moves = re.findall(
        r"environments\.prod\.infra\.(\w+) has moved to environments\.prod\.infra\.([\w.]+)",
        str(error.value),
    )
    assert {old for old, _ in moves} == set(flat) - {"region", "log_retention_days"}
    # And moving each key where the error says gives back exactly today's prod
    fixed: dict[str, Any] = {k: v for k, v in flat.items() if k not in dict(moves)}
    fixed.update(copy.deepcopy(newer))
    for old, new in moves:
        group, key = new.split(".")
        fixed.setdefault(group, {})[key] = flat[old]
    context["environments"]["prod"]["infra"] = fixed
    assert parse_project(context).env("prod") == parse_project(cdk_context()).env("prod")


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    group, _, key = dotted.partition(".")
    return {group: {key: value}} if key else {group: value}


def _configuration_section() -> str:
    text = (ROOT / "docs" / "infrastructure.md").read_text()
    return text.split("## Configuration (`cdk.json`", 1)[1].split("\n## ", 1)[0]


def test_the_documented_example_is_prod_as_committed() -> None:
    example = _configuration_section().split("```json\n", 1)[1].split("```", 1)[0]
    infra = json.loads("{" + example + "}")["infra"]
    assert infra == cdk_context()["environments"]["prod"]["infra"]


def test_the_repository_environments_keep_their_settings() -> None:
    # Given cdk.json as committed
    project = parse_project(cdk_context())
    dev, staging, prod = (project.env(name).infra for name in ("dev", "staging", "prod"))
    # Then dev is cheap and disposable, staging and prod retain data in an isolated network
    assert (dev.retain_data, dev.network.isolated, dev.lambda_.versions_to_keep) == (
        False,
        False,
        5,
    )
    assert (dev.deployment.strategy, dev.log_retention_days) == ("all_at_once", 14)
    assert staging.deployment.strategy == "linear_10_percent_every_1_minute"
    assert (staging.retain_data, staging.network.isolated) == (True, True)
    assert prod.deployment.strategy == "canary_10_percent_5_minutes"
    # no SnapStart: its snapshot caches cost more than it saves (docs/decisions.md)
    assert (prod.lambda_.reserved_concurrency, prod.lambda_.snapstart) == (100, False)
    assert (prod.api.throttle_rate_limit, prod.api.throttle_burst_limit) == (200, 400)
    # And the weekly training runs where versions are allocated (dev), nowhere else
    assert dev.training.schedule == "cron(0 3 ? * MON *)"
    assert staging.training.schedule is None and prod.training.schedule is None
    assert prod.log_retention_days == 90
    # training stays isolated, in one AZ (interface endpoints bill per AZ; docs/decisions.md)
    assert (staging.network.azs, prod.network.azs, prod.network.isolated) == (1, 1, True)
    # prod keeps few published versions: each may hold a SnapStart cache
    assert prod.lambda_.versions_to_keep == 3
    # And the registry outlives its stack everywhere (dev's too: every version starts there),
    # encrypted with a customer-managed key where data is retained for real
    for env in (dev, staging, prod):
        assert env.registry.removal_policy == "retain"
    assert (dev.registry.kms, staging.registry.kms, prod.registry.kms) == (False, True, True)
    # And prod's alarms must reach a person; the committed address is a placeholder to replace
    assert prod.alarms.require_notification is True
    assert prod.alarms.topic_email == "alarms@example.com"
    assert not dev.alarms.require_notification and not staging.alarms.require_notification


def test_prod_refuses_to_synthesize_without_a_notification_target(
    lock_file: Path, lambda_python: str
) -> None:
    # Given cdk.json with prod's alarm e-mail removed (prod requires a notification target)
    context = copy.deepcopy(cdk_context())
    del context["environments"]["prod"]["infra"]["alarms"]["topic_email"]
    app = cdk.App(context=context)
    # When the app is built (what `cdk synth`, `cdk diff` and `cdk deploy` of any stage do)
    with pytest.raises(ConfigError) as error:
        cdk_app.build(app, lock_path=lock_file, lambda_python=lambda_python, nag=False)
    # Then it refuses, naming the key and how to satisfy it
    assert str(error.value).startswith(
        "environments.prod.infra.alarms.require_notification: is true, so the alarms must reach "
        "a person: set alarms.topic_email"
    )
    # And an existing topic alone satisfies it
    context["environments"]["prod"]["infra"]["alarms"]["topic_arn"] = (
        "arn:aws:sns:us-east-1:123456789012:pager"
    )
    assert parse_project(context).env("prod").infra.alarms.topic_arn


def test_a_misspelled_model_name_refuses_to_synthesize(lock_file: Path, lambda_python: str) -> None:
    # Given cdk.json (with CDK's own feature flags) whose model_name is misspelled
    context = copy.deepcopy(cdk_context())
    context["model_nme"] = context.pop("model_name", "fraud")
    app = cdk.App(context=context)
    # When the app is built, Then it refuses, naming the key meant, instead of deploying every
    # stack under the default name
    with pytest.raises(ConfigError) as error:
        cdk_app.build(app, lock_path=lock_file, lambda_python=lambda_python, nag=False)
    assert str(error.value).startswith("model_nme: not a key of this project; did you mean")


def test_a_kms_registry_where_other_environments_register_refuses_to_synthesize(
    lock_file: Path, lambda_python: str
) -> None:
    # Given cdk.json with a customer-managed key on dev's registry, where staging's and prod's
    # training tasks register their versions (their stacks are granted only their own keys)
    context = copy.deepcopy(cdk_context())
    context["environments"]["dev"]["infra"]["registry"] = {"kms": True}
    app = cdk.App(context=context)
    # When the app is built, Then it refuses, naming the setting
    with pytest.raises(ConfigError) as error:
        cdk_app.build(app, lock_path=lock_file, lambda_python=lambda_python, nag=False)
    assert str(error.value).startswith("environments.dev.infra.registry.kms: is true, but ")


def test_every_deployment_strategy_name_maps_to_a_codedeploy_config() -> None:
    assert set(DEPLOYMENT_CONFIGS) == set(DeploymentSettings.STRATEGIES)


def test_every_allowed_log_retention_maps_to_cloudwatch() -> None:
    names = {days: retention(days).name for days in Infra.LOG_RETENTION_DAYS}
    assert names[14] == "TWO_WEEKS" and names[365] == "ONE_YEAR" and names[3653] == "TEN_YEARS"
    assert len(set(names.values())) == len(names)
