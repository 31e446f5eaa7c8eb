"""One environment: its Registry, Inference and Training stacks, wired together."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from stacks.config import EnvironmentSpec
from stacks.inference_stack import InferenceStack
from stacks.registry_stack import RegistryStack
from stacks.training_stack import TrainingStack


class EnvironmentStage(cdk.Stage):
    """`<env>/Registry`, `<env>/Inference` and `<env>/Training`, deployed with `cdk deploy '<env>/*'`."""

    def __init__(
        self, scope: Construct, construct_id: str, *, spec: EnvironmentSpec, **kwargs: Any
    ) -> None:
        infra = spec.infra
        super().__init__(
            scope,
            construct_id,
            env=cdk.Environment(account=infra.account, region=infra.region),
            **kwargs,
        )
        self.spec = spec
        self.registry = RegistryStack(self, "Registry", spec=spec)
        self.inference = InferenceStack(self, "Inference", spec=spec, registry_stack=self.registry)
        self.training = TrainingStack(self, "Training", spec=spec, registry_stack=self.registry)
        cdk.Tags.of(self).add("sds:environment", spec.name)
        cdk.Tags.of(self).add("sds:model", spec.model_name)

    @property
    def stacks(self) -> list[cdk.Stack]:
        return [self.registry, self.inference, self.training]
