"""Publish a stack's share of the discovery contract (`sds.kernel.discovery`) in SSM."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_ssm as ssm
from constructs import Construct

from sds.kernel.discovery import OPTIONAL, keys_of, parameter_name


def publish_discovery(
    scope: Construct,
    *,
    environment: str,
    stack: str,
    values: Mapping[str, str],
    construct_ids: Mapping[str, str] | None = None,
) -> None:
    """One `/sds/<env>/<key>` parameter per key the contract assigns to `stack`, no more, no
    less (a key the contract marks optional may be left out).

    `construct_ids` keeps the id of a parameter deployed before this helper existed: a new logical
    id for the same parameter name would make CloudFormation create it before deleting the old
    one, and fail on the name.
    """
    expected = keys_of(stack)
    required = [key for key in expected if key not in OPTIONAL]
    if not set(required) <= set(values) <= set(expected):
        raise ValueError(
            f"{stack} must publish {', '.join(required)} (and may publish "
            f"{', '.join(k for k in expected if k in OPTIONAL) or 'nothing else'}); "
            f"got {', '.join(sorted(values))}"
        )
    for key in (key for key in expected if key in values):
        ssm.StringParameter(
            scope,
            (construct_ids or {}).get(key, f"Discovery-{key}"),
            parameter_name=parameter_name(environment, key),
            string_value=values[key],
            description=f"sds {environment}: {key}",
        )
