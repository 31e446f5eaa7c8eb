"""Warm latency inside one execution environment: run by the Lambda's Python (3.12) on a bundle.

    python3.12 -S -P benchmarks/warm_worker.py HANDLER EVENTS_JSON CALLS BLOCKS OUT_JSON [--raw]

Imports the handler like the runtime does (model fetched and loaded at import), then calls
`lambda_handler(event, context)` CALLS times with 1-event and with 100-event API Gateway proxy
events, timing each call. The events file's payments make distinct requests (`requests_of`: each
payment in one 1-event request, and in one 100-event request), and the calls cycle through them
as a function's traffic does: a new payment each time, never the same one repeated. With --raw it
also times the floor on the same requests, in the same order: `InferenceSession.run` on each
request's already featurized rows, and the feature store's read of its accounts (`store.read`,
the round trip the handler makes per request); the raw run again, each time right after the
handler's read of those accounts' aggregates (what the handler's own scoring meets); and the raw
run on one request repeated (what a floor timed on a single request measures: the CPU learns
the trees' branches for those rows, which traffic never lets it). Only the standard library and
the bundle are importable here. stdout is flushed after every write, as the Lambda runtime's
is (`Unbuffered`); the parent sends it to /dev/null. The series of one request size are timed
block by block in turn (`time_interleaved`), so that each paired figure compares the same
stretch of the machine's time.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

WARMUP_CALLS = 200
# (series label, payments per request)
REQUEST_SIZES = (("single", 1), ("batch100", 100))


class Unbuffered:
    """stdout as the Lambda runtime has it: awslambdaric's `Unbuffered`, of the same name and
    behaviour (every write flushed at once, so each write is a system call, as a function's log
    lines cost on Lambda). The handler recognises it by its name as it does the runtime's
    (`lambdas.inference.app.StdoutLines`); awslambdaric itself is not importable here."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    def write(self, text: str) -> int:
        written: int = self.stream.write(text)
        self.stream.flush()
        return written


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


def requests_of(events: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    """Distinct requests of `size` consecutive payments each (a shorter tail is left out)."""
    return [events[start : start + size] for start in range(0, len(events) - size + 1, size)]


class Series:
    """A timed series: `call` on `inputs[i % len(inputs)]` for call i, each after an untimed
    `before` on the same input if given."""

    __slots__ = ("before", "call", "inputs", "samples")

    def __init__(
        self,
        call: Callable[[Any], Any],
        inputs: Sequence[Any],
        before: Callable[[Any], Any] | None = None,
    ) -> None:
        self.call, self.inputs, self.before = call, inputs, before
        self.samples: list[int] = []

    def warm_up(self) -> None:
        """One pass over every input (at least WARMUP_CALLS calls), untimed."""
        for i in range(max(WARMUP_CALLS, len(self.inputs))):
            self._once(self.inputs[i % len(self.inputs)])

    def _once(self, given: Any) -> None:
        if self.before is not None:
            self.before(given)
        self.call(given)

    def time(self, first: int, count: int) -> None:
        """Calls first .. first + count - 1, each timed."""
        clock, inputs, before, call = time.perf_counter_ns, self.inputs, self.before, self.call
        samples = self.samples
        for i in range(first, first + count):
            given = inputs[i % len(inputs)]
            if before is not None:
                before(given)
            started = clock()
            call(given)
            samples.append(clock() - started)


def time_interleaved(series: dict[str, Series], calls: int, blocks: int) -> dict[str, Any]:
    """Each series timed `calls` times, block by block in turn: block b of every series, then
    block b + 1 of every series. A block of one series is thus compared with the same block of
    another, timed seconds apart at most, so a slow spell of the machine (a neighbour's burst)
    falls on both sides of a paired figure instead of on one series (results before 2026-12-05
    timed each series whole, one after another). Percentiles over all calls, and per block."""
    for one in series.values():
        one.warm_up()
    size = calls // blocks
    for block in range(blocks):
        for one in series.values():
            gc.collect()
            one.time(block * size, size)
    return {
        name: summarize(one.samples)
        | {"blocks": [summarize(one.samples[b * size : (b + 1) * size]) for b in range(blocks)]}
        for name, one in series.items()
    }


def main(argv: list[str]) -> int:
    handler_path, events_path, calls_text, blocks_text, out_path = argv[:5]
    raw = "--raw" in argv[5:]
    calls, blocks = int(calls_text), int(blocks_text)
    module_name, function_name = handler_path.rsplit(".", 1)
    with open(events_path) as source:
        events = json.load(source)
    sys.stdout = Unbuffered(sys.stdout)  # the runtime's own, set before it imports the handler
    started = time.perf_counter()
    module = importlib.import_module(module_name)
    init_ms = (time.perf_counter() - started) * 1000
    handler = getattr(module, function_name)
    context = Context()
    results: dict[str, Any] = {"init_ms": init_ms}
    series: dict[str, dict[str, Series]] = {}
    for label, size in REQUEST_SIZES:
        requests = [proxy_event(batch) for batch in requests_of(events, size)]
        if not requests:
            raise SystemExit(f"{events_path}: fewer than {size} payments")
        scores: list[float] = []
        for event in requests:  # every request answered once, and each answer checked
            response = handler(event, context)
            if response["statusCode"] != 200:
                raise SystemExit(
                    f"{handler_path} answered {response['statusCode']}: {response['body']}"
                )
            predictions = json.loads(response["body"])["predictions"]
            scores += [p["fraud_probability"] for p in predictions]
        results[f"{label}_scores"] = scores
        results[f"{label}_requests"] = len(requests)
        series[label] = {label: Series(lambda event: handler(event, context), requests)}
    if raw:
        import numpy as np

        from sds.kernel.features import TIME_US, Columns, featurize_columns

        app = module.app
        model = app.model
        session, feed, output = model.session, model.input_name, model.output_name
        store = app.online.store

        def run(matrix: Any) -> Any:
            return session.run([output], {feed: matrix})

        for label, size in REQUEST_SIZES:
            # The very matrices the handler scores: the same requests, aggregates from its store.
            matrices, accounts, reads = [], [], []
            for batch in requests_of(events, size):
                columns, missing = app._with_aggregates(Columns.of(batch), {})
                if missing is not None:
                    raise SystemExit(f"{handler_path}: account aggregates unavailable: {missing}")
                matrices.append(np.asarray(featurize_columns(columns), dtype=np.float32))
                accounts.append(list(dict.fromkeys(columns["account_id"])))
                reads.append((columns["account_id"], columns[TIME_US]))
            series[label] |= {
                f"raw_{label}": Series(run, matrices),
                # The same run on the first request only, repeated: the floor as a benchmark of
                # one request measures it (lower: the branch predictor learns those rows' paths).
                f"raw_repeated_{label}": Series(run, matrices[:1]),
                # The feature store's read of each request's accounts, as the handler makes it:
                # one round trip and its decoding. On AWS it is a DynamoDB call over the network,
                # so the handler's own cost is what it adds above this and the raw run (the floor).
                f"store_{label}": Series(store.read, accounts),
                # The same raw runs, each right after the handler's read of that request's
                # aggregates (untimed), as the handler's own scoring meets the CPU's caches: how
                # much of the gap above the floor is the model's run itself, slowed by the work
                # before it.
                f"raw_after_read_{label}": Series(
                    lambda pair: run(pair[0]),
                    list(zip(matrices, reads, strict=True)),
                    before=lambda pair: app.online.read_columns(*pair[1]),
                ),
            }
    for label, _ in REQUEST_SIZES:  # each request size's series interleaved, block by block
        results |= time_interleaved(series[label], calls, blocks)
    with open(out_path, "w") as sink:
        json.dump(results, sink)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
