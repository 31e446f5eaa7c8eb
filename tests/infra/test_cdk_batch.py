"""The Batch stack in every environment: the state machine (two Distributed Maps), the batch
function from the inference bundle, what each may touch, and its discovery parameter."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sds.kernel.batch.settings import batch_environment
from sds.kernel.discovery import parameter_name
from stacks.components.batch_runs import HANDLER
from tests.infra.infra_helpers import (
    actions_of,
    model_function,
    one,
    resource_text,
    resources,
    role_statements,
)
from tests.infra.synth import VARIANT, SynthesizedApp

ENVIRONMENTS = ["dev", "staging", "prod", VARIANT]


def _definition(template: dict[str, Any]) -> dict[str, Any]:
    """The state machine's definition, each CloudFormation token replaced by a plausible value
    (so it parses, and another service can take it)."""
    _, machine = one(template, "AWS::StepFunctions::StateMachine")
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]

    def plausible(token: dict[str, Any]) -> str:
        text = json.dumps(token)
        if "Partition" in text:
            return "aws"
        if "Function" in text:
            return "arn:aws:lambda:us-east-1:123456789012:function:sds-batch"
        return "sds-dev-data-bucket"

    return json.loads("".join(p if isinstance(p, str) else plausible(p) for p in parts))


def _batch(synthesized: SynthesizedApp, env: str) -> dict[str, Any]:
    return synthesized.template(env, "Batch").to_json()


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_two_distributed_maps_shuffle_by_account_then_compute_the_parts(
    synthesized: SynthesizedApp, name: str
) -> None:
    settings = synthesized.project.env(name).infra.batch
    definition = _definition(_batch(synthesized, name))
    states = definition["States"]
    assert definition["StartAt"] == "Plan"
    # Plan, then shuffle (unless already done or finished), collect, compute, summarize
    assert [c["Next"] for c in states["AlreadyFinished"]["Choices"]] == ["Summarize", "Shuffle"]
    assert states["AlreadyFinished"]["Default"] == "Collect"
    assert states["Shuffle"]["Next"] == "Collect"
    assert states["PartsLeft"]["Choices"][0]["Next"] == "ComputeParts"
    assert states["ComputeParts"]["Next"] == "Summarize"
    for name, items_key, tolerated in (
        ("Shuffle", "$.plan.items_key", 0),
        ("ComputeParts", "$.collect.parts_key", settings.tolerated_failure_percent),
    ):
        mapped = states[name]
        # A Distributed Map over a JSON list on S3, each item a standard child execution
        assert mapped["Type"] == "Map"
        assert mapped["ItemProcessor"]["ProcessorConfig"] == {
            "Mode": "DISTRIBUTED",
            "ExecutionType": "STANDARD",
        }
        assert mapped["ItemReader"]["ReaderConfig"] == {"InputType": "JSON"}
        assert mapped["ItemReader"]["Parameters"]["Key.$"] == items_key
        # capped and tolerant as configured, every item's result written to S3
        assert mapped["MaxConcurrency"] == settings.max_concurrency
        # (absent is none tolerated: the service's default, and what CDK writes for 0)
        assert mapped.get("ToleratedFailurePercentage", 0) == tolerated
        assert mapped["ResultWriter"]["Parameters"]["Prefix.$"] == "$.plan.results_prefix"
        assert mapped["ResultWriter"]["Resource"] == "arn:aws:states:::s3:putObject"
        # and a failure beyond the tolerance is summarized (failed items named), then fails
        assert mapped["Catch"] == [
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "Summarize"}
        ]
        (task,) = mapped["ItemProcessor"]["States"].values()
        field = "item" if name == "Shuffle" else "part"
        assert task["Parameters"] == {
            "action.$": "$.action",
            "output.$": "$.output",
            f"{field}.$": f"$.{field}",
        }
        assert mapped["ItemSelector"][f"{field}.$"] == f"$$.Map.Item.Value.{field}"
        # throttling is retried, a failing item is not (it is reported)
        assert any("Lambda.TooManyRequestsException" in r["ErrorEquals"] for r in task["Retry"])
        assert not any("States.ALL" in r["ErrorEquals"] for r in task["Retry"])
    assert states["AnyMapFailed"]["Choices"][0] == {
        "Variable": "$.failure",
        "IsPresent": True,
        "Next": "TooManyFailures",
    }
    assert states["TooManyFailures"]["Type"] == "Fail"


def test_the_variant_s_concurrency_and_tolerance_come_from_its_config(
    synthesized: SynthesizedApp,
) -> None:
    states = _definition(_batch(synthesized, VARIANT))["States"]
    assert states["ComputeParts"]["MaxConcurrency"] == 7
    assert states["ComputeParts"]["ToleratedFailurePercentage"] == 5
    assert states["Shuffle"].get("ToleratedFailurePercentage", 0) == 0


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_the_state_machine_logs_and_traces_every_run_and_times_out(
    synthesized: SynthesizedApp, name: str
) -> None:
    _, machine = one(_batch(synthesized, name), "AWS::StepFunctions::StateMachine")
    props = machine["Properties"]
    assert props["StateMachineType"] == "STANDARD"
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert _definition(_batch(synthesized, name))["TimeoutSeconds"] == 24 * 3600


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_the_batch_function_is_the_inference_bundle_with_the_batch_entry_point(
    synthesized: SynthesizedApp, name: str
) -> None:
    template = _batch(synthesized, name)
    _, function = one(template, "AWS::Lambda::Function")
    _, inference = model_function(synthesized.template(name, "Inference").to_json())
    props = function["Properties"]
    settings = synthesized.project.env(name).infra.batch
    # The same asset (one build, one hash) as the inference function, another handler
    assert props["Code"] == inference["Properties"]["Code"]
    assert props["Architectures"] == inference["Properties"]["Architectures"]
    assert props["Handler"] == HANDLER == "lambdas.inference.batch.lambda_handler"
    assert props["Runtime"] == "python3.12"
    assert props["MemorySize"] == settings.memory_mb
    assert props["Timeout"] == settings.timeout_seconds
    assert props["EphemeralStorage"] == {"Size": settings.ephemeral_storage_mb}
    # Its settings are the contract's: every variable the handler parses
    variables = props["Environment"]["Variables"]
    assert set(variables) == set(
        batch_environment(
            model_name="m", registry_uri="r", environment="e", data_bucket="b", output_prefix="p"
        )
    )
    assert variables["OUTPUT_PREFIX"] == settings.output_prefix
    assert variables["ENVIRONMENT"] == name


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_the_batch_function_reads_history_and_writes_only_under_the_output_prefix(
    synthesized: SynthesizedApp, name: str
) -> None:
    template = _batch(synthesized, name)
    prefix = synthesized.project.env(name).infra.batch.output_prefix
    (role,) = [k for k in resources(template, "AWS::IAM::Role") if "FunctionRole" in k]
    found = role_statements(template, role)
    s3 = [s for s in found if any(a.startswith("s3:") for a in actions_of(s))]
    writes = [
        s for s in s3 if any(a != "s3:GetObject" and a != "s3:ListBucket" for a in actions_of(s))
    ]
    assert len(writes) == 1
    assert sorted(actions_of(writes[0])) == [
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
        "s3:PutObject",
    ]
    assert resource_text(writes[0]).endswith(f'/{prefix}*"]]}}')
    assert "TrainingDataBucketArn" in resource_text(writes[0])
    # Reads: the training-data bucket and this model's version objects, nothing else
    reads = sorted(resource_text(s) for s in s3 if s not in writes)
    assert len(reads) == 3
    assert any("RegistryBucketArn" in r and "/models/fraud/versions/*" in r for r in reads)
    others = {a for s in found for a in actions_of(s) if not a.startswith("s3:")}
    assert others <= {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    }, others


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_the_state_machine_touches_s3_only_under_the_output_prefix(
    synthesized: SynthesizedApp, name: str
) -> None:
    template = _batch(synthesized, name)
    prefix = synthesized.project.env(name).infra.batch.output_prefix
    (role,) = [k for k in resources(template, "AWS::IAM::Role") if "StateMachineRole" in k]
    found = role_statements(template, role)
    s3 = [s for s in found if any(a.startswith("s3:") for a in actions_of(s))]
    # CDK's own grants for the ItemReader and ResultWriter (every object of the bucket) are
    # not there: only the output prefix
    assert s3 and all(resource_text(s).endswith(f'/{prefix}*"]]}}') for s in s3), s3
    invokes = [s for s in found if "lambda:InvokeFunction" in actions_of(s)]
    (function,) = resources(template, "AWS::Lambda::Function")
    assert len(invokes) == 1 and function in resource_text(invokes[0])
    states = {a for s in found for a in actions_of(s) if a.startswith("states:")}
    assert states == {
        "states:StartExecution",
        "states:DescribeExecution",
        "states:StopExecution",
        "states:RedriveExecution",
    }


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_the_state_machine_is_published_for_the_cli(synthesized: SynthesizedApp, name: str) -> None:
    template = _batch(synthesized, name)
    (machine,) = resources(template, "AWS::StepFunctions::StateMachine")
    parameters = [p["Properties"] for p in resources(template, "AWS::SSM::Parameter").values()]
    assert {"Name": parameter_name(name, "batch-state-machine"), "Value": {"Ref": machine}} in [
        {"Name": p["Name"], "Value": p["Value"]} for p in parameters
    ]


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_the_batch_operator_policy_is_published_as_a_stack_output(
    synthesized: SynthesizedApp, name: str
) -> None:
    template = _batch(synthesized, name)
    (policy_id,) = resources(template, "AWS::IAM::ManagedPolicy")
    output = template["Outputs"]["BatchOperatorPolicyArn"]
    assert policy_id.startswith("BatchOperatorPolicy")
    assert output["Value"] == {"Ref": policy_id}
    assert output["Description"].startswith("Attach to ")
    policy = resources(template, "AWS::IAM::ManagedPolicy")[policy_id]
    assert policy["Properties"]["Description"].startswith(f"sds {name}: ")


def test_moto_s_step_functions_accepts_the_definition(
    synthesized: SynthesizedApp, moto_server: Any
) -> None:
    # Given the dev state machine's definition as CloudFormation would resolve it
    definition = _definition(_batch(synthesized, "dev"))
    sfn = moto_server.client("stepfunctions")
    iam = moto_server.client("iam")
    role = iam.create_role(
        RoleName="sds-batch-definition-check",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    # When it is created and described
    arn = sfn.create_state_machine(
        name="sds-dev-batch-check", definition=json.dumps(definition), roleArn=role
    )["stateMachineArn"]
    described = sfn.describe_state_machine(stateMachineArn=arn)
    # Then the service holds the same definition
    assert json.loads(described["definition"]) == definition
    sfn.delete_state_machine(stateMachineArn=arn)
    iam.delete_role(RoleName="sds-batch-definition-check")
