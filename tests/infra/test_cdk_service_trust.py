"""Roles AWS services assume for the environment's resources trust them for those resources only.

A trust policy naming a service principal alone lets the service assume the role for whatever
resource names it, another account's included (the confused deputy). Given the app synthesized
for every environment and the variant, each role a service assumes on behalf of a rule, a flow
log, a log group, a state machine or a Firehose stream must carry the condition keys the
service's documentation gives for its trust policy: `aws:SourceAccount` always, and
`aws:SourceArn` wherever the resource is known at synth (an ARN pattern where the resource names
the role, so the role cannot name it back).
"""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Template

from tests.infra.infra_helpers import model_function, one, statements
from tests.infra.synth import VARIANT, SynthesizedApp

ACCOUNT = {"Ref": "AWS::AccountId"}
# Services that assume one of the project's roles to act for one of its resources, and where
# the source ARN (the resource they act for) must lie, rendered with `<Ref>` stand-ins.
SOURCE_ARNS = {
    # EventBridge, for a rule (Amazon EventBridge User Guide, "Using IAM policy conditions")
    "events.amazonaws.com": "arn:aws:events:us-east-1:<AWS::AccountId>:rule/",
    # VPC flow logs, for a flow log (Amazon VPC User Guide, "IAM role for publishing flow logs")
    "vpc-flow-logs.amazonaws.com": "arn:aws:ec2:us-east-1:<AWS::AccountId>:vpc-flow-log/",
    # CloudWatch Logs, for a log group's subscription (CloudWatch Logs User Guide, "Confused
    # deputy prevention")
    "logs.amazonaws.com": "arn:aws:logs:us-east-1:<AWS::AccountId>:log-group:",
    # Step Functions, for a state machine
    "states.amazonaws.com": "arn:aws:states:us-east-1:<AWS::AccountId>:stateMachine:",
}
# Services whose trust takes the account only: Firehose (its role names no source ARN it
# passes), the batch state machine's Step Functions (its Distributed Maps' child executions
# assume the role too).
ACCOUNT_ONLY = {"firehose.amazonaws.com"}


def _render(value: Any) -> str:
    """A CloudFormation string (`Fn::Join`, `Ref`, `Fn::GetAtt`) as text with `<...>` stand-ins."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return f"<{value['Ref']}>"
    if "Fn::GetAtt" in value:
        return f"<{'.'.join(value['Fn::GetAtt'])}>"
    delimiter, parts = value["Fn::Join"]
    return str(delimiter).join(_render(part) for part in parts)


def _service_roles(template: Template) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every role whose trust names a service principal: logical id -> (service, condition)."""
    found = {}
    for role_id, role in template.find_resources("AWS::IAM::Role").items():
        for statement in statements(role["Properties"]["AssumeRolePolicyDocument"]):
            service = statement.get("Principal", {}).get("Service")
            if service in SOURCE_ARNS or service in ACCOUNT_ONLY:
                found[role_id] = (service, statement.get("Condition", {}))
    return found


def _source_arns(condition: dict[str, Any]) -> list[str]:
    arns = condition.get("ArnLike", {}).get("aws:SourceArn", [])
    return [_render(arn) for arn in (arns if isinstance(arns, list) else [arns])]


def _environments(synthesized: SynthesizedApp) -> list[str]:
    return list(synthesized.stages)


def test_every_role_a_service_assumes_for_a_resource_names_the_resources_account_and_arn(
    synthesized: SynthesizedApp,
) -> None:
    # Given every stack of every environment (the variant's scheduled ECS task included)
    checked = []
    for env in _environments(synthesized):
        for stack in synthesized.stages[env].stacks:
            template = synthesized.template(env, stack.node.id)
            for role_id, (service, condition) in _service_roles(template).items():
                where = f"{env}/{stack.node.id}/{role_id} ({service})"
                # Then the service may assume it only for a resource of this account
                assert condition.get("StringEquals", {}).get("aws:SourceAccount") == ACCOUNT, where
                arns = _source_arns(condition)
                batch_machine = stack.node.id == "Batch" and service == "states.amazonaws.com"
                if service in ACCOUNT_ONLY or batch_machine:
                    assert arns == [], where
                else:
                    # and only for a resource of its kind, in this account and region
                    assert arns, where
                    assert all(arn.startswith(SOURCE_ARNS[service]) for arn in arns), where
                checked.append(service)
    # (each kind of role was met: the checks above ran on something)
    assert set(checked) == set(SOURCE_ARNS) | ACCOUNT_ONLY


def test_the_capture_subscription_role_is_for_the_inference_functions_log_group_only(
    synthesized: SynthesizedApp, env: str
) -> None:
    # Given the Inference stack and its subscription filter
    template = synthesized.template(env, "Inference")
    document = template.to_json()
    _, function = model_function(document)
    log_group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    _, subscription = one(document, "AWS::Logs::SubscriptionFilter")
    role_id = subscription["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    # Then CloudWatch Logs may assume its role only for the function's log group, whichever
    # form of the group's ARN it passes (with or without the `:*` of its streams)
    _, condition = _service_roles(template)[role_id]
    group_arn = f"arn:aws:logs:us-east-1:<AWS::AccountId>:log-group:<{log_group}>"
    assert sorted(_source_arns(condition)) == [group_arn, f"{group_arn}:*"]


def test_the_label_rules_role_is_for_rules_of_the_activity_bus_only(
    synthesized: SynthesizedApp, env: str
) -> None:
    # Given the Features stack: its bus and the label rule's target
    template = synthesized.template(env, "Features")
    document = template.to_json()
    bus_id, _ = one(document, "AWS::Events::EventBus")
    _, rule = one(document, "AWS::Events::Rule", prefix="Labels")
    (target,) = rule["Properties"]["Targets"]
    role_id = target["RoleArn"]["Fn::GetAtt"][0]
    # Then EventBridge may assume the role only for a rule on this environment's bus
    _, condition = _service_roles(template)[role_id]
    assert _source_arns(condition) == [
        f"arn:aws:events:us-east-1:<AWS::AccountId>:rule/<{bus_id}>/*"
    ]


def test_the_flow_logs_role_is_for_this_accounts_flow_logs(
    synthesized: SynthesizedApp, env: str
) -> None:
    # Given the training network's flow log
    template = synthesized.template(env, "Training")
    document = template.to_json()
    _, flow_log = one(document, "AWS::EC2::FlowLog")
    role_id = flow_log["Properties"]["DeliverLogsPermissionArn"]["Fn::GetAtt"][0]
    # Then VPC Flow Logs may assume its role only for a flow log of this account and region
    # (the flow log names the role, so the role cannot name the flow log's id)
    _, condition = _service_roles(template)[role_id]
    assert _source_arns(condition) == ["arn:aws:ec2:us-east-1:<AWS::AccountId>:vpc-flow-log/*"]


def test_scheduled_training_runs_through_a_role_for_this_accounts_rules(
    synthesized: SynthesizedApp,
) -> None:
    # Given an environment whose schedule starts the task (dev, and the variant from capture)
    for env in ("dev", VARIANT):
        template = synthesized.template(env, "Training")
        _, rule = one(template.to_json(), "AWS::Events::Rule", prefix="JobSchedule")
        (target,) = rule["Properties"]["Targets"]
        role_id = target["RoleArn"]["Fn::GetAtt"][0]
        # Then EventBridge may assume the target's role for this account's rules only
        _, condition = _service_roles(template)[role_id]
        assert _source_arns(condition) == ["arn:aws:events:us-east-1:<AWS::AccountId>:rule/*"]
        assert condition["StringEquals"] == {"aws:SourceAccount": ACCOUNT}
