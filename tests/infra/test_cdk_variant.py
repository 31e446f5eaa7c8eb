"""Options no environment in cdk.json uses yet: API key auth, alarms to an e-mail and an existing
topic, a public training network above the chain start, no dashboard, a registry destroyed with its
stack, the drift monitor's volume alarm. A config change must be enough to turn them on."""

from __future__ import annotations

from typing import Any

from tests.infra.infra_helpers import one, resources
from tests.infra.synth import VARIANT, SynthesizedApp, cdk_context


def test_api_key_mode_requires_a_key_on_every_method_with_a_throttled_usage_plan(
    synthesized: SynthesizedApp,
) -> None:
    template = synthesized.template(VARIANT, "Inference").to_json()
    for method in resources(template, "AWS::ApiGateway::Method").values():
        assert method["Properties"]["ApiKeyRequired"] is True
        assert method["Properties"]["AuthorizationType"] == "NONE"
    one(template, "AWS::ApiGateway::ApiKey")
    _, plan = one(template, "AWS::ApiGateway::UsagePlan")
    assert plan["Properties"]["Throttle"] == {"BurstLimit": 100, "RateLimit": 50}
    (stage,) = plan["Properties"]["ApiStages"]
    assert stage["Stage"] == {"Ref": one(template, "AWS::ApiGateway::Stage")[0]}
    one(template, "AWS::ApiGateway::UsagePlanKey")


def test_alarms_notify_the_email_topic_and_the_existing_topic(
    synthesized: SynthesizedApp,
) -> None:
    template = synthesized.template(VARIANT, "Inference").to_json()
    topic_id, _ = one(template, "AWS::SNS::Topic")
    _, subscription = one(template, "AWS::SNS::Subscription")
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["Endpoint"] == "ops@example.com"
    alarms = resources(template, "AWS::CloudWatch::Alarm").values()
    assert len(alarms) == 4
    pager = "arn:aws:sns:us-east-1:123456789012:team-pager"
    for alarm in alarms:
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic_id}, pager]
    assert not resources(template, "AWS::CloudWatch::Dashboard")
    _, group = one(template, "AWS::CodeDeploy::DeploymentGroup")
    assert (
        group["Properties"]["DeploymentConfigName"]
        == "CodeDeployDefault.LambdaLinear10PercentEvery2Minutes"
    )


def test_training_above_the_chain_start_in_public_subnets_needs_no_endpoint(
    synthesized: SynthesizedApp,
) -> None:
    # Given the variant: promoted from dev, training in one public subnet, scheduled only
    # because it retrains from its own captures (a schedule on history belongs where versions
    # are allocated)
    template = synthesized.template(VARIANT, "Training").to_json()
    (rule,) = resources(template, "AWS::Events::Rule").values()
    assert synthesized.project.env(VARIANT).infra.training.source == "capture"
    assert rule["Properties"]["ScheduleExpression"] == "cron(0 4 ? * MON *)"
    assert len(resources(template, "AWS::EC2::Subnet")) == 1
    assert not resources(template, "AWS::EC2::NatGateway")
    endpoints = resources(template, "AWS::EC2::VPCEndpoint").values()
    assert [e["Properties"]["VpcEndpointType"] for e in endpoints] == ["Gateway"]
    # And its task registers in dev's registry, found through SSM at deploy time
    parameters = template["Parameters"].values()
    assert {
        "Type": "AWS::SSM::Parameter::Value<String>",
        "Default": "/sds/dev/registry-bucket",
    } in [{k: p[k] for k in ("Type", "Default")} for p in parameters if "Default" in p]


def test_the_volume_alarm_is_in_the_environment_that_sets_a_minimum_and_nowhere_else(
    synthesized: SynthesizedApp,
) -> None:
    # Given the variant, with monitor.min_daily_payments 100, and cdk.json's environments without
    def volume_alarms(env: str) -> list[dict[str, Any]]:
        template = synthesized.template(env, "Features").to_json()
        return [
            a["Properties"]
            for a in resources(template, "AWS::CloudWatch::Alarm").values()
            if a["Properties"].get("MetricName") == "Payments"
        ]

    # Then only the variant's Features stack has an alarm on its daily payments
    assert [env for env in cdk_context()["environments"] if volume_alarms(env)] == []
    (alarm,) = volume_alarms(VARIANT)
    assert alarm["Dimensions"] == [{"Name": "Environment", "Value": VARIANT}]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (100, "LessThanThreshold")
    # And it reaches the environment's alarm targets, as its other alarms do: the e-mail topic
    # (an output of the Inference stack) and the existing pager topic
    pager = "arn:aws:sns:us-east-1:123456789012:team-pager"
    assert len(alarm["AlarmActions"]) == 2 and pager in alarm["AlarmActions"]
    assert alarm["OKActions"] == alarm["AlarmActions"]
