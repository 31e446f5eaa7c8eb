"""The feature store on SQLite: the embedded default for local runs (`.sds/features/<env>.db`).

One file, safe for several processes at once (`sds serve` reading while `sds ingest` writes):
write-ahead logging, and each commit in an IMMEDIATE transaction that checks the version and
the event ids before writing anything.

Each recorded event id keeps its content digest (`events.digest`). A file written before digests
were kept gains the column when it is opened (its ids keep none: a later copy of one counts as a
duplicate, whatever its content), and older code can still write to it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from sds.kernel.aggregates import EntityState, decode_state, encode_state
from sds.kernel.featurestore import (
    DuplicateEvents,
    FeatureStoreError,
    Stored,
    VersionConflict,
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
"""
_MAX_VARIABLES = 500  # below SQLite's limit on bound parameters per statement
_BUSY_TIMEOUT = 30.0  # seconds a statement waits for another connection's lock


class SqliteFeatureStore:
    max_events_per_commit: int | None = None

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
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
                        "SELECT entity, state, version FROM entities WHERE entity IN "
                        f"({','.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                    for entity, state, version in rows:
                        found[entity] = Stored(decode_state(state), int(version))
            except sqlite3.Error as exc:
                raise FeatureStoreError(f"{self.path}: read failed: {exc}") from exc
        return found

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
                "SELECT event_id, digest FROM events WHERE event_id IN "
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
            "SELECT version FROM entities WHERE entity = ?", (entity,)
        ).fetchone()
        if (0 if row is None else int(row[0])) != expected_version:
            raise VersionConflict(f"{entity}: changed since it was read")
        document = encode_state(state)
        self._db.execute(
            "INSERT INTO entities (entity, state, version, expires_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (entity) DO UPDATE SET state = excluded.state, "
            "version = excluded.version, expires_at = excluded.expires_at",
            (entity, document, expected_version + 1, expires_at),
        )
        self._db.executemany(
            "INSERT INTO events (event_id, expires_at, digest) VALUES (?, ?, ?)",
            [(event_id, expiry, digests.get(event_id)) for event_id, expiry in events.items()],
        )

    def expire(self, now: int) -> int:
        """Forget event ids and entities past their expiry (DynamoDB's TTL does this there)."""
        with self._lock:
            try:
                gone = self._db.execute("DELETE FROM events WHERE expires_at < ?", (now,)).rowcount
                gone += self._db.execute(
                    "DELETE FROM entities WHERE expires_at < ?", (now,)
                ).rowcount
            except sqlite3.Error as exc:
                raise FeatureStoreError(f"{self.path}: expiry failed: {exc}") from exc
        return int(gone)
