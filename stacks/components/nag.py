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
