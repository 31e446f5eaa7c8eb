"""One environment: its Registry, Inference, Features and Training stacks, wired together."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from stacks.batch_stack import BatchStack
from stacks.components.retention import keep_provider_logs
from stacks.config import EnvironmentSpec
from stacks.features_stack import FeaturesStack
from stacks.inference_stack import InferenceStack
from stacks.registry_stack import RegistryStack
from stacks.training_stack import TrainingStack


class EnvironmentStage(cdk.Stage):
    """`<env>/Registry`, `<env>/Inference`, `<env>/Features`, `<env>/Training` and `<env>/Batch`,
    deployed with `cdk deploy '<env>/*'`.

    No Training stack for an environment in another account or region than where its promotion
    chain starts (`has_training` in sds.config).
    """

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
        # Each stack receives the settings groups its constructs use, and nothing else.
        self.registry = RegistryStack(
            self,
            "Registry",
            environment=spec.name,
            model_name=spec.model_name,
            retain_data=infra.retain_data,
            registry=spec.registry,
            capture=spec.capture,
        )
        self.inference = InferenceStack(
            self,
            "Inference",
            environment=spec.name,
            model_name=spec.model_name,
            pin=spec.pin,
            shadow=spec.shadow,
            code_dir=spec.lambda_code_dir,
            registry_stack=self.registry,
            lambda_=spec.lambda_,
            serving=spec.serving,
            capture=spec.capture,
            api=spec.api,
            deployment=spec.deployment,
            alarms=spec.alarms,
            logs=spec.logs,
            dashboard=infra.dashboard,
            cross_account=spec.cross_account,
        )
        if spec.cross_account.unplaced:
            self._warn_unplaced(spec)
        self.features = FeaturesStack(
            self,
            "Features",
            environment=spec.name,
            model_name=spec.model_name,
            registry_stack=self.registry,
            inference_stack=self.inference,
            code_dir=spec.updater_code_dir,
            monitor_code_dir=spec.monitor_code_dir,
            architecture=spec.lambda_.architecture,
            features=spec.features,
            monitor=spec.monitor,
            logs=spec.logs,
        )
        # Versions are allocated where the promotion chain starts: an environment above it trains
        # on its own data and registers there; one in another account or region has no task.
        self.training = (
            TrainingStack(
                self,
                "Training",
                environment=spec.name,
                model_name=spec.model_name,
                image=spec.training_image,
                registry_stack=self.registry,
                versions_in=(
                    None if spec.environment.allocates_versions else spec.environment.chain_start
                ),
                network=spec.network,
                training=spec.training,
                labels=spec.labels,
                logs=spec.logs,
            )
            if spec.environment.has_training
            else None
        )
        # Batch scoring and backfill: the inference bundle again, with the batch entry point.
        self.batch = BatchStack(
            self,
            "Batch",
            environment=spec.name,
            model_name=spec.model_name,
            code_dir=spec.lambda_code_dir,
            architecture=spec.lambda_.architecture,
            registry_stack=self.registry,
            batch=spec.batch,
            logs=spec.logs,
        )
        # CDK's own custom-resource providers log with the same retention as everything else.
        for stack in self.stacks:
            keep_provider_logs(stack, settings=spec.logs)
        cdk.Tags.of(self).add("sds:environment", spec.name)
        cdk.Tags.of(self).add("sds:model", spec.model_name)

    def _warn_unplaced(self, spec: EnvironmentSpec) -> None:
        others = ", ".join(spec.cross_account.unplaced)
        cdk.Annotations.of(self.inference).add_warning_v2(
            "sds:unplacedPromotion",
            f"{spec.name} promotes to or from {others}, and only one side names an account in "
            "cdk.json (infra.account): if they are in different accounts, promotion between "
            "them has no role to read through. Name both accounts (docs/multi-account.md).",
        )

    @property
    def stacks(self) -> list[cdk.Stack]:
        built = [self.registry, self.inference, self.features, self.training, self.batch]
        return [stack for stack in built if stack is not None]
