"""AWS Lambda entry point of the training endpoints' lease function, called by the training run's
state machine (`{"action": "lease" | "wait" | "release", ...}`) and, for the hourly sweep, by
EventBridge (`{"action": "release", "state_machine": <arn>}`).

Thin on purpose: the VPC, subnets, security group, services and cluster come from the
environment (`sds.kernel.endpoints.EndpointLease`), the work is
`lambdas.training_endpoints.leases`. It logs one JSON line with what it found, created or
deleted; a failure raises, named by its class (`EndpointsPending`, `LeaseFailed`,
`ReleaseFailed`), which is the error the state machine retries or catches.
"""

from __future__ import annotations

import json
import os
from typing import Any

from lambdas.training_endpoints.leases import (
    lease_endpoints,
    release_endpoints,
    wait_for_endpoints,
)
from sds.kernel import sdk
from sds.kernel.endpoints import EndpointLease, LeaseSettingsError


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    del context
    lease = EndpointLease.from_environ(os.environ)
    event = event if isinstance(event, dict) else {}
    action = event.get("action")
    token = str(event.get("execution_name") or "")
    if action == "lease":
        result = lease_endpoints(sdk.client("ec2"), lease, token=token).to_dict()
    elif action == "wait":
        # No idempotency token: what the wait creates replaces an endpoint released meanwhile,
        # and EC2 would answer a repeated token with that deleted endpoint.
        result = wait_for_endpoints(sdk.client("ec2"), lease).to_dict()
    elif action == "release":
        state_machine = event.get("state_machine")
        if not state_machine:
            raise LeaseSettingsError("a release needs the state machine's ARN (state_machine)")
        result = release_endpoints(
            sdk.client("ec2"),
            sdk.client("ecs"),
            sdk.client("stepfunctions"),
            lease,
            state_machine=str(state_machine),
            execution=event.get("execution"),
        ).to_dict()
    else:
        raise LeaseSettingsError(f"unknown action {action!r}; known: lease, wait, release")
    print(json.dumps({"message": f"endpoints {action}", **result}, sort_keys=True))
    return result
