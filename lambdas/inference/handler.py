"""AWS Lambda entry point for the inference API (API Gateway REST proxy integration).

Thin on purpose: the model is loaded once per execution environment, here at init (cold start,
SnapStart snapshot), from MODEL_NAME / MODEL_VERSION / MODEL_SHA256 / REGISTRY_URI. A load
failure does not crash the environment: the app answers 503 with the reason and emits a metric.
Scored payments are captured to stdout (`sds.kernel.capture`): each line is a log event of the
function's log group, which a subscription filter ships to S3. All logic lives in
`lambdas.inference.app`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from lambdas.inference.app import InferenceApp
from sds.kernel.capture import stdout_sink

logging.getLogger().setLevel(os.environ.get("LOG_LEVEL", "INFO"))

app = InferenceApp.from_environ(os.environ, capture=stdout_sink)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.handle(event, context)
