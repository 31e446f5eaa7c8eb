"""The DynamoDB feature store beyond the shared contract: the item-size edge, the definitions'
namespace, and how DynamoDB's failures reach the caller (moto's server for what DynamoDB does,
the scripted server of aws_fakes.py for what moto will not do on demand: hanging, throttling,
cancelled transactions).

The contract every store passes is tests/contract/test_feature_store_contract.py.
"""

from __future__ import annotations

import json
import time
import uuid
import zlib
from collections.abc import Iterator
from string import ascii_uppercase
from typing import Any

import pytest

from sds.kernel.aggregates import AGGREGATES, DAY, HOUR, LATENESS, SECOND, EntityState
from sds.kernel.aws.client import ClientConfig
from sds.kernel.aws.dynamodb import DynamoDBClient
from sds.kernel.events import content_digest
from sds.kernel.featurestore import (
    DuplicateEvents,
    FeatureStoreError,
    Stored,
    VersionConflict,
    open_feature_store,
)
from sds.kernel.featurestore.dynamodb import (
    ITEM_LIMIT_BYTES,
    DynamoDBFeatureStore,
    client_config,
    table_definition,
)
from sds.kernel.online import FUTURE_TOLERANCE, OnlineFeatures
from tests.integration.aws_fakes import HANG, ScriptedServer, dynamodb_error, json_answer

T0 = 1_767_225_600 * SECOND
KEYS = {
    "AWS_ACCESS_KEY_ID": "AKIDTEST",
    "AWS_SECRET_ACCESS_KEY": "secret-test",
    "AWS_REGION": "eu-west-1",
}


@pytest.fixture
def table(aws: Any) -> str:
    name = f"features-{uuid.uuid4().hex[:12]}"
    aws.client("dynamodb").create_table(**table_definition(name))
    return name


@pytest.fixture
def scripted() -> Iterator[list[ScriptedServer]]:
    servers: list[ScriptedServer] = []
    yield servers
    for server in servers:
        server.close()


def scripted_store(
    servers: list[ScriptedServer], *script: Any, timeout: float = 0.3
) -> tuple[DynamoDBFeatureStore, ScriptedServer]:
    server = ScriptedServer(list(script))
    servers.append(server)
    client = DynamoDBClient(endpoint_url=server.url, config=client_config(timeout), environ=KEYS)
    return DynamoDBFeatureStore("t", client=client, timeout=timeout), server


def largest_state(now: int) -> EntityState:
    """Every bucket the updater can hold at `now` filled with the largest values: buckets from
    where pruning stops (LATENESS behind the window's start) to the latest an event may be
    dated (FUTURE_TOLERANCE ahead), 20-digit counts and sums, every country code in each day."""
    countries = frozenset(a + b for a in ascii_uppercase for b in ascii_uppercase)
    state: EntityState = {}
    for aggregate in AGGREGATES:
        first = aggregate.window_start(now - LATENESS)
        last = aggregate.bucket_of(now + FUTURE_TOLERANCE)
        starts = range(first, last + 1, aggregate.bucket)
        value: int | frozenset[str] = (
            countries if aggregate.function == "count_distinct" else 10**19 + 12345
        )
        state[aggregate.name] = dict.fromkeys(starts, value)
    return state


def test_the_largest_state_the_declarations_allow_fits_one_item_with_room_to_spare(
    table: str,
) -> None:
    # Given an account with every bucket of every declared window full (676 countries a day)
    state = largest_state(T0 + 13 * HOUR + 7)
    store = DynamoDBFeatureStore(table)
    # When it is committed and read back
    store.commit("acct", expected_version=0, state=state, events={"e1": T0}, expires_at=T0)
    # Then it round-trips whole, and is under a tenth of DynamoDB's item limit
    assert store.read(["acct"]) == {"acct": Stored(state=state, version=1)}
    item = store.client.get_item(table, {"pk": {"S": store.account_key("acct")}})
    assert item is not None
    assert len(item["state"]["S"]) < ITEM_LIMIT_BYTES / 10


def test_a_state_over_the_item_limit_is_refused_before_anything_is_written(table: str) -> None:
    # Given an account with a small state, and a state of undeclared size that cannot fit
    store = DynamoDBFeatureStore(table)
    small = {"failed_logins_last_1h": {T0: 1}}
    store.commit("acct", expected_version=0, state=small, events={"e1": T0}, expires_at=T0)
    huge = {"x": {T0 + i * HOUR: frozenset(f"c{i}-{j:04d}" for j in range(6000)) for i in range(9)}}
    # When it is committed
    with pytest.raises(FeatureStoreError, match=r"'acct'.* over DynamoDB's 409600-byte item limit"):
        store.commit("acct", expected_version=1, state=huge, events={"e2": T0}, expires_at=T0)
    # Then nothing changed: the old state is there, and the event can still be applied
    assert store.read(["acct"])["acct"] == Stored(state=small, version=1)
    store.commit("acct", expected_version=1, state=small, events={"e2": T0}, expires_at=T0)


def test_other_definitions_see_neither_the_accounts_nor_the_event_ids(table: str) -> None:
    # Given an account folded under today's aggregate definitions
    today = DynamoDBFeatureStore(table)
    today.commit("acct", expected_version=0, state={"a": {T0: 3}}, events={"e1": T0}, expires_at=T0)
    # When the definitions change (another fingerprint) and the same table is used
    changed = DynamoDBFeatureStore(table, namespace="0123456789abcdef")
    # Then the new definitions start empty, and a replayed event is folded again, once
    assert changed.read(["acct"]) == {}
    changed.commit(
        "acct", expected_version=0, state={"a": {T0: 1}}, events={"e1": T0}, expires_at=T0
    )
    with pytest.raises(DuplicateEvents):
        changed.commit(
            "acct", expected_version=1, state={"a": {T0: 2}}, events={"e1": T0}, expires_at=T0
        )
    assert today.read(["acct"])["acct"].state == {"a": {T0: 3}}


def test_items_expire_with_their_content(table: str, aws: Any) -> None:
    # Given an account committed with an expiry, and an event id recorded until a later time
    store = DynamoDBFeatureStore(table)
    store.commit(
        "acct",
        expected_version=0,
        state={"a": {T0: 1}},
        events={"e1": T0 + 8 * DAY + 500_001},
        expires_at=T0 + 25 * HOUR,
    )
    # Then both items carry DynamoDB's TTL attribute in epoch seconds (rounded up)
    items = {
        item["pk"]["S"]: item for item in aws.client("dynamodb").scan(TableName=table)["Items"]
    }
    account = items[store.account_key("acct")]
    event = items[store.event_key("e1")]
    assert account["ttl"] == {"N": str((T0 + 25 * HOUR) // SECOND)}
    assert event["ttl"] == {"N": str((T0 + 8 * DAY) // SECOND + 1)}


def test_a_missing_table_says_so(aws: Any) -> None:
    del aws
    store = open_feature_store("dynamodb://no-such-table")
    with pytest.raises(
        FeatureStoreError, match=r"dynamodb://no-such-table: read failed: the table"
    ):
        store.read(["acct"])


@pytest.mark.parametrize("uri", ["dynamodb://", "dynamodb://t/extra", "dynamodb://t?x=1"])
def test_a_malformed_uri_names_the_form(uri: str) -> None:
    with pytest.raises(FeatureStoreError, match=r"dynamodb://<table name>"):
        open_feature_store(uri)


def test_a_table_that_never_answers_fails_the_read_in_bounded_time(
    scripted: list[ScriptedServer],
) -> None:
    # Given a DynamoDB endpoint that accepts the connection and never answers
    store, server = scripted_store(scripted, HANG, timeout=0.2)
    started = time.monotonic()
    # When an account is read with a 0.2 s timeout
    with pytest.raises(FeatureStoreError, match=r"DynamoDB did not answer") as raised:
        store.read(["acct"])
    # Then it fails (two attempts, each timed out), naming the table, long before any hang
    assert "dynamodb://t" in str(raised.value)
    assert len(server.received) == 2
    assert time.monotonic() - started < 5


def batch_answer(items: list[str], unprocessed: list[str]) -> Any:
    return json_answer(
        {
            "Responses": {
                "t": [
                    {"pk": {"S": key}, "state": {"S": '{"a":{"1":2}}'}, "version": {"N": "4"}}
                    for key in items
                ]
            },
            "UnprocessedKeys": (
                {"t": {"Keys": [{"pk": {"S": key}} for key in unprocessed]}} if unprocessed else {}
            ),
        }
    )


def test_keys_held_back_are_fetched_again(scripted: list[ScriptedServer]) -> None:
    store = DynamoDBFeatureStore("t")  # only for its key names
    a, b = store.account_key("a"), store.account_key("b")
    store, server = scripted_store(scripted, batch_answer([a], [b]), batch_answer([b], []))
    found = store.read(["a", "b"])
    assert found == {"a": Stored({"a": {1: 2}}, 4), "b": Stored({"a": {1: 2}}, 4)}
    assert len(server.received) == 2


def test_keys_held_back_until_the_deadline_fail_the_read(scripted: list[ScriptedServer]) -> None:
    store = DynamoDBFeatureStore("t")
    b = store.account_key("b")
    store, server = scripted_store(scripted, batch_answer([], [b]), timeout=0.1)
    with pytest.raises(FeatureStoreError, match=r"held back 1 of 1 accounts .* throttling reads"):
        store.read(["b"])
    assert len(server.received) > 2


def cancelled(*reasons: str, items: dict[int, dict[str, Any]] | None = None) -> Any:
    """A cancelled transaction's answer; `items`: the old item returned for a reason (ALL_OLD)."""
    answer = dynamodb_error("TransactionCanceledException", "Transaction cancelled")
    document = json.loads(answer.body)
    document["CancellationReasons"] = [
        {"Code": r, **({"Item": (items or {})[i]} if i in (items or {}) else {})}
        for i, r in enumerate(reasons)
    ]
    answer.body = json.dumps(document).encode()
    answer.headers["x-amz-crc32"] = str(zlib.crc32(answer.body) & 0xFFFFFFFF)
    return answer


RECORDED_E1 = {1: {"pk": {"S": "ns#event#e1"}, "ttl": {"N": "1"}}}


@pytest.mark.parametrize(
    ("reasons", "raised", "message"),
    [
        (("None", "ConditionalCheckFailed", "None"), DuplicateEvents, "already recorded: e1"),
        (("ConditionalCheckFailed", "None", "None"), VersionConflict, "changed since it was read"),
        (("TransactionConflict", "None", "None"), VersionConflict, "another commit"),
        (("ThrottlingError", "None", "None"), FeatureStoreError, r"cancelled by DynamoDB \(Thr"),
    ],
)
def test_a_cancelled_transaction_says_why(
    scripted: list[ScriptedServer],
    reasons: tuple[str, ...],
    raised: type[Exception],
    message: str,
) -> None:
    store, _ = scripted_store(scripted, cancelled(*reasons, items=RECORDED_E1))
    with pytest.raises(raised, match=message) as found:
        store.commit(
            "acct", expected_version=2, state={}, events={"e1": T0, "e2": T0}, expires_at=T0
        )
    assert type(found.value) is raised


def test_a_collision_is_told_apart_by_the_digest_the_cancellation_returns(
    scripted: list[ScriptedServer],
) -> None:
    # Given a table where e1 is recorded with another content's digest, e2 with this one's
    recorded = {
        1: {"pk": {"S": "ns#event#e1"}, "ttl": {"N": "1"}, "digest": {"S": "other"}},
        2: {"pk": {"S": "ns#event#e2"}, "ttl": {"N": "1"}, "digest": {"S": "d2"}},
    }
    store, server = scripted_store(
        scripted, cancelled("None", "ConditionalCheckFailed", "ConditionalCheckFailed", items=recorded)
    )  # fmt: skip
    # When a commit records both
    with pytest.raises(DuplicateEvents) as raised:
        store.commit(
            "acct",
            expected_version=2,
            state={},
            events={"e1": T0, "e2": T0},
            expires_at=T0,
            digests={"e1": "d1", "e2": "d2"},
        )
    # Then e1 is a conflict, e2 a duplicate, from the one request (each event item asked for
    # the item it collided with)
    assert (raised.value.conflicts, raised.value.event_ids) == ({"e1"}, {"e2"})
    assert [r.headers["x-amz-target"] for r in server.received] == [
        "DynamoDB_20120810.TransactWriteItems"
    ]
    sent = json.loads(server.received[0].body)["TransactItems"]
    assert [item["Put"].get("ReturnValuesOnConditionCheckFailure") for item in sent] == [
        None,
        "ALL_OLD",
        "ALL_OLD",
    ]
    assert sent[1]["Put"]["Item"]["digest"] == {"S": "d1"}


def test_a_cancellation_without_the_old_items_reads_their_digests_consistently(
    scripted: list[ScriptedServer],
) -> None:
    # Given an endpoint that cancels on e1 without returning the item it collided with
    found = {"Responses": {"t": [{"pk": {"S": "ns#event#e1"}, "digest": {"S": "other"}}]}}
    store, server = scripted_store(
        scripted, cancelled("None", "ConditionalCheckFailed"), json_answer(found)
    )
    store.namespace = "ns"
    # When a commit records e1 with its digest
    with pytest.raises(DuplicateEvents) as raised:
        store.commit(
            "acct", expected_version=2, state={}, events={"e1": T0}, expires_at=T0, digests={"e1": "d1"}
        )  # fmt: skip
    # Then the store read the recorded digest (consistently) and found a conflict
    assert raised.value.conflicts == {"e1"} and not raised.value.event_ids
    read = json.loads(server.received[1].body)["RequestItems"]["t"]
    assert read["ConsistentRead"] is True and read["Keys"] == [{"pk": {"S": "ns#event#e1"}}]


def test_event_items_carry_the_digest_and_writes_stay_one_transaction_per_commit(
    table: str, aws: Any
) -> None:
    # Given a store on moto's DynamoDB
    store = DynamoDBFeatureStore(table, consistent_read=True)
    online = OnlineFeatures(store)
    first = {"type": "login", "event_id": "e1", "account_id": "acct", "outcome": "failure"}
    # When e1 is folded, then sent again as is and with other content
    online.apply([(T0, first)], now=T0 + 1)
    again = online.apply([(T0, dict(first))], now=T0 + 2)
    changed = online.apply([(T0, {**first, "account_id": "other"})], now=T0 + 3)
    # Then its item holds its content digest; the copy is a duplicate, the change a conflict
    item = aws.client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": store.event_key("e1")}}
    )
    assert item["Item"]["digest"]["S"] == content_digest(first)
    assert (again.duplicates, again.conflicts) == (1, {})
    assert list(changed.conflicts) == ["e1"] and changed.applied == 0
    assert (
        "event e1 was already stored from an earlier input with different content"
        in (changed.conflicts["e1"])
    )
    burst = [v["failed_logins_last_1h"] for v in online.read([("acct", T0 + 5), ("other", T0 + 5)])]
    assert burst == [1, 0]


def test_an_event_item_written_before_digests_counts_as_a_duplicate(table: str, aws: Any) -> None:
    # Given e1 recorded by a version of the store that kept no digest
    store = DynamoDBFeatureStore(table, consistent_read=True)
    aws.client("dynamodb").put_item(
        TableName=table, Item={"pk": {"S": store.event_key("e1")}, "ttl": {"N": "9999999999"}}
    )
    # When e1 arrives, whatever its content
    login = {"type": "login", "event_id": "e1", "account_id": "acct", "outcome": "failure"}
    result = OnlineFeatures(store).apply([(T0, login)], now=T0 + 1)
    # Then nothing can tell: it is a duplicate, as before
    assert (result.duplicates, result.conflicts, result.applied) == (1, {}, 0)
    assert store.recorded(["e1", "e2"]) == {"e1": None}


def test_a_commit_holds_at_most_99_events_and_the_updater_splits_an_accounts_batch(
    table: str, aws: Any
) -> None:
    # Given 250 failed logins of one account arriving in one batch
    store = DynamoDBFeatureStore(table, consistent_read=True)
    events = [
        (
            T0 + i,
            {"type": "login", "event_id": f"e{i}", "account_id": "acct", "outcome": "failure"},
        )
        for i in range(250)
    ]
    with pytest.raises(ValueError, match="at most 99 events"):
        store.commit("acct", expected_version=0, state={}, events=dict.fromkeys(map(str, range(100)), T0), expires_at=T0)  # fmt: skip
    # When the updater applies them
    result = OnlineFeatures(store).apply(events, now=T0 + 300)
    # Then they are committed in three transactions, every one counted once
    assert (result.applied, result.commits, result.failed) == (250, 3, {})
    assert OnlineFeatures(store).read([("acct", T0 + HOUR)])[0]["failed_logins_last_1h"] == 250
    scanned = aws.client("dynamodb").scan(TableName=table, Select="COUNT")["Count"]
    assert scanned == 251  # the account and one item per event id


def test_client_config_bounds_each_attempt_by_the_callers_timeout() -> None:
    assert client_config(0.5) == ClientConfig(
        connect_timeout=0.5, read_timeout=0.5, max_attempts=2, base_delay=0.01, max_delay=0.05
    )
