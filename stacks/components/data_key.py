"""The environment's customer-managed KMS key for data at rest, and the one way to grant its use.

With `infra.registry.kms` the registry and training-data buckets encrypt with this key (S3 Bucket
Keys on, so S3 asks KMS once per bucket key rather than once per object), and so does the feature
table. Its key policy is CDK's default: the account may delegate use through IAM policies,
nothing else; every role and operator policy then gets exactly what it needs through `key_use`:
`kms:Decrypt` to read, `kms:GenerateDataKey` as well to write, only through S3
(`kms:ViaService`) and only for the buckets it is meant for (`kms:EncryptionContext:aws:s3:arn`:
with Bucket Keys S3 passes the bucket's ARN as the encryption context, the object's ARN without
them), so a grant on the key is never a way into the other bucket. `table_key_use` is the same
for the feature table: only through DynamoDB, only for that table
(`kms:EncryptionContext:aws:dynamodb:tableName`, which DynamoDB passes on every call it makes to
KMS for a table).
"""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

READ = ("kms:Decrypt",)
# Writing an SSE-KMS object needs a data key; a multipart upload also decrypts it to add parts.
READ_WRITE = ("kms:Decrypt", "kms:GenerateDataKey")
# What a writer of a table encrypted with a customer-managed key needs (DynamoDB, for the
# caller, decrypts the table key and may ask for a new one).
TABLE_READ_WRITE = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey")


def data_key(scope: Construct, construct_id: str, *, environment: str, retain: bool) -> kms.Key:
    """A symmetric key with yearly rotation. Retained with the data it protects: deleting it
    would leave every retained object unreadable."""
    return kms.Key(
        scope,
        construct_id,
        description=f"sds {environment}: model registry, training data and feature table at rest",
        enable_key_rotation=True,
        removal_policy=cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY,
    )


def key_use(
    scope: Construct,
    *,
    sid: str,
    key: kms.IKey,
    buckets: Sequence[s3.IBucket],
    actions: Sequence[str],
) -> iam.PolicyStatement:
    """Use of `key` through S3, for objects of `buckets` only."""
    stack = cdk.Stack.of(scope)
    contexts = [arn for bucket in buckets for arn in (bucket.bucket_arn, f"{bucket.bucket_arn}/*")]
    return iam.PolicyStatement(
        sid=sid,
        actions=list(actions),
        resources=[key.key_arn],
        conditions={
            "StringEquals": {"kms:ViaService": f"s3.{stack.region}.{stack.url_suffix}"},
            "StringLike": {"kms:EncryptionContext:aws:s3:arn": contexts},
        },
    )


def table_key_use(
    scope: Construct,
    *,
    sid: str,
    key: kms.IKey,
    table: dynamodb.ITable,
    actions: Sequence[str],
) -> iam.PolicyStatement:
    """Use of `key` through DynamoDB, for `table` only."""
    stack = cdk.Stack.of(scope)
    return iam.PolicyStatement(
        sid=sid,
        actions=list(actions),
        resources=[key.key_arn],
        conditions={
            "StringEquals": {
                "kms:ViaService": f"dynamodb.{stack.region}.{stack.url_suffix}",
                "kms:EncryptionContext:aws:dynamodb:tableName": table.table_name,
            },
        },
    )
