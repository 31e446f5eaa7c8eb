"""One CloudWatch dashboard per environment: traffic, errors, latency and the deployment alarms."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

_PERIOD = cdk.Duration.minutes(1)


class OperationsDashboard(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        alias: lambda_.Alias,
        stage: apigw.Stage,
        alarms: list[cloudwatch.Alarm],
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
                "stage, and the alarms that roll a CodeDeploy deployment back.",
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
