"""The CodeDeploy BeforeAllowTraffic hook (`lambdas/activation_hook`), run as Lambda runs it.

The inference function and its published versions live on the moto server, with the versions'
SnapStart states scripted by `LambdaStates` (moto reports every version Active). moto's CodeDeploy
has none of the three calls the hook makes (ListDeploymentTargets, GetDeploymentTarget,
PutLifecycleEventHookExecutionStatus), so those are answered by a botocore Stubber that also
checks the exact parameters sent: above all, the status the hook reports for the deployment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

import sds.kernel.activation
from lambdas.activation_hook import handler
from tests.integration import snapstart
from tests.integration.deployed import Deployed
from tests.integration.snapstart import LambdaStates

DEPLOYMENT = "d-HOOKTEST1"
EXECUTION = "hook-execution-1"


class Context:
    """What the Lambda runtime passes as `context`, as much as the hook uses."""

    def __init__(self, remaining_s: float) -> None:
        self.remaining_s = remaining_s

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining_s * 1000)


@dataclass
class Hook:
    env: Deployed
    states: LambdaStates
    codedeploy: Any
    stubber: Stubber
    old: str  # Lambda version serving model 1
    new: str  # Lambda version serving model 2

    def deployment(self, *, target: str, current: str, function: str | None = None) -> None:
        """CodeDeploy's answers: one Lambda target, shifting `live` from `current` to `target`."""
        self.stubber.add_response(
            "list_deployment_targets",
            {"targetIds": [f"{self.env.function}:live"]},
            {"deploymentId": DEPLOYMENT},
        )
        info = {
            "functionName": function or self.env.function,
            "functionAlias": "live",
            "currentVersion": current,
            "targetVersion": target,
            "targetVersionWeight": 0.0,
        }
        self.stubber.add_response(
            "get_deployment_target",
            {
                "deploymentTarget": {
                    "deploymentTargetType": "LambdaTarget",
                    "lambdaTarget": {
                        "deploymentId": DEPLOYMENT,
                        "targetId": f"{self.env.function}:live",
                        "status": "InProgress",
                        "lambdaFunctionInfo": info,
                    },
                }
            },
            {"deploymentId": DEPLOYMENT, "targetId": f"{self.env.function}:live"},
        )

    def expect_report(self, status: str) -> None:
        self.stubber.add_response(
            "put_lifecycle_event_hook_execution_status",
            {"lifecycleEventHookExecutionId": EXECUTION},
            {
                "deploymentId": DEPLOYMENT,
                "lifecycleEventHookExecutionId": EXECUTION,
                "status": status,
            },
        )

    def run(self, remaining_s: float = 900.0) -> dict[str, Any]:
        event = {"DeploymentId": DEPLOYMENT, "LifecycleEventHookExecutionId": EXECUTION}
        with self.stubber:
            result = handler.lambda_handler(event, Context(remaining_s))
            self.stubber.assert_no_pending_responses()  # and so: the status was reported
        return result


@pytest.fixture
def hook(deploy: Callable[..., Deployed], monkeypatch: pytest.MonkeyPatch) -> Iterator[Hook]:
    # Given prod's inference function with two published versions (models 1 and 2)
    prod = deploy("prod")
    old = prod.publish(prod.register("one"))
    new = prod.publish(prod.register("two"))
    states = LambdaStates()
    codedeploy = boto3.client("codedeploy", region_name="us-east-1")
    monkeypatch.setattr(
        handler,
        "_clients",
        {"lambda": states.attach(prod.clients("lambda")), "codedeploy": codedeploy},
    )
    monkeypatch.setenv("SDS_GUARDED_FUNCTION", prod.function)
    monkeypatch.setattr(sds.kernel.activation, "POLL_S", 0.01)
    yield Hook(prod, states, codedeploy, Stubber(codedeploy), old, new)


def test_a_deploy_to_an_active_version_is_approved_after_one_state_read(hook: Hook) -> None:
    # Given a `cdk deploy` shifting live to the version it just published (Active)
    hook.deployment(current=hook.old, target=hook.new)
    hook.expect_report("Succeeded")
    # When CodeDeploy runs the hook
    result = hook.run()
    # Then it reported Succeeded, having read the target's state once and invoked nothing
    assert result["status"] == "Succeeded" and result["target_version"] == hook.new
    assert hook.states.calls == [f"GetFunctionConfiguration {hook.new}"]


def test_an_inactive_target_is_re_activated_then_approved(hook: Hook) -> None:
    # Given a deployment shifting live to an older version whose SnapStart snapshot is gone
    # (CodeDeploy's rollback redeploys it, or someone created a deployment against it)
    hook.deployment(current=hook.new, target=hook.old)
    hook.states.script(
        hook.old, snapstart.INACTIVE, snapstart.PENDING, snapstart.PENDING, snapstart.ACTIVE
    )
    hook.expect_report("Succeeded")
    # When CodeDeploy runs the hook
    result = hook.run()
    # Then the version was invoked once to start its re-creation, waited for, then approved
    assert result["status"] == "Succeeded"
    assert result["initial_state"] == "Inactive"
    assert hook.states.calls[:2] == [f"GetFunctionConfiguration {hook.old}", f"Invoke {hook.old}"]
    assert hook.states.calls[-1] == f"GetFunctionConfiguration {hook.old}"
    assert hook.states.count("Invoke") == 1
    assert snapstart.wake_payload(hook.states.invoked[0])["httpMethod"] == "GET"


def test_a_failed_target_fails_the_deployment_with_lambdas_reason(hook: Hook) -> None:
    hook.deployment(current=hook.old, target=hook.new)
    hook.states.script(hook.new, snapstart.FAILED)
    hook.expect_report("Failed")
    result = hook.run()
    assert result["status"] == "Failed"
    assert "is Failed (FunctionError: Init failed" in result["message"]
    assert "no traffic may shift to it" in result["message"]
    assert hook.states.count("Invoke") == 0


def test_a_target_whose_re_creation_fails_fails_the_deployment(hook: Hook) -> None:
    hook.deployment(current=hook.new, target=hook.old)
    hook.states.script(hook.old, snapstart.INACTIVE, snapstart.PENDING, snapstart.INACTIVE)
    hook.expect_report("Failed")
    result = hook.run()
    assert result["status"] == "Failed"
    assert "went back to Inactive" in result["message"]


def test_a_target_not_active_before_the_hook_must_report_fails_the_deployment_in_time(
    hook: Hook,
) -> None:
    # Given a target re-created more slowly than the hook's function may run (30.5 s left of
    # its timeout: it stops waiting 30 s before, to report in time)
    hook.deployment(current=hook.new, target=hook.old)
    hook.states.script(hook.old, snapstart.INACTIVE, snapstart.PENDING)
    hook.expect_report("Failed")
    result = hook.run(remaining_s=30.5)
    assert result["status"] == "Failed"
    assert "is still Pending after" in result["message"]


def test_a_deployment_of_another_function_is_not_approved(hook: Hook) -> None:
    hook.deployment(current="1", target="2", function="someone-elses-function")
    hook.expect_report("Failed")
    result = hook.run()
    assert result["status"] == "Failed"
    assert "this hook guards" in result["message"]
    assert hook.states.calls == []


def test_a_check_that_cannot_be_completed_fails_closed(hook: Hook) -> None:
    # Given CodeDeploy refusing to describe the deployment's target
    hook.stubber.add_response(
        "list_deployment_targets", {"targetIds": ["x"]}, {"deploymentId": DEPLOYMENT}
    )
    hook.stubber.add_client_error(
        "get_deployment_target", "ThrottlingException", "Rate exceeded", 400
    )
    hook.expect_report("Failed")
    # When the hook runs, Then it still reports, and reports Failed: unchecked is not approved
    result = hook.run()
    assert result["status"] == "Failed"
    assert "could not check deployment d-HOOKTEST1" in result["message"]
