"""The registry contract runs once per storage backend: every test takes the `store` fixture.

Backends are listed in STORE_BACKENDS. Today that is the filesystem store (the embedded default).
The S3 backend joins by adding "s3" to STORE_BACKENDS and a branch in `store` that returns an
`S3Store` on a fresh bucket of a moto server started once per session (the S3 backend issue);
nothing else in tests/contract changes. Worker processes reopen the store with
`open_store(store.uri)`, so a backend must be reachable from a child process by its URI (for S3:
AWS_ENDPOINT_URL and credentials in the environment).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sds.registry import Registry
from sds.registry.store import FileStore, ObjectStore

STORE_BACKENDS = [
    "file",
    # "s3",  <- the S3Store against a moto server plugs in here
]


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "file":
        return FileStore(tmp_path / "registry")
    raise NotImplementedError(f"no fixture for the {request.param!r} store backend yet")


@pytest.fixture
def registry(store: ObjectStore) -> Registry:
    return Registry(store, "fraud")


@pytest.fixture
def other_store(request: pytest.FixtureRequest, store: ObjectStore, tmp_path: Path) -> ObjectStore:
    """A second, independent store on the same backend (another environment's registry)."""
    if isinstance(store, FileStore):
        return FileStore(tmp_path / "other-registry")
    raise NotImplementedError(f"no second store for {type(store).__name__} yet")
