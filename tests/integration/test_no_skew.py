"""Proof of no skew: what serving computes online is what training computed offline, every payment.

A generated history (logins and payments, with the fraud signal in the events) is delivered to
the feature updater as a queue would deliver it: each event some minutes after it happened, so
deliveries overtake each other (also within an account, landing in older buckets after newer
ones), and some events are delivered twice, up to hours later. Each payment is scored through
the real handler path (API Gateway event in, validation, one feature store read per request,
featurization, ONNX) when it happens, before its own delivery: every event of its account that
happened before it has been delivered by then, and none after it. Each feature vector the handler
hands the model is then compared with the one training computes from the same history
(`sds.kernel.pointintime`, `featurize_batch`): identical, bit for bit, every payment.

On the embedded store (SQLite) over a history of at least 50,000 events; on the DynamoDB store
(moto's server) over a smaller one, since both pass one contract suite and moto answers a
request at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdas.features_updater.updater import FeatureUpdater
from lambdas.inference.app import InferenceApp
from sds.kernel import pointintime
from sds.kernel.activity import envelope
from sds.kernel.aggregates import AGGREGATES, HOUR, MINUTE
from sds.kernel.features import featurize_batch
from sds.kernel.featurestore import FeatureStore
from sds.kernel.featurestore.dynamodb import DynamoDBFeatureStore, table_definition
from sds.kernel.featurestore.sqlite import SqliteFeatureStore
from sds.kernel.online import OnlineFeatures
from sds.kernel.registry import open_registry
from sds.kernel.serving import LoadedModel, load_model
from sds.kernel.settings import ServingSettings
from training.data import History, read_history, write_jsonl
from training.synthetic import generate_activity
from training.train import STEPS, Progress, TrainParams, train

MODEL = "fraud"
DELIVERY_DELAY = 10 * MINUTE  # the longest a first delivery takes
REDELIVERY_DELAY = 2 * HOUR  # the longest a second delivery of the same event comes after
DUPLICATE_SHARE = 0.03
MAX_EVENTS = 100  # payments happening at once go in one request, as a client would batch them


@pytest.fixture(scope="module")
def served_version(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any]:
    """A registry with one version trained on generated activity (the definitions of today)."""
    data = write_jsonl(
        generate_activity(3000, seed=11), tmp_path_factory.mktemp("data") / "train.jsonl"
    )
    root = tmp_path_factory.mktemp("registry")
    version = train(
        data=data,
        registry=open_registry(root.as_uri(), MODEL),
        params=TrainParams(max_iter=20, seed=1),
        actor="trainer@ci",
        reason="no-skew proof",
        progress=Progress(STEPS, enabled=False),
    )
    return root.as_uri(), version


class RecordingModel:
    """The loaded model, keeping every matrix the handler asks it to score."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.matrices: list[np.ndarray] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def predict(self, vectors: Any) -> list[float]:
        self.matrices.append(np.array(vectors, copy=True))
        return self.model.predict(vectors)

    def score_matrix(self, matrix: Any) -> list[float]:
        self.matrices.append(np.array(matrix, copy=True))
        return self.model.score_matrix(matrix)

    def score_row(self, row: Any, *, keep: bool = False) -> tuple[float, Any]:
        score, matrix = self.model.score_row(row, keep=True)
        self.matrices.append(matrix)
        return score, matrix if keep else None


@dataclass(order=True)
class Step:
    """One thing that happens, in arrival order: a delivery to the updater or a payment scored."""

    at: int
    kind: int  # 0: score (before a delivery at the same microsecond), 1: deliver
    index: int  # into History.events
    copy: int = 0
    payload: Any = field(default=None, compare=False)


def arrival_order(
    history: History, seed: int, delay: int = DELIVERY_DELAY
) -> tuple[list[Step], dict[str, int]]:
    """Every payment scored when it happens; every event delivered after it happened, at most
    `delay` later but before the next payment of its account is scored; a share
    delivered a second time, up to `REDELIVERY_DELAY` after the first (any order)."""
    rng = np.random.default_rng(seed)
    times = history.times.astype(np.int64)
    accounts = [str(e["account_id"]) for e in history.events]
    next_payment = np.full(len(times), np.iinfo(np.int64).max, dtype=np.int64)
    upcoming: dict[str, int] = {}
    for i in range(len(times) - 1, -1, -1):
        next_payment[i] = upcoming.get(accounts[i], next_payment[i])
        if history.events[i]["type"] == "payment":
            upcoming[accounts[i]] = int(times[i])
    # Uniform over what is allowed: up to `delay`, and before the account's next payment
    allowed = np.maximum(np.minimum(delay, next_payment - times), 1)
    delivered = times + (rng.random(len(times)) * allowed).astype(np.int64)
    steps = [Step(int(times[i]), 0, int(i)) for i in history.payments]
    steps += [Step(int(delivered[i]), 1, i) for i in range(len(times))]
    again = np.flatnonzero(rng.random(len(times)) < DUPLICATE_SHARE)
    later = rng.integers(1, REDELIVERY_DELAY, size=len(again))
    steps += [
        Step(int(delivered[i] + d), 1, int(i), copy=1) for i, d in zip(again, later, strict=True)
    ]
    steps.sort()
    # How much disorder the deliveries carry (so the test cannot pass on an ordered stream)
    order = [s.index for s in steps if s.kind == 1 and s.copy == 0]
    overtaken = sum(1 for a, b in pairwise(order) if b < a)
    last_of: dict[str, int] = {}
    late_in_account = 0
    for i in order:
        if last_of.get(accounts[i], -1) > times[i]:
            late_in_account += 1
        last_of[accounts[i]] = max(last_of.get(accounts[i], -1), int(times[i]))
    return steps, {
        "deliveries": len(order),
        "redeliveries": len(again),
        "overtaken": overtaken,
        "late_in_account": late_in_account,
    }


def proxy(payments: list[dict[str, Any]]) -> dict[str, Any]:
    body = {"events": [{k: v for k, v in p.items() if k != "type"} for p in payments]}
    return {
        "resource": "/{proxy+}",
        "path": "/predict",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def replay_online(
    history: History, steps: list[Step], store: FeatureStore, served_version: tuple[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, float], list[float]]:
    """Run the steps: deliveries through the updater (SQS batches of what arrived since the last
    scoring), payments through the handler. Each payment's feature vector, the updater's counts
    and the scores."""
    registry_uri, version = served_version
    clock = [0]
    counts: dict[str, float] = {}

    def count(values: Any, dimensions: Any) -> None:
        del dimensions
        for name, value in values.items():
            counts[name] = counts.get(name, 0) + value

    updater = FeatureUpdater(
        OnlineFeatures(store), environment="test", metrics=count, clock=lambda: clock[0]
    )
    recording: list[RecordingModel] = []

    def loader(settings: ServingSettings) -> Any:
        recording.append(RecordingModel(load_model(settings)))
        return recording[0]

    app = InferenceApp(
        ServingSettings(
            model_name=MODEL,
            model_version=version.number,
            model_sha256=version.sha256,
            registry_uri=registry_uri,
            environment="test",
        ),
        loader=loader,
        metrics=lambda values, dimensions: None,
        online=OnlineFeatures(store),
    )
    assert app.model is not None, app.unavailable
    vectors: dict[str, np.ndarray] = {}
    scores: list[float] = []
    deliveries: list[Step] = []
    scoring: list[Step] = []

    def deliver() -> None:
        if not deliveries:
            return
        records = []
        for step in deliveries:
            event = history.events[step.index]
            body = envelope(event, id=f"eb-{step.index}-{step.copy}", time=event["occurred_at"])
            records.append({"messageId": f"m-{step.index}-{step.copy}", "body": json.dumps(body)})
        clock[0] = deliveries[-1].at
        answer = updater.handle({"Records": records})
        assert answer == {"batchItemFailures": []}
        deliveries.clear()

    def score() -> None:
        if not scoring:
            return
        payments = [history.events[s.index] for s in scoring]
        response = app.handle(proxy(payments), None)
        assert response["statusCode"] == 200, response["body"]
        body = json.loads(response["body"])
        assert "online_features" not in body
        matrix = recording[0].matrices.pop()
        for payment, row in zip(payments, matrix, strict=True):
            vectors[payment["event_id"]] = row
        scores.extend(p["fraud_probability"] for p in body["predictions"])
        scoring.clear()

    for step in steps:
        if step.kind == 0:
            deliver()  # everything that arrived before this payment
            scoring.append(step)
            if len(scoring) == MAX_EVENTS:
                score()
        else:
            score()  # payments that happened before this delivery
            deliveries.append(step)
    score()
    deliver()
    return vectors, counts, scores


def offline_vectors(history: History) -> np.ndarray:
    """What training computes: the aggregates point in time, then the features."""
    payments = history.payment_events
    computed = pointintime.compute(
        history.events,
        history.times,
        [e["account_id"] for e in payments],
        history.payment_times,
    )
    return featurize_batch(payments, {n: v.tolist() for n, v in computed.items()})


def check_no_skew(
    history_path: Path,
    store: FeatureStore,
    served_version: tuple[str, Any],
    *,
    seed: int,
    delay: int = DELIVERY_DELAY,
) -> dict[str, int]:
    history = read_history(history_path)
    steps, disorder = arrival_order(history, seed, delay)
    # When the history arrives online, in arrival order
    online, counts, _ = replay_online(history, steps, store, served_version)
    # Then every payment was scored, and every event counted once
    payments = history.payment_events
    assert len(online) == len(payments)
    counting = [e for e in history.events if any(a.matches(e) for a in AGGREGATES)]
    assert counts["Applied"] == len(counting)
    assert counts["Duplicates"] <= disorder["redeliveries"]
    assert counts["Events"] == disorder["deliveries"] + disorder["redeliveries"]
    assert counts["Applied"] + counts["Duplicates"] + counts["Ignored"] == counts["Events"]
    assert counts["Invalid"] == counts["Failed"] == counts["TooOld"] == 0
    # And each feature vector is the one training computed offline, bit for bit
    offline = offline_vectors(history)
    different = [
        p["event_id"]
        for p, row in zip(payments, offline, strict=True)
        if online[p["event_id"]].tobytes() != row.tobytes()
    ]
    assert different == [], f"{len(different)} of {len(payments)} payments differ"
    return disorder


def history_file(tmp_path: Path, payments: int, seed: int) -> Path:
    return write_jsonl(generate_activity(payments, seed=seed), tmp_path / "history.jsonl")


def test_online_features_equal_offline_on_the_embedded_store(
    tmp_path: Path, served_version: tuple[str, Any]
) -> None:
    # Given a history of over 50,000 events (logins and payments of thousands of accounts)
    path = history_file(tmp_path, 34_000, seed=5)
    events = read_history(path).events
    assert len(events) >= 50_000
    assert {e["type"] for e in events} == {"login", "payment"}
    # And deliveries out of order (also within accounts) and redelivered
    store = SqliteFeatureStore(tmp_path / "features.db")
    disorder = check_no_skew(path, store, served_version, seed=1)
    assert disorder["overtaken"] > 10_000
    assert disorder["late_in_account"] > 500
    assert disorder["redeliveries"] > 1000


@pytest.fixture
def dynamodb_store(aws: Any) -> Iterator[DynamoDBFeatureStore]:
    aws.client("dynamodb").create_table(**table_definition("no-skew"))
    yield DynamoDBFeatureStore("no-skew", consistent_read=True)


def test_online_features_equal_offline_on_the_dynamodb_store(
    tmp_path: Path,
    served_version: tuple[str, Any],
    dynamodb_store: DynamoDBFeatureStore,
) -> None:
    # Given a smaller history, delivered out of order and redelivered, to the DynamoDB store
    path = history_file(tmp_path, 500, seed=9)
    # (deliveries up to six hours late: this history is sparser)
    disorder = check_no_skew(path, dynamodb_store, served_version, seed=2, delay=6 * HOUR)
    assert disorder["overtaken"] > 50
    assert disorder["late_in_account"] > 10
    assert disorder["redeliveries"] > 10
