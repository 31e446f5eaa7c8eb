"""The model registry bucket and the bucket that receives its server access logs."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.components.nag import acknowledge_compliance
from stacks.config import RegistrySettings


def acknowledge_single_region(
    bucket: s3.IBucket, what: str, *, retained: bool, deletes: str
) -> None:
    """Acknowledge S3BucketReplicationEnabled for one of the environment's versioned buckets;
    `retained` is whether it outlives its stack, `deletes` who may delete from it."""
    kept = (
        "retained when its stack is deleted"
        if retained
        else "deleted with its stack (CDK empties it first)"
    )
    acknowledge_compliance(
        bucket,
        "S3BucketReplicationEnabled",
        f"{what} Within the region it is versioned (overwritten or deleted objects stay "
        f"recoverable) and {kept}; {deletes}. A replica in a second region would double its "
        "storage and need a second key, for a regional outage that the serving function "
        "(regional too) would share.",
    )


def acknowledge_s3_managed_key(bucket: s3.IBucket, why: str) -> None:
    """Acknowledge S3DefaultEncryptionKMS for a bucket encrypted with S3-managed keys."""
    acknowledge_compliance(
        bucket,
        "S3DefaultEncryptionKMS",
        f"Encrypted at rest with S3-managed keys (SSE-S3, AES-256): {why}",
    )


def removal(retain: bool) -> cdk.RemovalPolicy:
    return cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY


def encryption(key: kms.IKey | None) -> s3.BucketEncryption:
    """The environment's KMS key when it has one (`infra.registry.kms`), else S3-managed keys."""
    return s3.BucketEncryption.S3_MANAGED if key is None else s3.BucketEncryption.KMS


ACCOUNT_PERIMETER_SID = "OnlyThisAccountsPrincipals"


def account_perimeter(bucket: s3.IBucket) -> iam.PolicyStatement:
    """Deny every request from a principal of another account, whatever any Allow says (the
    data-perimeter statement of AWS's "Establishing a data perimeter on AWS" guidance, with the
    account instead of the organization): another account reads the registry only through the
    source environment's promotion source role, a principal of this account. AWS services acting
    with their own service principal are exempt (`aws:PrincipalIsAWSService`)."""
    return iam.PolicyStatement(
        sid=ACCOUNT_PERIMETER_SID,
        effect=iam.Effect.DENY,
        principals=[iam.AnyPrincipal()],
        actions=["s3:*"],
        resources=[bucket.bucket_arn, bucket.arn_for_objects("*")],
        conditions={
            "StringNotEquals": {"aws:PrincipalAccount": cdk.Stack.of(bucket).account},
            "BoolIfExists": {"aws:PrincipalIsAWSService": "false"},
        },
    )


class RegistryBucket(Construct):
    """Versioned, encrypted, TLS-only, private, access-logged storage for model versions, closed
    to principals of other accounts.

    S3 versioning is a safety net under the registry's own write-once versions: an overwritten
    or deleted object can be recovered for `settings.noncurrent_version_days`. The bucket is
    retained when its stack is deleted unless `settings.removal_policy` is "destroy": every
    version starts in some environment's registry, dev's included. The access logs follow the
    environment's `retain_data` (`retain_logs`).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        retain_logs: bool,
        settings: RegistrySettings,
        key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            # S3 server access log delivery supports SSE-S3 only, not KMS keys.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            # A log object overwritten or deleted stays recoverable: access logs are evidence.
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=cdk.Duration.days(settings.access_log_expiration_days),
                    noncurrent_version_expiration=cdk.Duration.days(
                        settings.noncurrent_version_days
                    ),
                )
            ],
            removal_policy=removal(retain_logs),
            auto_delete_objects=not retain_logs,
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            versioned=True,
            encryption=encryption(key),
            encryption_key=key,
            # KMS is asked once per bucket key, not once per object (cost and throttling).
            bucket_key_enabled=True if key else None,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="registry/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=cdk.Duration.days(
                        settings.noncurrent_version_days
                    ),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                )
            ],
            removal_policy=removal(settings.retain),
            auto_delete_objects=not settings.retain,
        )
        self.bucket.add_to_resource_policy(account_perimeter(self.bucket))
        acknowledge_single_region(
            self.access_logs,
            "Server access logs: evidence of who read the registry and the training data, kept "
            "for infra.registry.access_log_expiration_days.",
            retained=retain_logs,
            deletes="no role of this project may delete from it",
        )
        acknowledge_s3_managed_key(
            self.access_logs,
            "S3 server access log delivery writes only to buckets with SSE-S3 default encryption "
            '(Amazon S3 User Guide, "Enabling Amazon S3 server access logging").',
        )
        acknowledge_single_region(
            self.bucket,
            "Model versions: each is also stored in every environment it was promoted to (dev, "
            "staging, prod; in a multi-account setup, in other accounts), and can be retrained "
            "from the training data and the code its manifest records (a git revision, or the "
            "content hash of the training image, its tag in the CDK assets repository).",
            retained=settings.retain,
            deletes="its policy refuses deletes under the model's prefix to everyone but the "
            "retention role",
        )
        if key is None:
            acknowledge_s3_managed_key(
                self.bucket,
                "infra.registry.kms is off in this environment (dev, as committed: no production "
                "data, and a key costs 1 USD a month); staging and prod use a customer key.",
            )
