"""Batch stack: batch scoring and feature backfill on Step Functions (`sds --aws score`,
`sds --aws backfill`), with the batch function built from the inference bundle.

Stateless and idle-free: a state machine and a function cost nothing between runs. It reads the
environment's training-data bucket and registry from the Registry stack and publishes the state
machine's ARN under `/sds/<env>/batch-state-machine`, and the policy of those who run it
(`BatchOperatorPolicyArn`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
from constructs import Construct

from sds.kernel.discovery import BATCH_STACK
from stacks.components.batch_operator_policy import BatchOperatorPolicy
from stacks.components.batch_runs import BatchRuns
from stacks.components.discovery import publish_discovery
from stacks.components.registry_reference import reference_registry
from stacks.config import BatchSettings, LogSettings
from stacks.registry_stack import RegistryStack


class BatchStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        code_dir: Path,
        architecture: str,
        registry_stack: RegistryStack,
        batch: BatchSettings,
        logs: LogSettings,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description=f"sds {environment}: {model_name} batch scoring and feature backfill",
            **kwargs,
        )
        stateful = reference_registry(
            self, producer=registry_stack, encrypted=registry_stack.key is not None
        )
        runs = BatchRuns(
            self,
            "Runs",
            environment=environment,
            model_name=model_name,
            code_dir=code_dir,
            architecture=architecture,
            registry=stateful.registry,
            data=stateful.training_data,
            key=stateful.key,
            settings=batch,
            logs=logs,
        )
        operator = BatchOperatorPolicy(
            self,
            "BatchOperator",
            environment=environment,
            model_name=model_name,
            state_machine=runs.state_machine,
            data=stateful.training_data,
            output_prefix=batch.output_prefix,
            registry=stateful.registry,
            key=stateful.key,
        )
        self.state_machine = runs.state_machine
        self.function = runs.function
        publish_discovery(
            self,
            environment=environment,
            stack=BATCH_STACK,
            values={"batch-state-machine": runs.state_machine.state_machine_arn},
        )
        cdk.CfnOutput(
            self,
            "StateMachineArn",
            value=runs.state_machine.state_machine_arn,
            description="Batch scoring and feature backfill (sds --aws score / backfill)",
        )
        cdk.CfnOutput(
            self,
            "BatchOperatorPolicyArn",
            value=operator.policy.managed_policy_arn,
            description="Attach to people and pipelines allowed to run batch scoring and "
            "backfill here (sds --aws score / backfill) and follow them",
        )
