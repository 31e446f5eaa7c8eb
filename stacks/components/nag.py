"""Acknowledge one cdk-nag finding on one construct, always with the reason a reviewer reads."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import aws_cdk as cdk
from constructs import IConstruct

_recorded: list[tuple[str, str]] | None = None


def acknowledge(scope: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge exactly one finding (e.g. `AwsSolutions-IAM5[Resource::*]`) under `scope`."""
    if not reason.strip():
        raise ValueError(f"acknowledging {finding} needs a reason")
    if _recorded is not None:
        _recorded.append((scope.node.path, finding))
        return
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=finding, reason=reason))


@contextlib.contextmanager
def recording_only() -> Iterator[list[tuple[str, str]]]:
    """Record (construct path, finding) instead of acknowledging, while building an app.

    The infra tests build the app this way to prove that every acknowledgment still matches a
    real finding (no stale ones hiding future problems) and every finding is acknowledged.
    """
    global _recorded
    previous, _recorded = _recorded, []
    try:
        yield _recorded
    finally:
        _recorded = previous


# The compliance packs app.py runs besides AwsSolutions and Serverless. They share most rule names
# under their own prefix; of the rules this project acknowledges, these exist in NIST's only
# (cdk-nag 3.0.2's PCIDSS321Checks has no rule by those names).
PCI_DSS_321 = "PCI.DSS.321"
NIST_800_53_R5 = "NIST.800.53.R5"
_NIST_ONLY = frozenset(
    {"CloudWatchAlarmAction", "DynamoDBInBackupPlan", "LambdaConcurrency", "LambdaDLQ"}
)


def acknowledge_compliance(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge one compliance rule (`LambdaInsideVPC`) under `scope`, in each of the PCI DSS
    3.2.1 and NIST 800-53 R5 packs that has it, with the same reason."""
    for pack in (PCI_DSS_321, NIST_800_53_R5):
        if pack == PCI_DSS_321 and rule in _NIST_ONLY:
            continue
        acknowledge(scope, f"{pack}-{rule}", reason)


def acknowledge_own_policy(role: IConstruct, purpose: str) -> None:
    """Acknowledge IAMNoInlinePolicy for the policy CDK writes for one role's grants."""
    acknowledge_compliance(
        role,
        "IAMNoInlinePolicy",
        f"The grants of {purpose}, which CDK writes as this role's own policy: created, "
        "reviewed in `cdk diff` and deleted with the role, and attached to nothing else, so a "
        "managed policy would be one more object holding the same statements. "
        "tests/security/test_least_privilege.py asserts them; policies meant for several "
        "principals (the operator policies) are managed policies.",
    )


def acknowledge_function_outside_vpc(function: IConstruct, reaches: str) -> None:
    """Acknowledge LambdaInsideVPC for a function that only calls AWS APIs."""
    acknowledge_compliance(
        function,
        "LambdaInsideVPC",
        f"It calls AWS APIs only ({reaches}), over TLS and signed with its role, which IAM "
        "limits to this environment's resources; nothing it reaches lives in a VPC. Inside one "
        "it would need an interface endpoint per API and AZ (7.30 USD a month each) to reach "
        "the same APIs, for no boundary IAM does not already draw. Invoking it takes IAM too: "
        "only the services its resource policy names (each for its own source ARN) and this "
        "account's roles whose own policies grant lambda:InvokeFunction on it can.",
    )


def acknowledge_wildcard_resource(scope: IConstruct, resource: str, reason: str) -> None:
    """Acknowledge AwsSolutions-IAM5 for one wildcard resource ARN (a string that may hold
    tokens), rendered the way cdk-nag names the finding, so the acknowledgment covers exactly
    that ARN pattern and nothing else."""
    rendered = _render(cdk.Stack.of(scope).resolve(resource))
    acknowledge(scope, f"AwsSolutions-IAM5[Resource::{rendered}]", reason)


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            return f"<{argument}>"
        if function == "Fn::GetAtt":
            return f"<{argument[0]}.{argument[1]}>"
        if function == "Fn::Join":
            delimiter, parts = argument
            return str(delimiter).join(_render(part) for part in parts)
    return json.dumps(value, separators=(",", ":"))
