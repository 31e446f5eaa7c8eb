"""What S3 itself enforces on the registry bucket, whatever IAM allows a role to do.

The registry client only ever creates version objects and audit events with `If-None-Match: *`
and moves aliases by compare-and-swap (`If-Match: <etag>`, or `If-None-Match: *` for the first
move); IAM cannot require a request header, so roles that may `s3:PutObject` there (training,
promoters) could otherwise rewrite a version, its manifest or an audit event in place. The
bucket policy denies, to every principal:

- creating an object under `versions/` or `events/` without `If-None-Match`, and under
  `aliases/` without `If-Match` or `If-None-Match`. This is the deny form of "Enforce conditional
  writes on Amazon S3 buckets" (Amazon S3 User Guide, conditional-writes-enforce.html, example 2:
  `Null` on the header's condition key plus `Bool` `s3:ObjectCreationOperation: true`). The
  second condition exempts `CreateMultipartUpload`, `UploadPart` and `UploadPartCopy`, which S3
  also authorizes as `s3:PutObject` but which cannot carry the headers; the upload's
  `CompleteMultipartUpload` (an object creation, which the registry sends with
  `If-None-Match: *`) is still held to it. Copies into these prefixes stop working (CopyObject is
  refused 403 without the headers, 501 with them, per the same page): the registry never copies
  server-side;
- deleting anything under the model's prefix (`s3:DeleteObject`, `s3:DeleteObjectVersion`)
  unless the caller is the retention role created here (and, where the stack does not retain
  data, CDK's auto-delete provider, which empties the bucket when the stack is destroyed).
  Lifecycle rules are not principals: "You can't use a bucket policy to prevent deletions or
  transitions by an S3 Lifecycle rule" (Amazon S3 User Guide, bucket-policies.html), so the
  expiry of noncurrent object versions keeps working.

The retention role is the one deliberate way to remove registry objects (erasing a version for
a legal reason, say): its trust allows this account's IAM principals that are themselves allowed
to assume it, and its ARN is the Registry stack's output `RetentionRoleArn`.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.components.data_key import READ, key_use
from stacks.components.nag import acknowledge_own_policy, acknowledge_wildcard_resource
from stacks.components.registry_paths import RegistryPaths
from stacks.components.s3_listing import list_under

WRITE_ONCE_SID = "VersionsAndEventsAreCreatedOnlyIfAbsent"
COMPARE_AND_SWAP_SID = "AliasesMoveOnlyByCompareAndSwap"
NO_DELETE_SID = "OnlyTheRetentionRoleDeletes"
RETENTION_ROLE_OUTPUT = "RetentionRoleArn"
# CDK's singleton provider behind `auto_delete_objects=True`, one per stack.
_AUTO_DELETE_PROVIDER = "Custom::S3AutoDeleteObjectsCustomResourceProvider"


class RegistryProtection(Construct):
    """The registry bucket's write-once, compare-and-swap and no-delete statements, and the
    retention role, the only principal the bucket lets delete the model's objects."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        bucket: s3.Bucket,
        key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        paths = RegistryPaths(model_name)
        self.retention_role = self._build_retention_role(environment, model_name, bucket, paths)
        if key is not None:  # it reads what it deletes (GetObject), so it decrypts
            self.retention_role.add_to_policy(
                key_use(
                    self.retention_role,
                    sid="DecryptRegistry",
                    key=key,
                    buckets=[bucket],
                    actions=READ,
                )
            )
        for statement in (
            *conditional_write_statements(bucket, paths),
            self._no_delete_statement(bucket, paths),
        ):
            bucket.add_to_resource_policy(statement)
        cdk.CfnOutput(
            cdk.Stack.of(self),
            RETENTION_ROLE_OUTPUT,
            value=self.retention_role.role_arn,
            description=f"sds {environment}: the only role that may delete registry objects",
        )

    def _build_retention_role(
        self, environment: str, model_name: str, bucket: s3.IBucket, paths: RegistryPaths
    ) -> iam.Role:
        """The role whose deletes the bucket policy lets through, with the grants it needs."""
        role = iam.Role(
            self,
            "RetentionRole",
            assumed_by=iam.AccountRootPrincipal(),
            description=f"sds {environment}: the only principal that may delete {model_name}'s "
            "registry objects (versions, aliases, audit events); assume it deliberately",
        )
        objects = bucket.arn_for_objects(f"{paths.root}*")
        role.add_to_policy(
            iam.PolicyStatement(
                sid="DeleteModelObjects",
                actions=[
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:DeleteObject",
                    "s3:DeleteObjectVersion",
                ],
                resources=[objects],
            )
        )
        role.add_to_policy(
            list_under(
                "ListModelObjects",
                bucket.bucket_arn,
                [paths.root],
                actions=["s3:ListBucket", "s3:ListBucketVersions"],
            )
        )
        acknowledge_wildcard_resource(
            role,
            objects,
            "Scoped to this model's registry objects: the retention role exists to remove them "
            "(every version of every object), deliberately and audited by CloudTrail.",
        )
        acknowledge_own_policy(role, "the retention role: read, list and delete model objects")
        return role

    def _no_delete_statement(self, bucket: s3.IBucket, paths: RegistryPaths) -> iam.PolicyStatement:
        allowed = [self.retention_role.role_arn]
        provider = cdk.Stack.of(bucket).node.try_find_child(_AUTO_DELETE_PROVIDER)
        if isinstance(provider, cdk.CustomResourceProviderBase):
            allowed.append(provider.role_arn)  # empties the bucket when the stack is destroyed
        return iam.PolicyStatement(
            sid=NO_DELETE_SID,
            effect=iam.Effect.DENY,
            principals=[iam.AnyPrincipal()],
            actions=["s3:DeleteObject", "s3:DeleteObjectVersion"],
            resources=[bucket.arn_for_objects(f"{paths.root}*")],
            # aws:PrincipalArn is the role's ARN for any of its sessions.
            conditions={"ArnNotEquals": {"aws:PrincipalArn": allowed}},
        )


def conditional_write_statements(
    bucket: s3.IBucket, paths: RegistryPaths
) -> list[iam.PolicyStatement]:
    """Deny object creation without the registry's conditional headers (see the module)."""
    creation = {"Bool": {"s3:ObjectCreationOperation": "true"}}
    return [
        iam.PolicyStatement(
            sid=WRITE_ONCE_SID,
            effect=iam.Effect.DENY,
            principals=[iam.AnyPrincipal()],
            actions=["s3:PutObject"],
            resources=[
                bucket.arn_for_objects(paths.versions),
                bucket.arn_for_objects(paths.events),
            ],
            conditions={"Null": {"s3:if-none-match": "true"}, **creation},
        ),
        iam.PolicyStatement(
            sid=COMPARE_AND_SWAP_SID,
            effect=iam.Effect.DENY,
            principals=[iam.AnyPrincipal()],
            actions=["s3:PutObject"],
            resources=[bucket.arn_for_objects(paths.aliases)],
            # Both keys in one Null block: denied only when both headers are absent.
            conditions={"Null": {"s3:if-none-match": "true", "s3:if-match": "true"}, **creation},
        ),
    ]
