"""Object stores under the registry: the few operations the registry contract needs.

The registry is written against `ObjectStore`; `FileStore` (local disk, the embedded default)
and `S3Store` (sds.kernel.registry.s3) implement it with the same semantics:

- `put(key, data, if_none_match=True)` creates the object only if absent (S3 `If-None-Match: *`);
- `put(key, data, if_match=etag)` replaces it only if unchanged (S3 `If-Match`);
- both raise `PreconditionFailed` when the condition does not hold, and nothing is written.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sds.kernel.errors import Refused, SdsError
from sds.kernel.files import link_new, sync_folder


class StoreError(SdsError):
    """Base for store failures."""


class NotFound(StoreError):
    http_status = 404

    def __init__(self, key: str) -> None:
        super().__init__(f"{key}: not found")
        self.key = key


class PreconditionFailed(Refused, StoreError):
    """A conditional write lost: the object exists (create) or changed (compare-and-swap)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key}: precondition failed (concurrent write)")
        self.key = key


class ReadOnlyStoreError(StoreError):
    """A write reached a store opened read-only (the serving path never writes)."""

    def __init__(self, uri: str, key: str) -> None:
        super().__init__(f"{uri}: opened read-only; refusing to write {key}")
        self.key = key


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    etag: str


class ObjectStore(Protocol):
    @property
    def uri(self) -> str: ...

    def get(self, key: str) -> StoredObject: ...

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str: ...

    def list(self, prefix: str) -> list[str]: ...


class FileStore:
    """Objects as files under a root directory, with atomic conditional writes.

    Creation uses link(2), which fails if the name exists, so a losing writer never replaces a
    winner's object. Compare-and-swap holds a per-key flock across read, compare and rename.
    Readers never take locks: every write is a rename of a complete file.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise ValueError(f"invalid object key {key!r}")
        return self.root.joinpath(*parts)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(key.encode()).hexdigest()
        with open(locks / name, "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)

    def get(self, key: str) -> StoredObject:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(key) from None
        return StoredObject(data=data, etag=_etag(data))

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        # Imported here: the inference function imports this module at every cold start and
        # reads from S3; tempfile (with shutil and random) is 5 ms of that start.
        import tempfile

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            with self._locked(key):
                if if_none_match:
                    try:
                        link_new(tmp, path, error=StoreError)
                    except FileExistsError:
                        raise PreconditionFailed(key) from None
                else:
                    if if_match is not None:
                        try:
                            current = _etag(path.read_bytes())
                        except FileNotFoundError:
                            raise PreconditionFailed(key) from None
                        if current != if_match:
                            raise PreconditionFailed(key)
                    os.replace(tmp, path)
                sync_folder(path.parent)  # the new name too: an alias moved stays moved
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return _etag(data)

    def list(self, prefix: str) -> list[str]:
        base = self.root
        # Walk only the directory the prefix names, not the whole registry.
        start = base.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else base
        keys: list[str] = []
        if not start.is_dir():
            return keys
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(base)
            for name in filenames:
                if name.startswith("."):
                    continue
                key = (rel / name).as_posix() if rel.parts else name
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)


class ReadOnlyView:
    """Another store's reads, and no writes: what `open_store(uri, read_only=True)` gives for
    backends without a dedicated reader (the file store)."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    @property
    def uri(self) -> str:
        return self._store.uri

    def get(self, key: str) -> StoredObject:
        return self._store.get(key)

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        del data, if_none_match, if_match
        raise ReadOnlyStoreError(self.uri, key)

    def list(self, prefix: str) -> list[str]:
        return self._store.list(prefix)


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
