"""The `features` section of `make bench`: the event path's throughput, requests and cost.

1. **Updater throughput** against the embedded store: a generated history (logins and payments,
   in time order) as SQS batches of 100 EventBridge envelopes through
   `lambdas.features_updater.updater.FeatureUpdater` over a fresh `SqliteFeatureStore`, in this
   one process; events per second of wall time, per run.
2. **DynamoDB requests per event**: the same updater over `DynamoDBFeatureStore` on moto's
   server (the DynamoDB API; its latency says nothing about DynamoDB's, so only counts are
   taken): requests by operation, and the request units they bill, from the items' sizes
   (`item_bytes`, as DynamoDB counts them): a transactional write costs 2 write units per KB of
   each item, the updater's strongly consistent read 1 read unit per 4 KB of each item (and 1
   for a key no item answers).
3. **Enrichment in the warm handler**: what the handler adds to a request to read the payments'
   account aggregates (`OnlineFeatures.read_columns`: one store read, then evaluation) on the folded
   local store, for 1 and 100 payments; p50 and p99 in microseconds.
4. **Cost per million events on AWS**: the counts above times the per-use list prices in
   `docs/cost.py` (`PER_USE`), with what is assumed written next to each line.
"""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from lambdas.features_updater.updater import FeatureUpdater
from sds.kernel.activity import envelope
from sds.kernel.errors import counted
from sds.kernel.features import parse_time
from sds.kernel.featurestore.dynamodb import DynamoDBFeatureStore, item_bytes, table_definition
from sds.kernel.featurestore.sqlite import SqliteFeatureStore
from sds.kernel.online import OnlineFeatures
from training.synthetic import generate_activity

ROOT = Path(__file__).resolve().parents[1]
BATCH = 100  # infra.features.batch_size as committed
SQS_RECEIVE_MAX = 10  # messages per ReceiveMessage / DeleteMessageBatch call
UPDATER_MEMORY_GB = 0.5  # infra.features.updater_memory_mb as committed
# Assumed, not measured (no AWS account here): one DynamoDB round trip from Lambda in-region.
ASSUMED_ROUND_TRIP_MS = 10.0


def _cost_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sds_docs_cost", ROOT / "docs" / "cost.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def history(payments: int, seed: int = 7) -> list[dict[str, Any]]:
    events = generate_activity(payments, seed=seed)
    for event in events:
        event.pop("is_fraud", None)
    return events


def batches(events: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(the updater's clock, the SQS event) per batch of `BATCH`, in time order."""
    out = []
    for start in range(0, len(events), BATCH):
        chunk = events[start : start + BATCH]
        records = [
            {
                "messageId": f"m-{start + i}",
                "body": json.dumps(envelope(e, id=f"eb-{start + i}", time=e["occurred_at"])),
            }
            for i, e in enumerate(chunk)
        ]
        out.append((parse_time(chunk[-1]["occurred_at"]), {"Records": records}))
    return out


def fold(store: Any, work: list[tuple[int, dict[str, Any]]]) -> tuple[float, Counter[str]]:
    """Seconds to fold every batch, and the updater's summed metrics."""
    clock = [0]
    counts: Counter[str] = Counter()

    def metrics(values: Mapping[str, float], dimensions: Mapping[str, str]) -> None:
        del dimensions
        counts.update({k: int(v) for k, v in values.items()})

    updater = FeatureUpdater(
        OnlineFeatures(store), environment="bench", metrics=metrics, clock=lambda: clock[0]
    )
    started = time.perf_counter()
    for now, event in work:
        clock[0] = now
        answer = updater.handle(event)
        if answer["batchItemFailures"]:
            raise RuntimeError(f"the updater gave messages back: {answer}")
    return time.perf_counter() - started, counts


def _summary(values: list[float], digits: int = 0) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": len(values),
        "values": [round(v, digits) for v in values],
    }


def updater_throughput(events: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    work = batches(events)
    rates = []
    counts: Counter[str] = Counter()
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            store = SqliteFeatureStore(Path(folder) / "features.db")
            seconds, counts = fold(store, work)
            store.close()
        rates.append(len(events) / seconds)
    return {
        "events": len(events),
        "batch": BATCH,
        "runs": runs,
        "events_per_second": _summary(rates),
        "applied": counts["Applied"],
        "ignored": counts["Ignored"],
        "too_old": counts["TooOld"],
        "commits": counts["Commits"],
    }


class CountingClient:
    """The store's DynamoDB client, counting requests and the request units they bill."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.requests: Counter[str] = Counter()
        self.write_units = 0
        self.read_units = 0
        self.state_bytes: list[int] = []

    def call(self, operation: str, request: Mapping[str, Any]) -> dict[str, Any]:
        self.requests[operation] += 1
        if operation == "TransactWriteItems":
            for entry in request["TransactItems"]:
                size = item_bytes(entry["Put"]["Item"])
                self.write_units += 2 * math.ceil(size / 1024)
        answer: dict[str, Any] = self.client.call(operation, request)
        if operation == "BatchGetItem":
            # A key asked for costs a unit even when no item answers it
            asked = sum(len(r["Keys"]) for r in request["RequestItems"].values())
            found = [i for items in answer.get("Responses", {}).values() for i in items]
            left = sum(len(r["Keys"]) for r in answer.get("UnprocessedKeys", {}).values())
            self.read_units += asked - left - len(found)
            for item in found:
                size = item_bytes(item)
                self.read_units += max(1, math.ceil(size / 4096))
                self.state_bytes.append(size)
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def dynamodb_requests(
    events: list[dict[str, Any]], client_factory: Callable[[], Any]
) -> dict[str, Any]:
    table = f"bench-features-{int(time.time() * 1000)}"
    client = client_factory()
    client.call("CreateTable", table_definition(table))
    counting = CountingClient(client_factory())
    store = DynamoDBFeatureStore(table, client=cast(Any, counting), consistent_read=True)
    _, counts = fold(store, batches(events))
    total = sum(counting.requests.values())
    return {
        "events": len(events),
        "batch": BATCH,
        "requests": dict(counting.requests),
        "requests_per_event": round(total / len(events), 3),
        "write_units_per_event": round(counting.write_units / len(events), 3),
        "read_units_per_event": round(counting.read_units / len(events), 3),
        "state_item_bytes_p50": statistics.median(counting.state_bytes or [0]),
        "applied": counts["Applied"],
        "ignored": counts["Ignored"],
        "too_old": counts["TooOld"],
        "retries": counts["Retries"],
    }


def enrichment(events: list[dict[str, Any]], calls: int) -> dict[str, Any]:
    """What a request pays for its payments' aggregates on the folded local store."""
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteFeatureStore(Path(folder) / "features.db")
        fold(store, batches(events))
        online = OnlineFeatures(store)
        payments = [e for e in events if e["type"] == "payment"]
        accounts = [str(p["account_id"]) for p in payments]
        times = [parse_time(p["occurred_at"]) for p in payments]
        result = {}
        for size in (1, 100):
            timings = []
            for i in range(calls):
                start = (i * size) % max(1, len(accounts) - size)
                end = start + size
                began = time.perf_counter_ns()
                # What the handler calls: one store read, the aggregates as columns.
                online.read_columns(accounts[start:end], times[start:end])
                timings.append((time.perf_counter_ns() - began) / 1000)
            timings.sort()
            result[f"events_{size}"] = {
                "p50_us": round(timings[len(timings) // 2], 1),
                "p99_us": round(timings[int(len(timings) * 0.99)], 1),
                "calls": calls,
            }
        store.close()
    return result


def cost_per_million(
    requests: Mapping[str, Any], envelope_bytes: float, events_per_second: float
) -> dict[str, Any]:
    """USD per million activity events on AWS, from the measured DynamoDB counts; the updater's
    own time per event is its measured time over SQLite (an upper bound: it includes SQLite's
    writes), DynamoDB's round trips are assumed."""
    prices = _cost_module().PER_USE
    million = 1_000_000
    invocations = million / BATCH
    round_trips = requests["requests_per_event"] * million
    duration_s = million / events_per_second + round_trips * ASSUMED_ROUND_TRIP_MS / 1000
    lines = {
        "eventbridge_put": (million * prices["eventbridge_event"].usd, "1 custom event each"),
        "eventbridge_archive": (
            million * envelope_bytes / 1e9 * prices["eventbridge_archive_gb"].usd,
            f"{envelope_bytes:.0f} bytes archived each (storage extra)",
        ),
        "sqs": (
            million * (1 + 2 / SQS_RECEIVE_MAX) * prices["sqs_request"].usd,
            "1 send by EventBridge, 1/10 receive and 1/10 delete-batch each",
        ),
        "lambda_requests": (invocations * prices["lambda_request"].usd, f"1 per {BATCH} events"),
        "lambda_duration": (
            duration_s * UPDATER_MEMORY_GB * prices["lambda_gb_second_x86_64"].usd,
            f"assumed {ASSUMED_ROUND_TRIP_MS:g} ms per DynamoDB round trip, the updater's "
            f"measured time per event, {UPDATER_MEMORY_GB} GB",
        ),
        "dynamodb_writes": (
            requests["write_units_per_event"] * million * prices["dynamodb_write_request_unit"].usd,
            f"{requests['write_units_per_event']} write units each (measured)",
        ),
        "dynamodb_reads": (
            requests["read_units_per_event"] * million * prices["dynamodb_read_request_unit"].usd,
            f"{requests['read_units_per_event']} read units each (measured)",
        ),
    }
    return {
        "usd": {name: round(value, 4) for name, (value, _) in lines.items()},
        "basis": {name: basis for name, (_, basis) in lines.items()},
        "total_usd": round(sum(value for value, _ in lines.values()), 3),
    }


def run(
    *, quick: bool, client_factory: Callable[[], Any], log: Callable[[str], None]
) -> dict[str, Any]:
    # The history spans about 90 days whatever its size: 20,000 payments make batches of 100
    # span hours, as a busy stream's would (a sparse one's would span weeks and drop as TooOld).
    payments, dynamodb_events, runs, calls = (
        (20_000, 300, 1, 200) if quick else (20_000, 1_000, 3, 2_000)
    )
    events = history(payments)
    log(f"features: the updater over SQLite, {len(events)} events x {runs} runs")
    results: dict[str, Any] = {"updater_sqlite": updater_throughput(events, runs)}
    # The first events of the same history: the same density, fewer requests to moto
    small = events[:dynamodb_events]
    log(f"features: the updater over DynamoDB (moto), {len(small)} events: request counts")
    results["dynamodb"] = dynamodb_requests(small, client_factory)
    log(f"features: enrichment reads on the folded store, {calls} calls per size")
    results["enrichment"] = enrichment(events, calls)
    sizes = [len(json.dumps(envelope(e, id="x" * 36, time=e["occurred_at"]))) for e in small]
    results["cost_per_million_events"] = cost_per_million(
        results["dynamodb"],
        statistics.mean(sizes),
        results["updater_sqlite"]["events_per_second"]["median"],
    )
    return results


def markdown(section: Mapping[str, Any]) -> list[str]:
    updater = section["updater_sqlite"]
    dynamo = section["dynamodb"]
    rate = updater["events_per_second"]
    cost = section["cost_per_million_events"]
    lines = [
        "",
        "## Event-driven features",
        "",
        f"- Feature updater, one process, SQLite store: {rate['median']:.0f} events/s "
        f"({rate['min']:.0f}-{rate['max']:.0f}) over {updater['events']} events in batches of "
        f"{updater['batch']}, {updater['runs']} runs.",
        f"- DynamoDB requests per event: {dynamo['requests_per_event']} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(dynamo['requests'].items()))} for "
        f"{dynamo['events']} events); {dynamo['write_units_per_event']} write and "
        f"{dynamo['read_units_per_event']} read units per event (one read per batch, one "
        f"commit per account in a batch of {dynamo['batch']}: a stream with more events per "
        "account per batch commits less per event).",
    ]
    for size in (1, 100):
        figure = section["enrichment"][f"events_{size}"]
        lines.append(
            f"- Enrichment in the warm handler, {counted(size, 'payment')}, SQLite: p50 "
            f"{figure['p50_us']} us, p99 {figure['p99_us']} us."
        )
    lines += ["", "| per million events on AWS | USD | basis |", "|---|---:|---|"]
    for name, usd in cost["usd"].items():
        lines.append(f"| {name} | {usd:.4f} | {cost['basis'][name]} |")
    lines += [f"| **total** | **{cost['total_usd']:.3f}** | |", ""]
    return lines
