"""Training stack: network, ECS cluster and the Fargate task that trains and registers models, and
the managed policies of the people who run training and read its data.

The task reads training data in its own environment's training-data bucket (or, with
`infra.training.source: capture`, its own environment's captures and labels) and registers
versions where the environment's promotion chain starts (versions are allocated there only). Above the
chain start (same account and region), that registry's bucket name is read at deploy time from
the chain start's discovery parameter, `/sds/<start>/registry-bucket` (a template parameter of
SSM type): deploy the chain start's Registry stack first.

With `infra.network.endpoints: during_runs` the isolated network has no interface endpoint in
the template: every training run (the CLI's, the schedule's) is an execution of the Runs state
machine, which creates them before the task and deletes them after it.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from sds.kernel.discovery import TRAINING_STACK, parameter_name
from stacks.components.data_reader_policy import DataReaderPolicy
from stacks.components.discovery import publish_discovery
from stacks.components.registry_reference import reference_registry
from stacks.components.training_job import TrainingJob
from stacks.components.training_network import TrainingNetwork
from stacks.components.training_operator_policy import TrainingOperatorPolicy
from stacks.components.training_runs import TrainingRuns
from stacks.config import (
    LabelSettings,
    LogSettings,
    NetworkSettings,
    TrainingImage,
    TrainingSettings,
)
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
        versions_in: str | None,
        network: NetworkSettings,
        training: TrainingSettings,
        labels: LabelSettings,
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
        # Versions go where they are allocated: this registry at the chain start, else the chain
        # start's, an SSE-S3 one (sds.config refuses `registry.kms` there while another
        # environment trains in it: its key is granted to its own stacks only).
        registry = (
            stateful.registry if versions_in is None else _versions_registry(self, versions_in)
        )
        training_network = TrainingNetwork(self, "Network", settings=network, logs=logs)
        job = TrainingJob(
            self,
            "Job",
            environment=environment,
            model_name=model_name,
            registry=registry,
            training_data=stateful.training_data,
            captures=stateful.captures,
            key=stateful.key,
            registry_key=stateful.key if versions_in is None else None,
            image=image,
            vpc=training_network.vpc,
            subnets=training_network.subnets,
            security_group=training_network.security_group,
            # Without endpoints, the task reaches S3, ECR and CloudWatch Logs over the internet.
            public_ip=not network.isolated,
            settings=training,
            labels=labels,
            logs=logs,
            # Where the endpoints are leased per run, the state machine starts every task.
            schedule_task=not network.leased_endpoints,
        )
        runs = None
        if network.leased_endpoints:
            assert training_network.endpoint_security_group is not None
            runs = TrainingRuns(
                self,
                "Runs",
                environment=environment,
                model_name=model_name,
                vpc=training_network.vpc,
                subnets=training_network.subnets,
                endpoint_subnet_ids=training_network.endpoint_subnet_ids,
                task_security_group=training_network.security_group,
                endpoint_security_group=training_network.endpoint_security_group,
                services=training_network.interface_services,
                cluster=job.cluster,
                task_definition=job.task_definition,
                container=job.container,
                schedule=training.schedule,
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
            registry=registry,
            key=stateful.key if versions_in is None else None,
            versions_in=versions_in,
            state_machine=None if runs is None else runs.state_machine,
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
        discovered = {
            "training-cluster": job.cluster.cluster_name,
            "training-task-definition": job.task_definition.task_definition_arn,
            "training-subnets": cdk.Fn.join(",", training_network.subnet_ids),
            "training-security-group": training_network.security_group.security_group_id,
        }
        if runs is not None:
            discovered["training-state-machine"] = runs.state_machine.state_machine_arn
        publish_discovery(self, environment=environment, stack=TRAINING_STACK, values=discovered)
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


def _versions_registry(scope: Construct, environment: str) -> s3.IBucket:
    """The registry bucket of `environment` (where versions are allocated), by name, resolved by
    CloudFormation at each deploy from that environment's discovery parameter.

    A template parameter of type `AWS::SSM::Parameter::Value<String>` rather than a
    `{{resolve:ssm:...}}` dynamic reference: both are read from SSM at deploy time, but the
    name ends up in the task role's wildcard resources, and cdk-nag v3 names a finding after
    the resource, which CDK's validation ids cannot hold when it contains `{{`.
    """
    name = ssm.StringParameter.value_for_string_parameter(
        scope, parameter_name(environment, "registry-bucket")
    )
    return s3.Bucket.from_bucket_name(scope, "VersionsRegistryBucket", name)
