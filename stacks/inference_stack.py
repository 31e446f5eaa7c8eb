"""Inference stack: the function and alias `live`, its API, alarm-guarded deployment (with alarms on
the pinned model version's alert rate) and where its alarms go, dashboard, the promoter and
promotion-source policies (and, for readers in other accounts, the promotion source role), the
delivery of its capture records to the captures bucket, and the discovery parameters tools read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
from constructs import Construct

from sds.kernel.discovery import INFERENCE_STACK
from stacks.components.activation_hook import ActivationHook
from stacks.components.alarm_notifications import AlarmNotifications
from stacks.components.alert_rate_alarms import alert_rate_alarms
from stacks.components.capture_delivery import CaptureDelivery
from stacks.components.dashboard import OperationsDashboard
from stacks.components.discovery import publish_discovery
from stacks.components.inference_api import InferenceApi
from stacks.components.model_function import ALIAS_NAME, ModelFunction
from stacks.components.promoter_policy import PromoterPolicy
from stacks.components.promotion_source_policy import PromotionSourcePolicy
from stacks.components.pruner import VersionPruner
from stacks.components.registry_reference import reference_registry
from stacks.components.safe_deployment import SafeDeployment
from stacks.config import (
    AlarmSettings,
    ApiSettings,
    CaptureSettings,
    CrossAccountPromotion,
    DeploymentSettings,
    LambdaSettings,
    LogSettings,
    Pin,
    Serving,
)
from stacks.registry_stack import RegistryStack


class InferenceStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        pin: Pin | None,
        code_dir: Path,
        shadow: Pin | None = None,
        registry_stack: RegistryStack,
        lambda_: LambdaSettings,
        serving: Serving,
        capture: CaptureSettings,
        api: ApiSettings,
        deployment: DeploymentSettings,
        alarms: AlarmSettings,
        logs: LogSettings,
        dashboard: bool,
        cross_account: CrossAccountPromotion,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            # The pin appears only in the function's environment (and so its version): a promotion
            # must change nothing else, or `cdk diff` would hide the model change among noise.
            description=f"sds {environment}: {model_name} inference",
            **kwargs,
        )
        stateful = reference_registry(
            self, producer=registry_stack, encrypted=registry_stack.key is not None
        )
        registry = stateful.registry
        model = ModelFunction(
            self,
            "Model",
            code_dir=code_dir,
            model_name=model_name,
            environment=environment,
            pin=pin,
            shadow=shadow,
            registry=registry,
            key=stateful.key,
            feature_table=stateful.feature_table,
            settings=lambda_,
            serving=serving,
            capture=capture,
            logs=logs,
        )
        CaptureDelivery(
            self,
            "Capture",
            environment=environment,
            log_group=model.log_group,
            bucket=stateful.captures,
            key=stateful.key,
            logs_settings=logs,
        )
        rest_api = InferenceApi(
            self,
            "Api",
            environment=environment,
            alias=model.alias,
            settings=api,
            serving=serving,
            function_timeout_seconds=lambda_.timeout_seconds,
            logs=logs,
        )
        notifications = AlarmNotifications(
            self, "AlarmNotifications", environment=environment, settings=alarms
        )
        hook = ActivationHook(
            self,
            "ActivationHook",
            environment=environment,
            guarded=model.function,
            logs=logs,
        )
        # The pinned version's own behaviour: they change with the pin, as cdk diff shows.
        behaviour = alert_rate_alarms(
            self,
            "ModelBehaviour",
            environment=environment,
            model_name=model_name,
            pin=pin,
            settings=alarms.alert_rate,
        )
        guarded = SafeDeployment(
            self,
            "Deployment",
            environment=environment,
            alias=model.alias,
            api_name=rest_api.api.rest_api_name,
            stage_name=rest_api.stage_name,
            deployment=deployment,
            alarms=alarms,
            topics=notifications.topics,
            pre_traffic_hook=hook.function,
            model_alarms=[] if behaviour is None else behaviour.alarms,
        )
        if dashboard:
            OperationsDashboard(
                self,
                "Operations",
                environment=environment,
                model_name=model_name,
                alias=model.alias,
                stage=rest_api.stage,
                alarms=guarded.alarms,
                model_alarms=[] if behaviour is None else behaviour.alarms,
            )
        promoter = PromoterPolicy(
            self,
            "Promoter",
            environment=environment,
            model_name=model_name,
            registry=registry,
            key=stateful.key,
            function=model.function,
            group=guarded.group,
            sources=cross_account.sources,
        )
        source = PromotionSourcePolicy(
            self,
            "PromotionSource",
            environment=environment,
            model_name=model_name,
            registry=registry,
            key=stateful.key,
            readers=cross_account.readers,
        )
        pruner = VersionPruner(
            self,
            "Pruner",
            environment=environment,
            model_name=model_name,
            function=model.function,
            registry=registry,
            key=stateful.key,
            application=guarded.application,
            group=guarded.group,
            versions_to_keep=lambda_.versions_to_keep,
            logs=logs,
        )
        self.function = model.function
        self.alias = model.alias
        self.api = rest_api.api
        self.deployment_group = guarded.group
        self.alarm_topics = notifications.topics

        publish_discovery(
            self,
            environment=environment,
            stack=INFERENCE_STACK,
            values={
                "function-name": model.function.function_name,
                "alias-name": ALIAS_NAME,
                "api-url": rest_api.url,
                "deployment-group": guarded.group.deployment_group_name,
                "codedeploy-application": guarded.application.application_name,
            },
        )
        cdk.CfnOutput(self, "ApiUrl", value=rest_api.url, description="Inference API base URL")
        cdk.CfnOutput(
            self,
            "PromoterPolicyArn",
            value=promoter.policy.managed_policy_arn,
            description="Attach to people and pipelines allowed to promote/roll back here",
        )
        cdk.CfnOutput(
            self,
            "PromotionSourcePolicyArn",
            value=source.policy.managed_policy_arn,
            description="Read-only: attach, with the target environment's promoter policy, to "
            "people and pipelines allowed to promote versions out of this environment",
        )
        cdk.CfnOutput(
            self,
            "PrunerFunctionName",
            value=pruner.function.function_name,
            description='Prunes old Lambda versions daily; invoke with {"dry_run": true} to see',
        )
