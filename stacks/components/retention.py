"""CloudWatch Logs log groups kept for the environment's retention period (config speaks days)."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.components.nag import acknowledge_compliance
from stacks.config import Infra, LogSettings

# CDK's enum is named (TWO_WEEKS, ...); config speaks days. Same order as Infra.LOG_RETENTION_DAYS.
_BY_DAYS = dict(
    zip(
        Infra.LOG_RETENTION_DAYS,
        [m for m in logs.RetentionDays if m is not logs.RetentionDays.INFINITE],
        strict=True,
    )
)


def retention(days: int) -> logs.RetentionDays:
    try:
        return _BY_DAYS[days]
    except KeyError:
        raise ValueError(f"{days} is not a CloudWatch Logs retention period") from None


def log_group(scope: Construct, construct_id: str, *, settings: LogSettings) -> logs.LogGroup:
    """A log group that keeps events `settings.retention_days` and, where the environment
    retains its data, outlives its stack."""
    group = logs.LogGroup(
        scope,
        construct_id,
        retention=retention(settings.retention_days),
        removal_policy=cdk.RemovalPolicy.RETAIN if settings.retain else cdk.RemovalPolicy.DESTROY,
    )
    acknowledge_compliance(
        group,
        "CloudWatchLogGroupEncrypted",
        "CloudWatch Logs encrypts every log group at rest with AES-256 (service-managed keys). "
        "No log holds cardholder data (the API's schema admits no card number). The functions "
        "log versions, request ids, event ids and failures, the API callers and statuses, "
        "training its progress, the batch state machine its steps' S3 locations and counts, "
        "flow logs addresses; the inference function's log group also carries the capture "
        "records (payments as sent, less capture.exclude) that its subscription ships to the "
        "captures bucket, for infra.log_retention_days. A customer-managed key would add 1 USD "
        "a month per environment and a key-policy grant to the CloudWatch Logs service; the "
        "environment's data key is kept for S3, scoped per bucket.",
    )
    return group
