"""The house policy of the stacks' small Lambda functions, declared once.

The pruner, the activation hook, the drift monitor, the feature updater, the batch function and
the training endpoints' lease function are built the same way: Python 3.12 (the serving kernel's
runtime), arm64 unless their bundle is built for the environment's architecture, JSON logging to
a log group of their own (`retention.log_group`), X-Ray active tracing, and a role of their own
that writes to that group and holds the component's grants. A change of that policy (a runtime,
the logging format, reserved concurrency) is an edit here, not one per component.

Two steps, in the order the role's policy lists its statements: `function_role`, then the
component's own statements, then `small_function`, whose active tracing adds X-Ray's. What
differs between the functions is a parameter (memory, timeout, architecture, ephemeral storage,
tracing), and so are the reasons each needs no dead-letter queue, no reserved concurrency and no
VPC, which cdk-nag asks of every function.

The inference function (`model_function.py`) has SnapStart, published versions and an alias: it
shares `RUNTIME` and `lambda_architecture` only.
"""

from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.components.nag import (
    acknowledge,
    acknowledge_compliance,
    acknowledge_function_outside_vpc,
)

# Every function of the stacks runs the serving kernel, whose bundles are built for this runtime
# (with the CPython of the same version app.py finds): they move together.
RUNTIME = lambda_.Runtime.PYTHON_3_12
_ARCHITECTURES = {
    "x86_64": lambda_.Architecture.X86_64,
    "arm64": lambda_.Architecture.ARM_64,
}
_RUNTIME_REASON = (
    f"Its code is the serving kernel's, built and tested for Lambda's {RUNTIME.name} runtime, the "
    "inference function's, which the bundles' wheels and bytecode target: the stacks' functions "
    "move to a newer runtime together, with the bundle recipe, as one deliberate change of "
    "stacks/components/small_function.py, not one by one as a drift."
)


def lambda_architecture(name: str) -> lambda_.Architecture:
    """The Lambda architecture config names (`x86_64`, `arm64`)."""
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"{name!r} is not a Lambda architecture (one of {', '.join(_ARCHITECTURES)})"
        ) from None


def function_role(
    scope: Construct, construct_id: str, *, description: str, log_group: logs.ILogGroup
) -> iam.Role:
    """A role only Lambda assumes, which can write to the function's own log group; the
    component adds its grants before it creates the function (`small_function`)."""
    role = iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=description,
    )
    log_group.grant_write(role)
    return role


def small_function(
    scope: Construct,
    construct_id: str,
    *,
    description: str,
    handler: str,
    code: lambda_.Code,
    role: iam.IRole,
    log_group: logs.ILogGroup,
    memory_mb: int,
    timeout: cdk.Duration,
    environment: Mapping[str, str],
    why_no_dead_letter_queue: str,
    why_no_reserved_concurrency: str,
    reaches: str,
    architecture: str = "arm64",
    ephemeral_storage_mb: int | None = None,
    tracing: bool = True,
) -> lambda_.Function:
    """One of the stacks' small functions, with the acknowledgments its house policy needs.

    `why_no_dead_letter_queue` and `why_no_reserved_concurrency` are the reasons (a reviewer reads
    them) this function needs neither; `reaches` names the AWS APIs it calls from outside any VPC.
    """
    function = lambda_.Function(
        scope,
        construct_id,
        description=description,
        runtime=RUNTIME,
        architecture=lambda_architecture(architecture),
        handler=handler,
        code=code,
        memory_size=memory_mb,
        ephemeral_storage_size=(
            None if ephemeral_storage_mb is None else cdk.Size.mebibytes(ephemeral_storage_mb)
        ),
        timeout=timeout,
        role=role,
        log_group=log_group,
        logging_format=lambda_.LoggingFormat.JSON,
        tracing=lambda_.Tracing.ACTIVE if tracing else None,
        environment=dict(environment),
    )
    acknowledge(function, "AwsSolutions-L1", _RUNTIME_REASON)
    acknowledge(
        function,
        "Serverless-LambdaLatestVersion",
        f"Same as AwsSolutions-L1: the kernel it runs targets {RUNTIME.name} on purpose.",
    )
    acknowledge(function, "Serverless-LambdaDLQ", why_no_dead_letter_queue)
    acknowledge_compliance(function, "LambdaDLQ", why_no_dead_letter_queue)
    acknowledge_compliance(function, "LambdaConcurrency", why_no_reserved_concurrency)
    acknowledge_function_outside_vpc(function, reaches)
    return function
