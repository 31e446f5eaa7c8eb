"""Network for training tasks: never a NAT gateway, inbound never allowed.

Isolated (staging/prod): private isolated subnets with no route out of the VPC reach S3 through
the free gateway endpoint, and ECR (API and Docker, to pull the image) and CloudWatch Logs (the
container's log driver) through interface endpoints. Those bill by the hour for every AZ they
have an interface in (7.30 USD a month each, with `network.endpoints: always`), the biggest idle
cost an environment can have: staging and prod run the network in one AZ (`network.azs: 1`,
21.90 USD a month; two would be 43.80), because training is a batch job an AZ outage only delays
(docs/decisions.md). Not isolated (dev): public subnets with public IPs for the task, no inbound
rules, and only the S3 gateway endpoint, so an idle dev environment costs nothing for networking.

With `network.endpoints: during_runs` (staging and prod) the isolated network keeps its subnets,
the S3 gateway endpoint and both security groups, but no interface endpoint: each training run's
state machine creates them before its task starts and deletes them after it stops
(`stacks/components/training_runs.py`), so they bill only while a run lasts.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from stacks.components.nag import acknowledge_compliance, acknowledge_own_policy
from stacks.components.retention import log_group
from stacks.components.service_role import service_role
from stacks.config import LogSettings, NetworkSettings

_INTERFACE_ENDPOINTS = {
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
}


class TrainingNetwork(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: NetworkSettings,
        logs: LogSettings,
    ) -> None:
        super().__init__(scope, construct_id)
        isolated = settings.isolated
        self.isolated = isolated
        subnet_type = ec2.SubnetType.PRIVATE_ISOLATED if isolated else ec2.SubnetType.PUBLIC
        flow_logs = log_group(self, "FlowLogs", settings=logs)
        # The flow log names this role, so the role names this account's flow logs, not its id.
        self.flow_logs_role = service_role(
            self,
            "FlowLogsRole",
            service="vpc-flow-logs.amazonaws.com",
            sources=[
                cdk.Stack.of(self).format_arn(
                    service="ec2", resource="vpc-flow-log", resource_name="*"
                )
            ],
            description="sds training network: VPC Flow Logs writes rejected traffic to its "
            "log group",
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.42.0.0/20"),
            max_azs=settings.azs,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="training",
                    subnet_type=subnet_type,
                    cidr_mask=24,
                    # Only tasks that ask for one (assignPublicIp) get a public address.
                    map_public_ip_on_launch=None if isolated else False,
                )
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
            },
            flow_logs={
                "FlowLogs": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(
                        flow_logs, self.flow_logs_role
                    ),
                    traffic_type=ec2.FlowLogTrafficType.REJECT,
                )
            },
        )
        self.subnets = ec2.SubnetSelection(subnet_type=subnet_type)
        self.security_group = ec2.SecurityGroup(
            self,
            "TaskSecurityGroup",
            vpc=self.vpc,
            description="sds training task: no inbound; HTTPS out to S3, ECR and CloudWatch Logs",
            allow_all_outbound=False,
        )
        self.security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to AWS APIs (endpoints or internet)"
        )
        # The services of the interface endpoints the task needs (their names, per region).
        self.interface_services = [service.name for service in _INTERFACE_ENDPOINTS.values()]
        self.endpoint_security_group: ec2.SecurityGroup | None = None
        if isolated:
            self.endpoint_security_group = self._build_endpoint_security_group()
            if not settings.leased_endpoints:
                self._build_interface_endpoints(self.endpoint_security_group)
        else:
            self._acknowledge_public_subnets()
        acknowledge_own_policy(
            self.flow_logs_role,
            "the VPC flow logs' delivery role: write rejected traffic to its log group",
        )

    def _acknowledge_public_subnets(self) -> None:
        for subnet in self.vpc.public_subnets:
            acknowledge_compliance(
                subnet,
                "VPCNoUnrestrictedRouteToIGW",
                "infra.network.isolated is false in this environment (dev, as committed): the "
                "training task reaches ECR and CloudWatch Logs over the internet instead of "
                "through interface endpoints (21.90 USD a month in one AZ). Its security group "
                "allows no inbound traffic and HTTPS out only; staging and prod are isolated.",
            )

    def _build_endpoint_security_group(self) -> ec2.SecurityGroup:
        """What the interface endpoints sit behind: HTTPS from training tasks, nothing else."""
        endpoints = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="sds training: interface endpoints accept HTTPS from training tasks",
            allow_all_outbound=False,
        )
        endpoints.add_ingress_rule(
            self.security_group, ec2.Port.tcp(443), "HTTPS from training tasks"
        )
        return endpoints

    def _build_interface_endpoints(self, endpoints: ec2.SecurityGroup) -> None:
        """ECR and CloudWatch Logs inside the VPC, reachable from training tasks only."""
        # One interface per AZ, whatever the subnets: the hourly charge is per endpoint per AZ.
        one_per_az = ec2.SubnetSelection(subnet_type=self.subnets.subnet_type, one_per_az=True)
        for endpoint_id, service in _INTERFACE_ENDPOINTS.items():
            self.vpc.add_interface_endpoint(
                endpoint_id,
                service=service,
                subnets=one_per_az,
                private_dns_enabled=True,
                security_groups=[endpoints],
                open=False,
            )

    @property
    def subnet_ids(self) -> list[str]:
        return self.vpc.select_subnets(subnet_type=self.subnets.subnet_type).subnet_ids

    @property
    def endpoint_subnet_ids(self) -> list[str]:
        """One training subnet per AZ: where an interface endpoint gets its network interface."""
        return self.vpc.select_subnets(
            subnet_type=self.subnets.subnet_type, one_per_az=True
        ).subnet_ids
