"""Training stack: network, ECS cluster and the Fargate task that trains and registers models."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from sds.kernel.discovery import TRAINING_STACK
from stacks.components.discovery import publish_discovery
from stacks.components.registry_reference import reference_registry
from stacks.components.training_job import TrainingJob
from stacks.components.training_network import TrainingNetwork
from stacks.config import LogSettings, NetworkSettings, TrainingImage, TrainingSettings


class TrainingStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        image: TrainingImage,
        registry_stack: cdk.Stack,
        network: NetworkSettings,
        training: TrainingSettings,
        logs: LogSettings,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description=f"sds {environment}: {model_name} training on Fargate",
            **kwargs,
        )
        registry = reference_registry(self, "RegistryBucket", producer=registry_stack)
        training_network = TrainingNetwork(self, "Network", settings=network, logs=logs)
        job = TrainingJob(
            self,
            "Job",
            environment=environment,
            model_name=model_name,
            registry=registry,
            image=image,
            vpc=training_network.vpc,
            subnets=training_network.subnets,
            security_group=training_network.security_group,
            # Without endpoints, the task reaches S3, ECR and CloudWatch Logs over the internet.
            public_ip=not network.isolated,
            settings=training,
            logs=logs,
        )
        self.vpc = training_network.vpc
        self.task_role = job.task_role
        publish_discovery(
            self,
            environment=environment,
            stack=TRAINING_STACK,
            values={
                "training-cluster": job.cluster.cluster_name,
                "training-task-definition": job.task_definition.task_definition_arn,
                "training-subnets": cdk.Fn.join(",", training_network.subnet_ids),
                "training-security-group": training_network.security_group.security_group_id,
            },
        )
