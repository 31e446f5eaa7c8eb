"""The feature store on SQLite: the embedded default for local runs (`.sds/features/<env>.db`).

One file, safe for several processes at once (`sds serve` reading while `sds ingest` writes):
write-ahead logging, and each commit in an IMMEDIATE transaction that checks the version and
the event ids before writing anything.

Each recorded event id keeps its content digest (`events.digest`). A file written before digests
were kept gains the column when it is opened (its ids keep none: a later copy of one counts as a
duplicate, whatever its content), and older code can still write to it.

Each set of aggregate definitions has its own tables, as it has its own key prefix in DynamoDB
(`sds.kernel.featurestore.definitions_namespace`): `entities` and `events` belong to the
definitions the file was first opened under (recorded in `meta`; a file from before this was
kept is taken to hold the current ones), and other definitions get `entities_<namespace>` and
`events_<namespace>`, empty until `sds ingest` folds their history. A store opened under changed
definitions therefore never reads states folded under the old ones, nor takes the old event ids
for copies, and the old tables are kept for the code that reads them (older code included).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sds.kernel.aggregates import EntityState, decode_state, encode_state
from sds.kernel.featurestore import (
    DuplicateEvents,
    FeatureStoreError,
    Stored,
    VersionConflict,
    definitions_namespace,
    split_recorded,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    entity TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    digest TEXT
);
CREATE INDEX IF NOT EXISTS events_expiry ON events (expires_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# The tables of definitions other than the file's first (one statement each: they are created
# inside a transaction, which `executescript` would commit first).
_NAMESPACE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {entities} (entity TEXT PRIMARY KEY, state TEXT NOT NULL, "
    "version INTEGER NOT NULL, expires_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {events} (event_id TEXT PRIMARY KEY, "
    "expires_at INTEGER NOT NULL, digest TEXT)",
    "CREATE INDEX IF NOT EXISTS {events}_expiry ON {events} (expires_at)",
)
_DEFINITIONS = "definitions"  # the meta key: the namespace `entities` and `events` belong to
_NAMESPACE = re.compile(r"[0-9a-f]{1,64}")  # part of a table name: hex digits only
_MAX_VARIABLES = 500  # below SQLite's limit on bound parameters per statement
_BUSY_TIMEOUT = 30.0  # seconds a statement waits for another connection's lock


class SqliteFeatureStore:
    max_events_per_commit: int | None = None

    def __init__(self, path: Path, *, namespace: str | None = None) -> None:
        self.path = Path(path)
        self.namespace = namespace or definitions_namespace()
        if not _NAMESPACE.fullmatch(self.namespace):
            raise ValueError(f"a namespace is hex digits, got {self.namespace!r}")
        self._entities, self._events = "entities", "events"
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            self._set_up()
        except (OSError, sqlite3.Error) as exc:
            raise FeatureStoreError(f"{self.path}: cannot open the feature store: {exc}") from exc

    def _set_up(self) -> None:
        """Switch to write-ahead logging and create the tables, however many processes open
        the file at once. SQLite answers a journal-mode switch or a schema write that races
        another connection's with "database is locked" at once, without waiting out the busy
        timeout (it would deadlock otherwise), so the setup is retried until that timeout."""
        deadline = time.monotonic() + _BUSY_TIMEOUT
        pause = 0.001
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                # With write-ahead logging, NORMAL syncs at checkpoints, not at every commit:
                # a power loss may lose the last commits, never corrupt the file (a local
                # store; the AWS one is DynamoDB). An fsync per commit made folding 10x slower.
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                self._add_digest_column()
                self._entities, self._events = self._definitions_tables()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _add_digest_column(self) -> None:
        """Migrate a file from before digests were kept (checked and altered in one write
        transaction, so two processes opening an old file at once add the column once)."""
        if self._has_digest_column():
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if not self._has_digest_column():
                self._db.execute("ALTER TABLE events ADD COLUMN digest TEXT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _has_digest_column(self) -> bool:
        return any(row[1] == "digest" for row in self._db.execute("PRAGMA table_info(events)"))

    def _definitions_tables(self) -> tuple[str, str]:
        """The (entities, events) tables of this store's definitions: the plain ones if the file
        was first opened under them (or before they were recorded: taken as these), else their
        own, created empty (checked and created in one write transaction, as the migration)."""
        own = f"entities_{self.namespace}", f"events_{self.namespace}"
        home = self._home_namespace()
        if home == self.namespace:
            return "entities", "events"
        if home is not None and self._has_table(own[1]):
            return own
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                (_DEFINITIONS, self.namespace),
            )
            home = self._home_namespace()
            if home != self.namespace:
                for statement in _NAMESPACE_SCHEMA:
                    self._db.execute(statement.format(entities=own[0], events=own[1]))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return ("entities", "events") if home == self.namespace else own

    def _home_namespace(self) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (_DEFINITIONS,)).fetchone()
        return None if row is None else str(row[0])

    def _has_table(self, name: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    @property
    def uri(self) -> str:
        return f"sqlite://{self.path.resolve()}"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def read(self, entities: Sequence[str]) -> Mapping[str, Stored]:
        wanted = list(dict.fromkeys(entities))
        found: dict[str, Stored] = {}
        with self._lock:
            try:
                for start in range(0, len(wanted), _MAX_VARIABLES):
                    chunk = wanted[start : start + _MAX_VARIABLES]
                    rows = self._db.execute(
                        f"SELECT entity, state, version FROM {self._entities} WHERE entity IN "
                        f"({','.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                    for entity, state, version in rows:
                        found[entity] = self._stored(entity, state, version)
            except sqlite3.Error as exc:
                raise FeatureStoreError(f"{self.path}: read failed: {exc}") from exc
        return found

    def _stored(self, entity: str, state: Any, version: Any) -> Stored:
        # What `decode_state` raises on text that is not a state is the standard library's
        # error (ValueError, TypeError or AttributeError): the callers handle a store's error.
        try:
            return Stored(decode_state(state), int(version))
        except (TypeError, ValueError, AttributeError) as exc:
            raise FeatureStoreError(
                f"{self.path}: the stored state of {entity!r} is not readable ({exc!r}); "
                "was the row written by something else?"
            ) from exc

    def recorded(self, event_ids: Sequence[str]) -> Mapping[str, str | None]:
        with self._lock:
            try:
                return self._recorded(list(dict.fromkeys(event_ids)))
            except sqlite3.Error as exc:
                raise FeatureStoreError(f"{self.path}: read failed: {exc}") from exc

    def _recorded(self, ids: list[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for start in range(0, len(ids), _MAX_VARIABLES):
            chunk = ids[start : start + _MAX_VARIABLES]
            for event_id, digest in self._db.execute(
                f"SELECT event_id, digest FROM {self._events} WHERE event_id IN "
                f"({','.join('?' * len(chunk))})",
                chunk,
            ):
                found[event_id] = digest
        return found

    def commit(
        self,
        entity: str,
        *,
        expected_version: int,
        state: EntityState,
        events: Mapping[str, int],
        expires_at: int,
        digests: Mapping[str, str] | None = None,
    ) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._commit(entity, expected_version, state, events, expires_at, digests or {})
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise FeatureStoreError(f"{self.path}: commit failed: {exc}") from exc

    def _commit(
        self,
        entity: str,
        expected_version: int,
        state: EntityState,
        events: Mapping[str, int],
        expires_at: int,
        digests: Mapping[str, str],
    ) -> None:
        recorded = self._recorded(list(events))
        if recorded:
            raise DuplicateEvents(*split_recorded(recorded, digests))
        row = self._db.execute(
            f"SELECT version FROM {self._entities} WHERE entity = ?", (entity,)
        ).fetchone()
        if (0 if row is None else int(row[0])) != expected_version:
            raise VersionConflict(f"{entity}: changed since it was read")
        document = encode_state(state)
        self._db.execute(
            f"INSERT INTO {self._entities} (entity, state, version, expires_at) "
            "VALUES (?, ?, ?, ?) "
            "ON CONFLICT (entity) DO UPDATE SET state = excluded.state, "
            "version = excluded.version, expires_at = excluded.expires_at",
            (entity, document, expected_version + 1, expires_at),
        )
        self._db.executemany(
            f"INSERT INTO {self._events} (event_id, expires_at, digest) VALUES (?, ?, ?)",
            [(event_id, expiry, digests.get(event_id)) for event_id, expiry in events.items()],
        )

    def expire(self, now: int) -> int:
        """Forget event ids and entities past their expiry (DynamoDB's TTL does this there)."""
        with self._lock:
            try:
                gone = self._db.execute(
                    f"DELETE FROM {self._events} WHERE expires_at < ?", (now,)
                ).rowcount
                gone += self._db.execute(
                    f"DELETE FROM {self._entities} WHERE expires_at < ?", (now,)
                ).rowcount
            except sqlite3.Error as exc:
                raise FeatureStoreError(f"{self.path}: expiry failed: {exc}") from exc
        return int(gone)
