"""cdk-nag (AWS Solutions, Serverless, PCI DSS 3.2.1, NIST 800-53 rev 5) and cfn-lint over every
synthesized template, and what the acknowledgments' reasons say checked against the templates."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, TypeVar

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from cdk_nag import NagPack
from constructs import IConstruct

import app as cdk_app
from stacks.components import nag
from tests.infra.infra_helpers import (
    actions_of,
    resource_text,
    resources,
    role_statements,
    statements,
)
from tests.infra.synth import NagAudit, SynthesizedApp, cdk_context

T = TypeVar("T")


def _violations(pack: NagPack, synthesized: SynthesizedApp, env: str) -> list[str]:
    report = pack.validate_scope(synthesized.stages[env])
    return [
        f"{violation.rule_name} at {resource.construct_path}: {violation.description[:100]}"
        for violation in report.violations
        for resource in violation.violating_resources
    ]


@pytest.mark.parametrize("pack", ["PCI.DSS.321", "NIST.800.53.R5"])
def test_synth_fails_on_an_unacknowledged_compliance_finding(
    lock_file: Path, lambda_python: str, tmp_path: Path, pack: str
) -> None:
    # Given the app as app.py builds it, one environment only
    context = copy.deepcopy(cdk_context())
    context["environments"] = {"dev": context["environments"]["dev"]}
    app = cdk.App(context=context, outdir=str(tmp_path))
    cdk_app.build(app, lock_path=lock_file, lambda_python=lambda_python)
    # When someone adds a log group without acknowledging its encryption (no AWS Solutions or
    # Serverless rule looks at that)
    logs.LogGroup(cdk.Stack(app, "Rogue"), "Plain")
    # Then synthesis refuses, naming the compliance pack's rule
    with pytest.raises(
        Exception, match=rf"ValidationFailed(.|\n)*{re.escape(pack)}-CloudWatchLogGroupEncrypted"
    ):
        app.synth()


@pytest.mark.parametrize("pack_type", cdk_app.NAG_PACKS)
def test_cdk_nag_reports_nothing_unacknowledged(
    synthesized: SynthesizedApp, env: str, pack_type: type[NagPack]
) -> None:
    pack = pack_type(synthesized.app)
    assert _violations(pack, synthesized, env) == []


def test_cfn_lint_reports_no_errors_on_any_template(synthesized: SynthesizedApp) -> None:
    # Every stack (Registry, Training, Inference, Features, Batch) of every environment plus the
    # variant
    templates = sorted(synthesized.outdir.glob("assembly-*/*.template.json"))
    assert len(templates) == 5 * len(synthesized.stages) == 20
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(
        [str(cfn_lint), "--format", "parseable", *map(str, templates)],
        capture_output=True,
        text=True,
        check=False,
    )
    # Exit status is a bit mask: 2 = errors, 4 = warnings, 8 = informational; 1 = crash.
    errors = [line for line in result.stdout.splitlines() if ":E" in line]
    assert result.returncode & 3 == 0 and not errors, result.stdout + result.stderr


def test_every_finding_is_acknowledged_and_every_acknowledgment_is_still_needed(
    nag_audit: NagAudit,
) -> None:
    # Given every environment plus a variant using the options cdk.json does not (API key,
    # alarm e-mail, public training network, schedule), built without acknowledgments
    assert nag_audit.findings, "cdk-nag found nothing at all: is it still running?"
    # (every pack ran: each reported something to acknowledge)
    assert {rule.split("-")[0] for _, rule in nag_audit.findings} == {
        "AwsSolutions",
        "Serverless",
        "PCI.DSS.321",
        "NIST.800.53.R5",
    }
    # Then each finding has a matching acknowledgment on it or on a parent construct
    assert nag_audit.unacknowledged() == []
    # And no acknowledgment is stale (it would silently hide a future finding)
    assert nag_audit.stale() == []


# What an acknowledgment's reason says must hold for the resource it is on: a reviewer reads it
# instead of the template.


def _acknowledged(construct: IConstruct) -> dict[str, str]:
    """{finding: reason} acknowledged on `construct` itself (recorded as its metadata)."""
    return {
        key.split("::", 1)[1]: reason
        for entry in construct.node.metadata
        if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
        for key, reason in entry.data.items()
    }


def _logical_id(construct: IConstruct) -> str:
    default = construct.node.default_child
    assert isinstance(default, cdk.CfnElement), construct.node.path
    return cdk.Stack.of(construct).get_logical_id(default)


def _template(synthesized: SynthesizedApp, construct: IConstruct) -> dict[str, Any]:
    return synthesized.template(
        construct.node.scopes[1].node.id, cdk.Stack.of(construct).node.id
    ).to_json()


def _of_type(synthesized: SynthesizedApp, env: str, type_: type[T]) -> list[T]:
    return [c for c in synthesized.stages[env].node.find_all() if isinstance(c, type_)]


def _invokers(synthesized: SynthesizedApp, env: str, function: lambda_.Function) -> set[str]:
    """The roles and policies of `env` whose own statements may invoke `function`."""
    function_id = _logical_id(function)
    found = set()
    for stack in synthesized.stages[env].stacks:
        template = synthesized.template(env, stack.node.id).to_json()
        for holder, resource in template["Resources"].items():
            props = resource.get("Properties", {})
            documents = [props.get("PolicyDocument")]
            documents += [p["PolicyDocument"] for p in props.get("Policies", [])]
            for document in filter(None, documents):
                for statement in statements(document):
                    if "lambda:InvokeFunction" in actions_of(statement) and (
                        f'"{function_id}"' in resource_text(statement)
                    ):
                        found.add(holder)
    return found


# How the acknowledgments name the AWS APIs a function's role lets it call
_SERVICES = {
    "codedeploy": "CodeDeploy",
    "dynamodb": "DynamoDB",
    "ec2": "EC2",
    "ecs": "ECS",
    "lambda": "Lambda",
    "s3": "S3",
    "sqs": "SQS",
    "states": "Step Functions",
    "xray": "X-Ray",
}
# Granted for calls made on the function's behalf, not by its code: Lambda writes its logs, EC2
# associates an interface endpoint's private DNS zone (Route 53); KMS is only ever used through
# S3 or DynamoDB (kms:ViaService), checked below.
_ON_ITS_BEHALF = {"logs", "route53"}


def test_a_function_outside_a_vpc_names_every_api_it_calls_and_who_may_invoke_it(
    synthesized: SynthesizedApp, env: str
) -> None:
    functions = _of_type(synthesized, env, lambda_.Function)
    assert len(functions) >= 6
    for function in functions:
        reason = _acknowledged(function)[f"{nag.PCI_DSS_321}-LambdaInsideVPC"]
        template = _template(synthesized, function)
        called = set()
        for statement in role_statements(template, _logical_id(function.role)):
            for action in actions_of(statement):
                service = action.split(":", 1)[0]
                if service == "kms":
                    assert "kms:ViaService" in json.dumps(statement["Condition"]), statement
                elif service not in _ON_ITS_BEHALF:
                    called.add(_SERVICES[service])
        # Then its acknowledgment names every AWS API its role lets it call
        assert [s for s in sorted(called) if s not in reason] == [], function.node.path
        # And it does not claim its resource policy alone decides who invokes it when roles of
        # this account may, through their own policies
        if _invokers(synthesized, env, function):
            assert "lambda:InvokeFunction" in reason, (function.node.path, reason)


# Who, besides API Gateway, invokes the inference function's versions, as its reasons name them
_INFERENCE_INVOKERS = {"ActivationHookRole": "activation hook", "PromoterPolicy": "rollback"}


def test_the_inference_functions_dead_letter_reason_names_everyone_who_invokes_it(
    synthesized: SynthesizedApp, env: str
) -> None:
    (function,) = [
        f
        for f in _of_type(synthesized, env, lambda_.Function)
        if f.node.path.endswith("/Model/Function")
    ]
    # Given who may invoke it: API Gateway (its resource policy) and the roles whose policies say
    invokers = _invokers(synthesized, env, function)
    named = {key for key in _INFERENCE_INVOKERS for holder in invokers if holder.startswith(key)}
    assert named == set(_INFERENCE_INVOKERS), invokers
    assert all(holder.startswith(tuple(_INFERENCE_INVOKERS)) for holder in invokers), invokers
    # Then the reasons for no dead-letter queue name them all (each invokes synchronously)
    acknowledged = _acknowledged(function)
    for finding in ("Serverless-LambdaDLQ", f"{nag.NIST_800_53_R5}-LambdaDLQ"):
        reason = acknowledged[finding]
        for who in ("API Gateway", *_INFERENCE_INVOKERS.values()):
            assert who in reason, (finding, who, reason)


def test_what_an_acknowledgment_says_of_a_bucket_holds_for_it(
    synthesized: SynthesizedApp, env: str
) -> None:
    checked = 0
    for bucket in _of_type(synthesized, env, s3.Bucket):
        template = _template(synthesized, bucket)
        bucket_id = _logical_id(bucket)
        kept = template["Resources"][bucket_id].get("DeletionPolicy", "Delete") == "Retain"
        denied = [
            s
            for policy in resources(template, "AWS::S3::BucketPolicy").values()
            if policy["Properties"]["Bucket"] == {"Ref": bucket_id}
            for s in statements(policy["Properties"]["PolicyDocument"])
            if s["Effect"] == "Deny" and "s3:DeleteObject" in actions_of(s)
        ]
        for finding, reason in _acknowledged(bucket).items():
            if "retained when its stack is deleted" in reason:
                assert kept, (bucket.node.path, finding)
                checked += 1
            if "deleted with its stack" in reason:
                assert not kept, (bucket.node.path, finding)
                checked += 1
            if "refuses deletes" in reason:
                assert denied, (bucket.node.path, finding)
                checked += 1
    assert checked >= 3
