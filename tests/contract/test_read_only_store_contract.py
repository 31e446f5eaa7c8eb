"""The read half of the registry contract, through the read-only stores the serving path uses.

Every test of the object-store and registry contracts runs again here, on a store whose reads
(`get`, `list`) go through the read-only store under test and whose writes go through the
writable store of the same backend: `S3ReadStore` (the kernel's own S3 client, no SDK) reading
what `S3Store` (boto3) wrote, and the read-only view of the file store. So whatever the registry
reads (manifests, artifacts verified by sha256, aliases, the audit trail, version listings,
etags for compare-and-swap) must read the same through the serving path's store. The last
tests check that the read-only stores refuse writes and store nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sds.kernel.registry import Registry, open_store
from sds.kernel.registry.s3 import S3Store
from sds.kernel.registry.s3_read import S3ReadStore
from sds.kernel.registry.store import (
    FileStore,
    NotFound,
    ObjectStore,
    ReadOnlyStoreError,
    ReadOnlyView,
    StoredObject,
)
from tests.contract.test_object_store_contract import *  # noqa: F403  (the contract, re-run on these stores)
from tests.contract.test_registry_contract import *  # noqa: F403

READ_ONLY_BACKENDS = ["s3-read", "file-read"]


class ReadThrough:
    """Reads through `reader`, writes through `writer`: the same objects, two clients."""

    def __init__(self, reader: ObjectStore, writer: ObjectStore) -> None:
        self.reader = reader
        self.writer = writer

    @property
    def uri(self) -> str:
        return self.writer.uri

    def get(self, key: str) -> StoredObject:
        return self.reader.get(key)

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        return self.writer.put(key, data, if_none_match=if_none_match, if_match=if_match)

    def list(self, prefix: str) -> list[str]:
        return self.reader.list(prefix)


def _make(kind: str, request: pytest.FixtureRequest, folder: Path) -> ReadThrough:
    if kind == "s3-read":
        make_s3: Callable[..., S3Store] = request.getfixturevalue("s3_store")
        writer = make_s3()
        return ReadThrough(S3ReadStore(writer.bucket), writer)
    files = FileStore(folder)
    return ReadThrough(ReadOnlyView(files), files)


@pytest.fixture(params=READ_ONLY_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    return _make(request.param, request, tmp_path / "registry")


@pytest.fixture
def other_store(request: pytest.FixtureRequest, store: Any, tmp_path: Path) -> ObjectStore:
    kind = "s3-read" if isinstance(store.reader, S3ReadStore) else "file-read"
    return _make(kind, request, tmp_path / "other-registry")


@pytest.fixture
def remove_object(store: Any) -> Callable[[str], None]:
    writer = store.writer
    if isinstance(writer, S3Store):
        return lambda key: writer.client.delete_object(Bucket=writer.bucket, Key=key)
    return lambda key: writer.root.joinpath(*key.split("/")).unlink()


def test_the_read_only_stores_refuse_every_write_and_store_nothing(store: Any) -> None:
    # Given a read-only store over a registry
    reader = store.reader

    # When anything tries to write through it, plainly or conditionally
    for kwargs in ({}, {"if_none_match": True}, {"if_match": "0" * 32}):
        with pytest.raises(ReadOnlyStoreError, match="opened read-only; refusing to write k"):
            reader.put("k", b"v", **kwargs)

    # Then nothing was written
    with pytest.raises(NotFound):
        store.get("k")


def test_open_registry_read_only_reads_s3_without_the_sdk_store(store: Any, tmp_path: Path) -> None:
    # Given a version registered by the writer
    Registry(store.writer, "fraud").register(
        {"model.onnx": b"onnx"}, {"metrics": {}}, actor="alice@laptop"
    )

    # When the registry is opened read-only by URI (what the Lambda does)
    opened = open_store(store.uri, read_only=True)
    registry = Registry(opened, "fraud")

    # Then it is the read-only store of that backend, and it reads the version
    assert isinstance(opened, S3ReadStore if store.uri.startswith("s3://") else ReadOnlyView)
    assert registry.read_artifact(1) == b"onnx"
    with pytest.raises(ReadOnlyStoreError):
        registry.register({"model.onnx": b"x"}, {}, actor="mallory@laptop")
