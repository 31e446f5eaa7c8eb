"""The feature updater Lambda's logic on SQS batches (SQLite store; the DynamoDB store passes the
same contract): partial batch responses name exactly the messages that must come back, and the
batch's metrics say what happened to each event."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from lambdas.features_updater.updater import TIME_RESERVE_MS, FeatureUpdater
from sds.kernel.activity import (
    FEATURE_DETAIL_TYPES,
    SOURCE,
    UpdaterSettings,
    UpdaterSettingsError,
    activity_event,
    envelope,
    put_events_entry,
)
from sds.kernel.aggregates import DAY, HOUR, MINUTE, SECOND
from sds.kernel.features import format_time
from sds.kernel.featurestore import FeatureStoreError, Stored
from sds.kernel.featurestore.sqlite import SqliteFeatureStore
from sds.kernel.online import OnlineFeatures

T0 = 1_767_225_600 * SECOND
NOW = T0 + HOUR


def login(event_id: str, *, account: str = "acct", at: int = T0, outcome: str = "failure") -> dict[str, Any]:  # fmt: skip
    return {
        "type": "login",
        "event_id": event_id,
        "account_id": account,
        "occurred_at": format_time(at),
        "outcome": outcome,
    }


def payment(event_id: str, *, account: str = "acct", at: int = T0) -> dict[str, Any]:
    return {
        "type": "payment",
        "event_id": event_id,
        "account_id": account,
        "occurred_at": format_time(at),
        "amount": 12.5,
        "currency": "EUR",
        "merchant_category": "grocery",
        "country": "DE",
        "card_country": "DE",
        "hour_of_day": 3,
        "account_age_days": 40,
        "is_new_device": False,
    }


def record(body: Any, message_id: str) -> dict[str, Any]:
    """An SQS message as the event source mapping delivers it."""
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": body if isinstance(body, str) else json.dumps(body),
        "attributes": {"ApproximateReceiveCount": "1"},
        "eventSource": "aws:sqs",
    }


def batch(*events: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "Records": [
            record(envelope(e, id=f"eb-{i}", time=str(e["occurred_at"])), f"m{i}")
            for i, e in enumerate(events)
        ]
    }


class Recorder:
    def __init__(self) -> None:
        self.lines: list[dict[str, float]] = []

    def __call__(self, values: Mapping[str, float], dimensions: Mapping[str, str]) -> None:
        assert dimensions == {"Environment": "dev"}
        self.lines.append(dict(values))


@pytest.fixture
def store(tmp_path: Path) -> SqliteFeatureStore:
    return SqliteFeatureStore(tmp_path / "features.db")


@pytest.fixture
def metrics() -> Recorder:
    return Recorder()


def updater_over(store: Any, metrics: Recorder, now: int = NOW) -> FeatureUpdater:
    return FeatureUpdater(
        OnlineFeatures(store), environment="dev", metrics=metrics, clock=lambda: now
    )


def failures(response: Mapping[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def burst(store: Any, account: str = "acct", at: int = NOW) -> float:
    return OnlineFeatures(store).read([(account, at)])[0]["failed_logins_last_1h"]


def test_a_batch_is_folded_and_nothing_comes_back(store: Any, metrics: Recorder) -> None:
    # Given three failed logins, a successful one and a payment from two accounts
    updater = updater_over(store, metrics)
    events = [login("l1"), login("l2"), login("l3", account="other"), login("ok", outcome="success")]  # fmt: skip
    # When the updater gets them as one SQS batch
    response = updater.handle(batch(*events, payment("p1")))
    # Then no message comes back, and each account's aggregates count its own events
    assert failures(response) == []
    assert burst(store) == 2 and burst(store, "other") == 1
    assert OnlineFeatures(store).read([("acct", NOW)])[0]["txn_count_last_1h"] == 1
    assert metrics.lines == [
        {
            "Events": 5,
            "Applied": 4,
            "Duplicates": 0,
            "TooOld": 0,
            "Ignored": 1,
            "Invalid": 0,
            "FromTheFuture": 0,
            "Conflicts": 0,
            "Failed": 0,
            "Commits": 2,
            "Retries": 0,
        }
    ]


def test_redeliveries_in_and_across_batches_count_once(store: Any, metrics: Recorder) -> None:
    updater = updater_over(store, metrics)
    updater.handle(batch(login("l1"), login("l2")))
    # The same event twice in a batch, and again in the next one (SQS delivers at least once)
    response = updater.handle(batch(login("l2"), login("l3"), login("l3"), login("l1")))
    assert failures(response) == []
    assert burst(store) == 3
    assert (metrics.lines[-1]["Applied"], metrics.lines[-1]["Duplicates"]) == (1, 3)


def test_an_event_older_than_the_longest_window_is_dropped_and_counted(
    store: Any, metrics: Recorder
) -> None:
    updater = updater_over(store, metrics, now=T0 + 9 * DAY)
    response = updater.handle(batch(login("old", at=T0), login("new", at=T0 + 9 * DAY - MINUTE)))
    assert failures(response) == []  # nothing to retry: it could never count
    assert metrics.lines[-1]["TooOld"] == 1 and metrics.lines[-1]["Applied"] == 1


def test_a_late_event_lands_in_its_own_bucket(store: Any, metrics: Recorder) -> None:
    updater = updater_over(store, metrics, now=T0 + 2 * HOUR)
    updater.handle(batch(login("newer", at=T0 + 50 * MINUTE)))
    updater.handle(batch(login("older-but-later", at=T0)))
    values = OnlineFeatures(store).read([("acct", T0 + HOUR + 2 * MINUTE), ("acct", T0 + 56 * MINUTE)])  # fmt: skip
    assert [v["failed_logins_last_1h"] for v in values] == [2, 2]
    assert OnlineFeatures(store).read([("acct", T0 + 40 * MINUTE)])[0]["failed_logins_last_1h"] == 1


def test_the_scoring_paths_column_read_answers_what_read_answers(
    store: Any, metrics: Recorder
) -> None:
    # Given an account with logins and payments folded in, and one the store has never seen
    updater = updater_over(store, metrics, now=T0 + 2 * HOUR)
    updater.handle(batch(login("l1", at=T0), login("l2", at=T0 + 50 * MINUTE)))
    queries = [("acct", T0 + HOUR), ("unknown", T0 + HOUR), ("acct", T0 + 55 * MINUTE)]
    online = OnlineFeatures(store)
    # When the handler reads the request's aggregates as columns, in one store read
    columns = online.read_columns([e for e, _ in queries], [t for _, t in queries])
    # Then each payment's values are what `read` gives it, the unknown account all zeros
    rows = online.read(queries)
    assert columns == {name: [row[name] for row in rows] for name in rows[0]}
    assert columns["failed_logins_last_1h"] == [2, 0, 2]
    assert all(column[1] == 0.0 for column in columns.values())
    # And a one-payment request's row read holds the same values, in the aggregates' order
    assert online.names == tuple(columns)
    for i, (entity, at) in enumerate(queries):
        assert online.read_row(entity, at) == tuple(column[i] for column in columns.values())


def test_invalid_messages_come_back_alone_and_their_problems_are_logged(
    store: Any, metrics: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a batch with good events around four bad messages
    updater = updater_over(store, metrics)
    bad_login = login("bad")
    bad_login["outcome"] = "maybe"
    wrong_type = envelope(login("l9"), id="x", time="t")
    wrong_type["detail-type"] = "payment"
    foreign = envelope(login("l8"), id="y", time="t")
    foreign["source"] = "someone.else"
    event = batch(login("l1"), login("l2"))
    event["Records"] += [
        record("{not json", "bad-json"),
        record(envelope(bad_login, id="z", time="t"), "bad-field"),
        record(wrong_type, "bad-type"),
        record(foreign, "bad-source"),
    ]
    # When it is handled
    with caplog.at_level(logging.WARNING, logger="sds.features_updater"):
        response = updater.handle(event)
    # Then exactly the four bad messages come back (and, after maxReceiveCount, the DLQ holds
    # them for whoever sent them); the good ones are folded
    assert failures(response) == ["bad-json", "bad-field", "bad-type", "bad-source"]
    assert burst(store) == 2
    assert metrics.lines[-1]["Invalid"] == 4
    text = caplog.text
    assert "detail.outcome" in text and "'someone.else' is not 'sds.activity'" in text
    assert "detail-type: 'payment' is not the event's type" in text


def test_an_event_dated_in_the_future_comes_back(store: Any, metrics: Recorder) -> None:
    updater = updater_over(store, metrics, now=T0)
    response = updater.handle(
        batch(login("soon", at=T0 + 4 * MINUTE), login("later", at=T0 + 6 * MINUTE))
    )
    assert failures(response) == ["m1"]
    assert metrics.lines[-1]["FromTheFuture"] == 1 and metrics.lines[-1]["Applied"] == 1


def test_an_invalid_event_dated_in_the_future_is_logged_with_every_problem(
    store: Any, metrics: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a message whose login has an invalid outcome and is dated an hour ahead, in an
    # envelope whose detail-type is not the event's type
    updater = updater_over(store, metrics, now=T0)
    both = {**login("both", at=T0 + HOUR), "outcome": "maybe"}
    wrapped = envelope(both, id="eb-0", time="t")
    wrapped["detail-type"] = "payment"
    # When it is handled
    with caplog.at_level(logging.WARNING, logger="sds.features_updater"):
        response = updater.handle({"Records": [record(wrapped, "m0")]})
    # Then it comes back, counted once, as invalid, and its log line names every problem
    assert failures(response) == ["m0"]
    assert metrics.lines[-1]["Invalid"] == 1 and metrics.lines[-1]["FromTheFuture"] == 0
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        "invalid activity event in message m0: detail.occurred_at: is 3600 s ahead of the clock "
        "(more than 300 s): is the producer's clock right?; detail.outcome: 'maybe' is not one "
        "of success, failure; detail-type: 'payment' is not the event's type"
    )


def test_an_event_whose_only_problem_is_its_date_is_counted_from_the_future_and_logged(
    store: Any, metrics: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    updater = updater_over(store, metrics, now=T0)
    with caplog.at_level(logging.WARNING, logger="sds.features_updater"):
        response = updater.handle(batch(login("later", at=T0 + 6 * MINUTE)))
    assert failures(response) == ["m0"]
    assert metrics.lines[-1]["FromTheFuture"] == 1 and metrics.lines[-1]["Invalid"] == 0
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        "activity event dated ahead of the clock in message m0: detail.occurred_at: is 360 s "
        "ahead of the clock (more than 300 s): is the producer's clock right?"
    )


class FailingFor:
    """A store that cannot commit one account (a conflict that would not settle, DynamoDB
    unavailable for that partition)."""

    max_events_per_commit = None

    def __init__(self, inner: SqliteFeatureStore, account: str) -> None:
        self.inner = inner
        self.account = account

    @property
    def uri(self) -> str:
        return self.inner.uri

    def read(self, entities: Sequence[str]) -> Mapping[str, Stored]:
        return self.inner.read(entities)

    def commit(self, entity: str, **kwargs: Any) -> None:
        if entity == self.account:
            raise FeatureStoreError(f"{entity}: DynamoDB said no")
        self.inner.commit(entity, **kwargs)


def test_events_the_store_could_not_take_come_back_with_every_copy(
    store: SqliteFeatureStore, metrics: Recorder
) -> None:
    updater = updater_over(FailingFor(store, "broken"), metrics)
    response = updater.handle(
        batch(login("a1"), login("b1", account="broken"), login("b1", account="broken"))
    )
    assert failures(response) == ["m1", "m2"]
    assert metrics.lines[-1]["Failed"] == 1 and burst(store) == 1


class SlowTable:
    """A store whose every commit takes `commit_ms` of a Lambda invocation's time (a slow
    table), and that invocation's context."""

    max_events_per_commit = None

    def __init__(self, inner: SqliteFeatureStore, *, remaining_ms: int, commit_ms: int) -> None:
        self.inner = inner
        self.remaining_ms = remaining_ms
        self.commit_ms = commit_ms

    @property
    def uri(self) -> str:
        return self.inner.uri

    def read(self, entities: Sequence[str]) -> Mapping[str, Stored]:
        return self.inner.read(entities)

    def commit(self, entity: str, **kwargs: Any) -> None:
        self.remaining_ms -= self.commit_ms
        self.inner.commit(entity, **kwargs)

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_a_batch_on_a_slow_table_answers_before_the_timeout_with_what_it_did_not_fold(
    store: SqliteFeatureStore, metrics: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a table so slow that three accounts' commits leave less than the updater's reserve
    slow = SlowTable(store, remaining_ms=TIME_RESERVE_MS + 10_000, commit_ms=4_000)
    updater = updater_over(slow, metrics)
    # When a batch of six accounts' events (one sent twice) is handled in that invocation
    events = [login(f"l{i}", account=f"a{i}") for i in range(6)] + [login("l4", account="a4")]
    with caplog.at_level(logging.ERROR, logger="sds.features_updater"):
        response = updater.handle(batch(*events), slow)
    # Then it answers with the messages of the accounts it did not reach, every copy, and no
    # other: the first three are folded and acknowledged (a timeout would bring all back)
    assert failures(response) == ["m3", "m4", "m6", "m5"]
    assert [burst(store, f"a{i}") for i in range(6)] == [1, 1, 1, 0, 0, 0]
    assert (metrics.lines[-1]["Applied"], metrics.lines[-1]["Failed"]) == (3, 3)
    assert "event l3 not applied: a3: not attempted, out of time before its commit" in caplog.text


def test_a_replayed_event_is_an_event_like_any_other(store: Any, metrics: Recorder) -> None:
    updater = updater_over(store, metrics)
    replayed = envelope(login("l1"), id="r", time="t", replay_name="refill-2026-01-01")
    assert failures(updater.handle({"Records": [record(replayed, "m0")]})) == []
    assert failures(updater.handle({"Records": [record(replayed, "m1")]})) == []
    assert burst(store) == 1


def test_not_an_sqs_event_is_an_error() -> None:
    updater = FeatureUpdater(OnlineFeatures(_NoStore()), metrics=lambda *_: None)
    with pytest.raises(ValueError, match="not an SQS event"):
        updater.handle({"detail": {}})


class _NoStore:
    max_events_per_commit = None
    uri = "none://"

    def read(self, entities: Sequence[str]) -> Mapping[str, Stored]:
        raise AssertionError("not reached")

    def commit(self, entity: str, **kwargs: Any) -> None:
        raise AssertionError("not reached")


# The bus contract ---------------------------------------------------------------------------


@pytest.mark.parametrize("event", [login("l1"), payment("p1")])
def test_what_a_producer_puts_is_what_the_updater_reads(event: dict[str, Any]) -> None:
    entry = put_events_entry(event, bus="sds-dev-activity")
    assert (entry["Source"], entry["DetailType"], entry["EventBusName"]) == (
        SOURCE,
        event["type"],
        "sds-dev-activity",
    )
    delivered = envelope(json.loads(entry["Detail"]), id="1", time="t")
    assert activity_event(json.dumps(delivered)) == (event, [])


def test_the_feature_rule_carries_the_kinds_an_aggregate_reads() -> None:
    assert FEATURE_DETAIL_TYPES == ("login", "payment")


def test_an_unknown_kind_is_not_put() -> None:
    with pytest.raises(ValueError, match="one of payment, login, label, got 'refund'"):
        put_events_entry({"type": "refund"}, bus="b")
    # A label is an event producers put on the same bus (the label delivery takes it from there)
    assert put_events_entry({"type": "label"}, bus="b")["DetailType"] == "label"


def test_updater_settings_round_trip_and_name_what_is_missing() -> None:
    settings = UpdaterSettings("dynamodb://t", "prod")
    assert UpdaterSettings.from_environ(settings.to_environ()) == settings
    with pytest.raises(UpdaterSettingsError, match="FEATURE_STORE_URI is required"):
        UpdaterSettings.from_environ({"ENVIRONMENT": "prod"})


def test_a_message_nested_too_deeply_or_with_a_lone_surrogate_comes_back_alone(
    store: Any, metrics: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a batch with good events, a body nested 5000 deep, and an account id "\ud800"
    updater = updater_over(store, metrics)
    event = batch(login("l1"), login("l2"))
    surrogate = json.dumps(envelope(login("l3"), id="s", time="t")).replace(
        '"account_id": "acct"', '"account_id": "\\ud800"'
    )
    assert "\\ud800" in surrogate
    event["Records"] += [record("[" * 5000, "nested"), record(surrogate, "surrogate")]
    # When it is handled
    with caplog.at_level(logging.WARNING, logger="sds.features_updater"):
        response = updater.handle(event)
    # Then exactly those two come back, each problem logged, and the good ones are folded
    assert failures(response) == ["nested", "surrogate"]
    assert burst(store) == 2 and metrics.lines[-1]["Invalid"] == 2
    assert "body: is not JSON (nested too deeply)" in caplog.text
    assert "detail.account_id: is not valid Unicode (a lone surrogate)" in caplog.text


def test_one_event_id_with_two_contents_in_a_batch_folds_the_first_and_refuses_the_other(
    store: Any, metrics: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a batch where event l1 comes under two accounts, and an exact copy of l2
    updater = updater_over(store, metrics)
    event = batch(login("l1"), login("l1", account="other"), login("l2"), login("l2"))
    # When it is handled
    with caplog.at_level(logging.WARNING, logger="sds.features_updater"):
        response = updater.handle(event)
    # Then the other content comes back (to the dead-letter queue), named as training names it;
    # the exact copy is a redelivery, counted once
    assert failures(response) == ["m1"]
    assert burst(store) == 2 and burst(store, "other") == 0
    assert metrics.lines[-1]["Invalid"] == 1 and metrics.lines[-1]["Duplicates"] == 1
    assert (
        "event l1 appears twice with different content, under two accounts: "
        "acct (message m0) and other (message m1)"
    ) in caplog.text


def test_an_event_id_reused_across_batches_with_other_content_comes_back_and_is_counted(
    store: Any, metrics: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a batch that folded l1 and l2 into acct
    updater = updater_over(store, metrics)
    assert failures(updater.handle(batch(login("l1"), login("l2")))) == []
    # When a later batch brings l1 again as is, l2 under another account (a producer reused the
    # id), and a new l3
    event = batch(login("l1"), login("l2", account="other"), login("l3"))
    with caplog.at_level(logging.WARNING, logger="sds.features_updater"):
        response = updater.handle(event)
    # Then only l2's message comes back (to end in the dead-letter queue), counted and logged;
    # the rest of the batch is applied, and l2 is folded nowhere
    assert failures(response) == ["m1"]
    line = metrics.lines[-1]
    assert (line["Conflicts"], line["Applied"], line["Duplicates"], line["Failed"]) == (1, 1, 1, 0)
    assert burst(store) == 3 and burst(store, "other") == 0
    assert (
        "event l2 of message m1 not folded: event l2 was already stored from an earlier input "
        "with different content; this copy (account other) is refused"
    ) in caplog.text
    # And each redelivery of it comes back again, until the queue moves it aside
    assert failures(updater.handle(batch(login("l2", account="other")))) == ["m0"]
    assert metrics.lines[-1]["Conflicts"] == 1
