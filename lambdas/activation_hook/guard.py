"""The CodeDeploy `BeforeAllowTraffic` check: traffic shifts only to a Lambda version that can serve.

CodeDeploy runs this hook in every deployment of alias `live` before it moves any traffic
("BeforeAllowTraffic: use to run tasks before traffic is shifted to the deployed Lambda function
version"), and shifts nothing until the hook reports `Succeeded` through
PutLifecycleEventHookExecutionStatus; `Failed` fails the deployment, and the deployment group's
automatic rollback leaves `live` where it was. If no status arrives within one hour, CodeDeploy
fails the deployment too.
https://docs.aws.amazon.com/codedeploy/latest/userguide/reference-appspec-file-structure-hooks.html#appspec-hooks-lambda

Which version a deployment shifts to is its Lambda target's `targetVersion` (ListDeploymentTargets
and GetDeploymentTarget, `LambdaFunctionInfo`); this covers a `cdk deploy` (CloudFormation
creates the deployment), a deployment created by hand against an older version, and CodeDeploy's
rollbacks, which it implements "by redeploying, as a new deployment, a previously deployed
revision".
https://docs.aws.amazon.com/codedeploy/latest/APIReference/API_LambdaFunctionInfo.html
https://docs.aws.amazon.com/codedeploy/latest/userguide/deployment-steps-lambda.html#deployment-rollback-lambda

The target's state is checked, and an Inactive target re-activated and waited for, by
`sds.kernel.activation.ensure_active`, the same code `sds --aws rollback` runs. Importable without
AWS; `handler.py` makes the clients and reports the verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sds.kernel.activation import ActivationError, VersionNotReady, ensure_active

SUCCEEDED = "Succeeded"
FAILED = "Failed"


@dataclass(frozen=True)
class LambdaTarget:
    """What one CodeDeploy deployment does to one alias: from `current` to `target`."""

    function: str
    alias: str
    current: str
    target: str


@dataclass(frozen=True)
class Verdict:
    status: str  # Succeeded or Failed: what CodeDeploy is told
    message: str
    target: LambdaTarget | None = None
    waited_s: float = 0.0
    initial_state: str = ""

    def to_dict(self) -> dict[str, Any]:
        found = self.target
        return {
            "status": self.status,
            "message": self.message,
            "function": found.function if found else None,
            "target_version": found.target if found else None,
            "initial_state": self.initial_state,
            "waited_s": round(self.waited_s, 1),
        }


def function_name(name_or_arn: str) -> str:
    """`my-fn` from `my-fn`, `arn:aws:lambda:...:function:my-fn` or `...:function:my-fn:live`."""
    if ":function:" in name_or_arn:
        return name_or_arn.split(":function:", 1)[1].split(":", 1)[0]
    return name_or_arn


def deployment_target(codedeploy: Any, deployment_id: str) -> LambdaTarget:
    """The Lambda target of a deployment (a Lambda deployment has exactly one)."""
    found: list[LambdaTarget] = []
    token = ""
    while True:
        page = codedeploy.list_deployment_targets(
            deploymentId=deployment_id, **({"nextToken": token} if token else {})
        )
        for target_id in page.get("targetIds", []):
            answer = codedeploy.get_deployment_target(
                deploymentId=deployment_id, targetId=target_id
            )
            lambda_target = answer.get("deploymentTarget", {}).get("lambdaTarget")
            if not lambda_target:
                continue
            info = lambda_target.get("lambdaFunctionInfo", {})
            found.append(
                LambdaTarget(
                    function=function_name(str(info.get("functionName", ""))),
                    alias=str(info.get("functionAlias", "")),
                    current=str(info.get("currentVersion", "")),
                    target=str(info.get("targetVersion", "")),
                )
            )
        token = page.get("nextToken") or ""
        if not token:
            break
    if len(found) != 1 or not found[0].target:
        raise ActivationError(
            f"deployment {deployment_id} has {len(found)} Lambda targets with a target version "
            "(expected exactly one): cannot tell which version it shifts traffic to"
        )
    return found[0]


def check_deployment(
    *,
    codedeploy: Any,
    lambda_client: Any,
    deployment_id: str,
    guarded: str,
    budget_s: float,
    log: Callable[[str], None],
    poll_s: float | None = None,
) -> Verdict:
    """`Succeeded` once the deployment's target version of `guarded` is Active (re-activated and
    waited for within `budget_s` if need be), `Failed` if it cannot serve or is not this hook's
    function. Errors reading either service propagate (the handler fails closed)."""
    target = deployment_target(codedeploy, deployment_id)
    if target.function != function_name(guarded):
        return Verdict(
            FAILED,
            f"deployment {deployment_id} shifts {target.function}:{target.alias}, but this hook "
            f"guards {guarded}: refusing to approve a deployment it cannot check",
            target,
        )
    log(
        f"deployment {deployment_id}: {target.function}:{target.alias} "
        f"{target.current or '-'} -> {target.target}; checking version {target.target}"
    )
    try:
        activation = ensure_active(
            lambda_client,
            target.function,
            target.target,
            timeout_s=budget_s,
            say=log,
            poll_s=poll_s,
        )
    except VersionNotReady as exc:
        return Verdict(
            FAILED,
            f"{exc}: no traffic may shift to it",
            target,
            waited_s=exc.waited_s,
            initial_state=exc.state.state,
        )
    if activation.was_active:
        message = f"Lambda version {target.target} is Active"
    else:
        message = (
            f"Lambda version {target.target} was {activation.initial}: "
            f"Active after {activation.waited_s:.0f} s"
        )
    return Verdict(
        SUCCEEDED, message, target, waited_s=activation.waited_s, initial_state=activation.initial
    )
