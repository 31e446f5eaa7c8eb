"""AWS Lambda entry point of the drift monitor: invoked daily by an EventBridge schedule, or by
hand with `{"day": "YYYY-MM-DD"}` to publish one past day again.

Thin on purpose: settings come from the environment (`sds.kernel.drift.MonitorTarget`), the work
is `lambdas.monitor.figures`. It prints one embedded-metric-format line per day with the environment's
payments (zero on a day it served nothing), one per model version and day (CloudWatch turns them
into the metrics the alarms watch, with no API call), and one JSON summary.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from typing import Any

from lambdas.monitor.figures import (
    days_before,
    days_without_payments,
    emf_documents,
    payments_by_day,
    s3_reader,
    tally,
)
from sds.kernel import sdk
from sds.kernel.drift import MonitorTarget
from sds.kernel.registry import RegistryError, open_registry


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    del context
    target = MonitorTarget.from_environ(os.environ)
    requested = event.get("day") if isinstance(event, dict) else None
    if requested is not None:
        try:
            datetime.strptime(str(requested), "%Y-%m-%d")
        except ValueError:
            raise ValueError(f'"day" must be a date, YYYY-MM-DD; got {requested!r}') from None
        days = [str(requested)]
    else:
        days = days_before(time.time_ns() // 1000, target.days)
    registry = open_registry(target.registry_uri, target.model)

    def manifest(name: str, version: int) -> Any:
        if name != target.model:
            return None
        try:
            return registry.get_version(version).manifest
        except RegistryError:
            return None

    tallies, counts = tally(
        s3_reader(sdk.client("s3"), target.captures_uri),
        env=target.environment,
        days=days,
        manifests=manifest,
    )
    for document in emf_documents(target.environment, tallies, days=days):
        sys.stdout.write(json.dumps(document) + "\n")
    summary = {
        "environment": target.environment,
        "days": days,
        "payments": payments_by_day(days, tallies),
        "days_without_payments": days_without_payments(days, tallies),
        "counts": counts,
        "versions": [t.figures() for t in tallies],
    }
    print(json.dumps({"message": "drift", **summary}, sort_keys=True))
    return summary
