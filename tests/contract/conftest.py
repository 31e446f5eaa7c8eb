"""The registry contract runs once per storage backend: every test takes the `store` fixture.

Backends are listed in STORE_BACKENDS: the filesystem store (the embedded default) and the
`S3Store` on a fresh bucket of the moto server the session starts (tests/conftest.py), so the
same tests run against a real S3 protocol server. Worker processes reopen the store with
`open_store(store.uri)`, so a backend must be reachable from a child process by its URI (for S3:
AWS_ENDPOINT_URL and credentials in the environment).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sds.kernel.registry import Registry
from sds.kernel.registry.s3 import S3Store
from sds.kernel.registry.store import FileStore, ObjectStore

STORE_BACKENDS = ["file", "s3"]


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "file":
        return FileStore(tmp_path / "registry")
    if request.param == "s3":
        make: Callable[[], ObjectStore] = request.getfixturevalue("s3_store")
        return make()
    raise NotImplementedError(f"no fixture for the {request.param!r} store backend yet")


@pytest.fixture
def registry(store: ObjectStore) -> Registry:
    return Registry(store, "fraud")


@pytest.fixture
def other_store(request: pytest.FixtureRequest, store: ObjectStore, tmp_path: Path) -> ObjectStore:
    """A second, independent store on the same backend (another environment's registry)."""
    if isinstance(store, FileStore):
        return FileStore(tmp_path / "other-registry")
    if isinstance(store, S3Store):
        make: Callable[[], ObjectStore] = request.getfixturevalue("s3_store")
        return make()
    raise NotImplementedError(f"no second store for {type(store).__name__} yet")


@pytest.fixture
def remove_object(store: ObjectStore) -> Callable[[str], None]:
    """Delete one object behind the registry's back (the contract has no delete on purpose)."""
    if isinstance(store, FileStore):
        return lambda key: store.root.joinpath(*key.split("/")).unlink()
    if isinstance(store, S3Store):
        return lambda key: store.client.delete_object(Bucket=store.bucket, Key=store.prefix + key)
    raise NotImplementedError(f"no way to delete from {type(store).__name__} yet")
