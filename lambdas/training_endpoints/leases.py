"""Lease and release the isolated training network's interface endpoints (ECR API, ECR Docker,
CloudWatch Logs) around a training run, so that they bill only while a run needs them.

- `lease_endpoints` finds this environment's tagged endpoints in the VPC and creates the missing ones
  (private DNS on, in the training subnets, behind the endpoint security group); endpoints that
  another run created are reused, never duplicated.
- `wait_for_endpoints` leases again (an endpoint released meanwhile is recreated) and raises `EndpointsPending`
  until every one is `available`; the state machine retries it for a bounded time.
- `release_endpoints` deletes the tagged endpoints, unless a training task is still pending or running in
  the cluster, or another execution of the state machine is running (it will release them).

Every function takes its clients as arguments: the handler passes boto3's, the tests moto's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sds.kernel.endpoints import TAG_KEY, EndpointLease
from sds.kernel.errors import SdsError, plural

# EC2 spells endpoint states in either case depending on the API version; compared lowercased.
AVAILABLE = "available"
GONE = frozenset({"deleting", "deleted"})
BROKEN = frozenset({"failed", "rejected", "expired"})
# CreateVpcEndpoint's answer while an endpoint with the same private DNS name exists in the VPC
# (one another run is creating, or one still being deleted): wait and lease again.
_DNS_CONFLICT = "conflicting DNS domain"


class EndpointsPending(SdsError, RuntimeError):
    """Some endpoints are not available yet; the state machine retries this (its class name is
    the error name Step Functions matches)."""


class LeaseFailed(SdsError, RuntimeError):
    """An endpoint could not be created or failed; the message names it and EC2's reason."""


class ReleaseFailed(SdsError, RuntimeError):
    """EC2 refused to delete some endpoints; the message names them."""


def _state(endpoint: dict[str, Any]) -> str:
    return str(endpoint.get("State", "")).lower()


def tagged(ec2: Any, lease: EndpointLease) -> list[dict[str, Any]]:
    """This environment's leased endpoints in the training VPC, in any state."""
    found: list[dict[str, Any]] = []
    pages = ec2.get_paginator("describe_vpc_endpoints").paginate(
        Filters=[
            {"Name": "vpc-id", "Values": [lease.vpc_id]},
            {"Name": f"tag:{TAG_KEY}", "Values": [lease.environment]},
        ]
    )
    for page in pages:
        found.extend(page.get("VpcEndpoints", []))
    return found


def _current(endpoints: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Service name -> the endpoint serving it (not being deleted), the most useful first."""
    rank = {AVAILABLE: 0}
    current: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        if _state(endpoint) in GONE:
            continue
        service = str(endpoint["ServiceName"])
        held = current.get(service)
        if held is None or rank.get(_state(endpoint), 1) < rank.get(_state(held), 1):
            current[service] = endpoint
    return current


@dataclass(frozen=True)
class LeaseReport:
    """What a lease found: each service's endpoint id and state, and which ones it created."""

    endpoints: dict[str, str]
    states: dict[str, str]
    created: tuple[str, ...] = ()
    waiting_for_dns: tuple[str, ...] = ()

    @property
    def available(self) -> bool:
        return not self.waiting_for_dns and all(s == AVAILABLE for s in self.states.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoints": dict(self.endpoints),
            "states": dict(self.states),
            "created": list(self.created),
            "available": self.available,
        }


def lease_endpoints(ec2: Any, lease: EndpointLease, *, token: str = "") -> LeaseReport:
    """Make sure each service has one tagged endpoint in the VPC: reuse, else create.

    `token` (the execution's name) makes a retried creation idempotent (EC2's ClientToken).
    """
    current = _current(tagged(ec2, lease))
    created: list[str] = []
    waiting: list[str] = []
    for service in lease.services:
        if service in current:
            continue
        try:
            endpoint = ec2.create_vpc_endpoint(
                VpcEndpointType="Interface",
                VpcId=lease.vpc_id,
                ServiceName=service,
                SubnetIds=list(lease.subnet_ids),
                SecurityGroupIds=[lease.security_group_id],
                PrivateDnsEnabled=True,
                TagSpecifications=[{"ResourceType": "vpc-endpoint", "Tags": [lease.tag]}],
                **({"ClientToken": f"{token}-{service}"[-64:]} if token else {}),
            )["VpcEndpoint"]
        except Exception as exc:  # botocore's ClientError; the message is what matters here
            if _DNS_CONFLICT in str(exc):
                waiting.append(service)
                continue
            raise LeaseFailed(f"creating the {service} endpoint in {lease.vpc_id}: {exc}") from exc
        current[service] = endpoint
        created.append(service)
    return LeaseReport(
        endpoints={s: str(e["VpcEndpointId"]) for s, e in current.items()},
        states={s: _state(e) for s, e in current.items()},
        created=tuple(created),
        waiting_for_dns=tuple(waiting),
    )


def wait_for_endpoints(ec2: Any, lease: EndpointLease, *, token: str = "") -> LeaseReport:
    """Lease again (what was released meanwhile is recreated); return once every endpoint is
    available, raise `EndpointsPending` while one is not and `LeaseFailed` if one failed."""
    report = lease_endpoints(ec2, lease, token=token)
    broken = {s: state for s, state in report.states.items() if state in BROKEN}
    if broken:
        them, new = ("it", "a new one") if len(broken) == 1 else ("them", "new ones")
        raise LeaseFailed(
            f"interface {plural(len(broken), 'endpoint')} "
            + ", ".join(
                f"{service} ({report.endpoints[service]}) {state}"
                for service, state in broken.items()
            )
            + f" in {lease.vpc_id}; the release deletes {them}, a new run creates {new}"
        )
    if not report.available:
        pending = [f"{s} {state}" for s, state in report.states.items() if state != AVAILABLE]
        pending += [f"{s} waiting for an endpoint being deleted" for s in report.waiting_for_dns]
        raise EndpointsPending(f"not available yet: {', '.join(pending)}")
    return report


@dataclass(frozen=True)
class ReleaseReport:
    """What a release deleted, or why it kept the endpoints."""

    deleted: tuple[str, ...] = ()
    kept_for: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"deleted": list(self.deleted), "kept_for": list(self.kept_for)}


def still_needed(
    ecs: Any, sfn: Any, lease: EndpointLease, *, state_machine: str, execution: str | None
) -> list[str]:
    """Why the endpoints must stay: training tasks pending or running in the cluster, and
    executions of the state machine other than `execution` still running."""
    reasons: list[str] = []
    for desired in ("RUNNING", "PENDING"):
        for page in ecs.get_paginator("list_tasks").paginate(
            cluster=lease.cluster, desiredStatus=desired
        ):
            reasons.extend(f"task {arn.rsplit('/', 1)[-1]}" for arn in page.get("taskArns", []))
    for page in sfn.get_paginator("list_executions").paginate(
        stateMachineArn=state_machine, statusFilter="RUNNING"
    ):
        reasons.extend(
            f"execution {e['name']}"
            for e in page.get("executions", [])
            if e["executionArn"] != execution
        )
    return sorted(set(reasons))


def release_endpoints(
    ec2: Any,
    ecs: Any,
    sfn: Any,
    lease: EndpointLease,
    *,
    state_machine: str,
    execution: str | None = None,
) -> ReleaseReport:
    """Delete this environment's tagged endpoints unless a run still needs them."""
    reasons = still_needed(ecs, sfn, lease, state_machine=state_machine, execution=execution)
    if reasons:
        return ReleaseReport(kept_for=tuple(reasons))
    ids = sorted(str(e["VpcEndpointId"]) for e in tagged(ec2, lease) if _state(e) not in GONE)
    if not ids:
        return ReleaseReport()
    unsuccessful = ec2.delete_vpc_endpoints(VpcEndpointIds=ids).get("Unsuccessful") or []
    if unsuccessful:
        failed = ", ".join(
            f"{item.get('ResourceId', '?')} ({item.get('Error', {}).get('Message', 'no reason')})"
            for item in unsuccessful
        )
        raise ReleaseFailed(
            f"could not delete {plural(len(unsuccessful), 'endpoint')} {failed}; the hourly "
            "sweep retries"
        )
    return ReleaseReport(deleted=tuple(ids))
