"""Whether a published Lambda version can serve, and bringing it back to `Active` when it cannot.

Used by everything that points alias `live` at a version: `sds --aws rollback` before it switches,
and the CodeDeploy `BeforeAllowTraffic` hook (`lambdas/activation_hook`) before CodeDeploy shifts
traffic. One implementation, so the CLI and the hook read and recover a version the same way.

What AWS documents, and what this module builds on:

- Every function and published version has a `State` (with `StateReason` and `StateReasonCode`),
  read with GetFunctionConfiguration and the version number as `Qualifier`. ListVersionsByFunction
  returns only a subset of the configuration and leaves these fields out, so the rollback asks
  once more for the one version it is about to switch to.
  https://docs.aws.amazon.com/lambda/latest/dg/functions-states.html
  https://docs.aws.amazon.com/lambda/latest/api/API_ListVersionsByFunction.html
- With SnapStart ("Lambda SnapStart and function states"): `Pending` while Lambda initializes the
  code and takes the snapshot (invocations fail); `Active` when it can be invoked; `Inactive`
  when a periodic snapshot regeneration failed to initialize the function, or (Java runtimes)
  after 14 days without an invocation, when the snapshot is deleted; `Failed` when running the
  initialization code or creating the snapshot failed.
  https://docs.aws.amazon.com/lambda/latest/dg/snapstart-activate.html#snapstart-function-states
- What re-activates an `Inactive` version is an invocation: it fails
  (`SnapStartNotReadyException`, "Lambda is initializing your function"; for other functions
  `ResourceNotReadyException`), Lambda sets the version `Pending` and re-creates it; "wait until
  the function version reaches the Active state, and then invoke it again". If the re-creation
  fails, the version returns to `Inactive`.
  https://docs.aws.amazon.com/lambda/latest/dg/snapstart-troubleshooting.html
  https://docs.aws.amazon.com/lambda/latest/dg/functions-states.html
- How long it can take is not stated; the SDK's own `PublishedVersionActive` waiter (botocore's
  `lambda/2015-03-31/waiters-2.json`) polls GetFunctionConfiguration every 5 s up to 312 times
  (26 minutes) for a freshly published version. Callers give a timeout; the re-creation goes on
  inside Lambda when they stop waiting, and a later call finds the version `Pending` or `Active`.
- Permissions: `lambda:GetFunctionConfiguration` and `lambda:InvokeFunction` on the version.

An `Active` version costs exactly one GetFunctionConfiguration and nothing else: the rollback's
promise of seconds holds whenever the target can serve.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sds.kernel.aws.errors import error_code
from sds.kernel.errors import Refused, SdsError

ACTIVE = "Active"
PENDING = "Pending"
INACTIVE = "Inactive"
FAILED = "Failed"

DEFAULT_TIMEOUT_S = 300.0
"""How long a rollback waits for a target to become Active, unless told otherwise: long enough for
Lambda to re-create a snapshot in the usual case, short enough for an incident. A caller that
stops waiting leaves the re-creation running, so running the command again goes on waiting."""
POLL_S = 2.0
"""Seconds between two reads of the state while waiting (the SDK's waiter uses 5)."""
REPORT_S = 5.0
"""At most this long between two progress lines while the state does not change."""
RETRIGGER_S = 30.0
"""If a version stays `Inactive` this long after an invocation (Lambda has not started
re-creating it), invoke it once more."""

# The invocation that starts a re-activation: the inference API's own `GET /health`, as API
# Gateway sends it. An Inactive version refuses it before any of the function's code runs; if the
# version became Active in between, the handler answers it like any health check: read-only, no
# model scored, nothing recorded. Invoked by version number, so the alarms on alias `live` never
# count it.
WAKE_EVENT: Mapping[str, Any] = {
    "resource": "/health",
    "path": "/health",
    "httpMethod": "GET",
    "headers": {"User-Agent": "sds-activation"},
    "queryStringParameters": None,
    "body": None,
    "isBase64Encoded": False,
}

# The hook function's environment: which function it guards (one writer, one reader, both here).
GUARDED_FUNCTION = "SDS_GUARDED_FUNCTION"


def hook_environment(*, function_name: str) -> dict[str, str]:
    """The activation hook's environment variables (written by the stack)."""
    return {GUARDED_FUNCTION: function_name}


def guarded_function(environ: Mapping[str, str]) -> str:
    """The function the activation hook guards (read by the hook)."""
    name = environ.get(GUARDED_FUNCTION, "").strip()
    if not name:
        raise ActivationError(f"{GUARDED_FUNCTION} is not set: the hook does not know its function")
    return name


Say = Callable[[str], None]


def _quiet(line: str) -> None:
    del line


@dataclass(frozen=True)
class VersionState:
    """One published version's `State`, as GetFunctionConfiguration reports it."""

    function: str
    version: str
    state: str
    reason: str = ""
    reason_code: str = ""
    snapstart: bool = False

    @property
    def active(self) -> bool:
        return self.state == ACTIVE

    def why(self) -> str:
        """What Lambda says about the state, for a person: `Idle: <reason>`, or a plain cause."""
        said = ": ".join(part for part in (self.reason_code, self.reason) if part)
        if said:
            return said
        if self.state == INACTIVE:
            return "SnapStart snapshot expired" if self.snapstart else "idle, resources reclaimed"
        if self.state == PENDING:
            return "Lambda is creating it"
        return "no reason given"

    def to_dict(self) -> dict[str, Any]:
        return {
            "lambda_version": self.version,
            "state": self.state,
            "state_reason": self.reason,
            "state_reason_code": self.reason_code,
            "snapstart": self.snapstart,
        }


@dataclass(frozen=True)
class Activation:
    """How a version was found and what it took to make it serve."""

    state: VersionState  # the final state (Active)
    initial: str  # the state first read: Active, Pending or Inactive
    waited_s: float = 0.0
    invocations: int = 0  # re-activation invocations sent

    @property
    def was_active(self) -> bool:
        return self.initial == ACTIVE


class ActivationError(SdsError):
    """A version's state could not be read or its re-activation not requested (for example a
    missing permission); the message names what is missing."""


class VersionNotReady(Refused):
    """The version is not Active and did not become Active: it cannot serve, so nothing that
    would send it traffic may proceed."""

    def __init__(
        self, state: VersionState, *, waited_s: float, timed_out: bool, recreation_failed: bool
    ) -> None:
        self.state = state
        self.waited_s = waited_s
        self.timed_out = timed_out
        self.recreation_failed = recreation_failed
        if timed_out:
            what = f"is still {state.state} after {waited_s:.0f} s ({state.why()})"
        elif recreation_failed:
            what = f"went back to Inactive after {waited_s:.0f} s ({state.why()}): Lambda could not re-create it"
        else:
            what = f"is {state.state} ({state.why()})"
        super().__init__(f"Lambda version {state.version} of {state.function} {what}")

    def details(self) -> dict[str, Any]:
        return {
            "refused": True,
            **self.state.to_dict(),
            "waited_s": round(self.waited_s, 1),
            "timed_out": self.timed_out,
        }


def read_state(lambda_client: Any, function: str, version: str) -> VersionState:
    """One GetFunctionConfiguration of `function:version`."""
    try:
        config = lambda_client.get_function_configuration(FunctionName=function, Qualifier=version)
    except Exception as exc:
        if error_code(exc) in ("AccessDeniedException", "AccessDenied"):
            raise ActivationError(
                f"cannot read the state of Lambda version {version} of {function}: "
                "lambda:GetFunctionConfiguration on it is not allowed"
            ) from None
        raise
    snapstart = (config.get("SnapStart") or {}).get("OptimizationStatus") == "On"
    return VersionState(
        function=function,
        version=version,
        # Lambda reports a State for every function and version; none means nothing to wait for.
        state=str(config.get("State") or ACTIVE),
        reason=str(config.get("StateReason") or ""),
        reason_code=str(config.get("StateReasonCode") or ""),
        snapstart=snapstart,
    )


def request_activation(lambda_client: Any, function: str, version: str) -> str:
    """Invoke the version once, which starts the re-creation of an Inactive version.

    Returns the error code Lambda answered with (`SnapStartNotReadyException` is the documented
    answer for an Inactive SnapStart version), or "" if the version ran the request.
    """
    try:
        lambda_client.invoke(
            FunctionName=function,
            Qualifier=version,
            InvocationType="RequestResponse",
            Payload=json.dumps(WAKE_EVENT).encode(),
        )
    except Exception as exc:
        code = error_code(exc)
        if code in ("AccessDeniedException", "AccessDenied"):
            raise ActivationError(
                f"cannot re-activate Lambda version {version} of {function}: "
                "lambda:InvokeFunction on it is not allowed"
            ) from None
        if not code:  # not an answer from Lambda (a network error): the caller's to handle
            raise
        return code
    return ""


def ensure_active(
    lambda_client: Any,
    function: str,
    version: str,
    *,
    timeout_s: float,
    say: Say = _quiet,
    known: VersionState | None = None,
    heartbeat: Callable[[], None] | None = None,
    poll_s: float | None = None,
    report_s: float | None = None,
    retrigger_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Activation:
    """Return once `function:version` is Active; re-activate it if it is Inactive.

    Active: one GetFunctionConfiguration (none if `known` says so already), no output. Pending:
    wait. Inactive: invoke it once (again after `retrigger_s` if Lambda has not started), then
    wait. Failed, back to Inactive after Pending (the re-creation failed), or not Active within
    `timeout_s`: `VersionNotReady`. `say` gets a line when the wait starts, one per state change
    or every `report_s` seconds, and one at the end; `heartbeat` is called between polls (the
    rollback renews its lease there). Ctrl-C stops the wait (KeyboardInterrupt propagates after a
    line saying so); Lambda goes on re-creating the version.
    """
    poll_s = POLL_S if poll_s is None else poll_s
    report_s = REPORT_S if report_s is None else report_s
    retrigger_s = RETRIGGER_S if retrigger_s is None else retrigger_s
    state = known if known is not None else read_state(lambda_client, function, version)
    initial = state.state
    if state.active:
        return Activation(state=state, initial=initial)
    if state.state == FAILED:
        raise VersionNotReady(state, waited_s=0.0, timed_out=False, recreation_failed=False)

    started = clock()
    invocations = 0
    triggered_at: float | None = None
    seen_pending = state.state == PENDING

    def trigger() -> None:
        nonlocal invocations, triggered_at
        request_activation(lambda_client, function, version)
        invocations += 1
        triggered_at = clock()

    label = f"target Lambda version {version}"
    if state.state == INACTIVE:
        say(
            f"{label} is Inactive ({state.why()}): re-activating, waiting up to {timeout_s:.0f} s ..."
        )
        trigger()
    else:
        say(
            f"{label} is {state.state} ({state.why()}): waiting up to {timeout_s:.0f} s "
            "for it to become Active ..."
        )
    last_line_at, last_said = clock(), state.state
    elapsed = 0.0
    try:
        while True:
            elapsed = clock() - started
            if elapsed >= timeout_s:
                raise VersionNotReady(
                    state, waited_s=elapsed, timed_out=True, recreation_failed=False
                )
            sleep(max(0.0, min(poll_s, timeout_s - elapsed)))
            if heartbeat is not None:
                heartbeat()
            state = read_state(lambda_client, function, version)
            elapsed = clock() - started
            if state.active:
                say(f"  [{elapsed:4.0f} s] Active: {label} can serve")
                return Activation(
                    state=state, initial=initial, waited_s=elapsed, invocations=invocations
                )
            if state.state == FAILED:
                raise VersionNotReady(
                    state, waited_s=elapsed, timed_out=False, recreation_failed=False
                )
            if state.state == PENDING:
                seen_pending = True
            elif state.state == INACTIVE:
                if seen_pending:
                    raise VersionNotReady(
                        state, waited_s=elapsed, timed_out=False, recreation_failed=True
                    )
                if triggered_at is None or clock() - triggered_at >= retrigger_s:
                    trigger()
            if state.state != last_said or clock() - last_line_at >= report_s:
                say(f"  [{elapsed:4.0f} s] {state.state} ({state.why()})")
                last_line_at, last_said = clock(), state.state
    except KeyboardInterrupt:
        say(
            f"  [{elapsed:4.0f} s] interrupted while {label} was {state.state}; "
            "Lambda goes on re-creating it"
        )
        raise
