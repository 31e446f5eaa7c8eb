"""AWS Lambda entry point of the pruner: invoked daily and after each successful deployment of
the inference function (EventBridge), or by hand with `{"dry_run": true}` to see the plan.

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
from sds.kernel.errors import SdsError
from sds.kernel.registry import open_registry
from sds.kernel.retention import PruneTarget


class PruneFailed(SdsError, RuntimeError):
    """Some versions could not be deleted (the others were); the message names them."""


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    del context
    target = PruneTarget.from_environ(os.environ)
    dry_run = isinstance(event, dict) and event.get("dry_run") is True
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
            f"{len(report.failed)} version(s) of {target.function} could not be deleted "
            f"({failed}); deleted {len(report.deleted)}"
        )
    return summary
