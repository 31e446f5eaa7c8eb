"""The contract of the training endpoints' lease function: its environment, and the tag that marks
the interface endpoints it creates.

With `infra.network.endpoints: during_runs` an isolated training network has no interface
endpoint in its template: each training run's state machine creates them (the lease), waits until
they are available, runs the task, then deletes them (the release). Written by
`EndpointLease.to_environ` (`stacks/components/training_runs.py`), read by
`EndpointLease.from_environ` (`lambdas.training_endpoints.handler`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sds.kernel.errors import SdsError

# The tag every leased endpoint carries (its value: the environment), so that a lease finds and
# reuses what another run created, a release deletes exactly those, and IAM can tell them apart.
TAG_KEY = "sds:training-endpoints"

_VARIABLES = {
    "vpc_id": "VPC_ID",
    "subnet_ids": "SUBNET_IDS",
    "security_group_id": "ENDPOINT_SECURITY_GROUP_ID",
    "services": "SERVICE_NAMES",
    "environment": "SDS_ENV",
    "cluster": "TRAINING_CLUSTER",
}


class LeaseSettingsError(SdsError, ValueError):
    """The function's environment is incomplete: its stack and its code do not match."""


@dataclass(frozen=True)
class EndpointLease:
    """Where the endpoints go (VPC, subnets, their security group), which services, whose they are
    (the environment: the tag's value) and the cluster whose tasks keep them alive."""

    vpc_id: str
    subnet_ids: tuple[str, ...]
    security_group_id: str
    services: tuple[str, ...]
    environment: str
    cluster: str

    @property
    def tag(self) -> dict[str, str]:
        return {"Key": TAG_KEY, "Value": self.environment}

    def to_environ(self) -> dict[str, str]:
        values = {
            "vpc_id": self.vpc_id,
            "subnet_ids": ",".join(self.subnet_ids),
            "security_group_id": self.security_group_id,
            "services": ",".join(self.services),
            "environment": self.environment,
            "cluster": self.cluster,
        }
        return {_VARIABLES[name]: value for name, value in values.items()}

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> EndpointLease:
        missing = [variable for variable in _VARIABLES.values() if not environ.get(variable)]
        if missing:
            raise LeaseSettingsError(
                f"the endpoint lease function's environment lacks {', '.join(missing)}"
            )
        value = {name: environ[variable] for name, variable in _VARIABLES.items()}
        return cls(
            vpc_id=value["vpc_id"],
            subnet_ids=tuple(s for s in value["subnet_ids"].split(",") if s),
            security_group_id=value["security_group_id"],
            services=tuple(s for s in value["services"].split(",") if s),
            environment=value["environment"],
            cluster=value["cluster"],
        )
