"""The CodeDeploy activation hook: wired as alias live's BeforeAllowTraffic hook in every
environment, built from the inference bundle, with a role that can do exactly its job."""

from __future__ import annotations

from typing import Any

from stacks.components import activation_hook
from tests.infra.infra_helpers import actions_of, resource_text, resources, role_statements
from tests.infra.synth import SynthesizedApp

HOOK_HANDLER = "lambdas.activation_hook.handler.lambda_handler"
INFERENCE_HANDLER = "lambdas.inference.handler.lambda_handler"


def _functions(template: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """{handler: (logical id, properties)} of the stack's functions."""
    return {
        value["Properties"]["Handler"]: (key, value["Properties"])
        for key, value in resources(template, "AWS::Lambda::Function").items()
    }


def test_every_environment_runs_the_hook_before_any_traffic_shift_of_live(
    synthesized: SynthesizedApp, env: str
) -> None:
    # Given an environment's inference stack
    template = synthesized.template(env, "Inference").to_json()
    functions = _functions(template)
    assert {INFERENCE_HANDLER, HOOK_HANDLER} <= set(functions)
    hook_id, hook = functions[HOOK_HANDLER]
    inference_id, inference = functions[INFERENCE_HANDLER]

    # Then alias live's CodeDeploy update names the hook as its BeforeAllowTraffic hook
    (alias,) = resources(template, "AWS::Lambda::Alias").values()
    update = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    assert update["BeforeAllowTrafficHook"] == {"Ref": hook_id}
    assert "AfterAllowTrafficHook" not in update

    # And the hook guards the inference function, from an asset of its own: an edit to the hook
    # never publishes an inference version, and it carries no wheels (the kernel and itself)
    assert hook["Environment"]["Variables"] == {"SDS_GUARDED_FUNCTION": {"Ref": inference_id}}
    assert hook["Code"] != inference["Code"]
    assert hook["Runtime"] == "python3.12"
    assert hook["Architectures"] == ["arm64"]
    folder = activation_hook.source_bundle(
        activation_hook.PACKAGES, name="lambda-hook", source_root=activation_hook._SOURCE_ROOT
    )
    shipped = {p.relative_to(folder).parts[0] for p in folder.rglob("*.py")}
    assert shipped == {"sds", "lambdas"}
    assert not (folder / "numpy").exists() and (folder / "lambdas" / "activation_hook").is_dir()
    # As long as Lambda allows: the time it can give an Inactive version to be re-created
    assert hook["Timeout"] == 900
    assert "FunctionName" not in hook  # generated names only


def test_the_hook_can_read_and_wake_only_the_inference_versions_and_report_only_here(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = synthesized.template(env, "Inference").to_json()
    functions = _functions(template)
    hook_id, hook = functions[HOOK_HANDLER]
    inference_id, _ = functions[INFERENCE_HANDLER]
    role_id = hook["Role"]["Fn::GetAtt"][0]
    assert not template["Resources"][role_id]["Properties"].get("ManagedPolicyArns")
    statements = role_statements(template, role_id)
    by_action = {action: s for s in statements for action in actions_of(s)}

    # Then it reads and invokes the inference function's versions (qualified ARNs) only
    versions = by_action["lambda:InvokeFunction"]
    assert sorted(actions_of(versions)) == [
        "lambda:GetFunctionConfiguration",
        "lambda:InvokeFunction",
    ]
    assert versions["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [inference_id, "Arn"]}, ":*"]]}
    # And it reports a status on this deployment group only
    (group_id,) = resources(template, "AWS::CodeDeploy::DeploymentGroup")
    report = by_action["codedeploy:PutLifecycleEventHookExecutionStatus"]
    assert actions_of(report) == ["codedeploy:PutLifecycleEventHookExecutionStatus"]
    assert f'{{"Ref": "{group_id}"}}' in resource_text(report)
    # And '*' only where AWS offers nothing narrower: two read-only CodeDeploy calls and X-Ray
    wildcard = sorted(a for s in statements if s["Resource"] == "*" for a in actions_of(s))
    assert wildcard == [
        "codedeploy:GetDeploymentTarget",
        "codedeploy:ListDeploymentTargets",
        "xray:PutTelemetryRecords",
        "xray:PutTraceSegments",
    ]
    # And nothing else: its own logs, no alias switch, no deployment control, no data
    every_action = sorted(a for s in statements for a in actions_of(s))
    assert every_action == sorted(
        [
            "codedeploy:GetDeploymentTarget",
            "codedeploy:ListDeploymentTargets",
            "codedeploy:PutLifecycleEventHookExecutionStatus",
            "lambda:GetFunctionConfiguration",
            "lambda:InvokeFunction",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            "xray:PutTelemetryRecords",
            "xray:PutTraceSegments",
        ]
    )
    del hook_id


def test_codedeploy_may_invoke_the_hook(synthesized: SynthesizedApp, env: str) -> None:
    template = synthesized.template(env, "Inference").to_json()
    hook_id, _ = _functions(template)[HOOK_HANDLER]
    (group,) = resources(template, "AWS::CodeDeploy::DeploymentGroup").values()
    service_role = group["Properties"]["ServiceRoleArn"]["Fn::GetAtt"][0]
    invoking = [
        s
        for s in role_statements(template, service_role)
        if "lambda:InvokeFunction" in actions_of(s)
    ]
    assert len(invoking) == 1
    assert {"Fn::GetAtt": [hook_id, "Arn"]} in invoking[0]["Resource"]
