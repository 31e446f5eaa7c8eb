"""The inference Lambda: one published version per (code, model pin) pair, behind alias `live`."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from sds.kernel.settings import function_environment
from stacks.components.data_key import READ, key_use, table_key_use
from stacks.components.nag import (
    acknowledge,
    acknowledge_compliance,
    acknowledge_function_outside_vpc,
    acknowledge_own_policy,
    acknowledge_wildcard_resource,
)
from stacks.components.registry_paths import RegistryPaths
from stacks.components.retention import log_group
from stacks.components.small_function import RUNTIME, lambda_architecture
from stacks.config import CaptureSettings, LambdaSettings, LogSettings, Pin, Serving

HANDLER = "lambdas.inference.handler.lambda_handler"
ALIAS_NAME = "live"
# Why no dead-letter queue: every caller invokes it synchronously and gets every error back.
_NO_QUEUE = (
    "Invoked synchronously only: by API Gateway for every request, and once per version by the "
    "activation hook and by a rollback (sds rollback, with the promoter policy) to wake an "
    "Inactive version. A dead-letter queue applies to asynchronous invocations; each of these "
    "callers receives every error directly."
)


class ModelFunction(Construct):
    """Python 3.12 function built without Docker, its log group, a least-privilege role, and the
    alias `live`.

    `current_version` hashes the function's configuration, so a new model pin (an environment
    variable) publishes a new version exactly like a code change does. Versions are retained:
    CloudFormation would otherwise delete the previous version on the next deploy and leave
    nothing for `sds rollback` to switch back to.

    A shadow pin (`shadow`) reaches the function the way the live pin does: two environment
    variables, so `cdk diff` shows SHADOW_MODEL_VERSION appear and a new version is published; the
    challenger's model is read at cold start from the same registry, under the same read-only
    grant on the immutable version objects, and verified against its sha256. No model is in the
    asset, so neither pin changes the asset hash.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code_dir: Path,
        model_name: str,
        environment: str,
        pin: Pin | None,
        registry: s3.IBucket,
        shadow: Pin | None = None,
        key: kms.IKey | None,
        feature_table: dynamodb.ITable,
        settings: LambdaSettings,
        serving: Serving,
        capture: CaptureSettings,
        logs: LogSettings,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = log_group(self, "Logs", settings=logs)
        self.role = self._build_role(
            environment=environment,
            model_name=model_name,
            registry=registry,
            key=key,
            feature_table=feature_table,
        )
        self.function = self._build_function(
            code_dir=code_dir,
            settings=settings,
            description=f"sds {environment}: {model_name} inference (ONNX Runtime)",
            environment=function_environment(
                model_name=model_name,
                environment=environment,
                pin=pin,
                registry_uri=f"s3://{registry.bucket_name}",
                max_events=serving.max_events,
                max_body_bytes=serving.max_body_bytes,
                feature_store_uri=f"dynamodb://{feature_table.table_name}",
                when_features_unavailable=serving.when_features_unavailable,
                feature_store_timeout_ms=serving.feature_store_timeout_ms,
                capture_sample_rate=capture.sample_rate,
                capture_exclude=capture.exclude,
                shadow=shadow,
            ),
        )
        self.version = self.function.current_version
        self.alias = lambda_.Alias(self, "Live", alias_name=ALIAS_NAME, version=self.version)
        self._acknowledge(
            snapstart=settings.snapstart, reserved=settings.reserved_concurrency is not None
        )

    def _build_role(
        self,
        *,
        environment: str,
        model_name: str,
        registry: s3.IBucket,
        key: kms.IKey | None,
        feature_table: dynamodb.ITable,
    ) -> iam.Role:
        """Writes its own logs, reads the immutable version objects of this model and the feature
        table's items, nothing else (with a customer-managed key: decrypts, never encrypts, and
        only registry objects and that table)."""
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"sds {environment}: inference function (reads model versions only)",
        )
        self.log_group.grant_write(role)
        versions = registry.arn_for_objects(RegistryPaths(model_name).versions)
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadModelVersions", actions=["s3:GetObject"], resources=[versions]
            )
        )
        # The account aggregates: read only (the feature updater writes them).
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadAccountAggregates",
                actions=["dynamodb:BatchGetItem", "dynamodb:GetItem"],
                resources=[feature_table.table_arn],
            )
        )
        if key is not None:
            role.add_to_policy(
                key_use(role, sid="DecryptRegistry", key=key, buckets=[registry], actions=READ)
            )
            role.add_to_policy(
                table_key_use(
                    role, sid="DecryptFeatureTable", key=key, table=feature_table, actions=READ
                )
            )
        acknowledge_wildcard_resource(
            role,
            versions,
            "Read-only, and only the immutable version objects of this model; the function "
            "learns which version to load from its MODEL_VERSION setting at run time.",
        )
        return role

    def _build_function(
        self,
        *,
        code_dir: Path,
        settings: LambdaSettings,
        description: str,
        environment: dict[str, str],
    ) -> lambda_.Function:
        return lambda_.Function(
            self,
            "Function",
            description=description,
            runtime=RUNTIME,
            architecture=lambda_architecture(settings.architecture),
            handler=HANDLER,
            code=lambda_.Code.from_asset(str(code_dir)),
            memory_size=settings.memory_mb,
            timeout=cdk.Duration.seconds(settings.timeout_seconds),
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=settings.reserved_concurrency,
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if settings.snapstart else None,
            environment=environment,
            current_version_options=lambda_.VersionOptions(
                removal_policy=cdk.RemovalPolicy.RETAIN,
            ),
        )

    def _acknowledge(self, *, snapstart: bool, reserved: bool) -> None:
        acknowledge_own_policy(
            self.role,
            "the inference function: write its logs, read this model's versions and the feature "
            "table's items",
        )
        acknowledge_function_outside_vpc(
            self.function, "S3 for the model, DynamoDB for the account aggregates, X-Ray"
        )
        acknowledge_compliance(self.function, "LambdaDLQ", _NO_QUEUE)
        if not reserved:
            acknowledge_compliance(
                self.function,
                "LambdaConcurrency",
                "infra.lambda.reserved_concurrency is null in this environment (prod reserves "
                "100): the API stage's throttle (infra.api) bounds how often it runs, and a "
                "reservation would be carved out of the account's pool, which new accounts "
                "start at 10, too few to reserve from.",
            )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's PutTraceSegments/PutTelemetryRecords do not support resource-level "
            "permissions; '*' is the only valid resource for active tracing.",
        )
        acknowledge(
            self.function,
            "AwsSolutions-L1",
            "The bundle's wheels and bytecode are built for CPython 3.12 (the serving contract); "
            "a runtime upgrade is a deliberate change to the bundle recipe, not a drift.",
        )
        acknowledge(
            self.function,
            "Serverless-LambdaLatestVersion",
            "Same as AwsSolutions-L1: the bundle is built for CPython 3.12 on purpose.",
        )
        acknowledge(self.function, "Serverless-LambdaDLQ", _NO_QUEUE)
        if snapstart:
            cdk.Annotations.of(self.function).acknowledge_warning(
                "@aws-cdk/aws-lambda:snapStartRequirePublish",
                "current_version publishes a version on every deploy and alias live uses it.",
            )
