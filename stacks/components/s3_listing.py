"""Listing a bucket under prefixes: the one form in which every role and operator policy gets
`s3:ListBucket`.

The grant is on the bucket, narrowed by an `s3:prefix` condition to what the holder reads, so a
listing never shows it another model's or environment's keys. Such a grant is also what lets a
reader tell a missing key from a refused one: S3 answers a read of a missing key 403 to a caller
it does not count as allowed to list, and `sds.kernel.aws.s3.is_missing` then lists exactly that
key, which the condition allows (docs/decisions.md, 55).
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_iam as iam


def list_under(
    sid: str,
    bucket_arn: str,
    prefixes: Sequence[str],
    *,
    actions: Sequence[str] = ("s3:ListBucket",),
) -> iam.PolicyStatement:
    """`actions` (listing) on the bucket `bucket_arn`, only for keys under one of `prefixes`."""
    return iam.PolicyStatement(
        sid=sid,
        actions=list(actions),
        resources=[bucket_arn],
        conditions={"StringLike": {"s3:prefix": [f"{prefix}*" for prefix in prefixes]}},
    )
