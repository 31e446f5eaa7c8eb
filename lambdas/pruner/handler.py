"""AWS Lambda entry point of the pruner: invoked daily and after each successful deployment of
the inference function (EventBridge), or by hand with `{"dry_run": true}` to see the plan.
Any other event by hand is refused before anything is read (`requested_dry_run`): a mistyped
dry run must never delete.

Thin on purpose: settings come from the environment (`sds.kernel.retention.PruneTarget`), the
work is `lambdas.pruner.pruning.prune`. It logs one JSON line with what it kept and why and what
it deleted; if any deletion failed, the invocation fails after the others are done, so the
failure shows in the function's Errors metric and logs.
"""

from __future__ import annotations

import json
import os
from typing import Any

from lambdas.pruner.pruning import prune
from sds.kernel import sdk
from sds.kernel.errors import SdsError, counted
from sds.kernel.registry import open_registry
from sds.kernel.retention import PruneTarget


class PruneFailed(SdsError, RuntimeError):
    """Some versions could not be deleted (the others were); the message names them."""


class PruneRequestError(SdsError, ValueError):
    """The invocation's event asks for something the pruner does not do; nothing was done."""


def requested_dry_run(event: Any) -> bool:
    """Whether `event` asks for a dry run: True for `{"dry_run": true}`; False for an EventBridge
    event (the schedule, a finished deployment), `{}` and `{"dry_run": false}`. Anything else is
    refused: to an event it does not understand, the pruner answers with an error, not a prune."""
    if event is None:
        return False
    if isinstance(event, dict):
        if "dry_run" in event:
            if isinstance(event["dry_run"], bool):
                return event["dry_run"]
        elif not event or ("source" in event and "detail-type" in event):
            return False
    shown = json.dumps(event, default=str, sort_keys=True)
    raise PruneRequestError(
        f'the pruner takes {{"dry_run": true}} (plan only) or {{"dry_run": false}} '
        f"(prune) when invoked by hand, got {shown[:200]}: nothing was deleted"
    )


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    del context
    dry_run = requested_dry_run(event)
    target = PruneTarget.from_environ(os.environ)
    report = prune(
        target,
        lambda_client=sdk.client("lambda"),
        codedeploy=sdk.client("codedeploy"),
        registry=open_registry(target.registry_uri, target.model),
        dry_run=dry_run,
    )
    summary = report.to_dict()
    print(json.dumps({"message": "prune", **summary}, sort_keys=True))
    if not report.ok:
        failed = ", ".join(f"{v}: {m}" for v, m in sorted(report.failed.items()))
        raise PruneFailed(
            f"{counted(len(report.failed), 'version')} of {target.function} could not be deleted "
            f"({failed}); deleted {len(report.deleted) + len(report.already_gone)}"
        )
    return summary
