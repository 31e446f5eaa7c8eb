"""Run by the Lambda's Python (3.12) on the Powertools variant bundle: import cost and parity.

    python3.12 -S -P benchmarks/powertools/probe.py import with_sdk|without_sdk OUT_JSON
    python3.12 -S -P benchmarks/powertools/probe.py parity EVENTS_JSON OUT_JSON

`import` first loads what is already in memory when Lambda imports a handler (the runtime
interface client) and what ours loads at init, then times importing and creating Powertools'
`APIGatewayRestResolver`, `Logger` and `Metrics`: the cold-start cost Powertools adds, without the
noise of a whole process start. `with_sdk` loads our complete handler first (the AWS SDK, the S3
fetch, numpy, ONNX Runtime, the session), as it is today; `without_sdk` loads only our app module,
numpy and ONNX Runtime, as a handler that fetches without the SDK would (issue 13): the standard
library modules the SDK brings, and Powertools shares, are then Powertools' to pay.

`parity` calls our handler and the Powertools variant with the same requests (scored, invalid,
wrong method, unknown route, the GET routes) and records each answer and the metrics each
emitted: the two must do the same work for their difference in time to mean anything.
Only the standard library and the bundle are importable here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _warm_worker() -> Any:
    """benchmarks/warm_worker.py (its request event and Lambda context), loaded by path: the
    bundle carries only the `benchmarks.powertools` package."""
    path = Path(__file__).resolve().parent.parent / "warm_worker.py"
    spec = importlib.util.spec_from_file_location("warm_worker", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _top_level(names: set[str]) -> list[str]:
    return sorted({name.split(".", 1)[0] for name in names})


def import_cost(mode: str) -> dict[str, Any]:
    import awslambdaric.bootstrap  # noqa: F401  (in memory before any handler is imported)

    if mode == "with_sdk":
        import lambdas.inference.handler  # ours, complete: SDK, fetch, session
    elif mode == "without_sdk":
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401

        import lambdas.inference.app  # noqa: F401
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    before = set(sys.modules)
    cpu_started = time.process_time()
    started = time.perf_counter()
    from aws_lambda_powertools import Logger, Metrics
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver

    imported = time.perf_counter()
    Logger(service="sds-inference")
    Metrics(namespace="sds/inference")
    APIGatewayRestResolver()
    done = time.perf_counter()
    cpu_done = time.process_time()
    added = set(sys.modules) - before
    return {
        "import_ms": (imported - started) * 1000,
        "init_ms": (done - imported) * 1000,
        "total_ms": (done - started) * 1000,
        # The same in CPU time, which a busy machine inflates least (no waiting for a core).
        "cpu_ms": (cpu_done - cpu_started) * 1000,
        "modules": len(added),
        "packages": _top_level(added),
        "sdk_loaded_before": "botocore" in before,
    }


def cloudwatch_metrics(printed: str) -> list[dict[str, Any]]:
    """Each EMF document as what CloudWatch makes of it (values summed, timestamp dropped)."""
    out = []
    for line in printed.splitlines():
        document = json.loads(line)
        if "_aws" not in document:  # a capture record (sds.kernel.capture), not a metric
            continue
        for directive in document["_aws"]["CloudWatchMetrics"]:
            names = sorted({name for group in directive["Dimensions"] for name in group})
            for metric in directive["Metrics"]:
                value = document[metric["Name"]]
                out.append(
                    {
                        "namespace": directive["Namespace"],
                        "name": metric["Name"],
                        "unit": metric.get("Unit"),
                        "dimensions": {name: document[name] for name in names},
                        "value": sum(value) if isinstance(value, list) else value,
                    }
                )
    return out


def _answer(
    handler: Callable[..., dict[str, Any]], event: dict[str, Any], context: Any
) -> dict[str, Any]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        response = handler(event, context)
    headers = response.get("headers") or {
        name: values[-1] for name, values in response.get("multiValueHeaders", {}).items()
    }
    return {
        "status": response["statusCode"],
        "headers": dict(sorted(headers.items())),
        "body": json.loads(response["body"]),
        "metrics": cloudwatch_metrics(stdout.getvalue()),
    }


def requests(events: list[dict[str, Any]], worker: Any) -> dict[str, dict[str, Any]]:
    def request(method: str, path: str, body: Any = None, **changes: Any) -> dict[str, Any]:
        event = worker.proxy_event(events[:1])
        event.update(httpMethod=method, path=path, resource=path)
        event["requestContext"] = {**event["requestContext"], "path": f"/live{path}"}
        event["body"] = (
            None if body is None else body if isinstance(body, str) else json.dumps(body)
        )
        event.update(changes)
        return event

    invalid = dict(events[0], amount="a lot")
    return {
        "POST /predict, 1 event": request("POST", "/predict", {"events": events[:1]}),
        "POST /predict, 100 events": request("POST", "/predict", {"events": events[:100]}),
        "POST /predict/ (trailing slash)": request("POST", "/predict/", {"events": events[:1]}),
        "an invalid event (400)": request("POST", "/predict", {"events": [invalid]}),
        "invalid JSON (400)": request("POST", "/predict", "{not json"),
        "text/plain (415)": request(
            "POST", "/predict", "x=1", headers={"Content-Type": "text/plain"}
        ),
        "GET /predict (405)": request("GET", "/predict"),
        "unknown route (404)": request("GET", "/nothing-here"),
        "GET /health": request("GET", "/health"),
        "GET /model": request("GET", "/model"),
        "GET /openapi.json": request("GET", "/openapi.json"),
    }


def parity(events_path: str) -> dict[str, Any]:
    import warnings

    from benchmarks.powertools.handler import lambda_handler as powertools
    from lambdas.inference.handler import lambda_handler as ours

    # Powertools warns on every invocation without a metric (the GET routes).
    warnings.simplefilter("ignore")
    with open(events_path) as source:
        events = json.load(source)
    worker = _warm_worker()
    context = worker.Context()
    cases = {}
    for name, event in requests(events, worker).items():
        answers = {
            "ours": _answer(ours, event, context),
            "powertools": _answer(powertools, event, context),
        }
        cases[name] = {
            "status": answers["ours"]["status"],
            "same": answers["ours"] == answers["powertools"],
            **({} if answers["ours"] == answers["powertools"] else answers),
        }
    return {"cases": cases, "all_same": all(case["same"] for case in cases.values())}


def main(argv: list[str]) -> int:
    command, argument, out_path = argv[:3]
    if command == "import":
        result = import_cost(argument)
    elif command == "parity":
        result = parity(argument)
    else:
        raise SystemExit(f"unknown command {command!r}")
    with open(out_path, "w") as sink:
        json.dump(result, sink)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
