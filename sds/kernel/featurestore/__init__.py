"""The online feature store: each account's aggregate state, and which events it holds.

A store keeps, per entity, the bucketed state `sds.kernel.aggregates.fold` produces, with a
version for compare-and-swap, and the ids of the events folded in, each with the digest of its
content (`sds.kernel.events.content_digest`), until they are too old to matter: a redelivered
event is never counted twice, and an id reused for other content is told apart from a
redelivery. The logic (folding, evaluating, retries) lives in `sds.kernel.online`; a store only
persists, with these guarantees:

- `read(entities)` returns every requested entity's state in one round trip;
- `commit(...)` writes an entity's new state only if its version is still the one read, and only
  if none of the events is already recorded; otherwise nothing is written and it raises
  `VersionConflict` or `DuplicateEvents` (naming the copies, and apart the conflicts: ids
  recorded with another digest);
- `recorded(event_ids)` says which ids are recorded, with their digests (a check before any
  commit: `sds ingest` and `POST /events` refuse an input that conflicts with the store).

Ids recorded before digests were kept have none (None): a later copy of one is a duplicate,
whatever its content, since nothing can tell.

Both keep each set of aggregate definitions apart (`definitions_namespace`): after the
definitions change, a store opened again holds no state and no event id for them, so a replay of
the archive or `sds ingest` of the history folds every event again; the other definitions' part
is kept as it was.

`open_feature_store("sqlite:///path/to/file.db" | "dynamodb://table")` picks the backend
(`sds.kernel.featurestore.sqlite`, `sds.kernel.featurestore.dynamodb`); both pass one contract
suite (tests/contract/test_feature_store_contract.py). A store may bound how many events one
commit records (`max_events_per_commit`: DynamoDB's transactions hold 100 items); the updater
splits an account's batch to fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from sds.kernel.aggregates import EntityState, fingerprint
from sds.kernel.errors import SdsError

NAMESPACE_DIGITS = 16


def definitions_namespace() -> str:
    """The current aggregate definitions' part of a store: the first `NAMESPACE_DIGITS` hex
    digits of their fingerprint (`sds.kernel.aggregates.fingerprint`). Definitions that change
    read and write another part, which starts empty, instead of folding new meanings into old
    buckets or finding every refolded event already recorded."""
    return fingerprint()[:NAMESPACE_DIGITS]


class FeatureStoreError(SdsError):
    """The store failed or is unreachable; the message says which and why."""

    http_status = 503


class VersionConflict(FeatureStoreError):
    """The entity changed since it was read: read again and refold."""


class DuplicateEvents(FeatureStoreError):
    """Some of the events are already recorded, and nothing was written: drop them and refold
    the rest. `event_ids` are copies (the same digest, or an id recorded without one);
    `conflicts` are ids recorded with another digest (never to be applied: a reused id)."""

    def __init__(self, event_ids: Iterable[str], conflicts: Iterable[str] = ()) -> None:
        self.event_ids = frozenset(event_ids)
        self.conflicts = frozenset(conflicts)
        parts = []
        if self.event_ids:
            parts.append(f"already recorded: {', '.join(sorted(self.event_ids)[:5])}")
        if self.conflicts:
            shown = ", ".join(sorted(self.conflicts)[:5])
            parts.append(f"recorded with different content: {shown}")
        super().__init__("; ".join(parts))


def split_recorded(
    recorded: Mapping[str, str | None], digests: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """The recorded ids among `digests`' as (duplicates, conflicts): a conflict is recorded with
    a digest other than the one given; an id recorded without a digest (before they were kept)
    or given without one is a duplicate, since nothing can tell."""
    duplicates: list[str] = []
    conflicts: list[str] = []
    for event_id, stored in recorded.items():
        given = digests.get(event_id)
        if stored is not None and given is not None and stored != given:
            conflicts.append(event_id)
        else:
            duplicates.append(event_id)
    return duplicates, conflicts


@dataclass(frozen=True)
class Stored:
    """An entity's state as stored, with the version a commit must match (0: no item yet)."""

    state: EntityState
    version: int


EMPTY = Stored(state={}, version=0)


class FeatureStore(Protocol):
    # The most events one commit may record (None: no limit).
    max_events_per_commit: int | None

    @property
    def uri(self) -> str: ...

    def read(self, entities: Sequence[str]) -> Mapping[str, Stored]:
        """Every requested entity that has state (absent ones are left out), in one round trip."""
        ...

    def recorded(self, event_ids: Sequence[str]) -> Mapping[str, str | None]:
        """Each of `event_ids` already recorded, with its content digest (None: recorded
        before digests were kept); read consistently."""
        ...

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
        """Store `state` and record `events` (event id -> time after which the id may be
        forgotten, microseconds) with their content `digests` (event id -> digest; an id
        without one is recorded without), if the version still matches and no id is recorded
        yet. `expires_at`: when the entity's state can no longer affect any value
        (microseconds)."""
        ...


def open_feature_store(
    uri: str, *, timeout: float | None = None, consistent_read: bool = False
) -> FeatureStore:
    """The store at `uri`. DynamoDB only: `timeout` (seconds) bounds each network attempt, so a
    read on the request path fails in bounded time instead of hanging; `consistent_read` reads
    strongly consistently (the updater's read before its compare-and-swap)."""
    parsed = urlparse(uri)
    if parsed.scheme == "dynamodb":
        if not parsed.netloc or parsed.path not in ("", "/") or parsed.query:
            raise FeatureStoreError(f"{uri}: DynamoDB URIs look like dynamodb://<table name>")
        from sds.kernel.featurestore.dynamodb import DynamoDBFeatureStore

        return DynamoDBFeatureStore(parsed.netloc, timeout=timeout, consistent_read=consistent_read)
    if parsed.scheme == "sqlite":
        if parsed.netloc not in ("", "localhost") or not parsed.path:
            raise FeatureStoreError(f"{uri}: sqlite URIs look like sqlite:///absolute/path.db")
        from sds.kernel.featurestore.sqlite import SqliteFeatureStore

        return SqliteFeatureStore(Path(unquote(parsed.path)))
    raise FeatureStoreError(
        f"unsupported feature store URI {uri!r}: use sqlite:///path.db or dynamodb://table"
    )
