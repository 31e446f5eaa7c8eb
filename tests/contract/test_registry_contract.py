"""The registry contract, written once for every storage backend (see conftest.STORE_BACKENDS).

Write-once versions, compare-and-swap aliases, an append-only audit trail, sha256 verified on every
read, and copies between registries that verify every byte and converge when re-run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sds.kernel.registry import (
    ConcurrentUpdate,
    IntegrityError,
    Registry,
    RegistryError,
    VersionConflict,
    VersionNotFound,
)
from sds.kernel.registry.core import sha256_hex
from sds.kernel.registry.store import ObjectStore, StoredObject, StoreError

ACTOR = "alice@laptop"


def artifacts(tag: str) -> dict[str, bytes]:
    return {
        "model.onnx": f"onnx bytes of {tag}".encode() * 10,
        "model.skops": f"skops {tag}".encode(),
    }


def register(registry: Registry, tag: str, **kwargs: Any) -> int:
    version = registry.register(
        artifacts(tag), {"metrics": {"roc_auc": 0.9}, "tag": tag}, actor=ACTOR, **kwargs
    )
    return version.number


def key(version: int, name: str, model: str = "fraud") -> str:
    return f"models/{model}/versions/{version}/{name}"


def events_of(registry: Registry, kind: str) -> list[dict[str, Any]]:
    return [e for e in registry.events() if e["type"] == kind]


# Write-once versions ----------------------------------------------------------------------------


def test_given_an_empty_registry_when_versions_are_registered_then_numbers_count_up_from_one(
    registry: Registry,
) -> None:
    assert registry.list_versions() == []

    assert [register(registry, t) for t in "abc"] == [1, 2, 3]
    assert registry.list_versions() == [1, 2, 3]
    assert registry.get_version(2).manifest["tag"] == "b"


def test_a_registered_version_has_a_manifest_describing_every_artifact(registry: Registry) -> None:
    info = registry.register(
        artifacts("a"), {"metrics": {"roc_auc": 0.91}, "params": {"x": 1}}, actor=ACTOR
    )
    stored = registry.get_version(1).manifest

    assert stored == info.manifest
    onnx = artifacts("a")["model.onnx"]
    assert stored["sha256"] == sha256_hex(onnx) == info.sha256
    assert stored["size"] == len(onnx)
    assert stored["formats"] == ["onnx", "skops"]
    assert stored["artifacts"]["model.skops"] == {
        "sha256": sha256_hex(artifacts("a")["model.skops"]),
        "size": len(artifacts("a")["model.skops"]),
        "format": "skops",
    }
    assert stored["model"] == "fraud"
    assert stored["created_by"] == ACTOR
    assert stored["created_at"].endswith("Z")
    assert stored["source"] is None
    assert stored["metrics"] == {"roc_auc": 0.91} == dict(info.metrics)
    assert stored["params"] == {"x": 1}
    assert registry.read_artifact(1) == onnx
    assert registry.read_artifact(1, "model.skops") == artifacts("a")["model.skops"]


def test_registered_versions_cannot_be_overwritten_through_the_registry(
    registry: Registry,
) -> None:
    register(registry, "a")
    before = registry.get_version(1).manifest

    register(registry, "a")  # same bytes again: a new version, not a replacement

    assert registry.list_versions() == [1, 2]
    assert registry.get_version(1).manifest == before


@pytest.mark.parametrize(
    "names",
    [
        {"model.skops": b"x"},
        {"model.onnx": b"x", "manifest.json": b"{}"},
        {"model.onnx": b"x", "../up": b"x"},
    ],
    ids=["no-onnx", "manifest-name", "path-name"],
)
def test_given_bad_artifact_names_then_nothing_is_registered(
    registry: Registry, names: dict[str, bytes]
) -> None:
    with pytest.raises(RegistryError):
        registry.register(names, {}, actor=ACTOR)

    assert registry.list_versions() == []
    assert registry.store.list("models/") == []


def test_given_an_invalid_model_name_then_no_registry_is_opened(store: ObjectStore) -> None:
    for bad in ("Fraud", "../x", "", "a/b", "-x"):
        with pytest.raises(RegistryError, match="invalid model name"):
            Registry(store, bad)


def test_given_a_claimed_but_incomplete_version_then_it_is_invisible_and_its_number_never_reused(
    registry: Registry, store: ObjectStore
) -> None:
    register(registry, "a")
    # A writer claimed number 2 and died before writing the manifest.
    store.put(key(2, "model.onnx"), b"half a model", if_none_match=True)

    assert registry.list_versions() == [1]
    with pytest.raises(VersionNotFound):
        registry.get_version(2)
    with pytest.raises(VersionNotFound):
        registry.read_artifact(2)

    assert register(registry, "c") == 3
    assert registry.list_versions() == [1, 3]


def test_given_a_writer_that_fails_after_claiming_a_number_then_the_version_never_appears(
    registry: Registry, store: ObjectStore
) -> None:
    register(registry, "a")

    def fail(key: str) -> None:
        if key.endswith("/model.skops"):
            raise StoreError(f"{key}: connection reset")

    crashing = Registry(_HookedStore(store, before_put=fail), "fraud")
    with pytest.raises(StoreError, match="connection reset"):
        register(crashing, "b")

    assert registry.list_versions() == [1]
    assert [e["version"] for e in registry.events()] == [1]  # no "registered" for the failure
    assert register(registry, "c") == 3


def test_given_several_threads_registering_at_once_then_every_version_gets_its_own_number(
    registry: Registry, store: ObjectStore
) -> None:
    threads, per_thread = 6, 3
    start = threading.Barrier(threads)

    def work(worker: int) -> list[tuple[int, str]]:
        start.wait()
        return [(register(registry, f"t{worker}-{i}"), f"t{worker}-{i}") for i in range(per_thread)]

    with ThreadPoolExecutor(threads) as pool:
        results = [pair for batch in pool.map(work, range(threads)) for pair in batch]

    numbers = sorted(n for n, _ in results)
    assert numbers == list(range(1, threads * per_thread + 1))
    assert registry.list_versions() == numbers
    for number, tag in results:  # no version lost or mixed up with another writer's bytes
        assert registry.read_artifact(number) == artifacts(tag)["model.onnx"]
        assert registry.get_version(number).manifest["tag"] == tag
    assert len(events_of(registry, "registered")) == threads * per_thread


_WORKER = """
import sys, time
from pathlib import Path
from sds.kernel.registry import Registry, open_store
uri, worker, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
registry = Registry(open_store(uri), "fraud")
registry.list_versions()  # connect before the start line
(go.parent / f"ready-{worker}").touch()
while not go.exists():
    time.sleep(0.005)
for i in range(count):
    tag = f"p{worker}-{i}"
    blobs = {"model.onnx": f"onnx bytes of {tag}".encode() * 10, "model.skops": f"skops {tag}".encode()}
    version = registry.register(blobs, {"tag": tag}, actor=f"worker-{worker}")
    print(version.number, tag, flush=True)
"""


def _start_when_ready(
    go: Path, ready: list[str], workers: list[subprocess.Popen[str]], timeout: float = 60
) -> None:
    """Open the start line only once every worker has connected and read its starting state."""
    deadline = time.monotonic() + timeout
    while not all((go.parent / name).exists() for name in ready):
        for worker in workers:
            if worker.poll() is not None:
                _, err = worker.communicate()
                pytest.fail(f"a worker exited before the start line: {err}")
        assert time.monotonic() < deadline, "workers did not get ready in time"
        time.sleep(0.01)
    go.touch()


def test_given_several_processes_registering_at_once_then_no_number_is_shared_and_no_version_lost(
    registry: Registry, store: ObjectStore, tmp_path: Path
) -> None:
    processes, per_process = 3, 4
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, store.uri, str(w), str(per_process), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(processes)
    ]
    _start_when_ready(go, [f"ready-{w}" for w in range(processes)], workers)
    results: list[tuple[int, str]] = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        results.extend((int(n), tag) for n, tag in (line.split() for line in out.splitlines()))

    numbers = sorted(n for n, _ in results)
    assert numbers == list(range(1, processes * per_process + 1))
    assert registry.list_versions() == numbers
    for number, tag in results:
        assert registry.get_version(number).manifest["tag"] == tag
        assert registry.read_artifact(number) == f"onnx bytes of {tag}".encode() * 10


# Integrity on read ------------------------------------------------------------------------------


def _tamper(store: ObjectStore, k: str, change: Callable[[bytes], bytes]) -> None:
    store.put(k, change(store.get(k).data))  # behind the registry's back


def _flip_one_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


@pytest.mark.parametrize(
    "change",
    [_flip_one_byte, lambda d: d[:-1], lambda d: d + b"\0", lambda d: b""],
    ids=["one-byte-flipped", "truncated", "extended", "emptied"],
)
def test_given_a_tampered_artifact_then_reading_it_raises_integrity_error(
    registry: Registry, store: ObjectStore, change: Callable[[bytes], bytes]
) -> None:
    register(registry, "a")
    _tamper(store, key(1, "model.onnx"), change)

    with pytest.raises(IntegrityError, match=r"model\.onnx does not match its manifest"):
        registry.read_artifact(1)
    with pytest.raises(IntegrityError):
        registry.verify_version(1)


def test_given_a_tampered_secondary_artifact_then_verification_catches_it(
    registry: Registry, store: ObjectStore
) -> None:
    register(registry, "a")
    _tamper(store, key(1, "model.skops"), _flip_one_byte)

    assert registry.read_artifact(1) == artifacts("a")["model.onnx"]
    with pytest.raises(IntegrityError, match=r"model\.skops"):
        registry.verify_version(1)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[1]", "does not describe version 1"),
        (json.dumps({"version": 7}).encode(), "does not describe version 1"),
        (json.dumps({"version": True}).encode(), "does not describe version 1"),
        (json.dumps({"version": 1, "sha256": "0" * 64, "artifacts": {}}).encode(), "no model.onnx"),
    ],
)
def test_given_a_corrupt_manifest_then_reading_the_version_raises_integrity_error(
    registry: Registry, store: ObjectStore, manifest: bytes, message: str
) -> None:
    register(registry, "a")
    store.put(key(1, "manifest.json"), manifest)

    with pytest.raises(IntegrityError, match=message):
        registry.get_version(1)


def _set(*path: str, to: Any) -> Callable[[dict[str, Any]], None]:
    """A change to a manifest: the field at `path` (its keys) set `to` a value, or removed for
    `_GONE`."""

    def change(manifest: dict[str, Any]) -> None:
        *parents, last = path
        document = manifest
        for name in parents:
            document = document[name]
        if to is _GONE:
            del document[last]
        else:
            document[last] = to

    return change


_GONE = object()
_ENTRY = {"sha256": "0" * 64, "size": 1, "format": "x"}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (_set("artifacts", to=[]), "artifacts is an array, not an object"),
        (
            _set("artifacts", "model.skops", to="x"),
            "artifacts.model.skops is a string, not an object",
        ),
        (_set("artifacts", "model.onnx", to=None), "artifacts.model.onnx is null, not an object"),
        (_set("artifacts", "../up", to=_ENTRY), "artifacts names an invalid artifact '../up'"),
        (
            _set("artifacts", "model.skops", "sha256", to=5),
            "artifacts.model.skops.sha256 is a number, not a sha256 (64 hex digits)",
        ),
        (
            _set("artifacts", "model.skops", "size", to="12"),
            "artifacts.model.skops.size is a string, not a size in bytes",
        ),
        (
            _set("artifacts", "model.skops", "size", to=-1),
            "artifacts.model.skops.size is a number, not a size in bytes",
        ),
        (
            _set("artifacts", "model.skops", "size", to=_GONE),
            "artifacts.model.skops.size is missing",
        ),
        (
            _set("artifacts", "model.skops", "format", to=[]),
            "artifacts.model.skops.format is an array",
        ),
        (_set("sha256", to=_GONE), "sha256 is missing"),
        (_set("model", to=7), "model is a number, not a string"),
        (_set("created_at", to=7), "created_at is a number, not a string"),
        (_set("metrics", to=[1]), "metrics is an array, not an object"),
        (_set("metrics", to=None), "metrics is null, not an object"),
        (_set("metrics", "roc_auc", to="high"), "metrics.roc_auc is a string, not a number"),
        (_set("metrics", "roc_auc", to=True), "metrics.roc_auc is a boolean, not a number"),
        (_set("decision_threshold", to="0.5"), "decision_threshold is a string, not a number"),
        (_set("behaviour", to=1), "behaviour is a number, not an object"),
        (
            _set("behaviour", to={"alert_rate": "1%"}),
            "behaviour.alert_rate is a string, not a number",
        ),
        (_set("feature_schema", to="v1"), "feature_schema is a string, not an object"),
        (
            _set("feature_schema", to={"aggregates": []}),
            "feature_schema.aggregates is an array, not an object",
        ),
        (_set("serving", to=[]), "serving is an array, not an object"),
        (_set("serving", to={"input": 1}), "serving.input is a number, not a string"),
        (_set("data", to="s3://x"), "data is a string, not an object"),
        (_set("params", to=[1]), "params is an array, not an object"),
        (_set("source", to="elsewhere"), "source is a string, not an object or null"),
    ],
    ids=lambda p: p if isinstance(p, str) else "",
)
def test_given_a_manifest_of_another_shape_then_every_read_names_the_file_and_the_field(
    registry: Registry,
    store: ObjectStore,
    change: Callable[[dict[str, Any]], None],
    problem: str,
) -> None:
    # Given a version whose manifest (valid JSON) has a field of another shape than the
    # registry and training write
    registry.register(
        artifacts("a"),
        {"metrics": {"roc_auc": 0.9}, "decision_threshold": 0.5, "params": {"x": 1}},
        actor=ACTOR,
    )
    manifest = json.loads(store.get(key(1, "manifest.json")).data)
    change(manifest)
    store.put(key(1, "manifest.json"), json.dumps(manifest).encode())

    # When the version is read, verified, or an alias is moved to it
    # Then each is refused with the registry's integrity error naming the file and the field
    expected = f"version 1: manifest.json: {problem}"
    with pytest.raises(IntegrityError) as read:
        registry.get_version(1)
    assert str(read.value).startswith(expected)
    with pytest.raises(IntegrityError, match=re.escape(expected)):
        registry.verify_version(1)
    with pytest.raises(IntegrityError, match=re.escape(expected)):
        registry.move_alias("live", 1, expected=None, kind="promoted", actor="a", reason="")
    assert registry.get_alias("live") is None


def test_a_manifest_as_training_writes_it_reads_back_whole(registry: Registry) -> None:
    # Given every field the readers check, in the shapes training writes them
    metadata: dict[str, Any] = {
        "metrics": {"roc_auc": 0.9, "holdout_events": 120, "alert_rate": 0.01},
        "decision_threshold": 0.42,
        "behaviour": {"alert_rate": 0.0125, "decision_threshold": 0.42, "flagged": 3},
        "feature_schema": {"features": ["a", "b"], "aggregates": {"fingerprint": "f"}},
        "serving": {"input": "features", "output": "probabilities", "positive_class": 1},
        "data": {"events": 10},
        "params": {"max_iter": 5},
        "comparison": {"anything": "its own reader checks it"},
    }
    info = registry.register(artifacts("a"), metadata, actor=ACTOR)

    # When it is read back, then it is the manifest that was written
    assert registry.get_version(1).manifest == info.manifest
    assert registry.get_version(1).metrics == metadata["metrics"]


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"metrics": {"roc_auc": "high"}}, "metrics.roc_auc is a string, not a number"),
        ({"decision_threshold": "0.5"}, "decision_threshold is a string, not a number"),
        (
            {"feature_schema": {"features": "a,b"}},
            "feature_schema.features is a string, not an array",
        ),
        ({"params": [1]}, "params is an array, not an object"),
        ({"params": {"classes": {0, 1}}}, "params is not JSON (Object of type set"),
    ],
    ids=lambda p: p if isinstance(p, str) else "",
)
def test_given_metadata_its_readers_would_refuse_then_register_refuses_it_and_stores_nothing(
    registry: Registry, store: ObjectStore, metadata: dict[str, Any], problem: str
) -> None:
    # Given a registry holding one version
    register(registry, "a")
    before = sorted(store.list("models/"))
    told: list[Any] = []

    # When a version is registered with a field of a shape every reader of the manifest refuses
    with pytest.raises(RegistryError) as refused:
        registry.register(
            artifacts("b"),
            metadata,
            actor=ACTOR,
            on_claimed=told.append,
            on_upload=lambda *a: told.append(a),
        )

    # Then the refusal names the field, and nothing was stored: no number claimed, no artifact,
    # no manifest, no audit event
    assert f"manifest.json: {problem}" in str(refused.value)
    assert not isinstance(refused.value, IntegrityError)  # the caller's input, not stored damage
    assert sorted(store.list("models/")) == before
    assert told == []
    # And the next good version gets the number the refused one would have had
    assert register(registry, "c") == 2
    assert registry.list_versions() == [1, 2]
    assert [e["version"] for e in events_of(registry, "registered")] == [1, 2]


def test_given_a_manifest_whose_sha_disagrees_with_its_artifact_entry_then_it_is_rejected(
    registry: Registry, store: ObjectStore
) -> None:
    register(registry, "a")
    manifest = json.loads(store.get(key(1, "manifest.json")).data)
    manifest["sha256"] = "0" * 64
    store.put(key(1, "manifest.json"), json.dumps(manifest).encode())

    with pytest.raises(IntegrityError, match="disagrees"):
        registry.get_version(1)


def test_given_a_missing_artifact_then_reading_it_raises_integrity_error(
    registry: Registry, remove_object: Callable[[str], None]
) -> None:
    register(registry, "a")
    remove_object(key(1, "model.skops"))

    with pytest.raises(IntegrityError, match="missing"):
        registry.verify_version(1)
    with pytest.raises(VersionNotFound):
        registry.read_artifact(1, "model.nothing")
    # Checking that the version is complete lists its objects, and finds the same gap
    with pytest.raises(IntegrityError, match=r"^version 1: model\.skops is missing from "):
        registry.check_complete(1)


def test_a_complete_version_checks_complete_without_reading_its_artifacts(
    registry: Registry, store: ObjectStore
) -> None:
    register(registry, "a")
    tampered = key(1, "model.skops")
    store.put(tampered, b"other bytes")  # a check that read it would refuse it

    assert registry.check_complete(1).number == 1
    # A claimed number without a manifest is no version, as everywhere else
    store.put(key(2, "model.onnx"), b"half a model", if_none_match=True)
    with pytest.raises(VersionNotFound):
        registry.check_complete(2)


# Aliases: compare-and-swap ---------------------------------------------------------------------


def test_given_an_alias_moved_twice_then_it_records_previous_history_and_who_and_why(
    registry: Registry,
) -> None:
    for tag in "abc":
        register(registry, tag)
    first = registry.move_alias("live", 1, expected=None, kind="promoted", actor="a", reason="r1")
    second = registry.move_alias("live", 2, expected=first, kind="promoted", actor="b", reason="r2")
    third = registry.move_alias("live", 3, expected=second, kind="promoted", actor="c", reason="r3")

    stored = registry.get_alias("live")
    assert stored == third
    assert stored is not None
    assert (stored.version, stored.previous, stored.history) == (3, 2, (1, 2))
    assert stored.sha256 == registry.get_version(3).sha256
    assert (stored.updated_by, stored.reason) == ("c", "r3")
    assert stored.etag == third.etag != second.etag
    assert set(registry.list_aliases()) == {"live"}
    assert registry.get_alias("staging") is None


def test_given_a_stale_expected_state_then_move_alias_raises_and_changes_nothing(
    registry: Registry,
) -> None:
    for tag in "abc":
        register(registry, tag)
    original = registry.move_alias("live", 1, expected=None, kind="promoted", actor="a", reason="")
    winner = registry.move_alias(
        "live", 2, expected=original, kind="promoted", actor="b", reason=""
    )
    promoted_before = len(events_of(registry, "promoted"))

    with pytest.raises(ConcurrentUpdate, match="moved by someone else"):
        registry.move_alias("live", 3, expected=original, kind="promoted", actor="c", reason="")

    assert registry.get_alias("live") == winner
    assert registry.get_alias("live").etag == winner.etag  # type: ignore[union-attr]
    assert len(events_of(registry, "promoted")) == promoted_before


def test_given_an_alias_exists_then_creating_it_again_with_no_expected_state_conflicts(
    registry: Registry,
) -> None:
    register(registry, "a")
    register(registry, "b")
    first = registry.move_alias("live", 1, expected=None, kind="promoted", actor="a", reason="")

    with pytest.raises(ConcurrentUpdate):
        registry.move_alias("live", 2, expected=None, kind="promoted", actor="b", reason="")

    assert registry.get_alias("live") == first


def test_given_concurrent_promotions_from_the_same_state_then_exactly_one_wins(
    registry: Registry,
) -> None:
    contenders = 6
    for i in range(contenders + 1):
        register(registry, f"v{i}")
    base = registry.move_alias("live", 1, expected=None, kind="promoted", actor="x", reason="")
    start = threading.Barrier(contenders)

    def promote(version: int) -> int | None:
        start.wait()
        try:
            registry.move_alias(
                "live", version, expected=base, kind="promoted", actor="x", reason=""
            )
        except ConcurrentUpdate:
            return None
        return version

    with ThreadPoolExecutor(contenders) as pool:
        outcomes = list(pool.map(promote, range(2, contenders + 2)))

    winners = [v for v in outcomes if v is not None]
    assert len(winners) == 1
    final = registry.get_alias("live")
    assert final is not None
    assert (final.version, final.previous, final.history) == (winners[0], 1, (1,))


_PROMOTER = """
import sys, time
from pathlib import Path
from sds.kernel.registry import ConcurrentUpdate, Registry, open_store
uri, version, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
registry = Registry(open_store(uri), "fraud")
expected = registry.get_alias("live")
(go.parent / f"ready-{version}").touch()
while not go.exists():
    time.sleep(0.005)
try:
    registry.move_alias("live", version, expected=expected, kind="promoted", actor=f"p{version}", reason="")
except ConcurrentUpdate:
    print("lost")
else:
    print("won")
"""


def test_given_concurrent_promotions_from_several_processes_then_exactly_one_wins(
    registry: Registry, store: ObjectStore, tmp_path: Path
) -> None:
    for tag in "abcd":
        register(registry, tag)
    registry.move_alias("live", 1, expected=None, kind="promoted", actor="x", reason="")
    go = tmp_path / "go"
    workers = {
        version: subprocess.Popen(
            [sys.executable, "-c", _PROMOTER, store.uri, str(version), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for version in (2, 3, 4)
    }
    _start_when_ready(go, [f"ready-{v}" for v in workers], list(workers.values()))
    outcomes = {}
    for version, worker in workers.items():
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        outcomes[version] = out.strip()

    winners = [v for v, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    final = registry.get_alias("live")
    assert final is not None
    assert (final.version, final.previous, final.updated_by) == (winners[0], 1, f"p{winners[0]}")
    assert [e["version"] for e in events_of(registry, "promoted")] == [1, winners[0]]


def test_given_a_corrupt_alias_object_then_reading_it_raises_integrity_error(
    registry: Registry, store: ObjectStore
) -> None:
    register(registry, "a")
    registry.move_alias("live", 1, expected=None, kind="promoted", actor="a", reason="")
    store.put("models/fraud/aliases/live.json", b'{"alias": "live"}')

    with pytest.raises(IntegrityError, match=r"alias 'live' .* is corrupt"):
        registry.get_alias("live")


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("version", "1", "version is a string, not a version number (1 or more)"),
        ("version", 1.5, "version is a number, not a version number (1 or more)"),
        ("version", True, "version is a boolean, not a version number (1 or more)"),
        ("version", 0, "version is a number, not a version number (1 or more)"),
        ("history", "1", "history is a string, not an array of version numbers"),
        ("history", [1, "2"], "history is an array, not an array of version numbers"),
        ("previous", "1", "previous is a string, not a version number (1 or more) or null"),
        ("sha256", 5, "sha256 is a number, not a sha256 (64 hex digits)"),
        ("alias", "staging", "it describes alias 'staging'"),
        ("reason", None, "reason is null, not a string"),
    ],
)
def test_given_an_alias_of_another_shape_then_reading_it_names_the_field(
    registry: Registry, store: ObjectStore, field: str, value: Any, problem: str
) -> None:
    # Given an alias whose document was edited by hand: valid JSON, one field of another shape
    register(registry, "a")
    registry.move_alias("live", 1, expected=None, kind="promoted", actor="a", reason="")
    document = json.loads(store.get("models/fraud/aliases/live.json").data)
    document[field] = value
    store.put("models/fraud/aliases/live.json", json.dumps(document).encode())

    # When it is read, then it is refused, naming the field, never read as something else
    # (a history of "12" is not versions 1 and 2)
    with pytest.raises(IntegrityError) as raised:
        registry.get_alias("live")
    assert str(raised.value) == (
        f"alias 'live' in {registry.uri} is corrupt (models/fraud/aliases/live.json): {problem}; "
        "the audit trail records where it last moved"
    )


def test_metadata_cannot_override_what_the_registry_records(registry: Registry) -> None:
    forged = {
        "version": 99,
        "sha256": "0" * 64,
        "size": 1,
        "created_by": "mallory",
        "model": "other",
        "source": {"registry": "elsewhere"},
        "metrics": {"roc_auc": 0.5},
    }

    info = registry.register(artifacts("a"), forged, actor=ACTOR)

    manifest = registry.get_version(1).manifest
    assert info.number == manifest["version"] == 1
    assert manifest["sha256"] == sha256_hex(artifacts("a")["model.onnx"])
    assert manifest["size"] == len(artifacts("a")["model.onnx"])
    assert (manifest["created_by"], manifest["model"], manifest["source"]) == (ACTOR, "fraud", None)
    assert manifest["metrics"] == {"roc_auc": 0.5}


@pytest.mark.parametrize("target", ["missing", "incomplete", "tampered"])
def test_an_alias_never_points_at_a_missing_incomplete_or_tampered_version(
    registry: Registry, store: ObjectStore, target: str
) -> None:
    register(registry, "a")
    current = registry.move_alias("live", 1, expected=None, kind="promoted", actor="a", reason="")
    if target == "incomplete":
        store.put(key(2, "model.onnx"), b"claimed, never finished", if_none_match=True)
    elif target == "tampered":
        register(registry, "b")
        _tamper(store, key(2, "model.skops"), _flip_one_byte)
    events_before = registry.events()

    with pytest.raises(IntegrityError if target == "tampered" else VersionNotFound):
        registry.move_alias("live", 2, expected=current, kind="promoted", actor="b", reason="")

    assert registry.get_alias("live") == current
    assert registry.events() == events_before


@pytest.mark.parametrize("alias", ["Live", "a/b", "../x", ""])
def test_given_an_invalid_alias_name_then_it_is_refused(registry: Registry, alias: str) -> None:
    register(registry, "a")

    with pytest.raises(RegistryError, match="invalid alias"):
        registry.move_alias(alias, 1, expected=None, kind="promoted", actor="a", reason="")


# Audit ------------------------------------------------------------------------------------------


def test_every_change_writes_an_audit_event_with_actor_and_reason(
    registry: Registry, other_store: ObjectStore
) -> None:
    registry.register(artifacts("a"), {}, actor="trainer", reason="nightly")
    registry.register(artifacts("b"), {}, actor="trainer", reason="tuned")
    up = registry.move_alias("live", 1, expected=None, kind="promoted", actor="ops", reason="go")
    up = registry.move_alias("live", 2, expected=up, kind="promoted", actor="ops", reason="v2")
    registry.move_alias(
        "live", 1, expected=up, kind="rolled_back", actor="oncall", reason="alarm", history=()
    )
    target = Registry(other_store, "fraud")
    target.import_version(registry, 2, actor="promoter", reason="to staging")

    events = registry.events()
    summary = [(e["type"], e["version"], e["alias"], e["by"], e["reason"]) for e in events]
    assert summary == [
        ("registered", 1, None, "trainer", "nightly"),
        ("registered", 2, None, "trainer", "tuned"),
        ("promoted", 1, "live", "ops", "go"),
        ("promoted", 2, "live", "ops", "v2"),
        ("rolled_back", 1, "live", "oncall", "alarm"),
    ]  # in time order: the keys sort by time
    assert events[0]["sha256"] == registry.get_version(1).sha256
    assert events[3]["from_version"] == 1
    assert events[4]["from_version"] == 2
    assert len({e["id"] for e in events}) == len(events)
    assert all(e["at"].endswith("Z") and e["model"] == "fraud" for e in events)
    assert registry.get_alias("live").event_id == events[4]["id"]  # type: ignore[union-attr]
    [copied] = target.events()
    assert (copied["type"], copied["version"], copied["by"], copied["reason"]) == (
        "copied",
        2,
        "promoter",
        "to staging",
    )
    assert copied["from"] == registry.uri
    assert copied["sha256"] == registry.get_version(2).sha256


def test_events_can_be_filtered_by_alias_keeping_registrations(registry: Registry) -> None:
    register(registry, "a")
    registry.move_alias("live", 1, expected=None, kind="promoted", actor="a", reason="")
    registry.move_alias("canary", 1, expected=None, kind="promoted", actor="a", reason="")

    assert [(e["type"], e["alias"]) for e in registry.events(alias="live")] == [
        ("registered", None),
        ("promoted", "live"),
    ]


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        (b"{bad", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1]", "not a JSON object but an array"),
        (b'"promoted"', "not a JSON object but a string"),
        (b"null", "not a JSON object but null"),
        (b'{"version": 1, "alias": "live"}', "its type is not a string"),
        (b'{"type": "promoted", "version": "1", "alias": "live"}', "its version is not an integer"),
        (
            b'{"type": "promoted", "version": true, "alias": "live"}',
            "its version is not an integer",
        ),
        (b'{"type": "promoted", "version": 1, "alias": ["live"]}', "its alias is neither"),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "array",
        "string",
        "null",
        "no-type",
        "version-string",
        "version-bool",
        "alias-list",
    ],
)
def test_an_unreadable_audit_event_is_named_and_left_in_place_while_the_rest_is_read(
    registry: Registry, store: ObjectStore, stored: bytes, problem: str
) -> None:
    # Given a registration and a promotion, and an event file that is not an audit event
    register(registry, "a")
    registry.move_alias("live", 1, expected=None, kind="promoted", actor="a", reason="")
    bad = "models/fraud/events/20990101T000000000000Z-damaged.json"
    store.put(bad, stored)

    # When the audit trail is read
    trail = registry.audit_trail(alias="live")

    # Then every readable event is there, the other one is named with what is wrong with it,
    # and it is left where it was
    assert [(e["type"], e["version"]) for e in trail.events] == [("registered", 1), ("promoted", 1)]
    [line] = trail.unreadable
    assert line.startswith(f"{registry.uri}/{bad}: {problem}")
    assert registry.events(alias="live") == trail.events == registry.audit_trail().events
    assert store.get(bad).data == stored


def test_audit_events_are_append_only(registry: Registry, store: ObjectStore) -> None:
    register(registry, "a")
    [event] = registry.events()
    event_key = f"models/fraud/events/{event['id']}.json"

    with pytest.raises(VersionConflict):
        registry._put_once(event_key, b"{}")  # the registry never rewrites an event
    assert json.loads(store.get(event_key).data) == event


class _ReaderBetweenTheMoversWrites:
    """The registry's store, with another command reading the alias right after it is written,
    before its mover writes the move's audit event (the instant `ensure_audited` can meet)."""

    def __init__(self, store: ObjectStore, reader: Callable[[], None]) -> None:
        self._store = store
        self._reader: Callable[[], None] | None = reader

    @property
    def uri(self) -> str:
        return self._store.uri

    def get(self, key: str) -> StoredObject:
        return self._store.get(key)

    def list(self, prefix: str) -> list[str]:
        return self._store.list(prefix)

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        etag = self._store.put(key, data, if_none_match=if_none_match, if_match=if_match)
        if key.endswith("/aliases/live.json") and self._reader is not None:
            reader, self._reader = self._reader, None
            reader()
        return etag


def test_a_move_whose_event_another_command_rebuilt_meanwhile_succeeds_audited_once(
    store: ObjectStore,
) -> None:
    # Given a second command (a promotion of the same version, finding it already live) that
    # reads the alias in the instant between the mover's two writes, and rebuilds the event
    register(Registry(store, "fraud"), "a")
    others = Registry(store, "fraud", declared_actor="CHG-2")

    def other_command() -> None:
        state = others.get_alias("live")
        assert state is not None
        others.ensure_audited(state)

    mover = Registry(_ReaderBetweenTheMoversWrites(store, other_command), "fraud")  # type: ignore[arg-type]

    # When the mover finishes its move
    state = mover.move_alias(
        "live", 1, expected=None, kind="promoted", actor=ACTOR, reason="go", details={"gate": "ok"}
    )

    # Then neither command failed, and the move is audited once, by the rebuilt event (events
    # are write-once): its mover, reason, version and sha256, marked recovered
    assert state.version == 1
    [event] = [e for e in Registry(store, "fraud").events() if e["id"] == state.event_id]
    assert (event["type"], event["by"], event["reason"], event["version"]) == (
        "promoted",
        ACTOR,
        "go",
        1,
    )
    assert event["sha256"] == state.sha256 and event["recovered"] is True


def test_a_rebuilt_event_never_replaces_the_movers_own(registry: Registry) -> None:
    # Given a move whose event was written by its mover
    register(registry, "a")
    state = registry.move_alias(
        "live", 1, expected=None, kind="promoted", actor=ACTOR, reason="go", details={"gate": "ok"}
    )

    # When another command rebuilds it anyway (it read the alias before the event existed)
    registry.record_event(
        "promoted",
        version=1,
        actor=ACTOR,
        reason="go",
        alias="live",
        event_id=state.event_id,
        details={"recovered": True},
        annotate=False,
        rebuilt=True,
    )

    # Then nothing fails, and the mover's event stands
    [event] = [e for e in registry.events() if e["id"] == state.event_id]
    assert event["gate"] == "ok" and "recovered" not in event


def test_an_event_id_taken_by_another_event_is_still_refused(registry: Registry) -> None:
    # Given an audit event already written
    register(registry, "a")
    [event] = registry.events()

    # When another event (not a rebuilt one) is written under its id, then it is refused
    with pytest.raises(VersionConflict):
        registry.record_event("promoted", version=1, actor=ACTOR, reason="x", event_id=event["id"])
    assert registry.events() == [event]


# Copying between registries ----------------------------------------------------------------------


@pytest.fixture
def target(other_store: ObjectStore) -> Registry:
    return Registry(other_store, "fraud")


def test_import_copies_a_version_under_the_same_number_and_records_where_it_came_from(
    registry: Registry, target: Registry
) -> None:
    for tag in "abc":
        register(registry, tag)

    copied = target.import_version(registry, 3, actor="promoter", reason="ship it")

    assert target.list_versions() == [3]
    assert copied.number == 3
    assert copied.sha256 == registry.get_version(3).sha256
    assert target.verify_version(3).manifest == copied.manifest
    assert copied.manifest["created_by"] == ACTOR  # provenance of the model is kept
    assert copied.manifest["source"]["registry"] == registry.uri
    assert copied.manifest["source"]["version"] == 3
    assert copied.manifest["source"]["copied_by"] == "promoter"
    for name in ("model.onnx", "model.skops"):
        assert target.read_artifact(3, name) == registry.read_artifact(3, name)
    assert register(target, "local") == 4  # the copy's number is taken in the target


def test_importing_the_same_version_again_changes_nothing(
    registry: Registry, target: Registry, other_store: ObjectStore
) -> None:
    register(registry, "a")
    first = target.import_version(registry, 1, actor="promoter")
    keys = other_store.list("models/")
    contents = {k: other_store.get(k).data for k in keys}

    again = target.import_version(registry, 1, actor="someone else")

    assert again.manifest == first.manifest
    assert other_store.list("models/") == keys
    assert {k: other_store.get(k).data for k in keys} == contents
    assert len(events_of(target, "copied")) == 1


def test_import_refuses_a_different_model_under_the_same_number(
    registry: Registry, target: Registry, other_store: ObjectStore
) -> None:
    register(registry, "a")
    register(target, "something else")
    before = {k: other_store.get(k).data for k in other_store.list("models/")}

    with pytest.raises(VersionConflict, match=r"version 1 .* holds a different model"):
        target.import_version(registry, 1, actor="promoter")

    assert {k: other_store.get(k).data for k in other_store.list("models/")} == before


def test_import_refuses_when_an_unfinished_different_model_holds_the_number(
    registry: Registry, target: Registry, other_store: ObjectStore
) -> None:
    register(registry, "a")
    other_store.put(key(1, "model.onnx"), b"someone else's claim", if_none_match=True)

    with pytest.raises(VersionConflict):
        target.import_version(registry, 1, actor="promoter")

    assert target.list_versions() == []
    assert other_store.get(key(1, "model.onnx")).data == b"someone else's claim"


@pytest.mark.parametrize("copied_before", [("model.onnx",), ("model.onnx", "model.skops")])
def test_import_converges_after_an_earlier_copy_stopped_halfway(
    registry: Registry, target: Registry, other_store: ObjectStore, copied_before: tuple[str, ...]
) -> None:
    register(registry, "a")
    for name in copied_before:  # what a crashed earlier run left behind
        other_store.put(key(1, name), registry.read_artifact(1, name), if_none_match=True)
    assert target.list_versions() == []

    copied = target.import_version(registry, 1, actor="promoter")

    assert target.list_versions() == [1]
    assert target.verify_version(1).sha256 == copied.sha256 == registry.get_version(1).sha256


def test_import_of_a_tampered_source_copies_nothing(
    registry: Registry, target: Registry, store: ObjectStore, other_store: ObjectStore
) -> None:
    register(registry, "a")
    _tamper(store, key(1, "model.onnx"), _flip_one_byte)

    with pytest.raises(IntegrityError):
        target.import_version(registry, 1, actor="promoter")

    assert other_store.list("models/") == []


def test_import_of_a_version_the_source_lacks_raises_version_not_found(
    registry: Registry, target: Registry
) -> None:
    with pytest.raises(VersionNotFound, match="no version 4"):
        target.import_version(registry, 4, actor="promoter")


class _HookedStore:
    """Delegates to a store, calling `before_put(key)` before each write (to inject races and
    failures at an exact point, on any backend)."""

    def __init__(self, inner: ObjectStore, *, before_put: Callable[[str], None]) -> None:
        self.inner = inner
        self.before_put = before_put

    @property
    def uri(self) -> str:
        return self.inner.uri

    def get(self, key: str) -> StoredObject:
        return self.inner.get(key)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        self.before_put(key)
        return self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match)


def test_given_two_copies_of_the_same_version_racing_then_both_succeed_with_the_same_model(
    registry: Registry, other_store: ObjectStore
) -> None:
    register(registry, "a")
    rival = Registry(other_store, "fraud")
    raced: list[str] = []

    def rival_finishes_first(key: str) -> None:
        if key.endswith("/manifest.json") and not raced:
            raced.append(key)
            rival.import_version(registry, 1, actor="rival")

    racing = Registry(_HookedStore(other_store, before_put=rival_finishes_first), "fraud")

    copied = racing.import_version(registry, 1, actor="me")

    assert raced  # the rival really did win the manifest write
    assert copied.sha256 == registry.get_version(1).sha256
    assert copied.manifest["source"]["copied_by"] == "rival"
    assert rival.verify_version(1).manifest == copied.manifest
    assert len(events_of(rival, "copied")) == 1


# Upload progress ---------------------------------------------------------------------------------


class _UploadLog:
    """An `on_upload` callback recording each call and what the registry showed at that moment."""

    def __init__(self, registry: Registry, version: int) -> None:
        self.registry = registry
        self.version = version
        self.calls: list[tuple[str, int, int]] = []
        self.stored_at_call: list[bool] = []
        self.visible_at_call: list[bool] = []

    def __call__(self, name: str, done: int, total: int) -> None:
        self.calls.append((name, done, total))
        stored = self.registry.store.list(key(self.version, name))
        self.stored_at_call.append(stored == [key(self.version, name)])
        self.visible_at_call.append(self.version in self.registry.list_versions())


def _stored_sizes(registry: Registry, version: int) -> dict[str, int]:
    names = ["model.onnx", "model.skops", "manifest.json"]
    return {name: len(registry.store.get(key(version, name)).data) for name in names}


def _assert_reported_each_object_after_storing_it(log: _UploadLog, registry: Registry) -> None:
    sizes = _stored_sizes(registry, log.version)
    total = sum(sizes.values())
    # Once per object, in the order stored: the artifacts, then the manifest.
    assert [name for name, _, _ in log.calls] == ["model.onnx", "model.skops", "manifest.json"]
    assert [done for _, done, _ in log.calls] == [
        sizes["model.onnx"],
        sizes["model.onnx"] + sizes["model.skops"],
        total,
    ]
    assert {t for _, _, t in log.calls} == {total}
    assert log.stored_at_call == [True, True, True]
    # The version appears only with its manifest, so only at the last call.
    assert log.visible_at_call == [False, False, True]
    assert registry.verify_version(log.version).number == log.version


def test_register_reports_each_stored_object_with_bytes_done_and_total(
    registry: Registry,
) -> None:
    register(registry, "a")
    log = _UploadLog(registry, 2)

    assert register(registry, "b", on_upload=log) == 2

    _assert_reported_each_object_after_storing_it(log, registry)


def test_register_reports_only_the_number_it_won(registry: Registry, store: ObjectStore) -> None:
    store.put(key(1, "model.onnx"), b"someone else's claim", if_none_match=True)
    claims: list[str] = []

    def rival_claims_two_first(k: str) -> None:
        if k == key(2, "model.onnx") and not claims:
            claims.append(k)
            store.put(k, b"a rival's claim", if_none_match=True)

    racing = Registry(_HookedStore(store, before_put=rival_claims_two_first), "fraud")
    log = _UploadLog(racing, 3)

    assert register(racing, "b", on_upload=log) == 3

    assert claims  # the first number tried was lost to the rival: nothing reported for it
    _assert_reported_each_object_after_storing_it(log, registry)


def test_import_reports_each_copied_object_with_bytes_done_and_total(
    registry: Registry, target: Registry
) -> None:
    register(registry, "a")
    log = _UploadLog(target, 1)

    copied = target.import_version(registry, 1, actor="promoter", on_upload=log)

    assert copied.sha256 == registry.get_version(1).sha256
    _assert_reported_each_object_after_storing_it(log, target)


def test_import_of_a_version_already_there_reports_nothing(
    registry: Registry, target: Registry
) -> None:
    register(registry, "a")
    target.import_version(registry, 1, actor="promoter")
    log = _UploadLog(target, 1)

    target.import_version(registry, 1, actor="promoter", on_upload=log)

    assert log.calls == []


def test_given_on_upload_fails_then_the_version_stays_invisible_like_after_a_crash(
    registry: Registry,
) -> None:
    def fail(name: str, done: int, total: int) -> None:
        if name == "model.skops":
            raise KeyboardInterrupt  # e.g. Ctrl-C while the progress bar is drawn

    with pytest.raises(KeyboardInterrupt):
        register(registry, "a", on_upload=fail)

    assert registry.list_versions() == []
    assert register(registry, "b") == 2
