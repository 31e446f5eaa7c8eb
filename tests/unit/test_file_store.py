"""The filesystem object store: keys stay inside the root, and writes leave no partial files."""

from __future__ import annotations

from pathlib import Path

import pytest

from sds.kernel.registry import RegistryError, open_registry, open_store
from sds.kernel.registry.store import FileStore


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "a//b", "a/", "../escape", "a/../../escape", "./a", "a/.hidden", ".locks/x"],
)
def test_given_a_key_that_could_leave_the_root_or_hide_then_every_operation_refuses_it(
    tmp_path: Path, key: str
) -> None:
    store = FileStore(tmp_path / "root")

    with pytest.raises(ValueError, match="invalid object key"):
        store.put(key, b"x")
    with pytest.raises(ValueError, match="invalid object key"):
        store.get(key)
    assert not (tmp_path / "escape").exists()


def test_writes_are_whole_files_with_no_temporary_files_left_or_listed(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    etag = store.put("m/a.json", b"1", if_none_match=True)
    store.put("m/a.json", b"2", if_match=etag)
    with pytest.raises(Exception):  # noqa: B017 - any precondition failure
        store.put("m/a.json", b"3", if_none_match=True)

    assert sorted(p.name for p in (tmp_path / "root" / "m").iterdir()) == ["a.json"]
    assert store.list("m/") == ["m/a.json"]
    assert (tmp_path / "root" / "m" / "a.json").read_bytes() == b"2"


def test_the_store_uri_reopens_the_same_store(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    store.put("k", b"v")

    assert open_store(store.uri).get("k").data == b"v"
    assert store.uri.startswith("file:///")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("file://host/path", "file URIs look like file:///absolute/path"),
        ("s3://", "s3 URIs look like s3://bucket"),
        ("ftp://x/y", "unsupported registry URI"),
        ("/plain/path", "unsupported registry URI"),
    ],
)
def test_given_a_bad_registry_uri_then_the_error_says_what_a_good_one_looks_like(
    uri: str, message: str
) -> None:
    with pytest.raises(RegistryError, match=message):
        open_registry(uri, "fraud")
