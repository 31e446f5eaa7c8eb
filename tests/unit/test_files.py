"""A create-only write on a filesystem without hard links says so, and leaves nothing behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from sds.kernel.batch.storage import AlreadyExists, LocalStorage, StorageError
from sds.kernel.files import link_new
from sds.kernel.registry.store import FileStore, PreconditionFailed, StoreError


def _no_links(code: int) -> Any:
    def link(source: Any, target: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code), str(source), None, str(target))

    return link


@pytest.mark.parametrize("code", [errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS])
def test_a_registry_version_on_a_filesystem_without_hard_links_names_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    store = FileStore(tmp_path / "registry")
    monkeypatch.setattr(os, "link", _no_links(code))
    with pytest.raises(StoreError, match="this filesystem has no hard links") as raised:
        store.put("models/fraud/versions/1/manifest.json", b"{}", if_none_match=True)
    assert str(tmp_path / "registry" / "models/fraud/versions/1") in str(raised.value)
    assert "s3://" in str(raised.value)
    folder = tmp_path / "registry" / "models/fraud/versions/1"
    assert list(folder.iterdir()) == [], "the hidden file was left behind"


def test_a_batch_claim_on_a_filesystem_without_hard_links_names_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path / "run")
    monkeypatch.setattr(os, "link", _no_links(errno.EPERM))
    with pytest.raises(StorageError, match="this filesystem has no hard links"):
        storage.create_bytes("_claims/part-0", b"worker 1")
    assert list((tmp_path / "run" / "_claims").iterdir()) == []


def test_other_link_failures_and_lost_races_keep_their_own_errors(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"x")
    (tmp_path / "taken").write_bytes(b"first")
    with pytest.raises(FileExistsError):
        link_new(source, tmp_path / "taken", error=StoreError)
    with pytest.raises(FileNotFoundError):
        link_new(source, tmp_path / "missing" / "name", error=StoreError)
    # The races as each store reports them, on a filesystem that has hard links.
    store = FileStore(tmp_path / "registry")
    store.put("k", b"1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put("k", b"2", if_none_match=True)
    storage = LocalStorage(tmp_path / "run")
    storage.create_bytes("claim", b"1")
    with pytest.raises(AlreadyExists):
        storage.create_bytes("claim", b"2")
    assert (tmp_path / "registry" / "k").read_bytes() == b"1"
    assert (tmp_path / "run" / "claim").read_bytes() == b"1"
