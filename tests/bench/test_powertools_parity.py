"""The Powertools section's parity check compares metrics as CloudWatch reads them.

Ours writes one EMF line per request with a scalar value per metric; Powertools flushes one line per
invocation with a list of values and compact separators. Both must read as the same metric, and
a metric that differs in what CloudWatch stores (name, unit, dimension, value) must not.
"""

from __future__ import annotations

import contextlib
import io
import json

from benchmarks.powertools.probe import cloudwatch_metrics
from lambdas.inference.app import emf_metrics


def ours(name: str, value: float, environment: str = "dev") -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        emf_metrics({name: value}, {"Environment": environment})
    return printed.getvalue()


def powertools(
    name: str, values: list[float], environment: str = "dev", unit: str = "Count"
) -> str:
    """A line as Powertools 3 `Metrics.flush_metrics` prints it."""
    document = {
        "_aws": {
            "Timestamp": 1767225600000,
            "CloudWatchMetrics": [
                {
                    "Namespace": "sds/inference",
                    "Dimensions": [["Environment"]],
                    "Metrics": [{"Name": name, "Unit": unit}],
                }
            ],
        },
        "Environment": environment,
        name: values,
    }
    return json.dumps(document, separators=(",", ":")) + "\n"


def test_the_same_metric_reads_alike_in_either_format() -> None:
    # Given the Predictions metric for one request, written by ours and as Powertools writes it
    # When both are read as CloudWatch would
    # Then they are the same metric, dimension and value
    assert cloudwatch_metrics(ours("Predictions", 3)) == cloudwatch_metrics(
        powertools("Predictions", [3.0])
    )
    assert cloudwatch_metrics(ours("Predictions", 3)) == [
        {
            "namespace": "sds/inference",
            "name": "Predictions",
            "unit": "Count",
            "dimensions": {"Environment": "dev"},
            "value": 3,
        }
    ]


def test_a_metric_that_differs_in_what_cloudwatch_stores_is_told_apart() -> None:
    # Given ours' Predictions metric
    expected = cloudwatch_metrics(ours("Predictions", 3))

    # When the other side differs in value, dimension, name or unit
    # Then the comparison says so
    for different in (
        powertools("Predictions", [2.0]),
        powertools("Predictions", [3.0], environment="prod"),
        powertools("InvalidRequests", [3.0]),
        powertools("Predictions", [3.0], unit="None"),
        "",
    ):
        assert cloudwatch_metrics(different) != expected
