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
        "flow logs addresses, CDK's custom-resource providers the buckets they empty and the "
        "security group they restrict; the inference function's log group also carries the "
        "capture records (payments as sent, less capture.exclude) that its subscription ships to "
        "the captures bucket, for infra.log_retention_days. A customer-managed key would add 1 USD "
        "a month per environment and a key-policy grant to the CloudWatch Logs service; the "
        "environment's data key is kept for S3, scoped per bucket.",
    )
    return group


def keep_provider_logs(stack: cdk.Stack, *, settings: LogSettings) -> None:
    """Give the function of each of CDK's custom-resource providers in `stack` (the buckets'
    auto-delete, the VPC's default security group restriction) a log group like every other.

    Their function would log to `/aws/lambda/<name>`, which Lambda creates on first use without
    retention, so it is kept forever and outlives the stack. CDK's `CustomResourceProvider` has
    no log group option (aws-cdk-lib 2.275), so its function's `LoggingConfig` is set here, on
    the CloudFormation resource. Call it once every construct of the stack exists: the providers
    are created by the constructs that need them.
    """
    for provider in stack.node.find_all():
        if not isinstance(provider, cdk.CustomResourceProviderBase):
            continue
        (function,) = [
            child
            for child in provider.node.children
            if isinstance(child, cdk.CfnResource)
            and child.cfn_resource_type == "AWS::Lambda::Function"
        ]
        group = log_group(provider, "Logs", settings=settings)
        function.add_property_override("LoggingConfig", {"LogGroup": group.log_group_name})
