"""What the registry needs from an object store, for every backend: conditional writes that either
happen completely or not at all, etags that name content, and listing by prefix."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from sds.kernel.registry.store import NotFound, ObjectStore, PreconditionFailed


def test_given_no_object_then_get_raises_not_found_naming_the_key(store: ObjectStore) -> None:
    with pytest.raises(NotFound, match=r"a/b\.json: not found"):
        store.get("a/b.json")


def test_a_put_returns_the_etag_that_get_reports_and_the_etag_changes_with_content(
    store: ObjectStore,
) -> None:
    first = store.put("a/b.json", b"one")
    same = store.get("a/b.json")
    second = store.put("a/b.json", b"two")

    assert same.data == b"one"
    assert same.etag == first
    assert second != first
    assert store.get("a/b.json").etag == second


def test_given_create_only_then_a_new_key_is_created(store: ObjectStore) -> None:
    store.put("k", b"v", if_none_match=True)

    assert store.get("k").data == b"v"


def test_given_create_only_on_an_existing_key_then_it_fails_and_the_winner_is_kept(
    store: ObjectStore,
) -> None:
    store.put("k", b"winner", if_none_match=True)

    with pytest.raises(PreconditionFailed, match="k: precondition failed"):
        store.put("k", b"loser", if_none_match=True)

    assert store.get("k").data == b"winner"


def test_given_the_current_etag_then_a_compare_and_swap_replaces_the_object(
    store: ObjectStore,
) -> None:
    etag = store.put("k", b"v1")

    new_etag = store.put("k", b"v2", if_match=etag)

    assert store.get("k").data == b"v2"
    assert store.get("k").etag == new_etag


def test_given_a_stale_etag_then_a_compare_and_swap_fails_and_changes_nothing(
    store: ObjectStore,
) -> None:
    stale = store.put("k", b"v1")
    store.put("k", b"v2")

    with pytest.raises(PreconditionFailed):
        store.put("k", b"v3", if_match=stale)

    assert store.get("k").data == b"v2"


def test_given_no_object_then_a_compare_and_swap_fails_and_creates_nothing(
    store: ObjectStore,
) -> None:
    with pytest.raises(PreconditionFailed):
        store.put("k", b"v", if_match="0" * 32)

    with pytest.raises(NotFound):
        store.get("k")


def test_given_many_writers_with_the_same_etag_then_exactly_one_swap_wins(
    store: ObjectStore,
) -> None:
    etag = store.put("k", b"v0")
    writers = 8
    start = threading.Barrier(writers)

    def swap(i: int) -> bool:
        start.wait()
        try:
            store.put("k", f"v{i}".encode(), if_match=etag)
        except PreconditionFailed:
            return False
        return True

    with ThreadPoolExecutor(writers) as pool:
        outcomes = list(pool.map(swap, range(1, writers + 1)))
    won = [i for i, ok in enumerate(outcomes, start=1) if ok]

    assert len(won) == 1
    assert store.get("k").data == f"v{won[0]}".encode()


def test_given_many_creators_of_one_key_then_exactly_one_wins(store: ObjectStore) -> None:
    writers = 8
    start = threading.Barrier(writers)

    def create(i: int) -> bool:
        start.wait()
        try:
            store.put("k", f"v{i}".encode(), if_none_match=True)
        except PreconditionFailed:
            return False
        return True

    with ThreadPoolExecutor(writers) as pool:
        won = [i for i, ok in enumerate(pool.map(create, range(writers))) if ok]

    assert len(won) == 1
    assert store.get("k").data == f"v{won[0]}".encode()


def test_list_returns_the_sorted_keys_under_a_prefix_and_nothing_else(store: ObjectStore) -> None:
    for k in ("m/a/2", "m/a/10", "m/a/sub/x", "m/ab/1", "m/b/1", "top"):
        store.put(k, b"x")

    assert store.list("m/a/") == ["m/a/10", "m/a/2", "m/a/sub/x"]
    assert store.list("m/") == ["m/a/10", "m/a/2", "m/a/sub/x", "m/ab/1", "m/b/1"]
    assert store.list("nothing/") == []
