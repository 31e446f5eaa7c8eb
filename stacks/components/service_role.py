"""Roles an AWS service assumes to act for one of the environment's resources, and for no other.

A trust policy that names only a service principal lets the service assume the role for any
resource that names it, another account's included: the confused deputy (IAM User Guide). Every
such role here is built by `service_role`, which requires what each service's documentation gives
for its trust policy: the account of the resource the service acts for (`aws:SourceAccount`) and,
where the service passes it, that resource's ARN (`aws:SourceArn`, ArnLike). A resource that
names its role (a rule's target, a flow log, a subscription filter) cannot be named back by the
role without a circular reference, so the ARN is then the narrowest pattern known at synth: the
rules of this environment's bus, the log group a subscription reads, this account's flow logs.
"""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from constructs import Construct


def service_role(
    scope: Construct,
    construct_id: str,
    *,
    service: str,
    sources: Sequence[str] = (),
    description: str,
) -> iam.Role:
    """A role `service` may assume only for resources of this stack's account, and of the ARN
    patterns `sources` when given."""
    conditions: dict[str, dict[str, object]] = {
        "StringEquals": {"aws:SourceAccount": cdk.Stack.of(scope).account}
    }
    if sources:
        conditions["ArnLike"] = {
            "aws:SourceArn": sources[0] if len(sources) == 1 else list(sources)
        }
    return iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal(service, conditions=conditions),
        description=description,
    )


def rules_on(scope: Construct, bus: events.IEventBus | None = None) -> str:
    """The ARN pattern of the EventBridge rules on `bus` (this account's and region's rules of
    any bus when None: a rule on the default bus has a name CloudFormation generates)."""
    name = "*" if bus is None else f"{bus.event_bus_name}/*"
    return cdk.Stack.of(scope).format_arn(service="events", resource="rule", resource_name=name)
