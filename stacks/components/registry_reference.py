"""How the Inference and Training stacks see their environment's stateful resources.

The Registry stack publishes the registry, training-data and captures buckets' names and ARNs, the
feature table's name (and its KMS key's ARN, when it has one) as outputs; consumers read them with `Fn::GetStackOutput` (a
weak reference: no export lock between the stateful stack and the ones that are redeployed
often) and declare the deploy-order dependency explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

BUCKET_NAME_OUTPUT = "RegistryBucketName"
BUCKET_ARN_OUTPUT = "RegistryBucketArn"
DATA_BUCKET_NAME_OUTPUT = "TrainingDataBucketName"
DATA_BUCKET_ARN_OUTPUT = "TrainingDataBucketArn"
CAPTURES_BUCKET_NAME_OUTPUT = "CapturesBucketName"
CAPTURES_BUCKET_ARN_OUTPUT = "CapturesBucketArn"
KEY_ARN_OUTPUT = "DataKeyArn"
TABLE_NAME_OUTPUT = "FeatureTableName"


@dataclass(frozen=True)
class StatefulResources:
    """What the Registry stack holds, as another stack of the environment sees it."""

    registry: s3.IBucket
    training_data: s3.IBucket
    # What the environment served and its labels (sds.kernel.capture).
    captures: s3.IBucket
    # The customer-managed key the buckets are encrypted with (None: S3-managed keys).
    key: kms.IKey | None
    # Each account's aggregates (encrypted with `key` when there is one).
    feature_table: dynamodb.ITable


def publish_registry(
    stack: cdk.Stack,
    *,
    registry: s3.IBucket,
    training_data: s3.IBucket,
    captures: s3.IBucket,
    key: kms.IKey | None,
    feature_table: dynamodb.ITable,
) -> None:
    cdk.CfnOutput(stack, TABLE_NAME_OUTPUT, value=feature_table.table_name)
    cdk.CfnOutput(stack, BUCKET_NAME_OUTPUT, value=registry.bucket_name)
    cdk.CfnOutput(stack, BUCKET_ARN_OUTPUT, value=registry.bucket_arn)
    cdk.CfnOutput(stack, DATA_BUCKET_NAME_OUTPUT, value=training_data.bucket_name)
    cdk.CfnOutput(stack, DATA_BUCKET_ARN_OUTPUT, value=training_data.bucket_arn)
    cdk.CfnOutput(stack, CAPTURES_BUCKET_NAME_OUTPUT, value=captures.bucket_name)
    cdk.CfnOutput(stack, CAPTURES_BUCKET_ARN_OUTPUT, value=captures.bucket_arn)
    if key is not None:
        cdk.CfnOutput(stack, KEY_ARN_OUTPUT, value=key.key_arn)


def reference_registry(
    scope: Construct, *, producer: cdk.Stack, encrypted: bool
) -> StatefulResources:
    consumer = cdk.Stack.of(scope)
    consumer.add_stack_dependency(producer, "the registry bucket must exist first")

    def output(name: str) -> str:
        return cdk.Fn.get_stack_output(producer.stack_name, name)

    return StatefulResources(
        registry=s3.Bucket.from_bucket_attributes(
            scope,
            "RegistryBucket",
            bucket_name=output(BUCKET_NAME_OUTPUT),
            bucket_arn=output(BUCKET_ARN_OUTPUT),
        ),
        training_data=s3.Bucket.from_bucket_attributes(
            scope,
            "TrainingDataBucket",
            bucket_name=output(DATA_BUCKET_NAME_OUTPUT),
            bucket_arn=output(DATA_BUCKET_ARN_OUTPUT),
        ),
        captures=s3.Bucket.from_bucket_attributes(
            scope,
            "CapturesBucket",
            bucket_name=output(CAPTURES_BUCKET_NAME_OUTPUT),
            bucket_arn=output(CAPTURES_BUCKET_ARN_OUTPUT),
        ),
        key=kms.Key.from_key_arn(scope, "DataKey", output(KEY_ARN_OUTPUT)) if encrypted else None,
        feature_table=dynamodb.Table.from_table_attributes(
            scope,
            "FeatureTable",
            # Its ARN is then formatted from the name (CDK takes one or the other).
            table_name=output(TABLE_NAME_OUTPUT),
        ),
    )
