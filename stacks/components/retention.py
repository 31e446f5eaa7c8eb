"""CloudWatch Logs retention from a number of days in config."""

from __future__ import annotations

from aws_cdk import aws_logs as logs

from stacks.config import Infra

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
