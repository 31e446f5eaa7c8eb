"""Features stack: the activity event path that keeps the feature table up to date.

The activity bus with its archive (`stacks/components/activity_bus.py`), the rule, queue,
dead-letter queue and updater function that fold events into the feature table
(`stacks/components/feature_updater.py`), the delivery of label events to the captures bucket
(`stacks/components/label_delivery.py`), the scheduled drift monitor over the captures and its
alarms (`stacks/components/drift_monitor.py`), the producer and replay managed policies, and the
discovery parameters of the bus, its archive and the rule. The table itself is stateful and lives
in the Registry stack; this stack reads it from the Registry stack's outputs (weak references, as
the Inference stack does), and sends its dead-letter alarm to the Inference stack's alarm topics,
so it deploys after both: Registry, Inference, Features.

`bus` is the activity bus: other rules may attach to it from outside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from sds.kernel.discovery import FEATURES_STACK
from stacks.components.activity_bus import ActivityBus
from stacks.components.discovery import publish_discovery
from stacks.components.drift_monitor import DriftMonitor
from stacks.components.feature_updater import FeatureUpdater
from stacks.components.label_delivery import LabelDelivery
from stacks.components.registry_reference import reference_registry
from stacks.components.replay_policy import ReplayPolicy
from stacks.config import FeatureSettings, LogSettings, MonitorSettings
from stacks.inference_stack import InferenceStack
from stacks.registry_stack import RegistryStack


class FeaturesStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        registry_stack: RegistryStack,
        inference_stack: InferenceStack,
        code_dir: Path,
        monitor_code_dir: Path,
        architecture: str,
        features: FeatureSettings,
        monitor: MonitorSettings,
        logs: LogSettings,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description=f"sds {environment}: activity events and the feature updater for "
            f"{model_name}",
            **kwargs,
        )
        stateful = reference_registry(
            self, producer=registry_stack, encrypted=registry_stack.key is not None
        )
        self.add_stack_dependency(inference_stack, "the dead-letter alarm notifies its topics")
        activity = ActivityBus(self, "Activity", environment=environment, settings=features)
        updater = FeatureUpdater(
            self,
            "Updater",
            environment=environment,
            bus=activity.bus,
            table=stateful.feature_table,
            key=stateful.key,
            code_dir=code_dir,
            architecture=architecture,
            settings=features,
            logs=logs,
            topics=inference_stack.alarm_topics,
        )
        replay = ReplayPolicy(self, "Replay", environment=environment, archive=activity.archive)
        # Label events (chargebacks, reviews) share the bus; they land next to the captures.
        self.labels = LabelDelivery(
            self,
            "Labels",
            environment=environment,
            bus=activity.bus,
            bucket=stateful.captures,
            key=stateful.key,
            logs_settings=logs,
        )
        # The loop's daily look at what was served: drift figures as metrics, alarmed.
        self.drift_monitor = DriftMonitor(
            self,
            "DriftMonitor",
            environment=environment,
            model_name=model_name,
            captures=stateful.captures,
            registry=stateful.registry,
            key=stateful.key,
            code=lambda_.Code.from_asset(str(monitor_code_dir)),
            settings=monitor,
            logs=logs,
            topics=inference_stack.alarm_topics,
        )
        self.bus = activity.bus
        self.archive = activity.archive
        self.rule = updater.rule
        self.updater = updater.function
        publish_discovery(
            self,
            environment=environment,
            stack=FEATURES_STACK,
            values={
                "event-bus": activity.bus.event_bus_name,
                "event-archive": activity.archive.archive_name,
                "feature-rule": updater.rule.rule_arn,
            },
        )
        cdk.CfnOutput(
            self,
            "EventBusName",
            value=activity.bus.event_bus_name,
            description="Where producers put activity events (PutEvents, source sds.activity)",
        )
        cdk.CfnOutput(
            self,
            "EventProducerPolicyArn",
            value=activity.producer_policy.managed_policy_arn,
            description="Attach to producers of activity events: PutEvents on this bus only",
        )
        cdk.CfnOutput(
            self,
            "FeatureReplayPolicyArn",
            value=replay.policy.managed_policy_arn,
            description="Attach to people and pipelines allowed to replay the archive into the "
            "feature table (sds --aws replay)",
        )
        cdk.CfnOutput(
            self,
            "DeadLetterQueueUrl",
            value=updater.dead_letters.queue_url,
            description="Activity events that did not reach the feature table (alarmed)",
        )
