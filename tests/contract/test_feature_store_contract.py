"""What the online feature store guarantees, for every backend (SQLite locally, DynamoDB on AWS):
one-round-trip reads, compare-and-swap commits, and event ids recorded exactly once with the
digest of their content, so the updater over it is idempotent and safe under concurrency, and an
id reused for other content is refused, not taken for a redelivery.

The DynamoDB backend runs against a moto server the session starts (tests/conftest.py), on a
fresh table per test created as the stack creates it, through the kernel's own client. It is the
server that answers one request at a time: moto's threaded one lets two concurrent conditional
transactions both pass, which DynamoDB never does, and the concurrency test below would then
count events twice for moto's sake, not the store's."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sds.kernel import aggregates
from sds.kernel.aggregates import AGGREGATES, DAY, HOUR, LATENESS, MINUTE, SECOND, Aggregate
from sds.kernel.aws.dynamodb import DynamoDBClient
from sds.kernel.featurestore import (
    DuplicateEvents,
    FeatureStore,
    FeatureStoreError,
    Stored,
    VersionConflict,
)
from sds.kernel.featurestore.dynamodb import DynamoDBFeatureStore, table_definition
from sds.kernel.featurestore.sqlite import SqliteFeatureStore
from sds.kernel.online import OnlineFeatures

FEATURE_STORE_BACKENDS = ["sqlite", "dynamodb"]
T0 = 1_767_225_600 * SECOND
BURST = next(a.name for a in AGGREGATES if a.name == "failed_logins_last_1h")
STATE = {BURST: {T0: 2}}


@pytest.fixture(params=FEATURE_STORE_BACKENDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """A factory: each call opens the same store again (as another process or Lambda would)."""
    opened: list[Any] = []
    table = ""
    endpoint = ""
    if request.param == "dynamodb":
        endpoint = request.getfixturevalue("serial_moto_server").endpoint
        table = f"features-{uuid.uuid4().hex[:12]}"
        DynamoDBClient(endpoint_url=endpoint).call("CreateTable", table_definition(table))

    def make() -> FeatureStore:
        store: SqliteFeatureStore | DynamoDBFeatureStore
        if request.param == "sqlite":
            store = SqliteFeatureStore(tmp_path / "features.db")
        elif request.param == "dynamodb":
            client = DynamoDBClient(endpoint_url=endpoint)
            store = DynamoDBFeatureStore(table, client=client, consistent_read=True)
        else:
            raise AssertionError(f"unknown backend {request.param}")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[[], FeatureStore]) -> FeatureStore:
    return make_store()


def login(event_id: str, account: str = "acct") -> dict[str, Any]:
    return {"type": "login", "event_id": event_id, "account_id": account, "outcome": "failure"}


def test_an_unknown_entity_reads_as_absent(store: FeatureStore) -> None:
    assert store.read(["nobody"]) == {}


def test_a_commit_is_read_back_with_the_next_version(store: FeatureStore) -> None:
    store.commit("acct", expected_version=0, state=STATE, events={"e1": T0 + DAY}, expires_at=T0)
    assert store.read(["acct", "nobody"]) == {"acct": Stored(state=STATE, version=1)}


def test_sets_and_large_sums_survive_the_round_trip(store: FeatureStore) -> None:
    state = {"distinct_countries_last_7d": {T0: frozenset({"US", "DE"})}, "x": {T0: 10**15}}
    store.commit("acct", expected_version=0, state=state, events={"e1": T0}, expires_at=T0)
    assert store.read(["acct"])["acct"].state == state


def overwrite_state(store: FeatureStore, entity: str, text: str) -> str:
    """Put `text` where `entity`'s state is kept, behind the store's back (a hand edit, another
    writer); what the store's errors name it by."""
    if isinstance(store, SqliteFeatureStore):
        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE entities SET state = ? WHERE entity = ?", (text, entity))
        return str(store.path)
    if isinstance(store, DynamoDBFeatureStore):
        store.client.call(
            "UpdateItem",
            {
                "TableName": store.table,
                "Key": {"pk": {"S": store.account_key(entity)}},
                "UpdateExpression": "SET #s = :s",
                "ExpressionAttributeNames": {"#s": "state"},
                "ExpressionAttributeValues": {":s": {"S": text}},
            },
        )
        return store.uri
    raise NotImplementedError(f"no way to overwrite a state in {type(store).__name__} yet")


@pytest.mark.parametrize("text", ["not json", "[]", '{"x": {"1": null}}'])
def test_an_unreadable_state_is_a_store_error_naming_the_store_and_the_account(
    store: FeatureStore, text: str
) -> None:
    # Given an account whose stored state was overwritten with something that is not a state
    store.commit("acct", expected_version=0, state=STATE, events={"e1": T0 + DAY}, expires_at=T0)
    where = overwrite_state(store, "acct", text)
    # When it is read, then the store refuses it as its own error (what serving answers 503 to),
    # naming the store and the account, never a bare ValueError
    with pytest.raises(FeatureStoreError) as refused:
        store.read(["acct"])
    assert str(refused.value).startswith(f"{where}: the stored state of 'acct' is not readable (")


def test_a_commit_on_a_stale_version_writes_nothing(store: FeatureStore) -> None:
    store.commit("acct", expected_version=0, state=STATE, events={"e1": T0 + DAY}, expires_at=T0)
    with pytest.raises(VersionConflict):
        store.commit("acct", expected_version=0, state={}, events={"e2": T0}, expires_at=T0)
    # the losing commit's event id was not recorded: it can still be applied
    store.commit("acct", expected_version=1, state={}, events={"e2": T0}, expires_at=T0)
    assert store.read(["acct"])["acct"].version == 2


def test_a_commit_with_a_recorded_event_writes_nothing_and_names_it(store: FeatureStore) -> None:
    store.commit("acct", expected_version=0, state=STATE, events={"e1": T0 + DAY}, expires_at=T0)
    with pytest.raises(DuplicateEvents) as raised:
        store.commit(
            "acct", expected_version=1, state={}, events={"e1": T0, "e9": T0}, expires_at=T0
        )
    assert raised.value.event_ids == {"e1"}
    assert store.read(["acct"])["acct"] == Stored(state=STATE, version=1)


def test_a_recorded_id_with_its_digest_is_a_duplicate_and_with_another_a_conflict(
    store: FeatureStore,
) -> None:
    # Given e1 and e2 recorded with their content digests, and e3 recorded without one (as
    # before digests were kept)
    store.commit(
        "acct",
        expected_version=0,
        state=STATE,
        events={"e1": T0 + DAY, "e2": T0 + DAY},
        expires_at=T0,
        digests={"e1": "d1", "e2": "d2"},
    )
    store.commit("acct", expected_version=1, state=STATE, events={"e3": T0 + DAY}, expires_at=T0)
    # When a commit records them again: e1 with its digest, e2 and e3 with other ones, and e9
    with pytest.raises(DuplicateEvents) as raised:
        store.commit(
            "acct",
            expected_version=2,
            state={},
            events={"e1": T0, "e2": T0, "e3": T0, "e9": T0},
            expires_at=T0,
            digests={"e1": "d1", "e2": "changed", "e3": "any", "e9": "d9"},
        )
    # Then nothing is written: e1 is a copy, e2 a conflict, e3 a copy (nothing can tell)
    assert (raised.value.event_ids, raised.value.conflicts) == ({"e1", "e3"}, {"e2"})
    assert "recorded with different content: e2" in str(raised.value)
    assert store.read(["acct"])["acct"] == Stored(state=STATE, version=2)
    assert store.recorded(["e9", "e3", "e2", "e1"]) == {"e1": "d1", "e2": "d2", "e3": None}


def test_recorded_answers_for_many_ids_at_once(store: FeatureStore) -> None:
    ids = [f"e{i}" for i in range(150)]
    store.commit(
        "acct",
        expected_version=0,
        state=STATE,
        events=dict.fromkeys(ids[:90], T0 + DAY),
        expires_at=T0,
        digests={i: f"d-{i}" for i in ids[:90]},
    )
    store.commit(
        "acct",
        expected_version=1,
        state=STATE,
        events=dict.fromkeys(ids[90:120], T0 + DAY),
        expires_at=T0,
        digests={i: f"d-{i}" for i in ids[90:120]},
    )
    assert store.recorded([*ids, "unknown"]) == {i: f"d-{i}" for i in ids[:120]}


def test_the_updater_never_folds_an_id_reused_with_other_content_and_names_it(
    store: FeatureStore,
) -> None:
    # Given e1 and e2 folded into acct
    online = OnlineFeatures(store)
    online.apply([(T0, login("e1")), (T0 + 1, login("e2"))], now=T0 + 2)
    # When a later batch brings e1 again as is, e2 under another account, and a new e3
    result = online.apply(
        [(T0, login("e1")), (T0 + 1, login("e2", account="other")), (T0 + 3, login("e3"))],
        now=T0 + 4,
    )
    # Then e1 is a duplicate, e2 a conflict (never folded, its account's state untouched), e3
    # applied; the conflict is named
    assert (result.applied, result.duplicates, result.failed) == (1, 1, {})
    assert result.conflicts == {
        "e2": "event e2 was already stored from an earlier input with different content; this "
        "copy (account other) is refused: event ids must not be reused"
    }
    values = online.read([("acct", T0 + MINUTE), ("other", T0 + MINUTE)])
    assert [v[BURST] for v in values] == [3, 0]
    # And the check before a commit finds it too, where it is in its input
    located = [("a.jsonl:1", login("e1")), ("a.jsonl:2", login("e2", account="other"))]
    assert online.recorded_conflicts(located) == [
        (
            "a.jsonl:2",
            "event e2 was already stored from an earlier input with different content; this "
            "copy (account other, a.jsonl:2) is refused: event ids must not be reused",
        )
    ]
    assert online.recorded_conflicts([("x", login("e9"))]) == []


def test_one_read_returns_many_entities(store: FeatureStore) -> None:
    accounts = [f"acct-{i}" for i in range(150)]
    for i, account in enumerate(accounts):
        store.commit(
            account, expected_version=0, state={BURST: {T0: i + 1}}, events={}, expires_at=T0
        )
    found = store.read(accounts)
    assert [found[a].state[BURST][T0] for a in accounts] == list(range(1, 151))


def test_the_updater_counts_a_redelivered_event_once(store: FeatureStore) -> None:
    online = OnlineFeatures(store)
    first = online.apply([(T0, login("e1")), (T0 + 1, login("e2"))], now=T0 + 2)
    again = online.apply([(T0 + 1, login("e2")), (T0, login("e1"))], now=T0 + 3)
    assert (first.applied, again.applied, again.duplicates) == (2, 0, 2)
    # A redelivery is no retry: nothing else wrote the account
    assert (first.retries, again.retries) == (0, 0)
    assert online.read([("acct", T0 + MINUTE)])[0][BURST] == 2


def test_the_updater_folds_again_onto_what_a_concurrent_writer_committed_and_counts_the_retry(
    make_store: Callable[[], FeatureStore],
) -> None:
    # Given an updater whose first commit meets another writer's commit to the same account
    store, other = make_store(), make_store()
    commit = store.commit
    raced: list[str] = []

    def racing_commit(entity: str, **kwargs: Any) -> None:
        if not raced:
            raced.append(entity)
            OnlineFeatures(other).apply([(T0, login("theirs"))], now=T0 + 1)
        commit(entity, **kwargs)

    store.commit = racing_commit  # type: ignore[method-assign]
    # When it applies its own event
    result = OnlineFeatures(store).apply([(T0 + 1, login("ours"))], now=T0 + 2)
    # Then it retried once, onto the other writer's state: both events count, neither twice
    assert raced == ["acct"]
    assert (result.applied, result.retries, result.commits, result.failed) == (1, 1, 1, {})
    assert OnlineFeatures(other).read([("acct", T0 + MINUTE)])[0][BURST] == 2


def test_changed_aggregate_definitions_start_empty_and_fold_the_history_again(
    make_store: Callable[[], FeatureStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an account folded under today's aggregate definitions
    OnlineFeatures(make_store()).apply([(T0, login("e1")), (T0 + 1, login("e2"))], now=T0 + 2)
    # When the definitions change (another fingerprint) and the store is opened again
    monkeypatch.setattr(aggregates, "SEMANTICS_VERSION", aggregates.SEMANTICS_VERSION + 1)
    changed = make_store()
    # Then the new definitions see neither the accounts nor the event ids of the old ones, and a
    # refold of the history counts every event again, once (the runbook's replay, `sds ingest`)
    assert changed.read(["acct"]) == {}
    assert changed.recorded(["e1", "e2"]) == {}
    refold = OnlineFeatures(changed).apply([(T0, login("e1"))], now=T0 + 2)
    assert (refold.applied, refold.duplicates) == (1, 0)
    assert OnlineFeatures(changed).read([("acct", T0 + MINUTE)])[0][BURST] == 1
    # And the old definitions' state is still there for them
    monkeypatch.undo()
    assert OnlineFeatures(make_store()).read([("acct", T0 + MINUTE)])[0][BURST] == 2


def failed_logins(window: int, bucket: int) -> Aggregate:
    """Custom aggregate definitions' one aggregate: failed logins over `window`."""
    return Aggregate(
        "failed_logins",
        "Failed logins on the account",
        source="login",
        where=(("outcome", "failure"),),
        function="count",
        window=window,
        bucket=bucket,
    )


@pytest.mark.parametrize(
    ("definitions", "longest"),
    [
        ((failed_logins(30 * DAY, DAY),), 31 * DAY),
        ((failed_logins(HOUR, 5 * MINUTE),), HOUR + 5 * MINUTE),
        (AGGREGATES, 8 * DAY),
    ],
    ids=["longer", "shorter", "default"],
)
def test_an_event_id_is_kept_as_long_as_the_definitions_longest_window_can_count_it(
    store: FeatureStore, definitions: tuple[Aggregate, ...], longest: int
) -> None:
    # Given aggregate definitions (custom ones with a longer or shorter window, or the default)
    online = OnlineFeatures(store, aggregates=definitions)
    written: dict[str, int] = {}
    commit = store.commit

    def recording_commit(entity: str, **kwargs: Any) -> None:
        written.update(kwargs["events"])
        commit(entity, **kwargs)

    store.commit = recording_commit  # type: ignore[method-assign]
    # When an event is folded
    online.apply([(T0, login("e1"))], now=T0)
    # Then its id is kept until their longest window (and the lateness allowed) can no longer
    # count it
    assert written == {"e1": T0 + longest + LATENESS}


def test_a_redelivery_after_the_default_window_is_not_folded_again_by_a_longer_one(
    tmp_path: Path,
) -> None:
    # Given an event folded under a 30-day aggregate into an SQLite store
    store = SqliteFeatureStore(tmp_path / "features.db")
    online = OnlineFeatures(store, aggregates=(failed_logins(30 * DAY, DAY),))
    online.apply([(T0, login("e1"))], now=T0)
    # When expiry runs 20 days later (past the default definitions' 8 days) and the event is
    # delivered again
    store.expire(T0 + 20 * DAY)
    again = online.apply([(T0, login("e1"))], now=T0 + 20 * DAY)
    # Then it is a duplicate: the 30-day window still counts it once
    assert (again.applied, again.duplicates) == (0, 1)
    assert online.read([("acct", T0 + 20 * DAY)])[0]["failed_logins"] == 1
    store.close()


def test_an_out_of_order_event_lands_in_its_own_bucket(store: FeatureStore) -> None:
    online = OnlineFeatures(store)
    online.apply([(T0 + 50 * MINUTE, login("late-arriving-newer"))], now=T0 + 50 * MINUTE)
    online.apply([(T0, login("early-but-delivered-later"))], now=T0 + 51 * MINUTE)
    # At 01:02 the 1-hour window starts at 00:00 floor(5 min): both count; at 01:06 only one
    assert online.read([("acct", T0 + HOUR + 2 * MINUTE)])[0][BURST] == 2
    assert online.read([("acct", T0 + HOUR + 6 * MINUTE)])[0][BURST] == 1


def test_an_account_with_hundreds_of_events_in_one_batch_gets_every_one_once(
    store: FeatureStore,
) -> None:
    # Given 250 failed logins of one account in one batch (more than a DynamoDB transaction holds)
    online = OnlineFeatures(store)
    events = [(T0 + i, login(f"e{i}")) for i in range(250)]
    # When the updater applies them, and the same batch again
    first = online.apply(events, now=T0 + 300)
    again = online.apply(events, now=T0 + 301)
    # Then each counted once
    assert (first.applied, first.failed, again.applied, again.duplicates) == (250, {}, 0, 250)
    assert online.read([("acct", T0 + MINUTE)])[0][BURST] == 250


def test_concurrent_updaters_lose_no_event_and_count_none_twice(
    make_store: Callable[[], FeatureStore],
) -> None:
    # Given four updaters (each with its own store handle) applying overlapping batches at once
    events = [(T0 + i, login(f"e{i}", account=f"acct-{i % 3}")) for i in range(120)]
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def run(offset: int) -> None:
        try:  # a thread that fails before the barrier breaks it, so the others stop too
            online = OnlineFeatures(make_store())
            barrier.wait(timeout=60)
            for start in range(offset, 120, 10):
                result = online.apply(events[start : start + 30], now=T0 + 200)
                assert not result.failed, result.failed
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(offset,)) for offset in (0, 0, 5, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    # Then every account counts exactly its own 40 events
    values = OnlineFeatures(make_store()).read([(f"acct-{i}", T0 + MINUTE) for i in range(3)])
    assert [v[BURST] for v in values] == [40, 40, 40]


def test_many_processes_opening_a_new_sqlite_store_at_once_all_get_it(tmp_path: Path) -> None:
    # Given eight handles opening the same new file at the same moment, many times over (SQLite
    # refuses a racing journal-mode switch at once, without waiting: one in ten such starts
    # failed with "database is locked" before the store retried its setup)
    for trial in range(30):
        path = tmp_path / f"trial-{trial}" / "features.db"
        start = threading.Barrier(8)

        def open_store(path: Path = path, start: threading.Barrier = start) -> None:
            start.wait(timeout=60)
            SqliteFeatureStore(path).close()

        with ThreadPoolExecutor(8) as pool:
            # Then every one opens it (an exception here names the one that did not)
            list(pool.map(lambda _: open_store(), range(8)))
        # And the file is a working store in write-ahead-logging mode
        store = SqliteFeatureStore(path)
        assert store._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert store.read(["nobody"]) == {}
        store.close()


def test_many_processes_opening_an_old_sqlite_store_at_once_migrate_it_once(
    tmp_path: Path,
) -> None:
    # Given store files written before event ids kept a digest, each holding one id
    for trial in range(10):
        path = tmp_path / f"trial-{trial}" / "features.db"
        path.parent.mkdir()
        old = sqlite3.connect(path)
        old.executescript(
            "CREATE TABLE entities (entity TEXT PRIMARY KEY, state TEXT NOT NULL, "
            "version INTEGER NOT NULL, expires_at INTEGER NOT NULL);"
            "CREATE TABLE events (event_id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);"
            "INSERT INTO events VALUES ('old', 1);"
        )
        old.close()
        start = threading.Barrier(8)

        def open_store(path: Path = path, start: threading.Barrier = start) -> None:
            start.wait(timeout=60)
            SqliteFeatureStore(path).close()

        # When eight handles open each at the same moment
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: open_store(), range(8)))
        # Then each file gained the column once, its old id kept without a digest
        store = SqliteFeatureStore(path)
        assert store.recorded(["old"]) == {"old": None}
        store.commit(
            "a", expected_version=0, state={}, events={"new": 1}, expires_at=1, digests={"new": "d"}
        )
        assert store.recorded(["old", "new"]) == {"old": None, "new": "d"}
        store.close()


def test_many_processes_opening_a_sqlite_store_under_new_definitions_at_once_share_one_part(
    tmp_path: Path,
) -> None:
    # Given a store file with an account folded under one set of definitions
    path = tmp_path / "features.db"
    first = SqliteFeatureStore(path, namespace="0123456789abcdef")
    first.commit("acct", expected_version=0, state=STATE, events={"e1": T0}, expires_at=T0)
    first.close()
    start = threading.Barrier(8)

    def fold_under_new_definitions(index: int) -> None:
        start.wait(timeout=60)
        store = SqliteFeatureStore(path, namespace="fedcba9876543210")
        OnlineFeatures(store).apply([(T0, login(f"n{index}"))], now=T0 + 1)
        store.close()

    # When eight handles open it under other definitions at the same moment, and each folds
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(fold_under_new_definitions, range(8)))
    # Then they all folded into one part of their own, and the first definitions' is untouched
    new = SqliteFeatureStore(path, namespace="fedcba9876543210")
    assert OnlineFeatures(new).read([("acct", T0 + MINUTE)])[0][BURST] == 8
    assert new.recorded(["e1"]) == {}
    old = SqliteFeatureStore(path, namespace="0123456789abcdef")
    assert old.read(["acct"]) == {"acct": Stored(state=STATE, version=1)}
    assert old.recorded([f"n{i}" for i in range(8)]) == {}


def test_a_sqlite_namespace_is_hex_digits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="a namespace is hex digits, got 'x; DROP'"):
        SqliteFeatureStore(tmp_path / "features.db", namespace="x; DROP")
