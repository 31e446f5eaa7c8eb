"""Rollback leases as a dead or live holder leaves them, and a store that counts a waiter's reads."""

from __future__ import annotations

import json
import time
from typing import Any

from sds.kernel.registry.store import NotFound, ObjectStore

HOLDER = "arn:aws:sts::123456789012:assumed-role/OnCall/alice"
TOKEN = "0123456789abcdef0123456789abcdef"
LEASE_ID = TOKEN[:12]


class CountingStore:
    """The store, counting the reads of the lease (every other call goes through)."""

    def __init__(self, store: ObjectStore, key: str) -> None:
        self.store = store
        self.key = key
        self.gets = 0

    def get(self, key: str) -> Any:
        if key == self.key:
            self.gets += 1
        return self.store.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def held_by(store: ObjectStore, key: str, holder: str, *, expires_in: float) -> None:
    """Write the lease document of `holder`, taken at 12:00:03 UTC, expiring `expires_in` seconds
    from now (a dead holder: nobody renews or releases it)."""
    document = {
        "holder": holder,
        "token": TOKEN,
        "since": "2026-11-30T12:00:03.000000Z",
        "renewed": "2026-11-30T12:00:03.000000Z",
        "expires": time.time() + expires_in,
    }
    try:
        current = store.get(key)
        store.put(key, json.dumps(document).encode(), if_match=current.etag)
    except NotFound:
        store.put(key, json.dumps(document).encode(), if_none_match=True)


def lease_document(store: ObjectStore, key: str) -> dict[str, Any]:
    return dict(json.loads(store.get(key).data))


def expires_when_read(monkeypatch: Any, times: int) -> None:
    """Make the lease in every `S3Store` expire just before its `times`-th read: a dead holder's
    lease running out while a waiter polls it, without the test depending on how fast it runs."""
    from sds.kernel.registry.s3 import S3Store

    real_get = S3Store.get
    reads: list[str] = []

    def get(self: S3Store, key: str) -> Any:
        if key.endswith(".lease"):
            reads.append(key)
            if len(reads) == times:
                current = real_get(self, key)
                document = {**json.loads(current.data), "expires": time.time() - 1}
                self.put(key, json.dumps(document).encode(), if_match=current.etag)
        return real_get(self, key)

    monkeypatch.setattr(S3Store, "get", get)
