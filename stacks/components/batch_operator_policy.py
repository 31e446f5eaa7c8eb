"""The managed policy for people and pipelines that run an environment's batch scoring and
feature backfill on AWS.

Exactly what `sds --aws score` and `sds --aws backfill` (sds/ops/batch_aws.py) do, and what
their messages tell an operator to do by hand: read the environment's discovery parameters,
look for executions of its batch state machine still running (and describe them: their input
names the output they write), start one, follow it and its map runs, stop it; read the run's
manifest and the maps' results under the batch output prefix of the training-data bucket (the
state machine and its function write them; the operator writes nothing), and read this model's
versions to pin `--version`.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.components.data_key import READ, key_use
from stacks.components.nag import acknowledge_wildcard_resource
from stacks.components.promotion_source_policy import discovery_parameters_arn
from stacks.components.registry_paths import RegistryPaths
from stacks.components.s3_listing import list_under


class BatchOperatorPolicy(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        state_machine: sfn.StateMachine,
        data: s3.IBucket,
        output_prefix: str,
        registry: s3.IBucket,
        key: kms.IKey | None,
    ) -> None:
        """`data` is the training-data bucket, whose `output_prefix` the runs write; `registry`
        is this environment's, where `score --version` finds the version to pin."""
        super().__init__(scope, construct_id)
        paths = RegistryPaths(model_name)
        stack = cdk.Stack.of(self)
        machine = state_machine.state_machine_name
        executions = stack.format_arn(
            service="states",
            resource="execution",
            resource_name=f"{machine}:*",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        # arn:...:mapRun:<state machine>/<the map's label>:<id>
        map_runs = stack.format_arn(
            service="states",
            resource="mapRun",
            resource_name=f"{machine}/*",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        outputs = data.arn_for_objects(f"{output_prefix}*")
        versions = registry.arn_for_objects(paths.versions)
        parameters = discovery_parameters_arn(self, environment)
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            description=f"sds {environment}: run {model_name} batch scoring and backfill "
            "(sds --aws score / backfill) and follow them",
            statements=[
                iam.PolicyStatement(
                    sid="StartBatchRuns",
                    # ListExecutions: the running ones, one of which may still write --out
                    actions=["states:ListExecutions", "states:StartExecution"],
                    resources=[state_machine.state_machine_arn],
                ),
                iam.PolicyStatement(
                    sid="FollowBatchRuns",
                    actions=[
                        "states:DescribeExecution",
                        "states:ListMapRuns",
                        "states:StopExecution",
                    ],
                    resources=[executions],
                ),
                iam.PolicyStatement(
                    sid="FollowBatchMaps", actions=["states:DescribeMapRun"], resources=[map_runs]
                ),
                iam.PolicyStatement(
                    sid="ReadBatchOutputs", actions=["s3:GetObject"], resources=[outputs]
                ),
                list_under("ListBatchOutputs", data.bucket_arn, [output_prefix]),
                iam.PolicyStatement(
                    sid="ReadVersions", actions=["s3:GetObject"], resources=[versions]
                ),
                list_under("ListModel", registry.bucket_arn, [paths.root]),
                iam.PolicyStatement(
                    sid="Discover",
                    actions=["ssm:GetParameter", "ssm:GetParameters"],
                    resources=[parameters],
                ),
            ],
        )
        if key is not None:
            self.policy.add_statements(
                key_use(
                    self,
                    sid="DecryptOutputsAndRegistry",
                    key=key,
                    buckets=[data, registry],
                    actions=READ,
                )
            )
        reasons = {
            executions: "the executions of this environment's batch state machine (execution "
            "names are chosen at start: the job and a timestamp)",
            map_runs: "the map runs of this environment's batch state machine (their ids are "
            "generated at each run)",
            outputs: f"read-only, the batch output prefix ({output_prefix}) of the training-data "
            "bucket: the run's manifest and its maps' results",
            versions: "read-only, this model's versions, to pin the version score --version names",
            parameters: "read-only, the discovery parameters of this one environment (/sds/<env>/)",
        }
        for resource, reason in reasons.items():
            acknowledge_wildcard_resource(self.policy, resource, f"Scoped to {reason}.")
