"""Warm latency inside one execution environment: run by the Lambda's Python (3.12) on a bundle.

    python3.12 -S -P benchmarks/warm_worker.py HANDLER EVENTS_JSON CALLS BLOCKS OUT_JSON [--raw]

Imports the handler like the runtime does (model fetched and loaded at import), then calls
`lambda_handler(event, context)` CALLS times with a 1-event and a 100-event API Gateway proxy event,
timing each call. With --raw it also times the floor: `InferenceSession.run` on the same,
already featurized rows, and the feature store's read of the same accounts (`store.read`, the
round trip the handler makes per request); and the raw run again, each time right after the
handler's read of those accounts' aggregates (what the handler's own scoring meets). Only the standard library and the bundle are importable here.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

WARMUP_CALLS = 200


def proxy_event(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resource": "/predict",
        "path": "/predict",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"events": events}),
        "isBase64Encoded": False,
        # What API Gateway sends with every request (Powertools' resolver reads the path, its
        # Logger the request id).
        "requestContext": {
            "stage": "live",
            "path": "/live/predict",
            "resourcePath": "/predict",
            "httpMethod": "POST",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
        },
    }


class Context:
    """The fields of the Lambda context object a handler may read (ours reads none)."""

    function_name = "sds-bench"
    function_version = "1"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:sds-bench:live"
    aws_request_id = "8f5a1a4e-0000-4000-8000-000000000001"
    log_group_name = "/aws/lambda/sds-bench"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def summarize(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] / 1000.0

    return {
        "calls": len(ordered),
        "p50_us": rank(0.50),
        "p90_us": rank(0.90),
        "p99_us": rank(0.99),
        "max_us": ordered[-1] / 1000.0,
        "mean_us": sum(ordered) / len(ordered) / 1000.0,
    }


def time_calls(
    call: Callable[[], Any], calls: int, blocks: int, before: Callable[[], Any] | None = None
) -> dict[str, Any]:
    """Percentiles over all calls, and per block of consecutive calls (for the spread); with
    `before`, each timed call follows an untimed call of it."""
    for _ in range(min(WARMUP_CALLS, calls)):
        if before is not None:
            before()
        call()
    clock = time.perf_counter_ns
    samples = [0] * calls
    for i in range(calls):
        if before is not None:
            before()
        started = clock()
        call()
        samples[i] = clock() - started
    size = calls // blocks
    return summarize(samples) | {
        "blocks": [summarize(samples[b * size : (b + 1) * size]) for b in range(blocks)]
    }


def main(argv: list[str]) -> int:
    handler_path, events_path, calls_text, blocks_text, out_path = argv[:5]
    raw = "--raw" in argv[5:]
    calls, blocks = int(calls_text), int(blocks_text)
    module_name, function_name = handler_path.rsplit(".", 1)
    with open(events_path) as source:
        events = json.load(source)
    started = time.perf_counter()
    module = importlib.import_module(module_name)
    init_ms = (time.perf_counter() - started) * 1000
    handler = getattr(module, function_name)
    context = Context()
    results: dict[str, Any] = {"init_ms": init_ms}
    for label, batch in (("single", events[:1]), ("batch100", events[:100])):
        event = proxy_event(batch)
        response = handler(event, context)
        if response["statusCode"] != 200:
            raise SystemExit(
                f"{handler_path} answered {response['statusCode']}: {response['body']}"
            )
        scores = [p["fraud_probability"] for p in json.loads(response["body"])["predictions"]]
        results[f"{label}_scores"] = scores
        gc.collect()
        results[label] = time_calls(lambda event=event: handler(event, context), calls, blocks)
    if raw:
        import numpy as np

        from sds.kernel.features import TIME_US, Columns, featurize_columns

        app = module.app
        model = app.model
        session, feed, output = model.session, model.input_name, model.output_name
        store = app.online.store
        for label, batch in (("single", events[:1]), ("batch100", events[:100])):
            # The very matrix the handler scores: the same events, aggregates from its store.
            columns, missing = app._with_aggregates(Columns.of(batch), {})
            if missing is not None:
                raise SystemExit(f"{handler_path}: account aggregates unavailable: {missing}")
            matrix = np.asarray(featurize_columns(columns), dtype=np.float32)
            gc.collect()
            results[f"raw_{label}"] = time_calls(
                lambda m=matrix: session.run([output], {feed: m}), calls, blocks
            )
            # The feature store's read of the request's accounts, as the handler makes it: one
            # round trip and its decoding. On AWS it is a DynamoDB call over the network, so
            # the handler's own cost is what it adds above this and the raw run (the floor).
            accounts = list(dict.fromkeys(columns["account_id"]))
            gc.collect()
            results[f"store_{label}"] = time_calls(lambda a=accounts: store.read(a), calls, blocks)
            # The same raw run, each right after the handler's read of the accounts' aggregates
            # (untimed), as the handler's own scoring meets the CPU's caches: how much of the gap
            # above the floor is the model's run itself, slowed by the work before it.
            gc.collect()
            results[f"raw_after_read_{label}"] = time_calls(
                lambda m=matrix: session.run([output], {feed: m}),
                calls,
                blocks,
                before=lambda c=columns: app.online.read_columns(c["account_id"], c[TIME_US]),
            )
    with open(out_path, "w") as sink:
        json.dump(results, sink)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
