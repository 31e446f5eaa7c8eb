"""AWS Lambda entry point of the CodeDeploy `BeforeAllowTraffic` hook of alias `live`.

Thin on purpose: the check is `lambdas.activation_hook.guard.check_deployment`. Whatever happens,
CodeDeploy is told a status (it would otherwise wait an hour): `Succeeded` only when the target
version is Active; a check that cannot be completed reports `Failed` (fail closed), and the
deployment group's automatic rollback keeps `live` where it was.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from lambdas.activation_hook.guard import FAILED, Verdict, check_deployment
from sds.kernel import sdk
from sds.kernel.activation import guarded_function

logger = logging.getLogger("sds.activation_hook")
logger.setLevel(os.environ.get("LOG_LEVEL", "INFO"))

REPORT_MARGIN_S = 30.0
"""Stop waiting this long before the function's own timeout, to report in time."""

_clients: dict[str, Any] = {}


def _client(service: str) -> Any:
    if service not in _clients:
        _clients[service] = sdk.client(service)
    return _clients[service]


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    deployment_id = str(event.get("DeploymentId") or "")
    hook_execution_id = str(event.get("LifecycleEventHookExecutionId") or "")
    if not deployment_id or not hook_execution_id:
        logger.error("not a CodeDeploy lifecycle hook event: %s", sorted(event))
        return Verdict(FAILED, "not a CodeDeploy lifecycle hook event").to_dict()
    remaining_s = context.get_remaining_time_in_millis() / 1000
    try:
        verdict = check_deployment(
            codedeploy=_client("codedeploy"),
            lambda_client=_client("lambda"),
            deployment_id=deployment_id,
            guarded=guarded_function(os.environ),
            budget_s=max(0.0, remaining_s - REPORT_MARGIN_S),
            log=logger.info,
        )
    except Exception as exc:  # fail closed: a version nobody checked must not get traffic
        logger.exception("could not check deployment %s", deployment_id)
        verdict = Verdict(FAILED, f"could not check deployment {deployment_id}: {exc}")
    log = logger.info if verdict.status != FAILED else logger.error
    log("%s: %s", verdict.status, verdict.message)
    _client("codedeploy").put_lifecycle_event_hook_execution_status(
        deploymentId=deployment_id,
        lifecycleEventHookExecutionId=hook_execution_id,
        status=verdict.status,
    )
    return verdict.to_dict()
