"""Alarms on the pinned model version's own alert rate, for the deployment group to watch.

The handler counts, per version, the events it scores and the ones it flags
(`sds.kernel.behaviour`). These alarms read the counts of the version this deployment pins, and
only those: during a canary the new version's behaviour decides, undiluted by the traffic the old
version still serves. They compare its alert rate (flagged / predictions, per period) with the
rate its manifest expects (carried by the pin) and fire when it is above `max_ratio` times or
below `min_ratio` times that.

Neither alarm fires on less evidence than `min_expected_flags` flags: "too high" judges a period
once its threshold means at least that many flags (predictions >= min_expected_flags / (max_ratio
x expected rate)), "too low" once that many were expected (predictions >= min_expected_flags /
expected rate). For a quieter period the expression gives the expected rate itself, so a
canary's first requests (1 flagged of 3 is 33 %) decide nothing. A period with no requests at all
for the version (before traffic shifts, after it is replaced) is not breaching: nothing to judge
is not a failure.

The alarms are named by the version they judge (construct id `<id>V<version>`), so a new pin
replaces them rather than updating them in place. CloudWatch keeps an updated alarm's state until
its next evaluation: an alarm that fired on the version being replaced would still read ALARM when
CodeDeploy starts shifting to the fix, and roll it back. A new alarm starts with no state, and
each version keeps its own alarm history.
"""

from __future__ import annotations

import math
from decimal import Decimal

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from sds.kernel.behaviour import FLAGGED, NAMESPACE, PREDICTIONS, version_dimensions
from stacks.config import AlertRateAlarmSettings, Pin

EVALUATION_PERIODS = 3
DATAPOINTS_TO_ALARM = 2


def math_number(value: float) -> str:
    """A number as metric math reads it: positional digits, never an exponent (1e-05)."""
    return format(Decimal(repr(float(value))).normalize(), "f")


class AlertRateAlarms(Construct):
    """Too high and too low, on one model version's alert rate in one environment."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        pin: Pin,
        expected_rate: float,
        settings: AlertRateAlarmSettings,
    ) -> None:
        super().__init__(scope, construct_id)
        self.expected_rate = expected_rate
        self.high_threshold = expected_rate * settings.max_ratio
        self.low_threshold = expected_rate * settings.min_ratio
        self.high_min_predictions = math.ceil(settings.min_expected_flags / self.high_threshold)
        self.low_min_predictions = math.ceil(settings.min_expected_flags / expected_rate)
        period = cdk.Duration.minutes(settings.period_minutes)
        dimensions = version_dimensions(
            environment=environment, model=model_name, version=pin.version
        )

        def count(name: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace=NAMESPACE,
                metric_name=name,
                dimensions_map=dimensions,
                period=period,
                statistic="Sum",
            )

        counts = {"predictions": count(PREDICTIONS), "flagged": count(FLAGGED)}

        def rate(min_predictions: int) -> cloudwatch.MathExpression:
            return cloudwatch.MathExpression(
                expression=(
                    f"IF(predictions >= {min_predictions}, flagged / predictions, "
                    f"{math_number(expected_rate)})"
                ),
                using_metrics=counts,
                period=period,
                label=f"{model_name} v{pin.version} alert rate (expected {expected_rate:.3%})",
            )

        subject = f"sds {environment}: {model_name} v{pin.version}"
        expected = f"the {expected_rate:.3%} its manifest expects"
        window = (
            f"in {DATAPOINTS_TO_ALARM} of {EVALUATION_PERIODS} periods of "
            f"{settings.period_minutes} min with >= {{}} predictions (rolls back a deployment)"
        )
        self.high = self._alarm(
            "AlertRateHigh",
            rate=rate(self.high_min_predictions),
            description=f"{subject} flags more than {settings.max_ratio:g}x {expected} "
            f"(> {self.high_threshold:.3%}) " + window.format(self.high_min_predictions),
            threshold=self.high_threshold,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        )
        self.low = self._alarm(
            "AlertRateLow",
            rate=rate(self.low_min_predictions),
            description=f"{subject} flags less than {settings.min_ratio:g}x {expected} "
            f"(< {self.low_threshold:.3%}) " + window.format(self.low_min_predictions),
            threshold=self.low_threshold,
            comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        )
        self.alarms = [self.high, self.low]

    def _alarm(
        self,
        construct_id: str,
        *,
        rate: cloudwatch.MathExpression,
        description: str,
        threshold: float,
        comparison: cloudwatch.ComparisonOperator,
    ) -> cloudwatch.Alarm:
        return cloudwatch.Alarm(
            self,
            construct_id,
            alarm_description=description,
            metric=rate,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=EVALUATION_PERIODS,
            datapoints_to_alarm=DATAPOINTS_TO_ALARM,
            # No datapoint means no requests for this version in the period: nothing to judge.
            # Too few requests are judged by the expression itself (it gives the expected rate).
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )


def alert_rate_alarms(
    scope: Construct,
    construct_id: str,
    *,
    environment: str,
    model_name: str,
    pin: Pin | None,
    settings: AlertRateAlarmSettings,
) -> AlertRateAlarms | None:
    """The alarms for the pinned version, or None: no pin (nothing is served), alarms disabled,
    or a pin that does not say what its version should flag (a warning at synth says how to
    record it)."""
    if pin is None or not settings.enabled:
        return None
    if pin.expected_alert_rate is None:
        cdk.Annotations.of(scope).add_warning_v2(
            "sds:alertRateUnknown",
            f"{environment} pins {model_name} v{pin.version} without the alert rate its manifest "
            f"expects (a pin written before sds recorded it), so this deployment has no "
            f"alert-rate alarms; record it with: sds promote {pin.version} --to {environment} "
            "(a no-op for the alias that rewrites the pin)",
        )
        return None
    return AlertRateAlarms(
        scope,
        f"{construct_id}V{pin.version}",
        environment=environment,
        model_name=model_name,
        pin=pin,
        expected_rate=pin.expected_alert_rate,
        settings=settings,
    )
