"""Least privilege, asserted on the synthesized templates of every environment (and a variant).

Given the CDK app synthesized for dev, staging, prod and a variant with the optional features on,
when every IAM statement, bucket policy, API method and storage resource is read back from the
templates, then: every API method requires authorization; the function can only read version
objects (and decrypt, never encrypt); training can never touch an alias or delete; only the
environment's promoter policy can move its aliases and switch its Lambda alias; each operator
policy (promoter, promotion source, training operator, data reader, batch operator) holds exactly
its actions,
on its own environment's resources, and the read-only ones never write; the only deletions
outside dev are the pruner's, of its own function's published versions, and the retention
role's, of the registry's objects; no statement allows a
wildcard action, and every wildcard resource carries a cdk-nag acknowledgment on the construct
that holds it; storage is encrypted and reachable over TLS only; the inference role can never
read training data.

And the policies grant what the commands need: each command runs against the moto server with
every AWS call it makes recorded (`operator_calls`), and every call, with what it implies
(KMS for encrypted objects, PassRole for the task's roles), must be allowed by the policy of the
role that runs it; a command that starts calling something its policy does not grant fails here.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lambdas.inference.batch import RESULTS
from sds.kernel.batch.run import MANIFEST
from sds.kernel.registry import Registry, Version, open_registry
from sds.kernel.registry.s3 import S3Store
from stacks.components.nag import _render
from tests.security.operator_calls import (
    MODEL,
    Call,
    Deployed,
    Request,
    Resolver,
    World,
    deploy,
    policy_statements,
    private_client,
    recording,
    refused,
    requests_of,
)
from tests.security.security_report import record
from tests.security.security_templates import ROOT, VARIANT, AuditedApp, Statement
from training.data import read_history, write_jsonl
from training.synthetic import generate_activity
from training.train import STEPS, Progress, TrainParams, build_parser, train

WRITE_OR_DELETE = ("s3:Put", "s3:Delete", "s3:Copy", "s3:Replicate", "s3:Restore", "s3:Abort")
AUTO_DELETE_PROVIDER = "CustomS3AutoDeleteObjectsCustomResourceProviderRole"
REGISTRY_BUCKET = "RegistryBucket9C3667AF"


def _batch_output(app: AuditedApp, env: str) -> str:
    """The objects an environment's batch runs write, rendered as `rendered` renders them."""
    bucket = {
        "Fn::GetStackOutput": {
            "StackName": f"{env}-Registry",
            "OutputName": "TrainingDataBucketArn",
        }
    }
    return _render({"Fn::Join": ["", [bucket, f"/{app.batch_output[env]}*"]]})


def rendered(statement: Statement) -> list[str]:
    return [_render(resource) for resource in statement.resources]


def by_role(app: AuditedApp, env: str, role_prefix: str) -> list[Statement]:
    """Allow statements of the role policies whose role logical id starts with `role_prefix`."""
    return [
        s
        for s in app.statements()
        if s.env == env and s.allows and s.kind == "role policy" and role_prefix in s.holder
    ]


def test_every_environment_is_audited(audited_app: AuditedApp) -> None:
    assert audited_app.environments == ["dev", "prod", "staging", "variant"]
    record("least privilege: audited", "environments", len(audited_app.environments))
    record("least privilege: audited", "templates", len(audited_app.templates))
    record(
        "least privilege: audited",
        "IAM and bucket-policy statements",
        len(audited_app.statements()),
    )


def test_every_api_method_requires_authorization(audited_app: AuditedApp) -> None:
    methods = list(audited_app.resources("AWS::ApiGateway::Method"))
    assert methods
    for env, _, logical_id, method in methods:
        props = method["Properties"]
        if audited_app.api_auth[env] == "iam":
            assert props["AuthorizationType"] == "AWS_IAM", (env, logical_id)
        else:
            assert props.get("ApiKeyRequired") is True, (env, logical_id)
    assert not list(audited_app.resources("AWS::Lambda::Url")), "a function URL bypasses the API"
    for env, _, logical_id, permission in audited_app.resources("AWS::Lambda::Permission"):
        props = permission["Properties"]
        # function -> the EventBridge rules allowed to invoke it
        scheduled = [
            rule
            for function, rule in (
                ("Pruner", "Pruner"),
                ("DriftMonitor", "DriftMonitor"),
                ("RunsLeaseFunction", "RunsSweep"),
            )
            if function in json.dumps(props["FunctionName"])
        ]
        if scheduled:
            # the pruner, the drift monitor and the training endpoints' lease function: each
            # invoked by its own EventBridge rules only (the pruner's schedule and finished
            # deployments, the monitor's schedule, the hourly sweep of leftover endpoints)
            assert props["Principal"] == "events.amazonaws.com", (env, logical_id)
            assert scheduled[0] in json.dumps(props["SourceArn"]), (env, logical_id)
            continue
        assert props["Principal"] == "apigateway.amazonaws.com", (env, logical_id)
        assert "execute-api" in json.dumps(props["SourceArn"]), (env, logical_id)
    record("least privilege: audited", "API methods, all authorized", len(methods))


@pytest.mark.parametrize("env", ["dev", "staging", "prod", "variant"])
def test_the_function_can_only_read_version_objects_and_the_feature_table(
    audited_app: AuditedApp, env: str
) -> None:
    statements = by_role(audited_app, env, "ModelRole")
    s3 = [s for s in statements if any(a.startswith("s3:") for a in s.actions)]
    assert len(s3) == 1
    assert s3[0].actions == ["s3:GetObject"]
    assert rendered(s3[0]) == [
        f'{{"Fn::GetStackOutput":{{"StackName":"{env}-Registry","OutputName":"RegistryBucketArn"}}}}'
        "/models/fraud/versions/*"
    ]
    others = {a for s in statements for a in s.actions if not a.startswith("s3:")}
    assert others <= {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "kms:Decrypt",
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
    }, others
    # The account aggregates: read only, the environment's feature table only
    for statement in statements:
        if any(a.startswith("dynamodb:") for a in statement.actions):
            assert sorted(statement.actions) == ["dynamodb:BatchGetItem", "dynamodb:GetItem"]
            (table,) = rendered(statement)
            assert table.endswith(
                f'{{"Fn::GetStackOutput":{{"StackName":"{env}-Registry",'
                '"OutputName":"FeatureTableName"}}'
            ), table
    # Decrypting (never encrypting) is for registry objects (through S3) and the feature table
    # (through DynamoDB) only
    for statement in statements:
        if "kms:Decrypt" in statement.actions:
            assert statement.actions == ["kms:Decrypt"]
            contexts = json.dumps(statement.document["Condition"])
            assert "TrainingData" not in contexts
            assert "kms:ViaService" in contexts
            assert '"OutputName": "RegistryBucketArn"' in contexts or (
                '"OutputName": "FeatureTableName"' in contexts
                and "aws:dynamodb:tableName" in contexts
            ), contexts


@pytest.mark.parametrize("env", ["dev", "staging", "prod", "variant"])
def test_training_cannot_write_aliases_or_delete_anything(
    audited_app: AuditedApp, env: str
) -> None:
    statements = by_role(audited_app, env, "JobTaskRole")
    assert statements
    for statement in statements:
        for action in statement.actions:
            assert "Delete" not in action and "*" not in action, action
        writes = [a for a in statement.actions if a.startswith(WRITE_OR_DELETE)]
        for resource in rendered(statement):
            if writes:
                assert resource.endswith(("/models/fraud/versions/*", "/models/fraud/events/*")), (
                    resource
                )
            assert "/aliases/" not in resource
    assert not [
        s for s in by_role(audited_app, env, "JobTaskRole") if "lambda:" in json.dumps(s.actions)
    ]


def test_only_the_promoter_policy_moves_aliases_and_switches_the_lambda_alias(
    audited_app: AuditedApp,
) -> None:
    movers: list[tuple[str, str, str]] = []
    for statement in audited_app.statements():
        if not statement.allows:
            continue
        puts_aliases = any(a in ("s3:PutObject", "s3:*", "*") for a in statement.actions) and any(
            "/aliases/" in r
            or (
                r.endswith(("/*", "*"))
                and "/versions/" not in r
                and "/events/" not in r
                and "/training-data/" not in r
                and "/registry/" not in r
                # the batch runs' outputs, in the training-data bucket (no alias is there)
                and r != _batch_output(audited_app, statement.env)
                # the captures bucket's prefixes (Firehose's deliveries and its access logs)
                and "/captures/" not in r
                and "/labels/" not in r
            )
            for r in rendered(statement)
        )
        updates_alias = any(a in ("lambda:UpdateAlias", "lambda:*", "*") for a in statement.actions)
        if puts_aliases or updates_alias:
            movers.append((statement.env, statement.kind, statement.logical_id))
    expected = {
        (env, "managed policy", "PromoterPolicyE707AE28") for env in audited_app.environments
    }
    # Besides, CodeDeploy shifts live during a deployment, with its deployment group's role: the
    # aliases of that environment's inference function only, never a registry alias
    codedeploy = {m for m in movers if m[2].startswith("DeploymentServiceRole")}
    assert {env for env, _, _ in codedeploy} == set(audited_app.environments), movers
    for statement in audited_app.statements():
        if statement.logical_id.startswith("DeploymentServiceRole"):
            if "lambda:UpdateAlias" in statement.actions:
                assert [_render(r) for r in statement.resources] == [
                    "<ModelFunction0EAFA5DC.Arn>",
                    "<ModelFunction0EAFA5DC.Arn>:*",
                ], statement
            assert not any(a.startswith("s3:") for a in statement.actions), statement
    assert set(movers) - codedeploy == expected, movers
    # Each environment's managed policies reach that environment's registry and function only
    # (the training operator, above the chain start, also reads where its versions go).
    for statement in audited_app.statements():
        if statement.kind == "managed policy":
            text = json.dumps(statement.document)
            allowed = {statement.env}
            if statement.logical_id.startswith("OperatorPolicy"):
                allowed.add(audited_app.chain_start[statement.env])
            for other in audited_app.environments:
                if other not in allowed:
                    assert f'"{other}-Registry"' not in text and f"/sds/{other}/" not in text
            assert not any("Delete" in a for a in statement.actions), statement.actions
    record(
        "least privilege: audited",
        "policies that can move an alias (1 per env)",
        len(set(movers) - codedeploy),
    )
    record(
        "least privilege: audited",
        "CodeDeploy roles shifting their own function's live (1 per env)",
        len(codedeploy),
    )


def test_no_role_holds_an_aws_managed_policy_but_cdks_providers_their_logs(
    audited_app: AuditedApp,
) -> None:
    # An AWS managed policy is written for every account: AWSCodeDeployRoleForLambdaLimited, say,
    # updates the aliases of every function in it. Each role here states its own grants instead.
    for env, _, logical_id, role in audited_app.resources("AWS::IAM::Role"):
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            found = re.search(r"policy/(?:service-role/)?([A-Za-z0-9-]+)", json.dumps(arn))
            assert found, arn
            # CDK's own custom-resource providers: writing their logs only
            assert found.group(1) == "AWSLambdaBasicExecutionRole", (env, logical_id, arn)
            assert logical_id.startswith("Custom"), (env, logical_id)
    assert not [f for _, f in audited_app.acknowledged if f.startswith("AwsSolutions-IAM4")]


def test_no_wildcard_action_and_every_wildcard_resource_is_acknowledged(
    audited_app: AuditedApp,
) -> None:
    unacknowledged: list[str] = []
    exceptions = 0
    for statement in audited_app.statements():
        if not statement.allows:
            continue  # Deny statements (TLS-only) may be as broad as they like
        if statement.kind == "bucket policy":
            # CDK's auto-delete-objects provider empties the bucket when a stack that does not
            # retain data is destroyed; nothing else gets a bucket-policy grant but S3 logging.
            if AUTO_DELETE_PROVIDER in statement.holder:
                assert audited_app.destroyable[statement.env], statement
                exceptions += 1
                continue
            assert statement.holder == '{"Service": "logging.s3.amazonaws.com"}', statement
            assert statement.actions == ["s3:PutObject"]
            continue
        for action in statement.actions:
            if "*" in action:
                unacknowledged.append(f"{statement.path}: action {action}")
        for resource in rendered(statement):
            if "*" not in resource:
                continue
            finding = f"AwsSolutions-IAM5[Resource::{resource}]"
            owners = [path for path, f in audited_app.acknowledged if f == finding]
            if not any(statement.path.startswith(path + "/") for path in owners):
                unacknowledged.append(f"{statement.path}: resource {resource}")
    assert unacknowledged == []
    record(
        "least privilege: audited",
        "auto-delete grants (buckets destroyed with their stack)",
        exceptions,
    )


def test_only_the_pruner_the_retention_role_and_dev_like_teardown_can_delete(
    audited_app: AuditedApp,
) -> None:
    pruners = retention = updaters = batch = leases = 0
    for statement in audited_app.statements():
        if statement.allows and any("Delete" in a for a in statement.actions):
            if "RunsFunctionRole" in statement.holder:
                # The batch function deletes its own runs' work files: only under the batch
                # output prefix of the training-data bucket, never the history or a registry
                assert rendered(statement) == [_batch_output(audited_app, statement.env)]
                assert "s3:DeleteObject" in statement.actions, statement
                batch += 1
                continue
            if "RunsStateMachineRole" in statement.holder:
                # Step Functions' vended log delivery (its own logs): no data is deleted
                assert [a for a in statement.actions if "Delete" in a] == [
                    "logs:DeleteLogDelivery"
                ], statement
                continue
            if "RunsLeaseRole" in statement.holder:
                # The training endpoints' lease function deletes interface endpoints carrying
                # its environment's tag only (the ones its leases created)
                assert statement.actions == ["ec2:DeleteVpcEndpoints"], statement
                assert statement.document["Condition"] == {
                    "StringEquals": {"aws:ResourceTag/sds:training-endpoints": statement.env}
                }, statement
                leases += 1
                continue
            if "ProtectionRetentionRole" in statement.holder:
                # The one deliberate way to remove registry objects: this model's only
                assert rendered(statement) == [f"<{REGISTRY_BUCKET}.Arn>/models/fraud/*"], statement
                retention += 1
                continue
            if "PrunerRole" in statement.holder:
                # The pruner deletes published versions of its own environment's inference
                # function (qualified ARNs), never the function (unqualified) or anything else.
                assert statement.actions == ["lambda:DeleteFunction"], statement
                assert [_render(r) for r in statement.resources] == [
                    "<ModelFunction0EAFA5DC.Arn>:*"
                ], statement
                pruners += 1
                continue
            if "UpdaterRole" in statement.holder:
                # The feature updater consumes its own queue: a message it applied is deleted
                deletes = [a for a in statement.actions if "Delete" in a]
                assert deletes == ["sqs:DeleteMessage"], statement
                assert [_render(r) for r in statement.resources] == ["<UpdaterQueueA27DF372.Arn>"]
                updaters += 1
                continue
            assert audited_app.destroyable[statement.env], statement
            assert AUTO_DELETE_PROVIDER in statement.holder, statement
    assert pruners == retention == updaters == batch == len(audited_app.environments)
    assert leases == sum(audited_app.leased_endpoints.values()) >= 1
    # And in the shipped environments nothing can ever empty a registry or training-data bucket
    for statement in audited_app.statements():
        if statement.env != VARIANT and AUTO_DELETE_PROVIDER in statement.holder:
            assert statement.logical_id.startswith("RegistryAccessLogsPolicy"), statement


def test_storage_is_encrypted_private_and_tls_only(audited_app: AuditedApp) -> None:
    policies: dict[tuple[str, str], dict[str, Any]] = {}
    for env, stack, _, policy in audited_app.resources("AWS::S3::BucketPolicy"):
        policies[(env, stack, json.dumps(policy["Properties"]["Bucket"]))] = policy["Properties"]
    buckets = list(audited_app.resources("AWS::S3::Bucket"))
    for env, stack, logical_id, bucket in buckets:
        props = bucket["Properties"]
        rules = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, (env, logical_id)
        policy = policies[(env, stack, json.dumps({"Ref": logical_id}))]
        statements = policy["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny"
            and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            and s["Action"] == "s3:*"
            for s in statements
        ), (env, logical_id)
    topics = list(audited_app.resources("AWS::SNS::Topic"))
    for env, _, logical_id, _topic in topics:
        tls = [
            p
            for _, _, _, p in audited_app.resources("AWS::SNS::TopicPolicy")
            if {"Ref": logical_id} in p["Properties"]["Topics"]
        ]
        document = json.dumps(tls[0]["Properties"]["PolicyDocument"]) if tls else ""
        assert '"aws:SecureTransport": "false"' in document, (env, logical_id)
    for _env, _, _id, function in audited_app.resources("AWS::Lambda::Function"):
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        for name in variables:
            assert not any(s in name.upper() for s in ("SECRET", "PASSWORD", "TOKEN")), name
    record("least privilege: audited", "buckets encrypted + TLS-only", len(buckets))
    record("least privilege: audited", "SNS topics TLS-only", len(topics))


# --- Operator policies: one per role a person or pipeline plays ----------------------------

ENVIRONMENTS = ["dev", "staging", "prod", "variant"]
READ_ONLY = (
    "s3:GetObject",
    "s3:ListBucket",
    "ssm:GetParameter",
    "ssm:GetParameters",
    "kms:Decrypt",
)
# The exact actions of each operator policy, statement by statement (Sid), without the KMS
# statement that environments with an encrypted registry add (checked below).
OPERATOR_POLICIES: dict[str, tuple[str, str, dict[str, list[str]], tuple[str, list[str]]]] = {
    "promoter": (
        "Inference",
        "PromoterPolicy",
        {
            "MoveAliases": ["s3:GetObject", "s3:PutObject"],
            "CopyAndReadVersions": ["s3:GetObject", "s3:PutObject"],
            "AuditEvents": ["s3:GetObject", "s3:PutObject"],
            "ListModel": ["s3:ListBucket"],
            "SwitchLiveAlias": [
                "lambda:GetAlias",
                "lambda:GetFunctionConfiguration",
                "lambda:InvokeFunction",  # wakes an Inactive SnapStart target before switching
                "lambda:ListVersionsByFunction",
                "lambda:UpdateAlias",
            ],
            "StopDeployments": [
                "codedeploy:GetDeployment",
                "codedeploy:ListDeployments",
                "codedeploy:StopDeployment",
            ],
            "Discover": ["ssm:GetParameter", "ssm:GetParameters"],
        },
        ("UseRegistryKey", ["kms:Decrypt", "kms:GenerateDataKey"]),
    ),
    "promotion source": (
        "Inference",
        "PromotionSourcePolicy",
        {
            "ReadVersionsAliasesAndEvents": ["s3:GetObject"],
            "ListModel": ["s3:ListBucket"],
            "Discover": ["ssm:GetParameter", "ssm:GetParameters"],
        },
        ("DecryptRegistry", ["kms:Decrypt"]),
    ),
    "training operator": (
        "Training",
        "OperatorPolicy",
        {
            # (where the endpoints are leased per run: StartTrainingRun, FollowTrainingRuns)
            "RunTrainingTask": ["ecs:RunTask"],
            "PassTaskRoles": ["iam:PassRole"],
            "FindStartedTasks": ["ecs:ListTasks"],
            "ReadTaskDefinition": ["ecs:DescribeTaskDefinition"],
            "WatchAndStopTasks": ["ecs:DescribeTasks", "ecs:StopTask"],
            "ReadTaskLogs": [
                "logs:DescribeLogStreams",
                "logs:FilterLogEvents",
                "logs:GetLogEvents",
            ],
            "ReadVersions": ["s3:GetObject"],
            "ListModel": ["s3:ListBucket"],
            "Discover": ["ssm:GetParameter", "ssm:GetParameters"],
        },
        ("DecryptRegistry", ["kms:Decrypt"]),
    ),
    "data reader": (
        "Training",
        "DataReaderPolicy",
        {"ReadTrainingData": ["s3:GetObject"], "ListTrainingData": ["s3:ListBucket"]},
        ("DecryptTrainingData", ["kms:Decrypt"]),
    ),
    "batch operator": (
        "Batch",
        "BatchOperatorPolicy",
        {
            "StartBatchRuns": ["states:ListExecutions", "states:StartExecution"],
            "FollowBatchRuns": [
                "states:DescribeExecution",
                "states:ListMapRuns",
                "states:StopExecution",
            ],
            "FollowBatchMaps": ["states:DescribeMapRun"],
            "ReadBatchOutputs": ["s3:GetObject"],
            "ListBatchOutputs": ["s3:ListBucket"],
            "ReadVersions": ["s3:GetObject"],
            "ListModel": ["s3:ListBucket"],
            "Discover": ["ssm:GetParameter", "ssm:GetParameters"],
        },
        ("DecryptOutputsAndRegistry", ["kms:Decrypt"]),
    ),
}
# The buckets whose objects each operator policy may decrypt (through S3), by stack output.
DECRYPTS = {
    "data reader": {"TrainingDataBucketArn"},
    "batch operator": {"TrainingDataBucketArn", "RegistryBucketArn"},
}


# What the training operator holds instead of RunTask and PassRole where the interface
# endpoints are leased per run (infra.network.endpoints: during_runs)
LEASED_RUNS = {
    "StartTrainingRun": ["states:StartExecution"],
    "FollowTrainingRuns": [
        "states:DescribeExecution",
        "states:GetExecutionHistory",
        "states:StopExecution",
    ],
}


def operator_policy(audited_app: AuditedApp, env: str, role: str) -> list[Statement]:
    stack, prefix, _, _ = OPERATOR_POLICIES[role]
    found = [
        s
        for s in audited_app.statements()
        if s.env == env
        and s.stack == stack
        and s.kind == "managed policy"
        and s.logical_id.startswith(prefix)
    ]
    assert len({s.logical_id for s in found}) == 1, (env, role)
    return found


@pytest.mark.parametrize("role", sorted(OPERATOR_POLICIES))
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_operator_policy_holds_exactly_its_actions_on_its_own_environment(
    audited_app: AuditedApp, env: str, role: str
) -> None:
    # Given one environment's policy for one role
    _, _, expected, (kms_sid, kms_actions) = OPERATOR_POLICIES[role]
    statements = operator_policy(audited_app, env, role)
    start = audited_app.chain_start[env]
    # The training operator reads versions where they are allocated: above the chain start,
    # the chain start's registry (and discovery parameters), with that registry's key if any
    reads_from = start if role == "training operator" else env
    if audited_app.kms[reads_from]:
        expected = {**expected, kms_sid: kms_actions}
    if role == "training operator" and audited_app.leased_endpoints[env]:
        # a run is an execution of the state machine; the task is never started directly
        direct = ("RunTrainingTask", "PassTaskRoles", "FindStartedTasks")
        expected = {sid: a for sid, a in expected.items() if sid not in direct} | LEASED_RUNS
    # Then it holds exactly the expected actions, statement by statement, all Allow, no wildcard
    assert {s.document["Sid"]: sorted(s.actions) for s in statements} == expected
    for statement in statements:
        assert statement.allows
        assert not [a for a in statement.actions if "*" in a or "Delete" in a]
        # on this environment's resources only
        text = json.dumps(statement.document)
        for other in ENVIRONMENTS:
            if other not in (env, reads_from):
                assert f'"{other}-Registry"' not in text and f"/sds/{other}/" not in text
        # and "*" only where the action has no resource-level permissions (ListTasks has them on
        # container instances only, which Fargate tasks have none of: its condition names the
        # cluster, checked below)
        if "*" in statement.resources:
            assert statement.actions in (["ecs:DescribeTaskDefinition"], ["ecs:ListTasks"])
        # listing only under a prefix: to such a caller S3 answers the read of a missing key
        # with 403, as `recording` plays it in the command tests below
        if "s3:ListBucket" in statement.actions:
            assert list(statement.document["Condition"]) == ["StringLike"]
            assert list(statement.document["Condition"]["StringLike"]) == ["s3:prefix"]
        # KMS only through S3, for the bucket the policy is about
        if statement.actions[0].startswith("kms:"):
            condition = statement.document["Condition"]
            assert set(condition) == {"StringEquals", "StringLike"}
            assert set(condition["StringEquals"]) == {"kms:ViaService"}
            buckets = DECRYPTS.get(role, {"RegistryBucketArn"})
            named = set()
            for context in condition["StringLike"]["kms:EncryptionContext:aws:s3:arn"]:
                (bucket,) = [b for b in buckets if f'"OutputName": "{b}"' in json.dumps(context)]
                named.add(bucket)
            assert named == buckets, named
    record("least privilege: operator policies", f"{role} (statements checked)", len(statements))


@pytest.mark.parametrize("role", ["promotion source", "data reader"])
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_read_only_policies_never_write(audited_app: AuditedApp, env: str, role: str) -> None:
    for statement in operator_policy(audited_app, env, role):
        assert set(statement.actions) <= set(READ_ONLY), statement.actions
        # reads of objects stay under this model's registry prefixes or the data prefix
        if "s3:GetObject" in statement.actions:
            for resource in rendered(statement):
                assert resource.endswith(
                    (
                        "/models/fraud/versions/*",
                        "/models/fraud/aliases/*",
                        "/models/fraud/events/*",
                        "/training-data/*",
                    )
                ), resource


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_training_operator_starts_only_its_task_and_passes_only_its_roles(
    audited_app: AuditedApp, env: str
) -> None:
    statements = {
        s.document["Sid"]: s for s in operator_policy(audited_app, env, "training operator")
    }
    template = audited_app.templates[(env, "Training")]["Resources"]
    (task_definition,) = [k for k, v in template.items() if v["Type"] == "AWS::ECS::TaskDefinition"]
    (cluster,) = [k for k, v in template.items() if v["Type"] == "AWS::ECS::Cluster"]
    task = template[task_definition]["Properties"]
    if audited_app.leased_endpoints[env]:
        # Where the endpoints are leased per run: start this environment's training run state
        # machine only, follow its executions only, and no RunTask or PassRole at all
        (machine,) = [
            k for k, v in template.items() if v["Type"] == "AWS::StepFunctions::StateMachine"
        ]
        assert statements["StartTrainingRun"].document["Resource"] == {"Ref": machine}
        assert rendered(statements["FollowTrainingRuns"]) == [
            f"arn:aws:states:us-east-1:<AWS::AccountId>:execution:<{machine}.Name>:*"
        ]
        assert not {"RunTrainingTask", "PassTaskRoles", "FindStartedTasks"} & set(statements)
    else:
        _runs_only_its_task(statements, task_definition, cluster, task)
    # Watching and stopping: tasks of this cluster only
    assert rendered(statements["WatchAndStopTasks"]) == [
        f"arn:aws:ecs:us-east-1:<AWS::AccountId>:task/<{cluster}>/*"
    ]
    # Logs: the task's own log group
    container = task["ContainerDefinitions"][0]
    group = container["LogConfiguration"]["Options"]["awslogs-group"]
    assert statements["ReadTaskLogs"].document["Resource"] == {"Fn::GetAtt": [group["Ref"], "Arn"]}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_batch_operator_runs_only_its_state_machine_and_reads_only_its_outputs(
    audited_app: AuditedApp, env: str
) -> None:
    statements = {s.document["Sid"]: s for s in operator_policy(audited_app, env, "batch operator")}
    template = audited_app.templates[(env, "Batch")]["Resources"]
    (machine,) = [k for k, v in template.items() if v["Type"] == "AWS::StepFunctions::StateMachine"]
    # This environment's batch state machine, its executions and map runs only
    assert statements["StartBatchRuns"].document["Resource"] == {"Ref": machine}
    assert rendered(statements["FollowBatchRuns"]) == [
        f"arn:aws:states:us-east-1:<AWS::AccountId>:execution:<{machine}.Name>:*"
    ]
    assert rendered(statements["FollowBatchMaps"]) == [
        f"arn:aws:states:us-east-1:<AWS::AccountId>:mapRun:<{machine}.Name>/*"
    ]
    # Reads (never writes) of the batch output prefix only, in the training-data bucket
    assert rendered(statements["ReadBatchOutputs"]) == [_batch_output(audited_app, env)]
    listing = statements["ListBatchOutputs"].document["Condition"]["StringLike"]["s3:prefix"]
    assert listing == [f"{audited_app.batch_output[env]}*"]
    assert rendered(statements["ReadVersions"])[0].endswith("/models/fraud/versions/*")
    for statement in statements.values():
        assert not [a for a in statement.actions if a.startswith(WRITE_OR_DELETE)]


def _runs_only_its_task(
    statements: dict[str, Statement], task_definition: str, cluster: str, task: dict[str, Any]
) -> None:
    # RunTask: this task definition (its current revision), in this cluster only
    run = statements["RunTrainingTask"].document
    assert run["Resource"] == {"Ref": task_definition}
    assert run["Condition"] == {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": [cluster, "Arn"]}}}
    # PassRole: the task's own two roles, and only to ECS tasks
    passing = statements["PassTaskRoles"].document
    assert sorted(map(json.dumps, passing["Resource"])) == sorted(
        map(json.dumps, [task["TaskRoleArn"], task["ExecutionRoleArn"]])
    )
    assert passing["Condition"] == {
        "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
    }
    # ListTasks: this cluster's tasks only (what an interrupted start's message runs)
    listing = statements["FindStartedTasks"].document
    assert listing["Condition"] == {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": [cluster, "Arn"]}}}


def test_the_inference_role_never_reaches_training_data(audited_app: AuditedApp) -> None:
    # Given every environment's statements
    for statement in audited_app.statements():
        text = json.dumps(statement.document)
        # Then nothing attached to the inference function names the training-data bucket,
        if "ModelRole" in statement.holder:
            assert "TrainingData" not in text, statement
        # and no bucket policy grants anyone but CDK's emptier (destroyable stacks) anything
        if statement.kind == "bucket policy" and statement.allows:
            assert statement.holder == '{"Service": "logging.s3.amazonaws.com"}' or (
                AUTO_DELETE_PROVIDER in statement.holder and audited_app.destroyable[statement.env]
            ), statement


# --- The policies grant what the commands call (recorded on the moto server) ----------------

ACTOR = "operator@ci"
GOOD_METRICS = {"roc_auc": 0.93, "pr_auc": 0.41, "expected_calibration_error": 0.01}


@dataclass
class Operator:
    """Runs the real `sds` entry point against the moto server (SDS_TARGET=aws)."""

    capsys: pytest.CaptureFixture[str]

    def __call__(self, *argv: str) -> tuple[int, str]:
        from sds.cli.main import main

        self.capsys.readouterr()
        code = main(list(argv))
        captured = self.capsys.readouterr()
        return code, captured.out + captured.err


@pytest.fixture
def operator(
    aws: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Operator:
    del aws  # the SDK points at the moto server by now
    monkeypatch.setenv("SDS_PROJECT_DIR", str(ROOT))
    monkeypatch.setenv("SDS_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("SDS_LOCK_FILE", str(tmp_path / "models.lock.json"))
    monkeypatch.setenv("SDS_ACTOR", ACTOR)
    monkeypatch.setenv("SDS_TARGET", "aws")
    for env in ("DEV", "STAGING", "PROD"):
        monkeypatch.delenv(f"SDS_REGISTRY_{env}", raising=False)
    return Operator(capsys)


def registry_of(bucket: str) -> Registry:
    """The test's own view of a registry (its calls are not recorded)."""
    return Registry(S3Store(bucket, client=private_client("s3")), MODEL)


def register(bucket: str, tag: str) -> Version:
    return registry_of(bucket).register(
        {"model.onnx": f"onnx {tag}".encode(), "model.skops": tag.encode()},
        {"metrics": GOOD_METRICS},
        actor=ACTOR,
    )


def make_live(bucket: str, alias: str, version: int) -> None:
    registry = registry_of(bucket)
    registry.move_alias(
        alias,
        version,
        expected=registry.get_alias(alias),
        kind="promoted",
        actor=ACTOR,
        reason="test setup",
    )


def statements_of(
    audited_app: AuditedApp,
    deployed: Deployed,
    stack: str,
    prefix: str,
    chain_start: Deployed | None = None,
) -> list[dict[str, Any]]:
    templates = audited_app.stack_templates(deployed.env)
    return policy_statements(templates, stack, prefix, Resolver(templates, deployed, chain_start))


def actions(requests: list[Request]) -> set[str]:
    return {r.action for r in requests}


def listed(requests: list[Request]) -> set[str]:
    """The prefixes the requests list (s3:ListBucket's s3:prefix)."""
    return {r.context["s3:prefix"] for r in requests if r.action == "s3:ListBucket"}


def test_promoting_up_the_chain_needs_the_targets_promoter_and_the_sources_read_only_policy(
    audited_app: AuditedApp, operator: Operator
) -> None:
    # Given dev, staging and prod deployed as the app builds them (staging and prod encrypt
    # their registry with a KMS key), and version 1 live in dev
    dev = deploy("dev", kms=audited_app.kms["dev"])
    staging = deploy("staging", kms=audited_app.kms["staging"], function=True)
    prod = deploy("prod", kms=audited_app.kms["prod"], function=True)
    world = World([dev, staging, prod])
    register(dev.registry_bucket, "one")
    make_live(dev.registry_bucket, "dev", 1)

    # When version 1 is promoted into staging, then into prod, every AWS call recorded
    with recording() as into_staging:
        code, output = operator("promote", "1", "--to", "staging", "--reason", "dev ok")
        assert code == 0, output
    with recording() as into_prod:
        code, output = operator("promote", "1", "--to", "prod", "--reason", "staging ok")
        assert code == 0, output

    # Then every call on the target is allowed by the target's promoter policy, and every call on
    # the source by the source's read-only promotion-source policy: no write access to the
    # source is needed
    promoter = {
        e.env: statements_of(audited_app, e, "Inference", "PromoterPolicy") for e in (staging, prod)
    }
    source = {
        e.env: statements_of(audited_app, e, "Inference", "PromotionSourcePolicy")
        for e in (dev, staging)
    }
    to_staging = requests_of(into_staging, world)
    to_prod = requests_of(into_prod, world)
    assert refused(to_staging, {"staging": promoter["staging"], "dev": source["dev"]}, world) == []
    assert refused(to_prod, {"prod": promoter["prod"], "staging": source["staging"]}, world) == []
    # (nothing was promoted to staging or prod before: S3 refused the read of each alias, and
    # listing exactly its key, which the promoter policy allows, said that it does not exist)
    assert f"models/{MODEL}/aliases/staging.json" in listed(to_staging)
    assert f"models/{MODEL}/aliases/prod.json" in listed(to_prod)
    for requests, source_env in ((to_staging, "dev"), (to_prod, "staging")):
        on_source = [r for r in requests if world.owner(r) == source_env]
        assert actions(on_source) >= {"s3:GetObject", "ssm:GetParameters"}
        assert not [r for r in on_source if r.action not in READ_ONLY], on_source
    # (the copy into the encrypted registries needed KMS, and the promoter policy grants it)
    assert {"kms:GenerateDataKey", "kms:Decrypt"} <= actions(to_prod)
    # And the checker does refuse: the target's calls are not the source policy's business
    assert refused(to_staging, {"staging": source["staging"], "dev": source["dev"]}, world)
    record("least privilege: commands", "promote: AWS calls checked", len(into_staging + into_prod))


def test_rolling_back_on_aws_needs_only_the_promoter_policy(
    audited_app: AuditedApp, operator: Operator
) -> None:
    # Given prod deployed with two models served one after the other by two published Lambda
    # versions, alias live on the second
    prod = deploy("prod", kms=audited_app.kms["prod"], function=True)
    world = World([prod])
    lambda_client = private_client("lambda")
    published = []
    for tag in ("one", "two"):
        model = register(prod.registry_bucket, tag)
        make_live(prod.registry_bucket, "prod", model.number)
        lambda_client.update_function_configuration(
            FunctionName=prod.function,
            Environment={
                "Variables": {
                    "MODEL_NAME": MODEL,
                    "ENVIRONMENT": "prod",
                    "MODEL_VERSION": str(model.number),
                    "MODEL_SHA256": model.sha256,
                }
            },
        )
        published.append(lambda_client.publish_version(FunctionName=prod.function)["Version"])
    lambda_client.create_alias(
        FunctionName=prod.function, Name="live", FunctionVersion=published[1]
    )

    # When an operator rolls prod back, every AWS call recorded
    with recording() as calls:
        code, output = operator("rollback", "--env", "prod", "--reason", "alarm on fraud rate")
        assert code == 0, output

    # Then prod's promoter policy allows every one of them
    requests = requests_of(calls, world)
    promoter = statements_of(audited_app, prod, "Inference", "PromoterPolicy")
    assert refused(requests, {"prod": promoter}, world) == []
    assert {"lambda:UpdateAlias", "codedeploy:ListDeployments", "s3:PutObject"} <= actions(requests)
    # (including the listing of the rollback lease's key: nobody held it before, and S3 refused
    # the read of it)
    assert f"models/{MODEL}/aliases/prod.lease" in listed(requests)
    # And without its Lambda statement the rollback could not switch live
    without = [s for s in promoter if s.get("Sid") != "SwitchLiveAlias"]
    assert any("lambda:UpdateAlias" in line for line in refused(requests, {"prod": without}, world))
    record("least privilege: commands", "rollback: AWS calls checked", len(calls))


def play_the_container(
    deployed: Deployed, calls: list[Call], *, registry: Deployed | None = None
) -> threading.Thread:
    """moto's ECS runs no container: once the task is started (by the CLI, or by the state
    machine the CLI started), register a version in `registry` (where the task registers; the
    environment's own by default) as the task would, then stop the task. Its own calls are not
    recorded: they are the task role's, not the operator's."""
    ecs = private_client("ecs")

    def container() -> None:
        deadline = time.monotonic() + 20
        while not (tasks := ecs.list_tasks(cluster=deployed.cluster)["taskArns"]):
            assert time.monotonic() < deadline, "no task was started"
            time.sleep(0.05)
        started = [c for c in list(calls) if c.operation in ("RunTask", "StartExecution")]
        if started[0].operation == "RunTask":
            (override,) = started[0].params["overrides"]["containerOverrides"]
            command = override["command"]
        else:
            command = json.loads(started[0].params["input"])["command"]
        registry_of((registry or deployed).registry_bucket).register(
            {"model.onnx": b"trained on fargate"},
            # the run id the CLI passes finds the version the task registered
            {"metrics": GOOD_METRICS, "run_id": build_parser().parse_args(command).run_id},
            actor="the training task",
        )
        ecs.stop_task(cluster=deployed.cluster, task=tasks[0], reason="Essential container exited")

    thread = threading.Thread(target=container, daemon=True)
    thread.start()
    return thread


def test_training_on_fargate_needs_only_the_training_operator_policy(
    audited_app: AuditedApp, operator: Operator, aws: Any
) -> None:
    # Given dev's training stack deployed (cluster, task definition with its two roles)
    dev = deploy("dev", kms=audited_app.kms["dev"], training=True)
    world = World([dev])
    aws.hold_state("ecs::task")  # the container below stops the task itself

    # When an operator trains on Fargate, every AWS call recorded
    with recording() as calls:
        container = play_the_container(dev, calls)
        code, output = operator("train", "--env", "dev", "--on-fargate", "--reason", "weekly")
        container.join(timeout=30)
        assert code == 0, output

    # Then dev's training-operator policy allows every one of them, including the roles
    # RunTask hands to ECS
    requests = requests_of(calls, world)
    policy = statements_of(audited_app, dev, "Training", "OperatorPolicy")
    assert refused(requests, {"dev": policy, "*": policy}, world) == []
    assert {
        "ecs:DescribeTaskDefinition",
        "ecs:RunTask",
        "iam:PassRole",
        "ecs:DescribeTasks",
        "ssm:GetParameters",
        "s3:ListBucket",
        "s3:GetObject",
    } <= actions(requests)
    # And without PassTaskRoles, RunTask would be refused for the task's roles
    without = [s for s in policy if s.get("Sid") != "PassTaskRoles"]
    problems = refused(requests, {"dev": without, "*": without}, world)
    assert [p for p in problems if "iam:PassRole" in p] and len(problems) == 2
    record("least privilege: commands", "train --on-fargate: AWS calls checked", len(calls))


class StateMachineRunsTheTask:
    """What the training run's state machine does for the CLI on AWS, which moto's Step
    Functions does not: when the CLI first reads the execution's history, the task has been
    started (by the state machine's role: not recorded, not the operator's call) with the
    execution's command and actor, and the history names it (a TaskSubmitted event)."""

    def __init__(self, deployed: Deployed, calls: list[Call]) -> None:
        self.deployed, self.calls, self.task = deployed, calls, ""

    def __call__(self, **_: Any) -> tuple[Any, dict[str, Any]]:
        if not self.task:
            (start,) = [c for c in list(self.calls) if c.operation == "StartExecution"]
            document = json.loads(start.params["input"])
            self.task = private_client("ecs").run_task(
                cluster=self.deployed.cluster,
                taskDefinition=self.deployed.task_definition_arn,
                launchType="FARGATE",
                networkConfiguration={
                    "awsvpcConfiguration": {
                        "subnets": self.deployed.parameters["training-subnets"].split(","),
                        "securityGroups": [self.deployed.parameters["training-security-group"]],
                    }
                },
                overrides={
                    "containerOverrides": [
                        {
                            "name": "train",
                            "command": document["command"],
                            "environment": [{"name": "SDS_ACTOR", "value": document["actor"]}],
                        }
                    ]
                },
            )["tasks"][0]["taskArn"]
        submitted = {
            "resourceType": "ecs",
            "resource": "runTask.sync",
            "output": json.dumps({"Tasks": [{"TaskArn": self.task}]}),
        }
        answer = {
            "events": [
                {"id": 1, "timestamp": 0, "type": "ExecutionStarted"},
                {"id": 2, "timestamp": 0, "type": "TaskSubmitted",
                 "taskSubmittedEventDetails": submitted},
            ]
        }  # fmt: skip
        return _Ok(), answer


class _Ok:
    status_code = 200


def test_training_through_the_state_machine_needs_only_the_training_operator_policy(
    audited_app: AuditedApp, operator: Operator, aws: Any
) -> None:
    # Given staging as committed (its endpoints leased per run, so a run is an execution of
    # its training run state machine), whose task registers in dev
    assert audited_app.leased_endpoints["staging"]
    dev = deploy("dev", kms=audited_app.kms["dev"])
    staging = deploy("staging", kms=audited_app.kms["staging"], training=True, training_runs=True)
    world = World([dev, staging])
    aws.hold_state("ecs::task")

    # When an operator trains staging on Fargate, every AWS call recorded
    with recording() as calls:
        import boto3

        machine = StateMachineRunsTheTask(staging, calls)
        boto3.DEFAULT_SESSION.events.register("before-call.sfn.GetExecutionHistory", machine)
        container = play_the_container(staging, calls, registry=dev)
        code, output = operator("train", "--env", "staging", "--on-fargate", "--reason", "weekly")
        container.join(timeout=30)
        assert code == 0, output

    # Then staging's training-operator policy allows every one of them: start the state
    # machine, read the execution's history, follow the task, find the version in dev
    requests = requests_of(calls, world)
    policy = statements_of(audited_app, staging, "Training", "OperatorPolicy", chain_start=dev)
    assert refused(requests, {"staging": policy, "dev": policy, "*": policy}, world) == []
    assert {
        "states:StartExecution",
        "states:GetExecutionHistory",
        "ecs:DescribeTaskDefinition",
        "ecs:DescribeTasks",
    } <= actions(requests)
    # And the operator itself never ran the task nor passed its roles
    assert not {"ecs:RunTask", "iam:PassRole"} & actions(requests)
    # And without StartTrainingRun the run could not start
    without = [s for s in policy if s.get("Sid") != "StartTrainingRun"]
    problems = refused(requests, {"staging": without, "dev": without, "*": without}, world)
    assert len(problems) == 1 and "states:StartExecution" in problems[0]
    record("least privilege: commands", "train --on-fargate (state machine): calls", len(calls))


def upload_history(bucket: str, tmp_path: Path, events: int = 3000) -> None:
    path = write_jsonl(generate_activity(events, seed=5), tmp_path / "history.jsonl.gz")
    private_client("s3").upload_file(str(path), bucket, "training-data/history.jsonl.gz")


def test_the_training_task_role_grants_what_training_calls(
    audited_app: AuditedApp, aws: Any, tmp_path: Path
) -> None:
    # Given staging (KMS-encrypted training data) with history uploaded, and dev, where the
    # promotion chain starts and every environment's task registers its versions
    del aws
    dev = deploy("dev", kms=audited_app.kms["dev"])
    staging = deploy("staging", kms=audited_app.kms["staging"])
    assert staging.key_arn is not None
    world = World([dev, staging])
    upload_history(staging.data_bucket, tmp_path)

    # When staging's container entry point trains on staging's data and registers in dev's
    # registry, every AWS call recorded
    with recording() as calls:
        version = train(
            data=f"s3://{staging.data_bucket}/training-data/",
            registry=open_registry(f"s3://{dev.registry_bucket}", MODEL),
            params=TrainParams(max_iter=10, seed=2),
            actor=ACTOR,
            reason="least privilege",
            progress=Progress(STEPS, enabled=False),
        )
    assert version.number == 1

    # Then staging's task role allows every one of them: read its data (decrypting it), list dev's
    # model prefix and register a version and its audit event there
    requests = requests_of(calls, world)
    role = statements_of(
        audited_app, staging, "Training", "JobTaskRoleDefaultPolicy", chain_start=dev
    )
    assert refused(requests, {"staging": role, "dev": role}, world) == []
    assert {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "kms:Decrypt"} <= actions(requests)
    assert {
        r.resource.split(":::")[-1].split("/")[0] for r in requests if r.action == "s3:PutObject"
    } == {dev.registry_bucket}
    record("least privilege: commands", "training task: AWS calls checked", len(calls))


def test_the_data_reader_reads_training_data_that_the_inference_role_never_can(
    audited_app: AuditedApp, aws: Any, tmp_path: Path
) -> None:
    # Given staging's training data (KMS-encrypted) and a version in its registry
    del aws
    staging = deploy("staging", kms=audited_app.kms["staging"])
    world = World([staging])
    upload_history(staging.data_bucket, tmp_path, events=200)
    register(staging.registry_bucket, "one")

    # When an analyst reads the training data the way training does, every AWS call recorded
    with recording() as calls:
        history = read_history(f"s3://{staging.data_bucket}/training-data/")
    assert len(history.payments) == 200  # and the logins around them

    # Then the data-reader policy allows every one of them (decrypting included)
    requests = requests_of(calls, world)
    reader = statements_of(audited_app, staging, "Training", "DataReaderPolicy")
    assert refused(requests, {"staging": reader}, world) == []
    assert {"s3:ListBucket", "s3:GetObject", "kms:Decrypt"} <= actions(requests)
    # And the inference function's role allows none of them: neither the objects nor the key
    inference = statements_of(audited_app, staging, "Inference", "ModelRoleDefaultPolicy")
    assert len(refused(requests, {"staging": inference}, world)) == len(requests)
    # While the data reader, in turn, cannot read a model version
    with recording() as model_calls:
        registry_of_default = open_registry(f"s3://{staging.registry_bucket}", MODEL)
        registry_of_default.get_version(1)
    model_requests = requests_of(model_calls, world)
    assert len(refused(model_requests, {"staging": reader}, world)) == len(model_requests)
    assert refused(model_requests, {"staging": inference}, world) == []
    record("least privilege: commands", "data reader: AWS calls checked", len(calls))


def test_replaying_the_archive_needs_only_the_feature_replay_policy(
    audited_app: AuditedApp, operator: Operator
) -> None:
    # Given dev's Features stack deployed (its bus, the archive and the feature rule)
    dev = deploy("dev", kms=audited_app.kms["dev"], activity=True)
    world = World([dev])

    # When an operator replays the archive and follows the replay, every AWS call recorded
    with recording() as calls:
        code, output = operator("replay", "--env", "dev", "--since", "2h", "--wait")
        assert code == 0, output

    # Then dev's feature-replay policy allows every one of them
    requests = requests_of(calls, world)
    policy = statements_of(audited_app, dev, "Features", "ReplayPolicy")
    assert refused(requests, {"dev": policy}, world) == []
    assert {
        "ssm:GetParameters",
        "events:DescribeArchive",
        "events:StartReplay",
        "events:DescribeReplay",
    } <= actions(requests)
    # And without FollowReplays, following the replay would be refused
    without = [s for s in policy if s.get("Sid") != "FollowReplays"]
    problems = refused(requests, {"dev": without}, world)
    assert problems and all("events:DescribeReplay" in p for p in problems)
    record("least privilege: commands", "replay --wait: AWS calls checked", len(calls))


class BatchStateMachine:
    """What the batch state machine does for the CLI on AWS, which moto's Step Functions does
    not (its executions stay RUNNING, it has no map runs): the parts map reports its progress,
    and at the CLI's first look at the execution it started (`job-...`, not one started by hand)
    the run has ended: SUCCEEDED with its manifest written (`manifest`), or FAILED with a failed
    part in the map's results. What it writes is the state machine's, not the operator's: not
    recorded."""

    def __init__(self, deployed: Deployed, out: str, *, manifest: bool) -> None:
        self.deployed, self.manifest = deployed, manifest
        self.bucket, _, self.prefix = out.removeprefix("s3://").partition("/")

    def install(self, events: Any) -> None:
        events.register("after-call.sfn.DescribeExecution", self.ended)
        events.register("before-call.sfn.ListMapRuns", self.map_runs)
        events.register("before-call.sfn.DescribeMapRun", self.map_run)

    def ended(self, parsed: dict[str, Any], **_: Any) -> None:
        if str(parsed.get("name", "")).startswith("by-hand"):
            return
        s3 = private_client("s3")
        if self.manifest:
            document = {"complete": True, "totals": {"rows": 3, "events": 5}, "parts": ["0"]}
            s3.put_object(
                Bucket=self.bucket, Key=f"{self.prefix}/{MANIFEST}", Body=json.dumps(document)
            )
            parsed["status"] = "SUCCEEDED"
            return
        failed = [{"Input": json.dumps({"action": "part", "part": 0}), "Error": "MemoryError"}]
        s3.put_object(
            Bucket=self.bucket,
            Key=f"{self.prefix}/{RESULTS}{parsed['name']}/parts/FAILED_0.json",
            Body=json.dumps(failed),
        )
        parsed["status"], parsed["error"] = "FAILED", "States.ExceedToleratedFailureThreshold"

    def map_runs(self, **_: Any) -> tuple[Any, dict[str, Any]]:
        machine = self.deployed.batch_machine
        arn = f"arn:aws:states:us-east-1:{self.deployed.account}:mapRun:{machine}/ComputeParts:1"
        return _Ok(), {"mapRuns": [{"mapRunArn": arn}]}

    def map_run(self, **_: Any) -> tuple[Any, dict[str, Any]]:
        counts = {"total": 1, "succeeded": 1, "running": 0, "failed": 0}
        return _Ok(), {"itemCounts": counts}


def test_scoring_and_backfilling_on_aws_need_only_the_batch_operator_policy(
    audited_app: AuditedApp, operator: Operator
) -> None:
    # Given staging's Batch stack deployed (its data and registry KMS-encrypted), a version in
    # its registry, and an execution started by hand that writes elsewhere, still running
    staging = deploy("staging", kms=audited_app.kms["staging"], batch=True)
    assert staging.key_arn is not None
    world = World([staging])
    register(staging.registry_bucket, "one")
    prefix = audited_app.batch_output["staging"]
    data, out = f"s3://{staging.data_bucket}/training-data/", f"s3://{staging.data_bucket}/{prefix}"
    private_client("stepfunctions").start_execution(
        stateMachineArn=staging.batch_machine_arn,
        name="by-hand-1",
        input=json.dumps({"output": f"{out}elsewhere"}),
    )

    # When an operator scores with version 1 (the run succeeds) and backfills (a part fails),
    # every AWS call recorded
    import boto3

    with recording() as calls:
        BatchStateMachine(staging, f"{out}scores-1", manifest=True).install(
            boto3.DEFAULT_SESSION.events
        )
        code, output = operator(
            "--aws", "score", "--env", "staging", "--version", "1",
            "--data", data, "--out", f"{out}scores-1",
        )  # fmt: skip
        assert code == 0, output
        assert "3 rows from 5 events into 1 part in" in output
        # (a version the registry does not hold: S3 refuses the read, listing says it is missing)
        code, output = operator(
            "--aws", "score", "--env", "staging", "--version", "9",
            "--data", data, "--out", f"{out}scores-9",
        )  # fmt: skip
        assert code == 1 and "version 9 is not in staging's registry" in output, output
    with recording() as failing:
        BatchStateMachine(staging, f"{out}features-1", manifest=False).install(
            boto3.DEFAULT_SESSION.events
        )
        code, output = operator(
            "--aws", "backfill", "--env", "staging", "--data", data, "--out", f"{out}features-1"
        )
        assert code == 1, output
        assert "part 0: MemoryError" in output

    # Then staging's batch operator policy allows every one of them: find the running runs,
    # start one, follow it and its maps, read the version it pins, the run's manifest and its
    # failed parts (decrypting them)
    requests = requests_of(calls + failing, world)
    policy = statements_of(audited_app, staging, "Batch", "BatchOperatorPolicy")
    assert refused(requests, {"staging": policy}, world) == []
    assert {
        "ssm:GetParameters",
        "states:ListExecutions",
        "states:DescribeExecution",
        "states:StartExecution",
        "states:ListMapRuns",
        "states:DescribeMapRun",
        "s3:GetObject",
        "s3:ListBucket",
        "kms:Decrypt",
    } <= actions(requests)
    # (the operator writes nothing: the state machine does)
    assert not [r for r in requests if r.action not in (*READ_ONLY, "states:StartExecution")
                and not r.action.startswith(("states:List", "states:Describe"))]  # fmt: skip
    # And without each statement a call of these commands is refused
    for sid in ("StartBatchRuns", "FollowBatchRuns", "FollowBatchMaps", "ReadBatchOutputs",
                "ListBatchOutputs", "ReadVersions", "ListModel", "Discover",
                "DecryptOutputsAndRegistry"):  # fmt: skip
        without = [s for s in policy if s.get("Sid") != sid]
        assert refused(requests, {"staging": without}, world), sid
    record("least privilege: commands", "score/backfill --aws: AWS calls checked", len(requests))
