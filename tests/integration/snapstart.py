"""SnapStart version states on the moto server, which reports every version `Active`.

`LambdaStates` scripts, on a real client whose every other call reaches moto, what Lambda would
answer for chosen versions: the `State`, `StateReason` and `StateReasonCode` of
GetFunctionConfiguration (one entry per call, the last one repeating), and the error an Invoke
gets while a version is not Active (`SnapStartNotReadyException`, HTTP 409, as the Lambda
troubleshooting guide documents). It records the calls in order, so a test can assert what was
asked and when.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# What AWS documents for an Inactive SnapStart version (snapstart-troubleshooting.html).
NOT_READY = (
    "SnapStartNotReadyException",
    "Lambda is initializing your function. It will be ready to invoke once your function state "
    "becomes ACTIVE.",
)


@dataclass(frozen=True)
class State:
    state: str
    reason_code: str = ""
    reason: str = ""


INACTIVE = State("Inactive", "Idle", "The function version is inactive: its snapshot was deleted")
PENDING = State("Pending", "Restoring", "The function is being restored")
ACTIVE = State("Active")
FAILED = State("Failed", "FunctionError", "Init failed: ModuleNotFoundError: No module named 'x'")


class _Answer:
    """The smallest HTTP response botocore's client accepts from a before-call handler."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.headers: dict[str, str] = {}


@dataclass
class LambdaStates:
    scripts: dict[str, list[State]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)  # "GetFunctionConfiguration 3", "Invoke 3", ...
    invoked: list[dict[str, Any]] = field(default_factory=list)  # Invoke's parameters

    def script(self, version: str, *states: State) -> None:
        self.scripts[version] = list(states)

    def attach(self, client: Any) -> Any:
        events = client.meta.events
        events.register("after-call.lambda.GetFunctionConfiguration", self._state)
        events.register("provide-client-params.lambda.Invoke", self._record_invoke)
        events.register("before-call.lambda.Invoke", self._answer_invoke)
        events.register("provide-client-params.lambda.UpdateAlias", self._record_switch)
        return client

    def count(self, prefix: str) -> int:
        return sum(1 for call in self.calls if call.startswith(prefix))

    def _state(self, parsed: dict[str, Any], **_: Any) -> None:
        version = str(parsed.get("Version", ""))
        self.calls.append(f"GetFunctionConfiguration {version}")
        script = self.scripts.get(version)
        if not script:
            return
        now = script.pop(0) if len(script) > 1 else script[0]
        parsed["State"] = now.state
        parsed["SnapStart"] = {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}
        for key, value in (("StateReasonCode", now.reason_code), ("StateReason", now.reason)):
            if value:
                parsed[key] = value
            else:
                parsed.pop(key, None)

    def _record_invoke(self, params: dict[str, Any], **_: Any) -> None:
        self.calls.append(f"Invoke {params.get('Qualifier')}")
        self.invoked.append(dict(params))

    def _answer_invoke(self, model: Any, params: dict[str, Any], **_: Any) -> Any:
        # The version is re-created asynchronously: the invocation itself is refused.
        code, message = NOT_READY
        body = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {}}
        del model, params
        return _Answer(409), body

    def _record_switch(self, params: dict[str, Any], **_: Any) -> None:
        self.calls.append(f"UpdateAlias {params.get('FunctionVersion')}")


def wake_payload(invoked: dict[str, Any]) -> dict[str, Any]:
    payload = invoked["Payload"]
    loaded: dict[str, Any] = json.loads(payload if isinstance(payload, str) else payload.decode())
    return loaded


def with_states(states: LambdaStates, make: Callable[[str], Any]) -> Callable[[str], Any]:
    """A client factory like `sds.kernel.sdk.client` whose Lambda clients carry `states`."""

    def client(service: str) -> Any:
        made = make(service)
        return states.attach(made) if service == "lambda" else made

    return client
