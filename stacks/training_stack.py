"""Training stack: network, ECS cluster and the Fargate task that trains and registers models, and
the managed policies of the people who run training and read its data."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from sds.kernel.discovery import TRAINING_STACK
from stacks.components.data_reader_policy import DataReaderPolicy
from stacks.components.discovery import publish_discovery
from stacks.components.registry_reference import reference_registry
from stacks.components.training_job import TrainingJob
from stacks.components.training_network import TrainingNetwork
from stacks.components.training_operator_policy import TrainingOperatorPolicy
from stacks.config import LogSettings, NetworkSettings, TrainingImage, TrainingSettings
from stacks.registry_stack import RegistryStack


class TrainingStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        image: TrainingImage,
        registry_stack: RegistryStack,
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
        stateful = reference_registry(
            self, producer=registry_stack, encrypted=registry_stack.key is not None
        )
        training_network = TrainingNetwork(self, "Network", settings=network, logs=logs)
        job = TrainingJob(
            self,
            "Job",
            environment=environment,
            model_name=model_name,
            registry=stateful.registry,
            training_data=stateful.training_data,
            key=stateful.key,
            image=image,
            vpc=training_network.vpc,
            subnets=training_network.subnets,
            security_group=training_network.security_group,
            # Without endpoints, the task reaches S3, ECR and CloudWatch Logs over the internet.
            public_ip=not network.isolated,
            settings=training,
            logs=logs,
        )
        operator = TrainingOperatorPolicy(
            self,
            "Operator",
            environment=environment,
            model_name=model_name,
            cluster=job.cluster,
            task_definition=job.task_definition,
            log_group=job.log_group,
            registry=stateful.registry,
            key=stateful.key,
        )
        reader = DataReaderPolicy(
            self,
            "DataReader",
            environment=environment,
            bucket=stateful.training_data,
            prefix=training.data_prefix,
            key=stateful.key,
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
        cdk.CfnOutput(
            self,
            "TrainingOperatorPolicyArn",
            value=operator.policy.managed_policy_arn,
            description="Attach to people and pipelines allowed to run training here "
            "(sds train --on-fargate) and follow it",
        )
        cdk.CfnOutput(
            self,
            "DataReaderPolicyArn",
            value=reader.policy.managed_policy_arn,
            description="Attach to analysts and pipelines allowed to read the training data "
            "(read-only)",
        )
