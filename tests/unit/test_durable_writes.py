"""Every file the project writes whole is on disk before it takes its name.

A rename is atomic but says nothing about the data: after a power cut, a file renamed before its
content was synced can come back empty under its final name (ext4's delayed allocation, XFS).
The registry, the lock file, accepted labels, training data, batch outputs and the monitor page
are all written to a hidden file, synced, then renamed (or linked) into place, and the folder is
synced after, so that the name survives too. These tests watch the system calls of each writer:
the file that takes the name must have been synced with exactly the content it carries, and its
folder after it took the name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sds.kernel.batch.storage import LocalStorage
from sds.kernel.lock import atomic_write_text
from sds.kernel.registry.store import FileStore
from sds.ops import monitor_html
from sds.ops.capture_store import LabelFiles
from training.data import write_jsonl


class Syscalls:
    """What was synced (a file's content at the time), what was renamed or linked, and the
    order of it all."""

    def __init__(self) -> None:
        self.synced: dict[str, bytes] = {}
        self.named: list[tuple[str, str]] = []  # (source, target)
        self.order: list[tuple[str, str]] = []  # ("synced" or "named", the path synced or named)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Syscalls:
    seen = Syscalls()
    fsync, replace, link = os.fsync, os.replace, os.link

    def watched_fsync(fd: Any) -> None:
        fd = fd if isinstance(fd, int) else fd.fileno()
        fsync(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        if not os.path.isdir(path):
            seen.synced[path] = Path(path).read_bytes()
        seen.order.append(("synced", path))

    def watched_replace(src: Any, dst: Any, **kwargs: Any) -> None:
        seen.named.append((os.path.realpath(src), os.path.realpath(dst)))
        seen.order.append(("named", os.path.realpath(dst)))
        replace(src, dst, **kwargs)

    def watched_link(src: Any, dst: Any, **kwargs: Any) -> None:
        seen.named.append((os.path.realpath(src), os.path.realpath(dst)))
        seen.order.append(("named", os.path.realpath(dst)))
        link(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", watched_fsync)
    monkeypatch.setattr(os, "replace", watched_replace)
    monkeypatch.setattr(os, "link", watched_link)
    return seen


def _registry_put(root: Path) -> Path:
    FileStore(root).put("models/m/versions/1/model.onnx", b"onnx bytes")
    return root / "models/m/versions/1/model.onnx"


def _registry_create(root: Path) -> Path:
    FileStore(root).put("models/m/versions/1/meta.json", b"{}", if_none_match=True)
    return root / "models/m/versions/1/meta.json"


def _lock_file(root: Path) -> Path:
    atomic_write_text(root / "sds.lock", '{"model": "fraud"}\n')
    return root / "sds.lock"


def _labels(root: Path) -> Path:
    return LabelFiles(root).store([{"event_id": "e1", "label": 1}])


def _training_data(root: Path) -> Path:
    return write_jsonl(({"event_id": f"e{i}"} for i in range(3)), root / "events.jsonl.gz")


def _monitor_page(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(monitor_html, "render", lambda report: "<html>é</html>\n")
    return monitor_html.write({}, root / "monitor.html")


def _batch_put_bytes(root: Path) -> Path:
    LocalStorage(root).put_bytes("out/part-0.jsonl", b'{"score": 0.5}\n')
    return root / "out/part-0.jsonl"


def _batch_create_bytes(root: Path) -> Path:
    LocalStorage(root).create_bytes("_run/claims/item-0", b"claimed")
    return root / "_run/claims/item-0"


def _batch_put_file(root: Path) -> Path:
    source = root.parent / f"{root.name}-source.bin"
    source.write_bytes(b"a copied file\n")
    LocalStorage(root).put_file("out/copied.bin", source)
    return root / "out/copied.bin"


def _batch_open_write(root: Path) -> Path:
    with LocalStorage(root).open_write("out/streamed.jsonl") as handle:
        handle.write(b"first\n")
        handle.write(b"second\n")
    return root / "out/streamed.jsonl"


WRITERS: dict[str, Callable[..., Path]] = {
    "registry put": _registry_put,
    "registry create-only put": _registry_create,
    "lock file": _lock_file,
    "accepted labels": _labels,
    "training data": _training_data,
    "monitor page": _monitor_page,
    "batch put_bytes": _batch_put_bytes,
    "batch create_bytes": _batch_create_bytes,
    "batch put_file": _batch_put_file,
    "batch open_write": _batch_open_write,
}


@pytest.mark.parametrize("writer", WRITERS.values(), ids=WRITERS.keys())
def test_a_file_is_synced_with_its_content_before_it_takes_its_name(
    writer: Callable[..., Path],
    calls: Syscalls,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    args = (root, monkeypatch) if writer is _monitor_page else (root,)
    final = Path(os.path.realpath(writer(*args)))

    sources = [source for source, target in calls.named if target == str(final)]
    assert sources, f"{final.name} was written in place, not renamed or linked into it"
    source = sources[-1]
    assert Path(source).name.startswith("."), f"{source} is visible to readers while written"
    assert source in calls.synced, f"{final.name} took its name before its content was synced"
    assert calls.synced[source] == final.read_bytes(), "the synced content is not what was named"
    named_at = max(i for i, step in enumerate(calls.order) if step == ("named", str(final)))
    assert ("synced", str(final.parent)) in calls.order[named_at:], (
        f"{final.parent} was not synced after {final.name} took its name: a power cut could "
        "lose the name"
    )
    leftovers = [p.name for p in final.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"hidden files left behind: {leftovers}"
