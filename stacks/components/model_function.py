"""The inference Lambda: one published version per (code, model pin) pair, behind alias `live`."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from sds.kernel.settings import function_environment
from stacks.components.nag import acknowledge, acknowledge_wildcard_resource
from stacks.components.registry_paths import RegistryPaths
from stacks.components.retention import retention
from stacks.config import Infra, Pin, Serving

HANDLER = "lambdas.inference.handler.lambda_handler"
ALIAS_NAME = "live"


class ModelFunction(Construct):
    """Python 3.12 function built without Docker, its log group, a least-privilege role, and the
    alias `live`.

    `current_version` hashes the function's configuration, so a new model pin (an environment
    variable) publishes a new version exactly like a code change does. Versions are retained:
    CloudFormation would otherwise delete the previous version on the next deploy and leave
    nothing for `sds rollback` to switch back to.
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
        infra: Infra,
        serving: Serving,
    ) -> None:
        super().__init__(scope, construct_id)
        removal = cdk.RemovalPolicy.RETAIN if infra.retain_data else cdk.RemovalPolicy.DESTROY
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=retention(infra.log_retention_days),
            removal_policy=removal,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"sds {environment}: inference function (reads model versions only)",
        )
        self.log_group.grant_write(self.role)
        paths = RegistryPaths(model_name)
        versions = registry.arn_for_objects(paths.versions)
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadModelVersions", actions=["s3:GetObject"], resources=[versions]
            )
        )
        acknowledge_wildcard_resource(
            self.role,
            versions,
            "Read-only, and only the immutable version objects of this model; the function "
            "learns which version to load from its MODEL_VERSION setting at run time.",
        )
        architecture = (
            lambda_.Architecture.ARM_64
            if infra.architecture == "arm64"
            else lambda_.Architecture.X86_64
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description=f"sds {environment}: {model_name} inference (ONNX Runtime)",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=architecture,
            handler=HANDLER,
            code=lambda_.Code.from_asset(str(code_dir)),
            memory_size=infra.memory_mb,
            timeout=cdk.Duration.seconds(infra.timeout_seconds),
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=infra.reserved_concurrency,
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if infra.snapstart else None,
            environment=function_environment(
                model_name=model_name,
                environment=environment,
                pin=pin,
                registry_uri=f"s3://{registry.bucket_name}",
                max_events=serving.max_events,
                max_body_bytes=serving.max_body_bytes,
            ),
            current_version_options=lambda_.VersionOptions(
                removal_policy=cdk.RemovalPolicy.RETAIN,
            ),
        )
        self.version = self.function.current_version
        self.alias = lambda_.Alias(self, "Live", alias_name=ALIAS_NAME, version=self.version)

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
        acknowledge(
            self.function,
            "Serverless-LambdaDLQ",
            "Invoked synchronously by API Gateway only; a dead-letter queue applies to "
            "asynchronous invocations, and the caller receives every error directly.",
        )
        if infra.snapstart:
            cdk.Annotations.of(self.function).acknowledge_warning(
                "@aws-cdk/aws-lambda:snapStartRequirePublish",
                "current_version publishes a version on every deploy and alias live uses it.",
            )
