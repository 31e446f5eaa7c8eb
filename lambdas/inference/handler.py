"""AWS Lambda entry point for the inference API (API Gateway REST proxy integration).

Thin on purpose: the model is loaded once per execution environment, here at init (cold start,
SnapStart snapshot), from MODEL_NAME / MODEL_VERSION / MODEL_SHA256 / REGISTRY_URI. A load
failure does not crash the environment: the app answers 503 with the reason and emits a metric.
All logic lives in `lambdas.inference.app`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from lambdas.inference.app import InferenceApp

logging.getLogger().setLevel(os.environ.get("LOG_LEVEL", "INFO"))

app = InferenceApp.from_environ(os.environ)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.handle(event, context)
