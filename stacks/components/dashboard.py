"""One CloudWatch dashboard per environment: traffic, errors, latency, the deployment alarms, and
what each model version flags."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from sds.kernel.behaviour import (
    ENVIRONMENT,
    FLAGGED,
    MODEL,
    NAMESPACE,
    PREDICTIONS,
    VERSION_DIMENSIONS,
)

_PERIOD = cdk.Duration.minutes(1)


def per_version(
    metric_name: str, *, environment: str, model_name: str
) -> cloudwatch.MathExpression:
    """One line per model version serving in the environment (a search, so a new pin changes
    nothing here: during a canary both versions show side by side)."""
    schema = ",".join((NAMESPACE, *VERSION_DIMENSIONS))
    return cloudwatch.MathExpression(
        expression=(
            f'SEARCH(\'{{{schema}}} MetricName="{metric_name}" '
            f'{ENVIRONMENT}="{environment}" {MODEL}="{model_name}"\', \'Sum\', '
            f"{int(_PERIOD.to_seconds())})"
        ),
        using_metrics={},
        period=_PERIOD,
        label="",
    )


class OperationsDashboard(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        alias: lambda_.Alias,
        stage: apigw.Stage,
        alarms: list[cloudwatch.Alarm],
        model_alarms: list[cloudwatch.Alarm],
    ) -> None:
        super().__init__(scope, construct_id)
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            default_interval=cdk.Duration.hours(3),
        )
        self.dashboard.add_widgets(
            cloudwatch.TextWidget(
                markdown=f"# sds {environment}\nAlias `live` of the inference function, its API "
                "stage, the alarms that roll a CodeDeploy deployment back, and what each model "
                "version flags.",
                width=24,
                height=2,
            )
        )
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Deployment alarms", alarms=list(alarms), width=24)
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Invocations, errors, throttles (live)",
                left=[
                    alias.metric_invocations(period=_PERIOD, statistic="Sum"),
                    alias.metric_errors(period=_PERIOD, statistic="Sum"),
                    alias.metric_throttles(period=_PERIOD, statistic="Sum"),
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Duration (live)",
                left=[
                    alias.metric_duration(period=_PERIOD, statistic=statistic)
                    for statistic in ("p50", "p90", "p99")
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Concurrency (live)",
                left=[alias.metric("ConcurrentExecutions", period=_PERIOD, statistic="Maximum")],
                width=8,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="API requests and errors",
                left=[
                    stage.metric_count(period=_PERIOD, statistic="Sum"),
                    stage.metric_client_error(period=_PERIOD, statistic="Sum"),
                    stage.metric_server_error(period=_PERIOD, statistic="Sum"),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="API latency",
                left=[
                    stage.metric_latency(period=_PERIOD, statistic="p99"),
                    stage.metric_integration_latency(period=_PERIOD, statistic="p99"),
                ],
                width=12,
            ),
        )
        behaviour: list[cloudwatch.IWidget] = [
            cloudwatch.AlarmWidget(
                title=f"{alarm.node.id}: the pinned version's alert rate", alarm=alarm, width=6
            )
            for alarm in model_alarms
        ]
        behaviour.extend(
            cloudwatch.GraphWidget(
                title=f"{name} per model version",
                left=[per_version(name, environment=environment, model_name=model_name)],
                width=12 - 3 * len(model_alarms),
            )
            for name in (PREDICTIONS, FLAGGED)
        )
        self.dashboard.add_widgets(*behaviour)
