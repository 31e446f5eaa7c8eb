"""Lambda entry point of the Powertools variant: our API adopted onto Powertools for AWS Lambda.

What adopting Powertools would look like, written the way its documentation writes a REST API
handler: a module-level `APIGatewayRestResolver`, `Logger` and `Metrics`, and
`lambda_handler = logger.inject_lambda_context(metrics.log_metrics(app.resolve))`.

- Routing: the resolver owns the four routes. What it does not provide is kept from ours: a
  wrong method on a known path answers 405 with `Allow` (the resolver answers 404 for it), so
  unmatched requests go to our app, which answers 404 or 405 exactly as today.
- Validation, scoring and responses: ours (`InferenceApp.handle`: body checks with 413/415,
  every problem named, the feature function, the model), so both variants answer the same bytes
  in the body. The resolver answers with `multiValueHeaders`, as it does for REST APIs.
- Metrics: through Powertools `Metrics` (namespace `sds/inference`, dimension `Environment`),
  one EMF line flushed at the end of each invocation instead of ours written per metric.
- Logging: Powertools `Logger` (JSON, Lambda context and the API Gateway request id on every
  line); our `sds.inference` logger is given its configuration.

Our routing runs once more behind the resolver for /predict (two isinstance checks, a strip and a
dict lookup); adoption would drop it, so this variant is pessimistic by that (about 1 µs).
Benchmarks only; never deployed. Same model loading as ours.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

from lambdas.inference.app import InferenceApp

logger = Logger(service="sds-inference", level=os.environ.get("LOG_LEVEL", "INFO"))
metrics = Metrics(namespace="sds/inference")
resolver = APIGatewayRestResolver()


def powertools_metric(values: Mapping[str, float], dimensions: Mapping[str, str]) -> None:
    """Our metric sink onto Powertools Metrics: buffered, flushed by `log_metrics`."""
    for key, dimension in dimensions.items():
        metrics.add_dimension(name=key, value=dimension)
    for name, value in values.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


copy_config_to_registered_loggers(source_logger=logger, include={"sds.inference"})
app = InferenceApp.from_environ(os.environ, metrics=powertools_metric)


def ours(event: Mapping[str, Any]) -> Response[str]:
    """Our app's proxy response, as the resolver's Response."""
    answer = app.handle(event)
    return Response(
        status_code=answer["statusCode"], headers=answer["headers"], body=answer["body"]
    )


def current() -> Mapping[str, Any]:
    return resolver.current_event.raw_event


@resolver.post("/predict")
def predict() -> Response[str]:
    return ours(current())


@resolver.get("/model")
def model() -> Response[str]:
    return ours(current())


@resolver.get("/health")
def health() -> Response[str]:
    return ours(current())


@resolver.get("/openapi.json")
def openapi() -> Response[str]:
    return ours(current())


@resolver.not_found
def not_found(_: Exception) -> Response[str]:
    return ours(current())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return resolver.resolve(event, context)
