"""The training run's state machine, played for the CLI on the moto server.

moto's Step Functions records executions but runs no states, so this double plays the deployed
state machine (stacks/components/training_runs.py) the way the CLI sees it: `StartExecution`
takes the input the CLI sends, the lease either succeeds (then the task is started on moto's ECS
with the input's command and actor, exactly as the `RunTaskAsAsked` state's overrides say) or
fails (the execution fails with the lease function's error), and `GetExecutionHistory` /
`DescribeExecution` answer as Step Functions does. The state machine's own definition is
checked in tests/infra/test_cdk_training_runs.py, the lease function on moto in
test_training_endpoints_aws.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tests.integration.deployed import Deployed

MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:RunsStateMachine-test"


@dataclass
class PlayedStateMachine:
    deployed: Deployed
    ecs: Any
    # The error the execution fails with before any task starts (the lease function's, or
    # another step's): (error name, its message)
    fails_before_task: tuple[str, str] | None = None
    started: list[dict[str, Any]] = field(default_factory=list)
    _executions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def start_execution(self, *, stateMachineArn: str, name: str, input: str) -> dict[str, str]:
        assert stateMachineArn == MACHINE
        arn = f"arn:aws:states:us-east-1:123456789012:execution:RunsStateMachine-test:{name}"
        document = json.loads(input)
        self.started.append({"name": name, "input": document})
        events: list[dict[str, Any]] = [
            {"type": "ExecutionStarted"},
            _entered("LeaseEndpoints"),
            _entered("WaitForEndpoints"),
        ]
        execution: dict[str, Any] = {"status": "RUNNING", "events": events}
        if self.fails_before_task is not None:
            error, message = self.fails_before_task
            cause = json.dumps({"errorMessage": message, "errorType": error})
            events += [_entered("ReleaseAfterFailure"), _entered("TrainingRunFailed")]
            execution |= {"status": "FAILED", "error": error, "cause": cause}
        else:
            task = self._run_task(document)
            events += [
                _entered("CommandGiven"),
                _entered("RunTaskAsAsked"),
                {
                    "type": "TaskSubmitted",
                    "taskSubmittedEventDetails": {
                        "resourceType": "ecs",
                        "resource": "runTask.sync",
                        "output": json.dumps({"Tasks": [{"TaskArn": task}]}),
                    },
                },
            ]
        self._executions[arn] = execution
        return {"executionArn": arn}

    def _run_task(self, document: dict[str, Any]) -> str:
        """The RunTaskAsAsked state: the task definition, the isolated subnets and the task's
        security group, no public IP, the input's command and actor."""
        extra = self.deployed.extra
        response = self.ecs.run_task(
            cluster=extra["training-cluster"],
            taskDefinition=extra["training-task-definition"],
            launchType="FARGATE",
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": extra["training-subnets"].split(","),
                    "securityGroups": [extra["training-security-group"]],
                    "assignPublicIp": "DISABLED",
                }
            },
            overrides={
                "containerOverrides": [
                    {
                        "name": "train",
                        "command": document["command"],
                        "environment": [{"name": "SDS_ACTOR", "value": document["actor"]}],
                    }
                ]
            },
        )
        return str(response["tasks"][0]["taskArn"])

    def describe_execution(self, *, executionArn: str) -> dict[str, Any]:
        execution = self._executions[executionArn]
        return {k: v for k, v in execution.items() if k != "events"}

    def get_paginator(self, operation: str) -> Any:
        assert operation == "get_execution_history"
        executions = self._executions

        class Pages:
            def paginate(self, *, executionArn: str) -> list[dict[str, Any]]:
                return [{"events": list(executions[executionArn]["events"])}]

        return Pages()


def _entered(state: str) -> dict[str, Any]:
    return {"type": "TaskStateEntered", "stateEnteredEventDetails": {"name": state}}


def publish_state_machine(deployed: Deployed) -> None:
    """The discovery parameter a Training stack with leased endpoints publishes."""
    deployed.clients("ssm").put_parameter(
        Name=f"/sds/{deployed.env}/training-state-machine", Value=MACHINE, Type="String"
    )
