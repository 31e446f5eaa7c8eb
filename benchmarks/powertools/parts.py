"""One Powertools feature at a time on our handler, to attribute the variant's cost.

`SDS_BENCH_POWERTOOLS_PART` picks the feature, read once at import like the rest of the
configuration:

- `routing`: the four routes through `APIGatewayRestResolver`; our metrics and logging.
- `metrics`: our handler; its metrics through Powertools `Metrics`, flushed per invocation.
- `logging`: our handler under `Logger.inject_lambda_context` with the API Gateway request id.

Each is wired exactly as in `benchmarks.powertools.handler`, which has all three.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from lambdas.inference.app import InferenceApp

PARTS = ("routing", "metrics", "logging")
PART = os.environ.get("SDS_BENCH_POWERTOOLS_PART", "")
if PART not in PARTS:
    raise RuntimeError(f"SDS_BENCH_POWERTOOLS_PART must be one of {', '.join(PARTS)}, not {PART!r}")

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def _routing() -> Handler:
    app = InferenceApp.from_environ(os.environ)
    resolver = APIGatewayRestResolver()

    def ours() -> Response[str]:
        answer = app.handle(resolver.current_event.raw_event)
        return Response(
            status_code=answer["statusCode"], headers=answer["headers"], body=answer["body"]
        )

    resolver.post("/predict")(ours)
    for path in ("/model", "/health", "/openapi.json"):
        resolver.get(path)(ours)
    resolver.not_found(lambda _: ours())
    return resolver.resolve


def _metrics() -> Handler:
    metrics = Metrics(namespace="sds/inference")

    def sink(values: Mapping[str, float], dimensions: Mapping[str, str]) -> None:
        for key, dimension in dimensions.items():
            metrics.add_dimension(name=key, value=dimension)
        for name, value in values.items():
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)

    app = InferenceApp.from_environ(os.environ, metrics=sink)
    return metrics.log_metrics(app.handle)


def _logging() -> Handler:
    logger = Logger(service="sds-inference", level=os.environ.get("LOG_LEVEL", "INFO"))
    app = InferenceApp.from_environ(os.environ)
    return logger.inject_lambda_context(
        app.handle, correlation_id_path=correlation_paths.API_GATEWAY_REST
    )


lambda_handler: Handler = {"routing": _routing, "metrics": _metrics, "logging": _logging}[PART]()
