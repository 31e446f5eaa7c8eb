"""Inference stack: the function and alias `live`, its API, alarm-guarded deployment, dashboard,
the promoter policy, and the discovery parameters tools read."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from sds.kernel.discovery import INFERENCE_STACK
from stacks.components.dashboard import OperationsDashboard
from stacks.components.discovery import publish_discovery
from stacks.components.inference_api import InferenceApi
from stacks.components.model_function import ALIAS_NAME, ModelFunction
from stacks.components.nag import acknowledge
from stacks.components.promoter_policy import PromoterPolicy
from stacks.components.registry_reference import reference_registry
from stacks.components.safe_deployment import SafeDeployment
from stacks.config import EnvironmentSpec


class InferenceStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: EnvironmentSpec,
        registry_stack: cdk.Stack,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            # The pin appears only in the function's environment (and so its version): a promotion
            # must change nothing else, or `cdk diff` would hide the model change among noise.
            description=f"sds {spec.name}: {spec.model_name} inference",
            **kwargs,
        )
        registry = reference_registry(self, "RegistryBucket", producer=registry_stack)
        model = ModelFunction(
            self,
            "Model",
            code_dir=spec.lambda_code_dir,
            model_name=spec.model_name,
            environment=spec.name,
            pin=spec.pin,
            registry=registry,
            settings=spec.lambda_,
            serving=spec.serving,
            logs=spec.logs,
        )
        api = InferenceApi(
            self,
            "Api",
            environment=spec.name,
            alias=model.alias,
            settings=spec.api,
            serving=spec.serving,
            function_timeout_seconds=spec.lambda_.timeout_seconds,
            logs=spec.logs,
        )
        topic = self._alarm_topic(spec.alarms.topic_email)
        deployment = SafeDeployment(
            self,
            "Deployment",
            environment=spec.name,
            alias=model.alias,
            api_name=api.api.rest_api_name,
            stage_name=api.stage_name,
            deployment=spec.deployment,
            alarms=spec.alarms,
            topic=topic,
        )
        if spec.infra.dashboard:
            OperationsDashboard(
                self,
                "Operations",
                environment=spec.name,
                alias=model.alias,
                stage=api.stage,
                alarms=deployment.alarms,
            )
        promoter = PromoterPolicy(
            self,
            "Promoter",
            environment=spec.name,
            model_name=spec.model_name,
            registry=registry,
            function=model.function,
            group=deployment.group,
        )
        self.function = model.function
        self.alias = model.alias
        self.api = api.api
        self.deployment_group = deployment.group

        publish_discovery(
            self,
            environment=spec.name,
            stack=INFERENCE_STACK,
            values={
                "function-name": model.function.function_name,
                "alias-name": ALIAS_NAME,
                "api-url": api.url,
                "deployment-group": deployment.group.deployment_group_name,
                "codedeploy-application": deployment.application.application_name,
            },
        )
        cdk.CfnOutput(self, "ApiUrl", value=api.url, description="Inference API base URL")
        cdk.CfnOutput(
            self,
            "PromoterPolicyArn",
            value=promoter.policy.managed_policy_arn,
            description="Attach to people and pipelines allowed to promote/roll back here",
        )

    def _alarm_topic(self, email: str | None) -> sns.ITopic | None:
        if email is None:
            return None
        # SSE with the AWS-managed key would stop CloudWatch from publishing (its key policy
        # cannot be changed); alarm names and states are all these messages carry.
        topic = sns.Topic(self, "AlarmTopic", enforce_ssl=True)
        topic.add_subscription(subscriptions.EmailSubscription(email))
        acknowledge(
            topic,
            "Serverless-SNSRedrivePolicy",
            "The only subscription is an e-mail address for alarm notifications; an undelivered "
            "mail has nothing to replay from a queue, and the alarm state stays visible in "
            "CloudWatch and on the dashboard.",
        )
        return topic
