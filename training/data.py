"""Event history for training: activity events as JSON Lines, read, validated and time-ordered.

History is JSON Lines (`.jsonl` or `.jsonl.gz`), one activity event per line, any kind
(`sds.kernel.events`: payments and logins), each payment labelled with `is_fraud`. `read_history`
takes a file, a directory or an `s3://bucket/prefix`; a redelivered event (the same event id
with the same content) counts once, and the same id with other content is an error. The
synthetic generator is `training.synthetic`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sds.kernel.batch.shuffle import GZIP_MAGIC, HistoryError, list_sources, misnamed_gzip
from sds.kernel.batch.storage import StorageError, open_storage
from sds.kernel.errors import SdsError
from sds.kernel.events import validate
from sds.kernel.features import times_of
from sds.kernel.files import sync_folder

LABEL = "is_fraud"
_WRITE_BATCH = 10_000  # lines encoded and written at a time


class DataError(SdsError, ValueError):
    """Training data is missing or malformed; the message names the file and line."""


def write_jsonl(events: Iterable[Mapping[str, Any]], path: Path) -> Path:
    """Write events as JSON Lines, streaming (any iterable, held a batch of lines at a time);
    `.gz` suffix compresses (deterministically: no mtime, no file name). The file appears only
    once it is complete and on disk, replacing any file at `path`: a failure or an interruption
    (Ctrl-C, SIGTERM) leaves `path` as it was and no partial file beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own ("x": never an existing file), so a second writer of the same path
    # (another `sds generate --force`) writes its own file instead of truncating this one.
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        with open(partial, "xb") as raw:
            # gzip's trailer is written as it closes; the file itself stays open to be synced.
            with (
                gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0)
                if path.suffix == ".gz"
                else contextlib.nullcontext(raw)
            ) as out:
                batch: list[str] = []
                for event in events:
                    batch.append(json.dumps(event, separators=(",", ":")) + "\n")
                    if len(batch) >= _WRITE_BATCH:
                        out.write("".join(batch).encode())
                        batch.clear()
                out.write("".join(batch).encode())
            # On disk before it takes the name, as the lock and the registry write theirs: a
            # power cut after the rename must not leave an empty file that looks like history.
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, path)
        sync_folder(path.parent)
    finally:
        partial.unlink(missing_ok=True)
    return path


@dataclass(frozen=True)
class History:
    """Activity events in time order, the labelled payments among them, and a fingerprint of
    exactly the bytes they came from."""

    events: list[dict[str, Any]]  # every distinct event, without labels, in time order
    times: np.ndarray  # occurred_at of each event, microseconds since the epoch (int64)
    payments: np.ndarray  # indices of the payments in `events`
    labels: list[bool]  # per payment
    fingerprint: str
    sources: list[str]
    duplicates: int = 0

    @property
    def payment_events(self) -> list[dict[str, Any]]:
        return [self.events[i] for i in self.payments]

    @property
    def payment_times(self) -> np.ndarray:
        return np.asarray(self.times[self.payments])

    def timestamp(self, payment: int) -> str:
        """The `occurred_at` of the payment at this position, as written in the data."""
        return str(self.events[int(self.payments[payment])]["occurred_at"])


def sources(location: str | Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each history file of a file, directory or s3:// prefix, in name order.

    The files are those the batch runs and partitioned training read, listed by the same
    function (`sds.kernel.batch.shuffle.list_sources`: `.jsonl` and `.jsonl.gz`, not a run's
    `_run/` or dot files; a location that is one file, whatever its name), which also says what
    is wrong with a location that is not there or holds none, the same for every command."""
    try:
        storage = open_storage(location)
        for source in list_sources(storage):
            yield source.name, storage.read(source.key)
    except (HistoryError, StorageError) as exc:
        raise DataError(str(exc)) from None


def decoded(name: str, raw: bytes) -> bytes:
    """A history file's content: decompressed when its name ends in .gz, as it is otherwise.
    DataError, naming the file, when it is not valid gzip, or is gzip under another name."""
    if name.endswith(".gz"):
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{name}: not a valid gzip file ({exc})") from None
    problem = misnamed_gzip(name, raw[: len(GZIP_MAGIC)])
    if problem is not None:
        raise DataError(problem)
    return raw


def fingerprint_entry(name: str, content_sha256: bytes) -> bytes:
    """What one history file adds to a data fingerprint: its base name and its bytes' sha256
    (so a history fingerprints the same wherever it is copied)."""
    return name.rsplit("/", 1)[-1].encode() + b"\0" + content_sha256


def read_history(location: str | Path) -> History:
    """Read, validate, deduplicate and time-order activity events from a file, directory or
    s3:// prefix; every payment must carry its `is_fraud` label."""
    text = str(location)
    digest = hashlib.sha256()
    records: dict[str, dict[str, Any]] = {}
    labels: dict[str, bool] = {}
    names: list[str] = []
    duplicates = 0
    for name, raw in sources(location):
        names.append(name)
        digest.update(fingerprint_entry(name, hashlib.sha256(raw).digest()))
        data = decoded(name, raw)
        for lineno, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{name}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: invalid JSON ({exc.msg})") from None
            except UnicodeDecodeError:
                raise DataError(f"{where}: not valid UTF-8") from None
            except (ValueError, RecursionError) as exc:  # e.g. a number with 5000 digits
                raise DataError(f"{where}: invalid JSON ({str(exc)[:100]})") from None
            problems = validate(record, where=where, extra_fields=(LABEL,))
            if problems:
                raise DataError(f"{problems[0].field}: {problems[0].reason}")
            event = {k: v for k, v in record.items() if k != LABEL}
            if event["type"] == "payment":
                label = record.get(LABEL)
                if not isinstance(label, bool):
                    raise DataError(f"{where}.{LABEL}: a payment's label must be true or false")
            elif LABEL in record:
                raise DataError(f"{where}.{LABEL}: only payments are labelled")
            known = records.get(event["event_id"])
            if known is not None:
                # The label is content too, as the batch runs' reader and `sds ingest` compare
                # it: a copy labelled otherwise is refused, never a silent relabel.
                if known != event or labels.get(event["event_id"]) != record.get(LABEL):
                    raise DataError(
                        f"{where}: event {event['event_id']} appears twice with different content"
                    )
                duplicates += 1
                continue
            records[event["event_id"]] = event
            if LABEL in record:
                labels[event["event_id"]] = record[LABEL]
    if not records:
        raise DataError(f"{text}: no events")
    events = list(records.values())
    times = times_of(events)
    order = np.argsort(times, kind="stable")
    events = [events[i] for i in order]
    times = times[order]
    payments = np.fromiter((i for i, e in enumerate(events) if e["type"] == "payment"), np.int64)
    if not len(payments):
        raise DataError(f"{text}: no payments among {len(events)} events")
    return History(
        events=events,
        times=times,
        payments=payments,
        labels=[labels[events[i]["event_id"]] for i in payments],
        fingerprint=digest.hexdigest(),
        sources=names,
        duplicates=duplicates,
    )
