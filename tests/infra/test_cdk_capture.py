"""Capture and labels on AWS: the captures bucket, the function's capture records shipped from its
log group through Firehose, label events from the bus, and the task that retrains from them.

Given the app synthesized for every environment (and the variant, which retrains from capture on
a schedule above the chain start), the templates are read back as a reviewer would: where the
records go, under which prefix and key, who may write or read them, and nothing on the request
path but a log line.
"""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_events as events
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Template

import app as cdk_app
from sds.kernel.activity import SOURCE
from sds.kernel.capture import SUBSCRIPTION_FILTER
from stacks.components.label_delivery import LabelDelivery
from stacks.components.nag import recording_only
from stacks.config import LogSettings
from tests.infra.infra_helpers import (
    actions_of,
    model_function,
    one,
    resource_text,
    resources,
    role_statements,
)
from tests.infra.synth import VARIANT, SynthesizedApp

CAPTURES_BUCKET_LOGICAL_ID = "CapturesBucketA18E2F11"


def _template(synthesized: SynthesizedApp, env: str, stack: str) -> dict[str, Any]:
    return synthesized.template(env, stack).to_json()


def _stream(template: dict[str, Any], logical_prefix: str) -> dict[str, Any]:
    (stream,) = [
        v["Properties"]
        for k, v in resources(template, "AWS::KinesisFirehose::DeliveryStream").items()
        if k.startswith(logical_prefix)
    ]
    return stream


def test_the_captures_bucket_is_encrypted_like_the_data_private_logged_and_expires_captures(
    synthesized: SynthesizedApp, env: str
) -> None:
    # Given the environment's Registry stack (stateful: the bucket's logical id is pinned)
    template = _template(synthesized, env, "Registry")
    config = synthesized.project.env(env)
    bucket = template["Resources"][CAPTURES_BUCKET_LOGICAL_ID]
    props = bucket["Properties"]
    # Then it is encrypted with the environment's data key where it has one, else S3-managed
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    if config.infra.registry.kms:
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        key_id, _ = one(template, "AWS::KMS::Key")
        assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == {
            "Fn::GetAtt": [key_id, "Arn"]
        }
    else:
        assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    # private, access-logged next to the other buckets', retained with the registry
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["LoggingConfiguration"]["LogFilePrefix"] == "captures/"
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")
    # and captures (and Firehose's error output) expire after capture.retention_days; labels stay
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    days = config.capture.retention_days
    assert rules["expire-captures"]["Prefix"] == "captures/"
    assert rules["expire-captures"]["ExpirationInDays"] == days
    assert rules["expire-delivery-errors"]["Prefix"] == "errors/"
    assert rules["expire-delivery-errors"]["ExpirationInDays"] == days
    assert not any(r.get("Prefix", "").startswith("labels") for r in rules.values())
    # Not versioned: a deleted capture must really be gone after its retention
    assert "VersioningConfiguration" not in props
    # And tools find it through SSM
    parameters = [p["Properties"] for p in resources(template, "AWS::SSM::Parameter").values()]
    assert {
        "Name": f"/sds/{env}/captures-bucket",
        "Value": {"Ref": CAPTURES_BUCKET_LOGICAL_ID},
    } in [{"Name": p["Name"], "Value": p["Value"]} for p in parameters]


def test_the_function_writes_captures_only_to_its_log_group_which_ships_them_to_s3(
    synthesized: SynthesizedApp, env: str
) -> None:
    # Given the Inference stack
    template = _template(synthesized, env, "Inference")
    function_id, function = model_function(template)
    log_group_ref = function["Properties"]["LoggingConfig"]["LogGroup"]
    # Then a subscription filter on the function's own log group selects the capture records
    _, subscription = one(template, "AWS::Logs::SubscriptionFilter")
    props = subscription["Properties"]
    assert props["LogGroupName"] == log_group_ref
    assert props["FilterPattern"] == SUBSCRIPTION_FILTER == '{ $.record = "sds.capture" }'
    stream_id = next(k for k in resources(template, "AWS::KinesisFirehose::DeliveryStream"))
    assert props["DestinationArn"] == {"Fn::GetAtt": [stream_id, "Arn"]}
    # which a subscription role may only put into that stream
    role_id = props["RoleArn"]["Fn::GetAtt"][0]
    (statement,) = role_statements(template, role_id)
    assert sorted(actions_of(statement)) == ["firehose:PutRecord", "firehose:PutRecordBatch"]
    assert statement["Resource"] == {"Fn::GetAtt": [stream_id, "Arn"]}
    trust = template["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "logs.amazonaws.com"}
    # And the log group stays in the Standard class (Infrequent Access takes no subscriptions)
    group = template["Resources"][log_group_ref["Ref"]]["Properties"]
    assert group.get("LogGroupClass", "STANDARD") == "STANDARD"
    # And the function itself gets no new permission: capture is a log line, not a call
    granted = {a for s in role_statements(template, _role_of(function)) for a in actions_of(s)}
    assert not {a for a in granted if a.startswith(("firehose:", "s3:Put", "kinesis:"))}
    del function_id


def _role_of(function: dict[str, Any]) -> str:
    return str(function["Properties"]["Role"]["Fn::GetAtt"][0])


def test_firehose_delivers_day_partitions_of_gzipped_json_lines_encrypted(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = _template(synthesized, env, "Inference")
    stream = _stream(template, "CaptureDelivery")
    assert stream["DeliveryStreamType"] == "DirectPut"
    assert stream["DeliveryStreamEncryptionConfigurationInput"] == {"KeyType": "AWS_OWNED_CMK"}
    s3_config = stream["ExtendedS3DestinationConfiguration"]
    assert s3_config["Prefix"] == "captures/dt=!{timestamp:yyyy-MM-dd}/"
    assert s3_config["ErrorOutputPrefix"] == (
        "errors/captures/!{firehose:error-output-type}/dt=!{timestamp:yyyy-MM-dd}/"
    )
    assert s3_config["CompressionFormat"] == "GZIP"
    assert s3_config["FileExtension"] == ".jsonl.gz"
    assert "CapturesBucketArn" in json.dumps(s3_config["BucketARN"])
    # Decompress CloudWatch Logs' batches, keep each log event's message (the record), one a line
    processors = s3_config["ProcessingConfiguration"]["Processors"]
    assert [p["Type"] for p in processors] == [
        "Decompression",
        "CloudWatchLogProcessing",
        "AppendDelimiterToRecord",
    ]
    assert processors[1]["Parameters"] == [
        {"ParameterName": "DataMessageExtraction", "ParameterValue": "true"}
    ]
    # Objects are encrypted with the environment's data key where it has one
    if synthesized.project.env(env).infra.registry.kms:
        assert "DataKeyArn" in json.dumps(s3_config["EncryptionConfiguration"])
    else:
        assert s3_config["EncryptionConfiguration"] == {"NoEncryptionConfig": "NoEncryption"}
    assert s3_config["CloudWatchLoggingOptions"]["Enabled"] is True


def test_firehose_may_write_only_its_prefixes_of_the_captures_bucket(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = _template(synthesized, env, "Inference")
    stream = _stream(template, "CaptureDelivery")
    role_id = stream["ExtendedS3DestinationConfiguration"]["RoleARN"]["Fn::GetAtt"][0]
    found = {s["Sid"]: s for s in role_statements(template, role_id)}
    writes = found["DeliverObjects"]
    assert sorted(actions_of(writes)) == ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]
    text = resource_text(writes)
    assert text.count("CapturesBucketArn") == 2
    assert '/captures/*"' in text and '/errors/captures/*"' in text
    assert not any("Delete" in a for s in found.values() for a in actions_of(s))
    if synthesized.project.env(env).infra.registry.kms:
        assert sorted(actions_of(found["EncryptObjects"])) == ["kms:Decrypt", "kms:GenerateDataKey"]
        assert "kms:ViaService" in json.dumps(found["EncryptObjects"]["Condition"])


def test_the_handler_is_told_the_sampling_rate_and_exclusions_of_the_variant(
    synthesized: SynthesizedApp,
) -> None:
    # Given the variant, which samples half the payments and leaves out account and request ids
    _, function = model_function(_template(synthesized, VARIANT, "Inference"))
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables["CAPTURE_SAMPLE_RATE"] == "0.5"
    assert variables["CAPTURE_EXCLUDE"] == "account_id,request_id"


def test_training_from_capture_reads_the_captures_not_the_training_data(
    synthesized: SynthesizedApp,
) -> None:
    # Given the variant, which retrains weekly from its own captures (above the chain start)
    template = _template(synthesized, VARIANT, "Training")
    _, task = one(template, "AWS::ECS::TaskDefinition")
    command = task["Properties"]["ContainerDefinitions"][0]["Command"]
    flags = {
        command[i]: command[i + 1]
        for i in range(len(command) - 1)
        if isinstance(command[i], str) and command[i].startswith("--")
    }
    # Then the task trains from capture with the environment's policy (config, not code)
    config = synthesized.project.env(VARIANT)
    assert "--from-capture" in command and "--data" not in command
    assert flags["--capture-env"] == VARIANT
    assert flags["--window-days"] == str(config.infra.training.window_days)
    assert flags["--holdout-days"] == str(config.infra.training.holdout_days)
    assert flags["--maturity-days"] == "45" and flags["--unlabelled"] == "exclude"
    assert "CapturesBucketName" in json.dumps(command)
    assert '"/captures/"' in json.dumps(command) and '"/labels/"' in json.dumps(command)
    # it registers where versions are allocated (dev), on a schedule of its own
    assert "/sds/dev/registry-bucket" in json.dumps(template["Parameters"])
    (rule,) = resources(template, "AWS::Events::Rule").values()
    assert rule["Properties"]["ScheduleExpression"] == "cron(0 4 ? * MON *)"
    # and its role reads captures and labels, read-only, and no training data
    role_id = task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    found = {s.get("Sid"): s for s in role_statements(template, role_id)}
    assert actions_of(found["ReadCapturesAndLabels"]) == ["s3:GetObject"]
    text = resource_text(found["ReadCapturesAndLabels"])
    assert '/captures/*"' in text and '/labels/*"' in text
    assert "ReadTrainingData" not in found
    assert "TrainingData" not in json.dumps(list(found.values()))


def test_training_from_history_is_unchanged_where_the_source_is_history(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = _template(synthesized, env, "Training")
    _, task = one(template, "AWS::ECS::TaskDefinition")
    command = task["Properties"]["ContainerDefinitions"][0]["Command"]
    assert synthesized.project.env(env).infra.training.source == "history"
    assert "--data" in command and "--from-capture" not in command
    assert "Captures" not in json.dumps(template["Resources"])


# --- Label delivery: a rule on the environment's bus (the bus is a parameter) -----------------


def _label_stack(*, encrypted: bool) -> tuple[cdk.Stack, list[tuple[str, str]]]:
    """A stack with a bus, a captures bucket (and key) and the label delivery on them."""
    app = cdk.App()
    stack = cdk.Stack(
        app, "Labels", env=cdk.Environment(account="123456789012", region="us-east-1")
    )
    key = kms.Key(stack, "Key", enable_key_rotation=True) if encrypted else None
    logs_bucket = s3.Bucket(stack, "Logs", enforce_ssl=True)
    bucket = s3.Bucket(
        stack,
        "Captures",
        encryption=s3.BucketEncryption.KMS if key else s3.BucketEncryption.S3_MANAGED,
        encryption_key=key,
        enforce_ssl=True,
        server_access_logs_bucket=logs_bucket,
    )
    bus = events.EventBus(stack, "Bus")
    with recording_only() as acknowledged:
        LabelDelivery(
            stack,
            "LabelDelivery",
            environment="test",
            bus=bus,
            bucket=bucket,
            key=key,
            logs_settings=LogSettings(retention_days=30, retain=True),
        )
    return stack, acknowledged


@pytest.mark.parametrize("encrypted", [False, True])
def test_label_events_on_the_bus_land_under_labels_one_per_line(encrypted: bool) -> None:
    stack, _ = _label_stack(encrypted=encrypted)
    template = Template.from_stack(stack).to_json()
    # Then a rule on the given bus selects label events as producers put them: the activity
    # source (all the producer policy admits), detail-type label
    (rule_id, rule), *others = resources(template, "AWS::Events::Rule").items()
    assert not others
    props = rule["Properties"]
    bus_id = next(iter(resources(template, "AWS::Events::EventBus")))
    assert props["EventBusName"] == {"Ref": bus_id}
    assert props["EventPattern"] == {"source": [SOURCE], "detail-type": ["label"]}
    # and hands Firehose the event itself (the detail), not the EventBridge envelope
    (target,) = props["Targets"]
    stream_id = next(iter(resources(template, "AWS::KinesisFirehose::DeliveryStream")))
    assert target["Arn"] == {"Fn::GetAtt": [stream_id, "Arn"]}
    assert target["InputPath"] == "$.detail"
    # with a role that may only put records into that stream
    target_role = target["RoleArn"]["Fn::GetAtt"][0]
    (statement,) = role_statements(template, target_role)
    assert sorted(actions_of(statement)) == ["firehose:PutRecord", "firehose:PutRecordBatch"]
    assert statement["Resource"] == {"Fn::GetAtt": [stream_id, "Arn"]}
    # And Firehose writes them, a line each, under labels/ in day partitions
    stream = _stream(template, "LabelDelivery")["ExtendedS3DestinationConfiguration"]
    assert stream["Prefix"] == "labels/dt=!{timestamp:yyyy-MM-dd}/"
    assert [p["Type"] for p in stream["ProcessingConfiguration"]["Processors"]] == [
        "AppendDelimiterToRecord"
    ]
    assert stream["FileExtension"] == ".jsonl.gz"
    assert ("KMSEncryptionConfig" in stream["EncryptionConfiguration"]) is encrypted
    del rule_id


def test_label_delivery_is_cdk_nag_clean_one_acknowledgment_at_a_time() -> None:
    # Given the label delivery built with its acknowledgments recorded, not applied
    stack, acknowledged = _label_stack(encrypted=True)
    # When every pack the app runs checks it
    findings = {
        (resource.construct_path, violation.rule_name)
        for pack in (pack_type(stack) for pack_type in cdk_app.NAG_PACKS)
        for violation in pack.validate_scope(stack).violations
        for resource in violation.violating_resources
        if "/LabelDelivery/" in resource.construct_path
    }

    def covered(path: str, rule: str) -> bool:
        return any(
            rule == finding and (path == scope or path.startswith(scope + "/"))
            for scope, finding in acknowledged
        )

    # Then every finding on it is acknowledged, and every acknowledgment matches a finding
    assert findings
    assert [f for f in findings if not covered(*f)] == []
    assert [
        (scope, finding)
        for scope, finding in acknowledged
        if not any(rule == finding and path.startswith(scope) for path, rule in findings)
    ] == []
