"""Infrastructure settings are validated when cdk.json is loaded, naming the bad key."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from conftest import cdk_context

from sds.config import ConfigError, Infra, parse_project
from stacks.components.retention import retention
from stacks.components.safe_deployment import DEPLOYMENT_CONFIGS


def _with_infra(**settings: Any) -> dict[str, Any]:
    context = copy.deepcopy(cdk_context())
    context["environments"]["dev"]["infra"].update(settings)
    return context


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"deployment_strategy": "canary_50_percent"}, "deployment_strategy must be one of"),
        ({"log_retention_days": 10}, "log_retention_days must be one of"),
        ({"training_schedule": "every monday"}, "training_schedule must be an EventBridge"),
        ({"timeout_seconds": 60}, "timeout_seconds must be between 1 and 29"),
        ({"network_azs": 0}, "network_azs must be between 1 and 3"),
        ({"training_data_prefix": "models/fraud/"}, "training_data_prefix"),
        ({"lambda_versions_to_keep": 1}, "lambda_versions_to_keep must be >= 2"),
        ({"training_cpu": 3000}, "training_cpu must be a Fargate CPU size"),
        ({"network_azs": "2"}, "network_azs: expected int"),
    ],
)
def test_invalid_infra_settings_are_rejected_with_the_key_named(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        parse_project(_with_infra(**settings))
    assert "environments.dev.infra" in str(error.value)


def test_every_deployment_strategy_name_maps_to_a_codedeploy_config() -> None:
    assert set(DEPLOYMENT_CONFIGS) == set(Infra.DEPLOYMENT_STRATEGIES)


def test_every_allowed_log_retention_maps_to_cloudwatch() -> None:
    names = {days: retention(days).name for days in Infra.LOG_RETENTION_DAYS}
    assert names[14] == "TWO_WEEKS" and names[365] == "ONE_YEAR" and names[3653] == "TEN_YEARS"
    assert len(set(names.values())) == len(names)
