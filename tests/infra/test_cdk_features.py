"""The event-driven features in every environment: the feature table (Registry stack), and the
activity bus, its archive, the rule, queue, dead-letter queue, updater and its alarm, the
producer and replay policies (Features stack), checked on the synthesized templates."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from sds.kernel.activity import FEATURE_DETAIL_TYPES, SOURCE, UpdaterSettings
from sds.kernel.events import KINDS, LABEL_KINDS
from sds.kernel.featurestore.dynamodb import PARTITION_KEY, TTL_ATTRIBUTE
from stacks.components.feature_updater import HANDLER
from tests.infra.infra_helpers import actions_of, one, resources, role_statements
from tests.infra.synth import SynthesizedApp

# Changing it would make CloudFormation replace the table: every account's state gone.
FEATURE_TABLE_LOGICAL_ID = "FeatureTable17E74754"


def _registry(synthesized: SynthesizedApp, env: str) -> dict[str, Any]:
    return synthesized.template(env, "Registry").to_json()


def _features(synthesized: SynthesizedApp, env: str) -> dict[str, Any]:
    return synthesized.template(env, "Features").to_json()


def _registry_output(env: str, name: str) -> dict[str, Any]:
    return {"Fn::GetStackOutput": {"StackName": f"{env}-Registry", "OutputName": name}}


def _updater(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (k, v)
        for k, v in resources(template, "AWS::Lambda::Function").items()
        if v["Properties"]["Handler"] == HANDLER
    ]
    return found


def _queues(template: dict[str, Any]) -> tuple[tuple[str, Any], tuple[str, Any]]:
    """(the queue, its dead-letter queue)."""
    queues = resources(template, "AWS::SQS::Queue")
    (main,) = [(k, v) for k, v in queues.items() if "RedrivePolicy" in v["Properties"]]
    (dead,) = [(k, v) for k, v in queues.items() if k != main[0]]
    return main, dead


def test_the_feature_table_is_pinned_on_demand_recoverable_and_expiring(
    synthesized: SynthesizedApp, env: str
) -> None:
    table = _registry(synthesized, env)["Resources"][FEATURE_TABLE_LOGICAL_ID]
    props = table["Properties"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert props["KeySchema"] == [{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert "TableName" not in props  # generated names only
    # Retained (and protected from deletion) where the environment retains its data
    retain = synthesized.project.env(env).infra.retain_data
    assert table["DeletionPolicy"] == ("Retain" if retain else "Delete")
    assert props["DeletionProtectionEnabled"] is retain


def test_the_feature_table_is_encrypted_with_the_environments_data_key_where_it_has_one(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = _registry(synthesized, env)
    sse = template["Resources"][FEATURE_TABLE_LOGICAL_ID]["Properties"]["SSESpecification"]
    if synthesized.project.env(env).infra.registry.kms:
        (key_id, _) = one(template, "AWS::KMS::Key")
        assert sse == {
            "KMSMasterKeyId": {"Fn::GetAtt": [key_id, "Arn"]},
            "SSEEnabled": True,
            "SSEType": "KMS",
        }
    else:
        assert sse == {"SSEEnabled": False}  # DynamoDB's own key, at no cost


def test_the_table_and_the_bus_are_published_for_tools(
    synthesized: SynthesizedApp, env: str
) -> None:
    registry = synthesized.template(env, "Registry")
    registry.has_resource_properties(
        "AWS::SSM::Parameter",
        {"Name": f"/sds/{env}/feature-table", "Value": {"Ref": FEATURE_TABLE_LOGICAL_ID}},
    )
    features = _features(synthesized, env)
    (bus_id, _) = one(features, "AWS::Events::EventBus")
    (archive_id, _) = one(features, "AWS::Events::Archive")
    (rule_id, _) = one(features, "AWS::Events::Rule", prefix="Updater")
    published = {
        p["Properties"]["Name"]: p["Properties"]["Value"]
        for p in resources(features, "AWS::SSM::Parameter").values()
    }
    assert published == {
        f"/sds/{env}/event-bus": {"Ref": bus_id},
        f"/sds/{env}/event-archive": {"Ref": archive_id},
        f"/sds/{env}/feature-rule": {"Fn::GetAtt": [rule_id, "Arn"]},
    }


def test_the_archive_keeps_every_event_for_the_configured_days(
    synthesized: SynthesizedApp, env: str
) -> None:
    features = _features(synthesized, env)
    (bus_id, _) = one(features, "AWS::Events::EventBus")
    (_, archive) = one(features, "AWS::Events::Archive")
    props = archive["Properties"]
    assert props["SourceArn"] == {"Fn::GetAtt": [bus_id, "Arn"]}
    assert props["EventPattern"] == {"account": [{"Ref": "AWS::AccountId"}]}
    expected = synthesized.project.env(env).infra.features.archive_retention_days
    assert props.get("RetentionDays", 0) == expected


def test_the_rule_sends_what_the_aggregates_read_to_the_queue_and_failures_to_dead_letters(
    synthesized: SynthesizedApp, env: str
) -> None:
    features = _features(synthesized, env)
    (bus_id, _) = one(features, "AWS::Events::EventBus")
    (_, rule) = one(features, "AWS::Events::Rule", prefix="Updater")
    (queue_id, _), (dead_id, _) = _queues(features)
    props = rule["Properties"]
    assert props["EventBusName"] == {"Ref": bus_id}
    assert props["EventPattern"] == {"source": [SOURCE], "detail-type": list(FEATURE_DETAIL_TYPES)}
    (target,) = props["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [dead_id, "Arn"]}}


def test_the_queue_redrives_to_a_dead_letter_queue_and_both_are_encrypted_and_tls_only(
    synthesized: SynthesizedApp, env: str
) -> None:
    features = _features(synthesized, env)
    (queue_id, queue), (dead_id, dead) = _queues(features)
    settings = synthesized.project.env(env).infra.features
    assert queue["Properties"]["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dead_id, "Arn"]},
        "maxReceiveCount": settings.max_receive_count,
    }
    _, function = _updater(features)
    # Six times the function's timeout (AWS's advice for an SQS event source)
    assert queue["Properties"]["VisibilityTimeout"] >= 6 * function["Properties"]["Timeout"]
    assert dead["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    for logical_id in (queue_id, dead_id):
        props = features["Resources"][logical_id]["Properties"]
        assert props["SqsManagedSseEnabled"] is True
        policies = [
            p
            for p in resources(features, "AWS::SQS::QueuePolicy").values()
            if {"Ref": logical_id} in p["Properties"]["Queues"]
        ]
        text = json.dumps([p["Properties"]["PolicyDocument"] for p in policies])
        assert '"aws:SecureTransport": "false"' in text, logical_id


def test_the_updater_takes_batches_and_reports_partial_failures(
    synthesized: SynthesizedApp, env: str
) -> None:
    features = _features(synthesized, env)
    (queue_id, _), _ = _queues(features)
    updater_id, function = _updater(features)
    (_, mapping) = one(features, "AWS::Lambda::EventSourceMapping")
    props = mapping["Properties"]
    settings = synthesized.project.env(env).infra.features
    assert props["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert props["FunctionName"] == {"Ref": updater_id}
    assert props["BatchSize"] == settings.batch_size
    assert props["MaximumBatchingWindowInSeconds"] == settings.batching_window_seconds
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # No maximum concurrency: an idle queue is then polled by as few as two pollers
    assert "ScalingConfig" not in props
    # And the function folds into this environment's table, as its settings contract says
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables == {
        "FEATURE_STORE_URI": {
            "Fn::Join": ["", ["dynamodb://", _registry_output(env, "FeatureTableName")]]
        },
        "ENVIRONMENT": env,
    }
    assert set(variables) == set(UpdaterSettings("dynamodb://t", env).to_environ())
    assert function["Properties"]["MemorySize"] == settings.updater_memory_mb
    assert "VpcConfig" not in function["Properties"]


def test_the_updater_role_folds_into_the_table_and_consumes_its_queue_nothing_else(
    synthesized: SynthesizedApp, env: str
) -> None:
    features = _features(synthesized, env)
    (queue_id, _), _ = _queues(features)
    _, function = _updater(features)
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = role_statements(features, role_id)
    by_sid = {s.get("Sid", ""): s for s in statements}
    table_arn = {
        "Fn::Join": [
            "",
            [
                "arn:aws:dynamodb:us-east-1:",
                {"Ref": "AWS::AccountId"},
                ":table/",
                _registry_output(env, "FeatureTableName"),
            ],
        ]
    }
    fold = by_sid["FoldAccountAggregates"]
    assert sorted(actions_of(fold)) == ["dynamodb:BatchGetItem", "dynamodb:PutItem"]
    assert fold["Resource"] == table_arn
    for statement in statements:
        if any(a.startswith("sqs:") for a in actions_of(statement)):
            assert statement["Resource"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    every = {a for s in statements for a in actions_of(s)}
    allowed = {
        "dynamodb:BatchGetItem",
        "dynamodb:PutItem",
        "sqs:ReceiveMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueUrl",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "kms:Decrypt",
        "kms:Encrypt",
        "kms:GenerateDataKey",
    }
    assert every <= allowed, every - allowed
    if synthesized.project.env(env).infra.registry.kms:
        key = by_sid["UseFeatureTableKey"]
        assert key["Resource"] == _registry_output(env, "DataKeyArn")
        assert key["Condition"]["StringEquals"][
            "kms:EncryptionContext:aws:dynamodb:tableName"
        ] == _registry_output(env, "FeatureTableName")
    else:
        assert not [a for a in every if a.startswith("kms:")]


def test_dead_letters_raise_an_alarm_that_reaches_the_environments_targets(
    synthesized: SynthesizedApp, env: str
) -> None:
    features = _features(synthesized, env)
    _, (dead_id, _) = _queues(features)
    (_, alarm) = one(features, "AWS::CloudWatch::Alarm", prefix="Updater")
    props = alarm["Properties"]
    assert (props["Namespace"], props["MetricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert props["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [dead_id, "QueueName"]}}
    ]
    assert (props["Threshold"], props["ComparisonOperator"]) == (
        1,
        "GreaterThanOrEqualToThreshold",
    )
    # The same targets as the Inference stack's alarms: its topics, through its outputs
    settings = synthesized.project.env(env).infra.alarms
    expected = int(settings.topic_email is not None) + int(settings.topic_arn is not None)
    assert len(props.get("AlarmActions", [])) == expected
    assert props.get("OKActions", []) == props.get("AlarmActions", [])
    if settings.topic_arn is not None:
        assert settings.topic_arn in props["AlarmActions"]


def test_producers_may_put_activity_events_on_this_bus_and_nothing_else(
    synthesized: SynthesizedApp, env: str
) -> None:
    features = _features(synthesized, env)
    (bus_id, _) = one(features, "AWS::Events::EventBus")
    policies = resources(features, "AWS::IAM::ManagedPolicy")
    (producer,) = [v for k, v in policies.items() if k.startswith("ActivityProducerPolicy")]
    (statement,) = producer["Properties"]["PolicyDocument"]["Statement"]
    assert statement == {
        "Sid": "PutActivityEvents",
        "Effect": "Allow",
        "Action": "events:PutEvents",
        "Resource": {"Fn::GetAtt": [bus_id, "Arn"]},
        "Condition": {"StringEquals": {"events:source": SOURCE}},
    }
    outputs = features["Outputs"]
    assert outputs["EventProducerPolicyArn"]["Value"]["Ref"].startswith("ActivityProducerPolicy")
    assert outputs["FeatureReplayPolicyArn"]["Value"]["Ref"].startswith("ReplayPolicy")
    assert outputs["EventBusName"]["Value"] == {"Ref": bus_id}


def _documented_row(path: Path, first_cell: str) -> list[str]:
    """The cells of the one table row of `path` whose first cell starts with `first_cell`."""
    (row,) = [line for line in path.read_text().splitlines() if line.startswith(f"| {first_cell}")]
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def test_the_documented_producer_permissions_are_what_the_policy_grants(
    synthesized: SynthesizedApp, env: str
) -> None:
    # Given the producer policy: PutEvents on the bus, the source as its only condition (or a
    # detail-type condition naming the kinds it admits)
    features = _features(synthesized, env)
    policies = resources(features, "AWS::IAM::ManagedPolicy")
    (producer,) = [v for k, v in policies.items() if k.startswith("ActivityProducerPolicy")]
    (statement,) = producer["Properties"]["PolicyDocument"]["Statement"]
    condition = statement["Condition"]["StringEquals"]
    kinds = condition.get("events:detail-type", list(KINDS))
    # When SECURITY.md and docs/infrastructure.md say what a producer can do
    root = Path(__file__).resolve().parents[2]
    _, can, cannot = _documented_row(root / "SECURITY.md", "an event producer")
    _, used_by, grants = _documented_row(
        root / "docs" / "infrastructure.md", "`EventProducerPolicyArn`"
    )
    # Then both name the source and every kind of event the policy lets a producer put (label
    # events included: they decide what training from capture learns)
    assert condition["events:source"] == SOURCE
    for cell in (can, grants):
        assert f"`{SOURCE}`" in cell
        for kind in kinds:
            assert kind in cell, (kind, cell)
    for kind in set(KINDS) - set(kinds):
        assert kind in cannot, (kind, cannot)
    assert all(kind in used_by for kind in kinds if kind in LABEL_KINDS)


def test_the_replay_policy_replays_this_archive_and_follows_its_own_replays(
    synthesized: SynthesizedApp, env: str
) -> None:
    features = _features(synthesized, env)
    (archive_id, _) = one(features, "AWS::Events::Archive")
    policies = resources(features, "AWS::IAM::ManagedPolicy")
    (replay,) = [v for k, v in policies.items() if k.startswith("ReplayPolicy")]
    statements = {s["Sid"]: s for s in replay["Properties"]["PolicyDocument"]["Statement"]}
    assert sorted(actions_of(statements["ReplayTheArchive"])) == [
        "events:DescribeArchive",
        "events:StartReplay",
    ]
    assert statements["ReplayTheArchive"]["Resource"] == {"Fn::GetAtt": [archive_id, "Arn"]}
    assert json.dumps(statements["FollowReplays"]["Resource"]).endswith(
        f':replay/sds-{env}-features-*"]]}}'
    )
    assert sorted(actions_of(statements["Discover"])) == ["ssm:GetParameter", "ssm:GetParameters"]


def test_the_updater_code_is_the_kernel_its_handler_and_numpy_and_imports_on_python_3_12(
    synthesized: SynthesizedApp, lambda_python: str
) -> None:
    # Given the updater's code folder as the dev stage ships it
    code = Path(synthesized.stages["dev"].spec.updater_code_dir)
    shipped = {str(p.relative_to(code)) for p in code.rglob("*.py")}
    # Then it holds the kernel, the updater and numpy, and no inference or operator code
    assert "lambdas/features_updater/handler.py" in shipped
    assert "sds/kernel/featurestore/dynamodb.py" in shipped
    assert not [p for p in shipped if p.startswith(("lambdas/inference", "sds/ops", "sds/cli"))]
    assert not (code / "onnxruntime").exists()
    assert (code / "numpy").is_dir()
    # And its handler imports with a bare Python 3.12 and nothing but the folder (it needs its
    # settings; the store is opened lazily, so no AWS call is made)
    probe = subprocess.run(
        [
            lambda_python,
            "-I",
            "-S",
            "-c",
            f"import os, sys; sys.path[:0] = [{str(code)!r}]; "
            "os.environ.update(FEATURE_STORE_URI='dynamodb://t', AWS_REGION='us-east-1', "
            "AWS_ACCESS_KEY_ID='x', AWS_SECRET_ACCESS_KEY='y'); "
            "import lambdas.features_updater.handler as h; "
            "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules",
        ],
        cwd=code,
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
