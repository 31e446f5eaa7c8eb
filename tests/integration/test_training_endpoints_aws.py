"""Leasing the isolated training network's interface endpoints on the moto server: a run creates
what is missing and reuses what another run left, waits until every endpoint is available, and
its release deletes them unless a training task or another execution still needs them.

The VPC, its subnet, the endpoint security group, the training cluster and the state machine are
created through the AWS APIs the way the Training stack creates them; each test calls the code
the lease function runs (`lambdas.training_endpoints.leases`), or the handler itself, and looks
at what is left on the EC2 API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from lambdas.training_endpoints import handler
from lambdas.training_endpoints.leases import (
    EndpointsPending,
    LeaseFailed,
    lease_endpoints,
    release_endpoints,
    wait_for_endpoints,
)
from sds.kernel.endpoints import TAG_KEY, EndpointLease

REGION = "us-east-1"
SERVICES = tuple(f"com.amazonaws.{REGION}.{s}" for s in ("ecr.api", "ecr.dkr", "logs"))


@dataclass
class Network:
    lease: EndpointLease
    state_machine: str
    clients: Callable[[str], Any]

    def endpoints(self, *, live_only: bool = True) -> dict[str, str]:
        """Service -> endpoint id of this environment's tagged endpoints."""
        found = self.clients("ec2").describe_vpc_endpoints(
            Filters=[{"Name": "vpc-id", "Values": [self.lease.vpc_id]}]
        )["VpcEndpoints"]
        return {
            e["ServiceName"]: e["VpcEndpointId"]
            for e in found
            if {"Key": TAG_KEY, "Value": self.lease.environment} in e.get("Tags", [])
            and (not live_only or e["State"].lower() not in ("deleting", "deleted"))
        }

    def start_execution(self, name: str) -> str:
        return str(
            self.clients("stepfunctions").start_execution(
                stateMachineArn=self.state_machine, name=name, input="{}"
            )["executionArn"]
        )

    def release(self, *, execution: str | None = None) -> Any:
        return release_endpoints(
            self.clients("ec2"),
            self.clients("ecs"),
            self.clients("stepfunctions"),
            self.lease,
            state_machine=self.state_machine,
            execution=execution,
        )


@pytest.fixture
def network(aws: Any) -> Network:
    """An isolated training network as the Training stack deploys it with `during_runs`: a VPC,
    one subnet, the endpoint security group, the cluster, the training run's state machine."""

    def clients(service: str) -> Any:
        return aws.client(service)

    ec2 = clients("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/20")["Vpc"]["VpcId"]
    # As the CDK VPC has it: private DNS names need it (and moto's ECS, to attach a task).
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    aws.hold_state("ecs::task")  # a task stays running until the test stops it
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.0.0/24")["Subnet"]["SubnetId"]
    created = ec2.create_security_group(GroupName="endpoints", Description="e", VpcId=vpc)
    group = created["GroupId"]
    cluster = clients("ecs").create_cluster(clusterName="training")["cluster"]["clusterName"]
    machine = clients("stepfunctions").create_state_machine(
        name="training-runs",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        roleArn="arn:aws:iam::123456789012:role/training-runs",
    )["stateMachineArn"]
    lease = EndpointLease(
        vpc_id=vpc,
        subnet_ids=(subnet,),
        security_group_id=group,
        services=SERVICES,
        environment="staging",
        cluster=cluster,
    )
    return Network(lease=lease, state_machine=machine, clients=clients)


def start_training_task(network: Network) -> str:
    """A training task pending or running in the cluster (moto runs no container)."""
    ecs = network.clients("ecs")
    definition = ecs.register_task_definition(
        family="train",
        containerDefinitions=[{"name": "train", "image": "train", "memory": 512}],
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
    )["taskDefinition"]["taskDefinitionArn"]
    task = ecs.run_task(
        cluster=network.lease.cluster,
        taskDefinition=definition,
        launchType="FARGATE",
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": list(network.lease.subnet_ids),
                "securityGroups": [network.lease.security_group_id],
                "assignPublicIp": "DISABLED",
            }
        },
    )["tasks"][0]["taskArn"]
    return str(task)


def test_a_lease_creates_the_three_endpoints_with_private_dns_in_the_training_subnets(
    network: Network,
) -> None:
    # Given an isolated network without interface endpoints
    assert network.endpoints() == {}

    # When a run leases them
    report = lease_endpoints(network.clients("ec2"), network.lease, token="run-1")

    # Then each service has one endpoint, tagged as this environment's, created by this lease
    assert sorted(report.created) == sorted(SERVICES)
    assert network.endpoints() == report.endpoints
    described = network.clients("ec2").describe_vpc_endpoints(
        VpcEndpointIds=list(report.endpoints.values())
    )["VpcEndpoints"]
    for endpoint in described:
        # And they are interface endpoints with private DNS (the SDK's default hostnames resolve
        # to them), in the training subnet, behind the endpoint security group
        assert endpoint["VpcEndpointType"] == "Interface"
        assert endpoint["PrivateDnsEnabled"] is True
        assert endpoint["SubnetIds"] == list(network.lease.subnet_ids)
        assert [g["GroupId"] for g in endpoint["Groups"]] == [network.lease.security_group_id]


def test_a_second_run_reuses_the_endpoints_another_run_created(network: Network) -> None:
    # Given the endpoints a first (concurrent) run leased
    first = lease_endpoints(network.clients("ec2"), network.lease, token="run-1")

    # When a second run leases
    second = lease_endpoints(network.clients("ec2"), network.lease, token="run-2")

    # Then it creates nothing and uses the same endpoints
    assert second.created == ()
    assert second.endpoints == first.endpoints
    assert len(network.endpoints()) == 3


def test_a_lease_creates_only_what_is_missing_and_ignores_other_environments_endpoints(
    network: Network,
) -> None:
    # Given the ECR API endpoint already leased, and another environment's logs endpoint in the
    # same VPC
    ec2 = network.clients("ec2")
    api = SERVICES[0]
    only_api = EndpointLease(**{**network.lease.__dict__, "services": (api,)})
    lease_endpoints(ec2, only_api)
    other = EndpointLease(**{**network.lease.__dict__, "environment": "prod"})
    lease_endpoints(ec2, EndpointLease(**{**other.__dict__, "services": (SERVICES[2],)}))

    # When a run leases all three
    report = lease_endpoints(ec2, network.lease)

    # Then it created the two that were missing for this environment
    assert sorted(report.created) == sorted(SERVICES[1:])
    assert len(network.endpoints()) == 3


def test_waiting_raises_pending_until_every_endpoint_is_available(network: Network) -> None:
    # Given endpoints that EC2 reports as still pending (moto makes them available at once, so
    # the describe answers are rewritten the way EC2 answers during the minute or two it takes)
    ec2 = network.clients("ec2")
    pending = {"on": True}

    def still_pending(parsed: dict[str, Any], **_: Any) -> None:
        if pending["on"]:
            for endpoint in parsed.get("VpcEndpoints", []):
                endpoint["State"] = "pending"

    ec2.meta.events.register("after-call.ec2.DescribeVpcEndpoints", still_pending)
    lease_endpoints(ec2, network.lease)

    # When the state machine waits, Then it is told to retry, naming what is not ready
    with pytest.raises(EndpointsPending, match=r"not available yet: .*ecr\.api pending"):
        wait_for_endpoints(ec2, network.lease)
    # And once they are available, the wait returns them, creating nothing more
    pending["on"] = False
    report = wait_for_endpoints(ec2, network.lease)
    assert report.available and report.created == ()


def test_waiting_fails_for_good_when_an_endpoint_failed(network: Network) -> None:
    # Given leased endpoints, one of which EC2 then reports as failed
    ec2 = network.clients("ec2")
    lease_endpoints(ec2, network.lease)

    def failed(parsed: dict[str, Any], **_: Any) -> None:
        for endpoint in parsed.get("VpcEndpoints", []):
            if endpoint["ServiceName"].endswith("logs"):
                endpoint["State"] = "failed"

    ec2.meta.events.register("after-call.ec2.DescribeVpcEndpoints", failed)

    # When the state machine waits, Then the error is not the retried one, and names it
    with pytest.raises(LeaseFailed, match=r"\.logs \(vpce-\w+\) failed"):
        wait_for_endpoints(ec2, network.lease)


def test_waiting_recreates_an_endpoint_released_meanwhile(network: Network) -> None:
    # Given leased endpoints, one of which a concurrent release deleted
    ec2 = network.clients("ec2")
    report = lease_endpoints(ec2, network.lease)
    ec2.delete_vpc_endpoints(VpcEndpointIds=[report.endpoints[SERVICES[1]]])

    # When the state machine waits
    again = wait_for_endpoints(ec2, network.lease)

    # Then the missing one is created again rather than the task starting without it
    assert again.created == (SERVICES[1],)
    assert len(network.endpoints()) == 3


def test_release_after_the_run_deletes_the_endpoints(network: Network) -> None:
    # Given a run's execution that leased the endpoints, and whose task has stopped
    lease_endpoints(network.clients("ec2"), network.lease)
    execution = network.start_execution("run-1")

    # When it releases (its own execution is still running while it does)
    report = network.release(execution=execution)

    # Then every tagged endpoint is deleted
    assert sorted(report.deleted) and report.kept_for == ()
    assert network.endpoints() == {}
    # And releasing again (the sweep) has nothing left to do
    assert network.release().deleted == ()


def test_release_keeps_the_endpoints_while_another_training_task_runs(network: Network) -> None:
    # Given leased endpoints and a training task still running in the cluster
    lease_endpoints(network.clients("ec2"), network.lease)
    task = start_training_task(network)

    # When a run (or the sweep) releases
    execution = network.start_execution("run-1")
    report = network.release(execution=execution)

    # Then nothing is deleted, and the report says which task keeps them
    assert report.deleted == ()
    assert report.kept_for == (f"task {task.rsplit('/', 1)[-1]}",)
    assert len(network.endpoints()) == 3

    # And once the task has stopped, the next release deletes them
    network.clients("ecs").stop_task(cluster=network.lease.cluster, task=task)
    assert len(network.release(execution=execution).deleted) == 3
    assert network.endpoints() == {}


def test_release_keeps_the_endpoints_while_another_execution_runs(network: Network) -> None:
    # Given two executions sharing the endpoints: this one finished its task, the other not
    lease_endpoints(network.clients("ec2"), network.lease)
    mine = network.start_execution("run-1")
    network.start_execution("run-2")

    # When this one releases, Then the endpoints stay for the other
    report = network.release(execution=mine)
    assert report.kept_for == ("execution run-2",)
    assert len(network.endpoints()) == 3


def test_the_handler_releases_after_a_failed_run_and_the_sweep_finds_nothing_to_do(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the function's environment as the stack writes it, and endpoints a run leased
    # through the handler before its task failed
    for variable, value in network.lease.to_environ().items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    leased = handler.lambda_handler({"action": "lease", "execution_name": "run-1"}, None)
    assert leased["available"] is True and len(leased["endpoints"]) == 3
    execution = network.start_execution("run-1")

    # When the state machine's Catch calls the release for the failed run
    released = handler.lambda_handler(
        {"action": "release", "state_machine": network.state_machine, "execution": execution},
        None,
    )

    # Then the endpoints are gone, and the hourly sweep (no execution of its own) finds none
    assert len(released["deleted"]) == 3 and network.endpoints() == {}
    swept = handler.lambda_handler(
        {"action": "release", "state_machine": network.state_machine}, None
    )
    # (the failed run's execution is still "running" on moto, which never ends it)
    assert swept == {"deleted": [], "kept_for": ["execution run-1"]}


def test_the_handler_refuses_an_unknown_action_and_a_release_without_its_state_machine(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, value in network.lease.to_environ().items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match="unknown action 'borrow'; known: lease, wait, release"):
        handler.lambda_handler({"action": "borrow"}, None)
    with pytest.raises(ValueError, match="needs the state machine's ARN"):
        handler.lambda_handler({"action": "release"}, None)
    # And nothing was created or deleted
    assert network.endpoints() == {}
