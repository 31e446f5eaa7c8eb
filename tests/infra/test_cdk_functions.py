"""The house policy of every Lambda function the stacks deploy (`stacks/components/small_function`):
one runtime, JSON logs in a log group and a role of its own, active tracing; and what the helper
takes as parameters reaches the function."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Template

from stacks.components import (
    activation_hook,
    batch_runs,
    drift_monitor,
    feature_updater,
    model_function,
    pruner,
    training_runs,
)
from stacks.components.retention import log_group
from stacks.components.small_function import function_role, lambda_architecture, small_function
from stacks.config import LogSettings
from tests.infra.infra_helpers import actions_of, resources, role_statements
from tests.infra.synth import SynthesizedApp

# Every function of ours (CDK's own custom-resource providers run Node.js handlers elsewhere).
OUR_HANDLERS = {
    activation_hook.HANDLER,
    batch_runs.HANDLER,
    drift_monitor.HANDLER,
    feature_updater.HANDLER,
    model_function.HANDLER,
    pruner.HANDLER,
    training_runs.HANDLER,
}


def _our_functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: function["Properties"]
        for logical_id, function in resources(template, "AWS::Lambda::Function").items()
        if function["Properties"]["Handler"].startswith("lambdas.")
    }


def test_every_function_runs_python_3_12_logs_json_to_its_own_group_and_traces(
    synthesized: SynthesizedApp,
) -> None:
    # Given every stack of every environment (the variant's options included)
    seen: set[str] = set()
    for (env, stack), template in synthesized.templates().items():
        functions = _our_functions(template)
        retention = synthesized.project.env(env).infra.log_retention_days
        log_groups, roles = [], []
        for logical_id, props in functions.items():
            where = f"{env}/{stack}/{logical_id}"
            seen.add(props["Handler"])
            # Then each runs the kernel's runtime, traced with X-Ray
            assert props["Runtime"] == "python3.12", where
            assert props["TracingConfig"] == {"Mode": "Active"}, where
            # And logs JSON to a log group of its own stack, kept for the configured retention
            assert props["LoggingConfig"]["LogFormat"] == "JSON", where
            group = props["LoggingConfig"]["LogGroup"]["Ref"]
            group_props = template["Resources"][group]["Properties"]
            assert template["Resources"][group]["Type"] == "AWS::Logs::LogGroup", where
            assert group_props["RetentionInDays"] == retention, where
            log_groups.append(group)
            # And its role is its own: only Lambda assumes it, and it may write to that group
            role = props["Role"]["Fn::GetAtt"][0]
            trust = template["Resources"][role]["Properties"]["AssumeRolePolicyDocument"]
            assert [s["Principal"] for s in trust["Statement"]] == [
                {"Service": "lambda.amazonaws.com"}
            ], where
            writes = [
                s for s in role_statements(template, role) if "logs:PutLogEvents" in actions_of(s)
            ]
            assert [s["Resource"] for s in writes] == [{"Fn::GetAtt": [group, "Arn"]}], where
            roles.append(role)
        # And no two functions share a log group or a role
        assert len(set(log_groups)) == len(log_groups), (env, stack)
        assert len(set(roles)) == len(roles), (env, stack)
    # And that held for every function of ours: none escaped the check
    assert seen == OUR_HANDLERS


def test_cdks_custom_resource_providers_log_to_a_group_kept_for_the_retention(
    synthesized: SynthesizedApp,
) -> None:
    # Given every stack of every environment, and the functions of CDK's own custom-resource
    # providers in it (the buckets' auto-delete where a bucket goes with its stack, the training
    # VPC's default security group restriction), which Lambda would otherwise give a log group
    # of its own, kept forever
    seen: set[str] = set()
    for (env, stack), template in synthesized.templates().items():
        infra = synthesized.project.env(env).infra
        for logical_id, function in resources(template, "AWS::Lambda::Function").items():
            props = function["Properties"]
            if props["Handler"].startswith("lambdas."):
                continue
            where = f"{env}/{stack}/{logical_id}"
            # Then each logs to a log group of the stack, kept for the configured retention and
            # retained with the stack's other log groups
            group = props.get("LoggingConfig", {}).get("LogGroup", {}).get("Ref")
            assert group is not None, where
            found = template["Resources"][group]
            assert found["Type"] == "AWS::Logs::LogGroup", where
            assert found["Properties"]["RetentionInDays"] == infra.log_retention_days, where
            assert found["DeletionPolicy"] == ("Retain" if infra.retain_data else "Delete"), where
            seen.add(logical_id.rstrip("0123456789ABCDEF"))
    # (both providers were met)
    assert seen == {
        "CustomS3AutoDeleteObjectsCustomResourceProviderHandler",
        "CustomVpcRestrictDefaultSGCustomResourceProviderHandler",
    }


def _small_stack(**overrides: Any) -> dict[str, Any]:
    stack = cdk.Stack(cdk.App(), "Small")
    logs = log_group(stack, "Logs", settings=LogSettings(retention_days=14, retain=False))
    role = function_role(stack, "Role", description="a small function", log_group=logs)
    role.add_to_policy(
        iam.PolicyStatement(
            sid="OwnGrant", actions=["s3:GetObject"], resources=["arn:aws:s3:::b/k"]
        )
    )
    small_function(
        stack,
        "Function",
        description="a small function",
        handler="lambdas.small.handler",
        code=lambda_.Code.from_inline("def handler(event, context): return None"),
        role=role,
        log_group=logs,
        memory_mb=512,
        timeout=cdk.Duration.seconds(42),
        environment={"SETTING": "value"},
        why_no_dead_letter_queue="synchronous only",
        why_no_reserved_concurrency="invoked rarely",
        reaches="S3",
        **overrides,
    )
    return Template.from_stack(stack).to_json()


def test_what_a_function_sets_for_itself_reaches_it_and_the_house_policy_the_rest() -> None:
    # Given a small function with its own memory, timeout and settings, x86_64, 2 GiB of /tmp
    template = _small_stack(architecture="x86_64", ephemeral_storage_mb=2048)

    # Then those reach the function, next to the house policy
    ((function_id, props),) = _our_functions(template).items()
    assert (props["MemorySize"], props["Timeout"], props["Architectures"]) == (512, 42, ["x86_64"])
    assert props["EphemeralStorage"] == {"Size": 2048}
    assert props["Environment"] == {"Variables": {"SETTING": "value"}}
    assert (props["Runtime"], props["TracingConfig"]) == ("python3.12", {"Mode": "Active"})
    # And the role lists its log writes and its own grants before X-Ray's, which tracing adds
    role = props["Role"]["Fn::GetAtt"][0]
    sids = [s.get("Sid") for s in role_statements(template, role)]
    assert sids[1] == "OwnGrant" and len(sids) == 3
    assert sorted(actions_of(role_statements(template, role)[2])) == [
        "xray:PutTelemetryRecords",
        "xray:PutTraceSegments",
    ]
    assert function_id.startswith("Function")  # the caller's construct id, no wrapper


def test_a_function_can_turn_tracing_off_and_defaults_to_arm64() -> None:
    # Given a small function that opts out of X-Ray
    template = _small_stack(tracing=False)

    # Then it has no tracing config, nor X-Ray grants, and runs on arm64 with the default /tmp
    ((_, props),) = _our_functions(template).items()
    assert "TracingConfig" not in props and "EphemeralStorage" not in props
    assert props["Architectures"] == ["arm64"]
    role = props["Role"]["Fn::GetAtt"][0]
    assert not any(
        a.startswith("xray:") for s in role_statements(template, role) for a in actions_of(s)
    )


def test_an_unknown_architecture_is_named() -> None:
    with pytest.raises(
        ValueError, match=r"'arm' is not a Lambda architecture \(one of x86_64, arm64\)"
    ):
        lambda_architecture("arm")
