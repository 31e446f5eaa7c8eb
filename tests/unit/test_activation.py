"""`sds.kernel.activation`: reading a Lambda version's state and bringing it back to Active.

The AWS-facing behaviour (the CLI's rollback and the CodeDeploy hook on the moto server) is in
tests/integration; here the state machine runs against a scripted Lambda client on a simulated
clock, so waits of minutes take no time and each transition is exact.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sds.kernel.activation import (
    WAKE_EVENT,
    ActivationError,
    VersionNotReady,
    ensure_active,
    guarded_function,
    hook_environment,
    read_state,
)
from sds.kernel.errors import EXIT_REFUSED


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class ScriptedLambda:
    """GetFunctionConfiguration answers from a script (the last entry repeats); Invoke fails the
    way Lambda fails it for a version that is not Active."""

    def __init__(
        self, *states: tuple[str, str, str], invoke_error: str = "SnapStartNotReadyException"
    ):
        self.states = list(states)
        self.calls: list[str] = []
        self.invoke_error = invoke_error
        self.payloads: list[dict[str, Any]] = []

    def get_function_configuration(self, *, FunctionName: str, Qualifier: str) -> dict[str, Any]:
        self.calls.append(f"get {FunctionName}:{Qualifier}")
        state, code, reason = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        answer: dict[str, Any] = {
            "Version": Qualifier,
            "State": state,
            "SnapStart": {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"},
        }
        if code:
            answer["StateReasonCode"] = code
        if reason:
            answer["StateReason"] = reason
        return answer

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(f"invoke {kwargs['FunctionName']}:{kwargs['Qualifier']}")
        self.payloads.append(json.loads(kwargs["Payload"]))
        error = {"Error": {"Code": self.invoke_error, "Message": "Lambda is initializing"}}
        raise ClientError(error, "Invoke")  # type: ignore[arg-type]


ACTIVE = ("Active", "", "")
PENDING = ("Pending", "Restoring", "The function is being restored")
INACTIVE = ("Inactive", "Idle", "The snapshot was deleted")
FAILED = ("Failed", "FunctionError", "Init failed: out of memory")


def run(client: ScriptedLambda, clock: Clock, lines: list[str], **kwargs: Any) -> Any:
    return ensure_active(
        client, "fn", "12", say=lines.append, clock=clock, sleep=clock.sleep, **kwargs
    )


def test_an_active_version_costs_one_read_and_says_nothing() -> None:
    # Given a version Lambda reports Active
    client, clock, lines = ScriptedLambda(ACTIVE), Clock(), []
    # When ensuring it is active
    done = run(client, clock, lines, timeout_s=300)
    # Then one GetFunctionConfiguration was all it took, silently and without waiting
    assert client.calls == ["get fn:12"]
    assert lines == []
    assert (done.initial, done.waited_s, done.invocations) == ("Active", 0.0, 0)


def test_an_inactive_version_is_invoked_once_then_waited_for_until_active() -> None:
    # Given an Inactive version that Lambda re-creates after the first invocation
    client = ScriptedLambda(INACTIVE, INACTIVE, PENDING, PENDING, PENDING, ACTIVE)
    clock, lines = Clock(), []
    heartbeats: list[float] = []
    # When ensuring it is active (polling every 2 s)
    done = run(client, clock, lines, timeout_s=120, heartbeat=lambda: heartbeats.append(clock()))
    # Then it was invoked exactly once, before the wait, with the API's own health check
    assert client.calls[:2] == ["get fn:12", "invoke fn:12"]
    assert client.calls.count("invoke fn:12") == 1
    assert client.payloads == [dict(WAKE_EVENT)]
    assert client.payloads[0]["path"] == "/health" and client.payloads[0]["httpMethod"] == "GET"
    # And it returned once Active, having said so step by step, with Lambda's reasons
    assert (done.initial, done.state.state, done.invocations) == ("Inactive", "Active", 1)
    assert done.waited_s == pytest.approx(10.0)
    assert lines[0] == (
        "target Lambda version 12 is Inactive (Idle: The snapshot was deleted): "
        "re-activating, waiting up to 120 s ..."
    )
    assert lines[1] == "  [   4 s] Pending (Restoring: The function is being restored)"
    assert lines[-1] == "  [  10 s] Active: target Lambda version 12 can serve"
    # And the caller's heartbeat ran between polls (the rollback renews its lease there)
    assert len(heartbeats) == 5


def test_progress_is_reported_every_few_seconds_while_nothing_changes() -> None:
    client, clock, lines = ScriptedLambda(PENDING, *[PENDING] * 14, ACTIVE), Clock(), []
    run(client, clock, lines, timeout_s=300)
    stamps = [line.split("]")[0].strip(" [") for line in lines[1:]]
    # One line when the wait starts, then at the first poll 5 s or more after the last line
    # (polls every 2 s), and one at the end
    assert stamps == ["6 s", "12 s", "18 s", "24 s", "30 s"]


def test_a_failed_version_is_refused_at_once_with_lambdas_reason() -> None:
    client, clock, lines = ScriptedLambda(FAILED), Clock(), []
    with pytest.raises(VersionNotReady) as raised:
        run(client, clock, lines, timeout_s=300)
    assert client.calls == ["get fn:12"]  # nothing invoked, nothing waited for
    assert raised.value.exit_code == EXIT_REFUSED
    assert "is Failed (FunctionError: Init failed: out of memory)" in str(raised.value)
    assert raised.value.details()["state_reason_code"] == "FunctionError"


def test_a_version_that_goes_back_to_inactive_after_pending_is_refused() -> None:
    # Given a re-creation that fails: Lambda "returns the function to the inactive state"
    client = ScriptedLambda(INACTIVE, PENDING, PENDING, INACTIVE)
    clock, lines = Clock(), []
    with pytest.raises(VersionNotReady) as raised:
        run(client, clock, lines, timeout_s=300)
    assert raised.value.recreation_failed and not raised.value.timed_out
    assert "went back to Inactive after 6 s" in str(raised.value)
    assert client.calls.count("invoke fn:12") == 1


def test_a_version_lambda_does_not_start_re_creating_is_invoked_again_after_a_while() -> None:
    # Given a version that stays Inactive for 40 s after the first invocation
    client = ScriptedLambda(*[INACTIVE] * 21, PENDING, ACTIVE)
    clock, lines = Clock(), []
    done = run(client, clock, lines, timeout_s=300, retrigger_s=30)
    # Then it was invoked again once 30 s had passed, and the wait went on
    assert done.invocations == 2
    assert done.state.active


def test_not_active_in_time_is_refused_naming_the_state_and_the_time() -> None:
    client, clock, lines = ScriptedLambda(INACTIVE, PENDING), Clock(), []
    with pytest.raises(VersionNotReady) as raised:
        run(client, clock, lines, timeout_s=7)
    assert raised.value.timed_out
    assert str(raised.value) == (
        "Lambda version 12 of fn is still Pending after 7 s "
        "(Restoring: The function is being restored)"
    )
    assert clock.now - 1000.0 == pytest.approx(7.0)  # not a poll longer than asked


def test_timeout_zero_triggers_the_re_activation_but_does_not_wait() -> None:
    client, clock, lines = ScriptedLambda(INACTIVE), Clock(), []
    with pytest.raises(VersionNotReady, match="still Inactive after 0 s"):
        run(client, clock, lines, timeout_s=0)
    assert client.calls == ["get fn:12", "invoke fn:12"]


def test_ctrl_c_while_waiting_says_so_and_propagates() -> None:
    client, clock, lines = ScriptedLambda(INACTIVE, PENDING), Clock(), []
    slept: list[float] = []

    def interrupted_sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise KeyboardInterrupt
        clock.sleep(seconds)

    with pytest.raises(KeyboardInterrupt):
        ensure_active(
            client, "fn", "12", timeout_s=60, say=lines.append, clock=clock, sleep=interrupted_sleep
        )
    assert lines[-1] == (
        "  [   4 s] interrupted while target Lambda version 12 was Pending; "
        "Lambda goes on re-creating it"
    )


def test_a_missing_invoke_permission_is_named() -> None:
    client, clock, lines = (
        ScriptedLambda(INACTIVE, invoke_error="AccessDeniedException"),
        Clock(),
        [],
    )
    with pytest.raises(ActivationError, match="lambda:InvokeFunction on it is not allowed"):
        run(client, clock, lines, timeout_s=60)


def test_a_version_without_a_reported_state_counts_as_active() -> None:
    class Plain:
        def get_function_configuration(self, **_: Any) -> dict[str, Any]:
            return {"Version": "3"}

    state = read_state(Plain(), "fn", "3")
    assert state.active and not state.snapstart


def test_the_hook_environment_has_one_writer_and_one_reader() -> None:
    assert guarded_function(hook_environment(function_name="sds-prod-inference")) == (
        "sds-prod-inference"
    )
    with pytest.raises(ActivationError, match="SDS_GUARDED_FUNCTION is not set"):
        guarded_function({})
