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
from stacks.config import EnvironmentSpec


class TrainingStack(cdk.Stack):
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
            description=f"sds {spec.name}: {spec.model_name} training on Fargate",
            **kwargs,
        )
        registry = reference_registry(self, "RegistryBucket", producer=registry_stack)
        network = TrainingNetwork(
            self,
            "Network",
            settings=spec.network,
            logs=spec.logs,
        )
        job = TrainingJob(
            self,
            "Job",
            environment=spec.name,
            model_name=spec.model_name,
            registry=registry,
            image=spec.training_image,
            vpc=network.vpc,
            subnets=network.subnets,
            security_group=network.security_group,
            # Without endpoints, the task reaches S3, ECR and CloudWatch Logs over the internet.
            public_ip=not network.isolated,
            settings=spec.training,
            logs=spec.logs,
        )
        self.vpc = network.vpc
        self.task_role = job.task_role
        publish_discovery(
            self,
            environment=spec.name,
            stack=TRAINING_STACK,
            values={
                "training-cluster": job.cluster.cluster_name,
                "training-task-definition": job.task_definition.task_definition_arn,
                "training-subnets": cdk.Fn.join(",", network.subnet_ids),
                "training-security-group": network.security_group.security_group_id,
            },
        )
