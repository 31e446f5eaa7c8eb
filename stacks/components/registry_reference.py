"""How the Inference and Training stacks see their environment's registry bucket.

The Registry stack publishes the bucket's name and ARN as outputs; consumers read them with
`Fn::GetStackOutput` (a weak reference: no export lock between the stateful stack and the ones
that are redeployed often) and declare the deploy-order dependency explicitly.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from constructs import Construct

BUCKET_NAME_OUTPUT = "RegistryBucketName"
BUCKET_ARN_OUTPUT = "RegistryBucketArn"


def publish_registry(stack: cdk.Stack, bucket: s3.IBucket) -> None:
    cdk.CfnOutput(stack, BUCKET_NAME_OUTPUT, value=bucket.bucket_name)
    cdk.CfnOutput(stack, BUCKET_ARN_OUTPUT, value=bucket.bucket_arn)


def reference_registry(scope: Construct, construct_id: str, *, producer: cdk.Stack) -> s3.IBucket:
    consumer = cdk.Stack.of(scope)
    consumer.add_stack_dependency(producer, "the registry bucket must exist first")
    return s3.Bucket.from_bucket_attributes(
        scope,
        construct_id,
        bucket_name=cdk.Fn.get_stack_output(producer.stack_name, BUCKET_NAME_OUTPUT),
        bucket_arn=cdk.Fn.get_stack_output(producer.stack_name, BUCKET_ARN_OUTPUT),
    )
