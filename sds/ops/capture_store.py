"""Captures and labels on this machine: JSON Lines under `.sds/`, laid out as on S3.

`CaptureFiles` is the capture sink `sds serve` gives the handler (on Lambda it is stdout): each
request's records are appended to `<root>/dt=YYYY-MM-DD/<host>-<pid>-<start>.jsonl`, one file per
server process and day, in one write. `LabelFiles` stores label events the same way, one new file
per batch, written whole or not at all (a temporary file renamed into place), so a batch with a
problem leaves nothing behind. Both use the record schema and partitions of `sds.kernel.capture`,
so training and the monitor read `.sds/capture/<env>` and `s3://<captures-bucket>/captures/` alike.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from sds.kernel.capture import partition
from sds.kernel.lock import atomic_write_text


def _now_us() -> int:
    return time.time_ns() // 1000


class CaptureFiles:
    """A capture sink appending each request's lines to the day's file of this process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._name = f"{socket.gethostname()}-{os.getpid()}-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
        self._lock = threading.Lock()
        self._open: tuple[str, IO[bytes]] | None = None

    def __call__(self, lines: bytes) -> None:
        day = partition(_now_us())
        with self._lock:
            if self._open is None or self._open[0] != day:
                self.close()
                folder = self.root / day
                folder.mkdir(parents=True, exist_ok=True)
                self._open = (day, (folder / self._name).open("ab"))
            handle = self._open[1]
            handle.write(lines)
            handle.flush()  # a reader (training, the monitor) sees every served request

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None


class LabelFiles:
    """Label events of one environment, one file per stored batch, in the day's partition."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def store(self, labels: Iterable[Mapping[str, Any]]) -> Path:
        """Write a validated batch whole and on disk before it takes its name (accepted labels
        survive a power cut); its path."""
        folder = self.root / partition(_now_us())
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        final = folder / f"labels-{stamp}-{uuid.uuid4().hex[:12]}.jsonl"
        text = "".join(json.dumps(dict(label), separators=(",", ":")) + "\n" for label in labels)
        atomic_write_text(final, text)
        return final
