"""Batch runs on AWS: a state machine with two Distributed Maps and the batch function they call.

    Plan -> [Shuffle: Distributed Map over the input items] -> Collect
         -> [ComputeParts: Distributed Map over the partitions left] -> Summarize -> done

A history's events are partitioned by account before anything is computed, because an account's
point-in-time aggregates need all of its events (sds.kernel.batch.shuffle): the first map reads
each input item (a range of a .jsonl object, or of a .jsonl.gz object's content) and writes its events
grouped by partition; the second computes one part per partition (scores, or the aggregates).
Each map reads its items from a JSON list the previous step wrote (S3 ItemReader), caps the
functions running at once (`max_concurrency`), and writes every item's result, failures
included, to S3 (ResultWriter) under the run's output; `Summarize` names each failed item from
those files and writes the run's manifest when every part is finished. The shuffle tolerates no
failure (a lost range would skew every account in it); the parts tolerate
`tolerated_failure_percent` (a failed part loses only its own rows, and the next run recomputes
it).

The function is the inference bundle (the same asset) with another handler,
`lambdas.inference.batch.lambda_handler`. Its role reads the training-data bucket, writes only
under the output prefix, and reads this model's version objects; the state machine's role
invokes it, reads the item lists and writes the map results under the output prefix. Nothing
here costs anything while no run is going.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from sds.kernel.batch.settings import batch_environment
from stacks.components.data_key import READ, READ_WRITE, key_use
from stacks.components.nag import (
    acknowledge,
    acknowledge_compliance,
    acknowledge_own_policy,
    acknowledge_wildcard_resource,
)
from stacks.components.registry_paths import RegistryPaths
from stacks.components.retention import log_group
from stacks.components.service_role import service_role
from stacks.components.small_function import function_role, small_function
from stacks.components.state_machine_role import deliver_logs_and_traces
from stacks.config import BatchSettings, LogSettings

HANDLER = "lambdas.inference.batch.lambda_handler"
# A run of 100M events takes minutes to an hour; a stuck one must not run (and bill) for a year.
RUN_TIMEOUT = cdk.Duration.hours(24)
_THROTTLED = ["Lambda.TooManyRequestsException"]


class BatchRuns(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        code_dir: Path,
        architecture: str,
        registry: s3.IBucket,
        data: s3.IBucket,
        key: kms.IKey | None,
        settings: BatchSettings,
        logs: LogSettings,
    ) -> None:
        super().__init__(scope, construct_id)
        self._data = data
        self._outputs = data.arn_for_objects(f"{settings.output_prefix}*")
        self.function_logs = log_group(self, "FunctionLogs", settings=logs)
        self.role = self._build_function_role(
            environment=environment, model_name=model_name, registry=registry, key=key,
        )  # fmt: skip
        self.function = small_function(
            self,
            "Function",
            description=f"sds {environment}: batch scoring and feature backfill steps "
            "(the inference bundle)",
            handler=HANDLER,
            code=lambda_.Code.from_asset(str(code_dir)),
            architecture=architecture,
            role=self.role,
            log_group=self.function_logs,
            memory_mb=settings.memory_mb,
            ephemeral_storage_mb=settings.ephemeral_storage_mb,
            timeout=cdk.Duration.seconds(settings.timeout_seconds),
            environment=batch_environment(
                model_name=model_name,
                registry_uri=f"s3://{registry.bucket_name}",
                environment=environment,
                data_bucket=data.bucket_name,
                output_prefix=settings.output_prefix,
            ),
            why_no_dead_letter_queue="Invoked synchronously by the state machine only: every "
            "failure is returned to the map, written to its ResultWriter output and named in the "
            "run's summary; a dead-letter queue applies to asynchronous invocations.",
            why_no_reserved_concurrency="Only the state machine invokes it, and each of a run's "
            "Distributed Maps runs at most infra.batch.max_concurrency items at once: that is its "
            "cap, and the maps retry throttling (Lambda.TooManyRequestsException) with backoff. A "
            "reservation would hold that many executions out of the account's pool every day no "
            "run is going (the inference function included), and new accounts, which start at "
            "10, cannot reserve any.",
            reaches="S3 for the history, the runs and the model, X-Ray",
        )
        self.machine_logs = log_group(self, "StateMachineLogs", settings=logs)
        self.machine_role = self._build_machine_role(environment=environment, key=key)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            # Its grants are the ones below, not CDK's: those for the S3 ItemReader and the
            # ResultWriter would cover every object of the training-data bucket (the item list's
            # key and the results' prefix are paths in the run's input, unknown here).
            role=self.machine_role.without_policy_updates(),
            comment=f"sds {environment}: batch scoring and feature backfill "
            "(sds --aws score, sds --aws backfill)",
            definition_body=sfn.DefinitionBody.from_chainable(self._definition(settings)),
            state_machine_type=sfn.StateMachineType.STANDARD,
            timeout=RUN_TIMEOUT,
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.machine_logs, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
        )
        self._grant_child_executions()
        self._acknowledge()

    # The function --------------------------------------------------------------------------------

    def _build_function_role(
        self, *, environment: str, model_name: str, registry: s3.IBucket, key: kms.IKey | None
    ) -> iam.Role:
        role = function_role(
            self,
            "FunctionRole",
            description=f"sds {environment}: batch function (reads history, writes batch results)",
            log_group=self.function_logs,
        )
        self._versions = registry.arn_for_objects(RegistryPaths(model_name).versions)
        self._history = self._data.arn_for_objects("*")
        statements = [
            iam.PolicyStatement(
                sid="ReadHistoryAndRuns", actions=["s3:GetObject"], resources=[self._history]
            ),
            iam.PolicyStatement(
                sid="ListHistoryAndRuns",
                actions=["s3:ListBucket"],
                resources=[self._data.bucket_arn],
            ),
            iam.PolicyStatement(
                sid="WriteRuns",
                actions=["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                resources=[self._outputs],
            ),
            iam.PolicyStatement(
                sid="ReadModelVersions", actions=["s3:GetObject"], resources=[self._versions]
            ),
        ]
        for statement in statements:
            role.add_to_policy(statement)
        if key is not None:
            role.add_to_policy(
                key_use(role, sid="UseDataKey", key=key, buckets=[self._data], actions=READ_WRITE)
            )
            role.add_to_policy(
                key_use(role, sid="DecryptRegistry", key=key, buckets=[registry], actions=READ)
            )
        return role

    # The state machine ---------------------------------------------------------------------------

    def _invoke(
        self, construct_id: str, payload: dict[str, object], result_path: str
    ) -> tasks.LambdaInvoke:
        task = tasks.LambdaInvoke(
            self,
            construct_id,
            lambda_function=self.function,
            payload=sfn.TaskInput.from_object(payload),
            payload_response_only=True,
            retry_on_service_exceptions=True,
            result_path=result_path,
        )
        task.add_retry(
            errors=_THROTTLED, interval=cdk.Duration.seconds(5), max_attempts=8, backoff_rate=2
        )
        return task

    def _map(
        self,
        construct_id: str,
        *,
        items_key: str,
        action: str,
        field: str,
        settings: BatchSettings,
        tolerated: float,
    ) -> sfn.DistributedMap:
        """A Distributed Map calling the function once per item of a JSON list on S3."""
        mapped = sfn.DistributedMap(
            self,
            construct_id,
            label=construct_id,  # names its map runs: `sds --aws score` reports each one
            item_reader=sfn.S3JsonItemReader(
                bucket=self._data, key=sfn.JsonPath.string_at(items_key)
            ),
            item_selector={
                "action": action,
                "output.$": "$.output",
                field: sfn.JsonPath.number_at(f"$$.Map.Item.Value.{field}"),
            },
            max_concurrency=settings.max_concurrency,
            tolerated_failure_percentage=tolerated,
            map_execution_type=sfn.StateMachineType.STANDARD,  # a part may take 15 minutes
            result_writer_v2=sfn.ResultWriterV2(
                bucket=self._data, prefix=sfn.JsonPath.string_at("$.plan.results_prefix")
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        step = tasks.LambdaInvoke(
            self,
            f"{construct_id}Item",
            lambda_function=self.function,
            payload=sfn.TaskInput.from_object(
                {"action.$": "$.action", "output.$": "$.output", f"{field}.$": f"$.{field}"}
            ),
            payload_response_only=True,
            retry_on_service_exceptions=True,
        )
        step.add_retry(
            errors=_THROTTLED, interval=cdk.Duration.seconds(5), max_attempts=8, backoff_rate=2
        )
        mapped.item_processor(step)
        return mapped

    def _definition(self, settings: BatchSettings) -> sfn.IChainable:
        plan = self._invoke(
            "Plan",
            {
                "action": "plan",
                "job.$": "$.job",
                "input.$": "$.input",
                "output.$": "$.output",
                "model.$": "$.model",
                "partitions.$": "$.partitions",
                "run_id.$": "$$.Execution.Name",
            },
            "$.plan",
        )
        shuffle = self._map(
            "Shuffle",
            items_key="$.plan.items_key",
            action="shuffle",
            field="item",
            settings=settings,
            tolerated=0,
        )
        collect = self._invoke(
            "Collect", {"action": "collect", "output.$": "$.output"}, "$.collect"
        )
        compute = self._map(
            "ComputeParts",
            items_key="$.collect.parts_key",
            action="part",
            field="part",
            settings=settings,
            tolerated=settings.tolerated_failure_percent,
        )
        summarize = self._invoke(
            "Summarize",
            {"action": "summarize", "output.$": "$.output", "run_id.$": "$$.Execution.Name"},
            "$.summary",
        )
        succeeded = sfn.Succeed(self, "Done")
        failed = sfn.Fail(
            self,
            "TooManyFailures",
            error_path=sfn.JsonPath.string_at("$.failure.Error"),
            cause_path=sfn.JsonPath.string_at("$.failure.Cause"),
        )
        for mapped in (shuffle, compute):
            mapped.add_catch(summarize, errors=["States.ALL"], result_path="$.failure")
        summarize.next(
            sfn.Choice(self, "AnyMapFailed")
            .when(sfn.Condition.is_present("$.failure"), failed)
            .otherwise(succeeded)
        )
        collect.next(
            sfn.Choice(self, "PartsLeft")
            .when(sfn.Condition.number_greater_than("$.collect.parts", 0), compute.next(summarize))
            .otherwise(summarize)
        )
        shuffle.next(collect)
        return plan.next(
            sfn.Choice(self, "AlreadyFinished")
            .when(sfn.Condition.boolean_equals("$.plan.finished", True), summarize)
            .when(sfn.Condition.boolean_equals("$.plan.shuffle", True), shuffle)
            .otherwise(collect)
        )

    def _build_machine_role(self, *, environment: str, key: kms.IKey | None) -> iam.Role:
        """Invokes the batch function, reads the maps' item lists and writes their results under
        the output prefix, delivers its logs and traces; nothing else."""
        role = service_role(
            self,
            "StateMachineRole",
            # This account's Step Functions only. No aws:SourceArn: the Distributed Maps' child
            # executions run under this role too, and Step Functions' documentation does not say
            # which source ARN they pass.
            service="states.amazonaws.com",
            description=f"sds {environment}: batch state machine (invokes the batch function, "
            "reads item lists and writes map results under the batch output prefix)",
        )
        self._function_versions = f"{self.function.function_arn}:*"
        statements = [
            iam.PolicyStatement(
                sid="InvokeBatchFunction",
                actions=["lambda:InvokeFunction"],
                resources=[self.function.function_arn, self._function_versions],
            ),
            iam.PolicyStatement(
                sid="ReadItemListsWriteMapResults",
                actions=[
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:ListMultipartUploadParts",
                    "s3:AbortMultipartUpload",
                ],
                resources=[self._outputs],
            ),
            # What CloudWatch Logs' vended log delivery and X-Ray need; none of these actions
            # supports resource-level permissions.
            deliver_logs_and_traces(),
        ]
        for statement in statements:
            role.add_to_policy(statement)
        if key is not None:
            role.add_to_policy(
                key_use(role, sid="UseDataKey", key=key, buckets=[self._data], actions=READ_WRITE)
            )
        return role

    def _grant_child_executions(self) -> None:
        """A Distributed Map runs each item as a child execution of this state machine: CDK's
        policy for starting, watching and stopping them (it names the state machine, so it is a
        policy of its own), attached to the role it could not add itself to."""
        policy = self.state_machine.node.find_child("DistributedMapPolicy")
        assert isinstance(policy, iam.Policy)
        policy.attach_to_role(self.machine_role)
        self.child_executions = policy

    def _acknowledge(self) -> None:
        acknowledge_wildcard_resource(
            self.machine_role,
            self._function_versions,
            "The batch function's own versions (qualified ARNs), as Step Functions invokes a "
            "function; the state machine invokes nothing else.",
        )
        acknowledge_wildcard_resource(
            self.machine_role,
            self._outputs,
            "Only under the batch output prefix: the maps read the item lists the batch function "
            "wrote there and write their results (ResultWriter) there.",
        )
        acknowledge(
            self.machine_role,
            "AwsSolutions-IAM5[Resource::*]",
            "CloudWatch Logs' log delivery actions (CreateLogDelivery, ..., DescribeLogGroups) "
            "and X-Ray's accept only '*' (Service Authorization Reference); they deliver this "
            "state machine's own logs and traces.",
        )
        stack = cdk.Stack.of(self)
        # Describe and stop: its executions; redrive: its map runs, by label.
        for pattern in ("{}:*", "{}/Shuffle:*", "{}/ComputeParts:*"):
            executions = stack.format_arn(
                service="states",
                resource="execution",
                resource_name=pattern.format(
                    cdk.Arn.split(
                        self.state_machine.state_machine_arn, cdk.ArnFormat.COLON_RESOURCE_NAME
                    ).resource_name
                ),
                arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
            )
            acknowledge_wildcard_resource(
                self.child_executions,
                executions,
                "The executions of this state machine only: a Distributed Map's items run as "
                "its child executions, which it starts, watches, stops and redrives.",
            )
        acknowledge_wildcard_resource(
            self.role,
            self._history,
            "Read-only: a run reads history anywhere in the environment's training-data bucket "
            "(where sds train reads it too), and its own plan, work files and parts.",
        )
        acknowledge_wildcard_resource(
            self.role,
            self._outputs,
            "Writes only under the batch output prefix: a run's parts, plan, manifest and work "
            "files (deleted when the run is complete), never the training data.",
        )
        acknowledge_wildcard_resource(
            self.role,
            self._versions,
            "Read-only, and only the immutable version objects of this model: a scoring run "
            "names the version (and its sha256) in its input.",
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's PutTraceSegments/PutTelemetryRecords do not support resource-level "
            "permissions; '*' is the only valid resource for active tracing.",
        )
        acknowledge_own_policy(
            self.role,
            "the batch function: write its logs, read the history and this model's versions, "
            "write under the batch output prefix",
        )
        acknowledge_own_policy(
            self.machine_role,
            "the batch state machine: invoke the batch function, read item lists and write map "
            "results under the batch output prefix, deliver its logs and traces",
        )
        acknowledge_compliance(
            self.child_executions,
            "IAMNoInlinePolicy",
            "CDK's policy for a Distributed Map's child executions (start, describe, stop and "
            "redrive this state machine's executions only): it names the state machine, so it "
            "is a policy of its own, created and deleted with the state machine and attached to "
            "its role only; a managed policy would be one more object holding the same "
            "statements. tests/security/test_least_privilege.py audits its resources.",
        )
