"""AWS Lambda entry point for the inference API (API Gateway REST proxy integration).

Thin on purpose: the model is loaded once per execution environment, here at init (cold start,
SnapStart snapshot), from MODEL_NAME / MODEL_VERSION / MODEL_SHA256 / REGISTRY_URI. A load
failure does not crash the environment: the app answers 503 with the reason and emits a metric.
Scored payments are captured to stdout (`sds.kernel.capture`): each line is a log event of the
function's log group, which a subscription filter ships to S3. A request's metric lines and
capture records are written together, in one write at its end (`StdoutLines`). All logic lives in
`lambdas.inference.app`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from lambdas.inference.app import InferenceApp, StdoutLines

logging.getLogger().setLevel(os.environ.get("LOG_LEVEL", "INFO"))

# Metric lines and capture records go to stdout in one write per request (see `StdoutLines`).
stdout = StdoutLines()
app = InferenceApp.from_environ(
    os.environ, metrics=stdout.metrics, capture=stdout.capture, lines=stdout.line
)
stdout.flush()  # what the init emitted (a model that failed to load)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        return app.handle(event, context)
    finally:
        stdout.flush()
