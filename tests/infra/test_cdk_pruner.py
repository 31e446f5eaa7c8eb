"""The pruner in every environment: its function, its two triggers, its role, and its code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from sds.kernel.retention import PruneTarget
from stacks.components.pruner import HANDLER, pruner_code
from tests.infra.infra_helpers import actions_of, model_function, resources, role_statements
from tests.infra.synth import SynthesizedApp


def _pruner(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (k, v)
        for k, v in resources(template, "AWS::Lambda::Function").items()
        if v["Properties"]["Handler"] == HANDLER
    ]
    return found


def test_the_pruner_targets_its_own_environment_with_the_configured_count(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = synthesized.template(env, "Inference").to_json()
    model_id, _ = model_function(template)
    _, pruner = _pruner(template)
    props = pruner["Properties"]
    assert (props["Runtime"], props["MemorySize"], props["Architectures"]) == (
        "python3.12",
        256,
        ["arm64"],
    )
    variables = props["Environment"]["Variables"]
    assert variables["FUNCTION_NAME"] == {"Ref": model_id}
    assert variables["ENVIRONMENT"] == env
    expected = synthesized.project.env(env).infra.lambda_.versions_to_keep
    assert variables["VERSIONS_TO_KEEP"] == str(expected)
    # every setting the handler parses is there (the contract's one writer, one parser)
    assert set(variables) == set(PruneTarget("f", env, "m", "s3://b", "a", "g", 2).to_environ())


def test_it_runs_daily_and_after_each_successful_deployment_of_this_group(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = synthesized.template(env, "Inference").to_json()
    pruner_id, _ = _pruner(template)
    rules = list(resources(template, "AWS::Events::Rule").values())
    targeted = [
        r
        for r in rules
        if any(t["Arn"] == {"Fn::GetAtt": [pruner_id, "Arn"]} for t in r["Properties"]["Targets"])
    ]
    schedules = [r["Properties"].get("ScheduleExpression") for r in targeted]
    assert "rate(1 day)" in schedules
    (pattern,) = [
        r["Properties"]["EventPattern"] for r in targeted if "EventPattern" in r["Properties"]
    ]
    (application,) = resources(template, "AWS::CodeDeploy::Application")
    (group,) = resources(template, "AWS::CodeDeploy::DeploymentGroup")
    assert pattern == {
        "source": ["aws.codedeploy"],
        "detail-type": ["CodeDeploy Deployment State-change Notification"],
        "detail": {
            "state": ["SUCCESS"],
            "application": [{"Ref": application}],
            "deploymentGroup": [{"Ref": group}],
        },
    }


def test_its_role_deletes_published_versions_of_this_function_only(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = synthesized.template(env, "Inference").to_json()
    model_id, _ = model_function(template)
    _, pruner = _pruner(template)
    role_id = pruner["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = {s.get("Sid", ""): s for s in role_statements(template, role_id)}
    function_arn = {"Fn::GetAtt": [model_id, "Arn"]}
    assert actions_of(statements["DeletePublishedVersions"]) == ["lambda:DeleteFunction"]
    # qualified ARNs only: `function:name:*` matches versions, never the function itself
    assert statements["DeletePublishedVersions"]["Resource"] == {
        "Fn::Join": ["", [function_arn, ":*"]]
    }
    assert sorted(actions_of(statements["ListVersionsAndAliases"])) == [
        "lambda:ListAliases",
        "lambda:ListVersionsByFunction",
    ]
    assert statements["ListVersionsAndAliases"]["Resource"] == function_arn
    alias_read = json.dumps(statements["ReadRegistryAlias"]["Resource"])
    assert actions_of(statements["ReadRegistryAlias"]) == ["s3:GetObject"]
    assert f"/models/fraud/aliases/{env}.json" in alias_read and "*" not in alias_read
    # and it may list that one key: without s3:ListBucket, S3 answers the read of an alias that
    # does not exist yet (nothing promoted) with 403, not 404, and the pruner would fail daily
    finding = statements["FindRegistryAlias"]
    assert actions_of(finding) == ["s3:ListBucket"]
    assert "/" not in json.dumps(finding["Resource"])  # the bucket, not its objects
    assert finding["Condition"] == {
        "StringEquals": {"s3:prefix": f"models/fraud/aliases/{env}.json"}
    }
    assert sorted(actions_of(statements["ReadDeployments"])) == [
        "codedeploy:GetDeployment",
        "codedeploy:ListDeployments",
    ]
    every_action = {a for s in statements.values() for a in actions_of(s)}
    assert every_action <= {
        "lambda:DeleteFunction",
        "lambda:ListAliases",
        "lambda:ListVersionsByFunction",
        "s3:GetObject",
        "s3:ListBucket",
        "codedeploy:GetDeployment",
        "codedeploy:ListDeployments",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "kms:Decrypt",  # the registry alias object, where the registry has a customer key
    }, every_action
    if "DecryptRegistry" in statements:
        assert actions_of(statements["DecryptRegistry"]) == ["kms:Decrypt"]
        assert env != "dev"  # dev's registry is SSE-S3 (registry.kms false)


def test_its_code_is_the_kernel_and_its_handler_and_imports_without_third_party_packages(
    lambda_python: str,
) -> None:
    # Given the pruner's code folder as the stack ships it
    code = pruner_code()
    shipped = sorted(str(p.relative_to(code)) for p in code.rglob("*.py"))
    # Then it holds the kernel and the pruner's handler, and no inference or operator code
    assert "lambdas/pruner/handler.py" in shipped and "sds/kernel/retention.py" in shipped
    assert not [p for p in shipped if p.startswith(("lambdas/inference", "sds/ops", "sds/cli"))]
    # And the handler imports on Python 3.12 with nothing but the folder (boto3 is imported
    # when it runs, from the Lambda runtime); -B: bytecode written into the folder would change
    # the asset every later synth ships
    probe = subprocess.run(
        [
            lambda_python,
            "-I",
            "-S",
            "-B",
            "-c",
            f"import sys; sys.path[:0] = [{str(code)!r}]; import lambdas.pruner.handler",
        ],
        cwd=code,
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert Path(code).name == pruner_code().name  # same sources, same folder (no rebuild)
    assert not list(code.rglob("__pycache__"))  # the folder is still what the stack ships
