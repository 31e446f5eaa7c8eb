"""Partitioning an activity history by account: the one shuffle behind batch scoring, feature
backfill and training on long histories.

Point-in-time aggregates need every event of an account, in time order, in one place; a history
arrives as files (or S3 objects) of any size, each holding events of many accounts. So a run has
two steps, the same on one machine and on Step Functions:

1. Shuffle, one work item per input range: a `.jsonl` file is cut into ranges of about
   `RANGE_BYTES` (a line belongs to the range its first byte is in), and so is a `.jsonl.gz`
   file's decompressed content, into at most `MAX_GZ_RANGES` ranges (gzip cannot be entered in
   the middle: each range's item decompresses the file from its start, and parses only its own
   lines). Each item reads its lines once, validates each
   event (`sds.kernel.events.validate`: a problem stops the run and names the file and line),
   and writes one object holding, for each partition p, its events (those of the accounts with
   `partition_of(account) == p`) and then its id segment: a fixed-size row per event whose id
   has `partition_of(event_id) == p` (`ID_ROW`: a digest of the id, the partition its account
   went to, its line in the item), with the offsets of every segment (`Shuffled`). Memory is
   bounded: segments are spooled to local files while the item is read.
2. Per partition p (`read_partition`, then `load_partition`): read p's segments of every item
   (one read per item: they are adjacent). First the id rows: every occurrence of an event id
   is in one partition's id segments, whatever its account, so an id held under two accounts
   (its occurrences went to two account partitions) is found there, and the run stops naming
   the id, both accounts and both lines (`check_event_ids`). Then the events: parse, drop
   redelivered ones (the same id with the same content, which is always the same account and
   so the same partition; the same id with other content is an error), and order them by time
   (ties keep input order). All of an account's events are there, so its aggregates are exact;
   memory holds one partition (about `PARTITION_BYTES` of JSON; its id rows, 22 bytes each,
   take under 100 bytes each while they are sorted, a small share of what its events take).

So the batch runs and partitioned training accept exactly the histories `training.data.
read_history` accepts, in bounded memory: no step holds every event id of the history.

Each spooled line carries its position in its item, so input order (and so every result) does
not depend on how many partitions or workers there were.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from sds.kernel.batch.storage import Storage, StorageError, StoredFile, iter_chunks
from sds.kernel.errors import SdsError
from sds.kernel.events import conflict_message, validate
from sds.kernel.features import times_of

MIB = 1024 * 1024
HISTORY_SUFFIXES = (".jsonl", ".jsonl.gz")
LABEL = "is_fraud"  # a payment's label in training data; carried through to batch outputs
RANGE_BYTES = 64 * MIB  # a work item's share of a file (of a .gz file's decompressed content)
# A .gz file's ranges each decompress it from the start up to their own lines, about 16 times
# faster than the lines are parsed, validated and spooled (measured: 284 against 18 MiB/s of
# JSON). So a range costs at most one pass of decompression beyond its own work, and more ranges
# than this would spend more on decompressing again than they save: a larger file gets larger
# ranges instead.
MAX_GZ_RANGES = 16
PARTITION_BYTES = 32 * MIB  # JSON per partition: one partition's events fit in a worker's memory
MAX_PARTITIONS = 10_000
# At least this many partitions (unless they would hold less than a MiB each), so that a run can
# use many cores; not tied to this machine's count: a run resumes with the same partitions
# wherever it is started again.
MIN_PARTITIONS = 64
READ_CHUNK = 8 * MIB
INFLATE_FEED = 64 * 1024  # compressed bytes decompressed at a time
SPOOL_BUFFER = 16 * MIB  # an item's events held in memory before they go to its spool files
_SAMPLE = MIB  # compressed bytes decompressed to estimate a .gz file's size

# An id row: the event id's blake2b digest (16 bytes), the partition its account went to, and its
# line in the item (the position its event's record carries). Two different ids share a digest
# with probability about n**2 / 2**129 among n events (below 1e-18 at 10 billion), and even then
# nothing is refused wrongly: a clash is confirmed on the events themselves before it is named.
ID_DIGEST_BYTES = 16
_LINE = (1 << 32) - 1  # a line's position in its item, in an input order (item << 32 | position)
ID_ROW = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("account", "<u2"), ("position", "<u4")])
_ID_ROW = struct.Struct("<16sHI")
assert ID_ROW.itemsize == _ID_ROW.size == 22 and MAX_PARTITIONS <= 2**16


class HistoryError(SdsError, ValueError):
    """The history is missing or malformed; the message names the file and line."""


GZIP_MAGIC = b"\x1f\x8b"  # how every gzip file starts (RFC 1952); no JSON Lines file can


def misnamed_gzip(name: str, head: bytes) -> str | None:
    """What is wrong with a file whose first bytes `head` are gzip's but whose name does not
    end in .gz, or None. The name says how a file is read (and, for a plain one, where it can
    be cut into work items), as it does for pandas, DuckDB or Spark; read as text, such a file
    would fail on its first line as invalid JSON, which does not say what to do."""
    if name.endswith(".gz") or not head.startswith(GZIP_MAGIC):
        return None
    base = name.rsplit("/", 1)[-1]
    return f"{name}: gzip-compressed, but its name does not end in .gz: rename it {base}.gz"


@dataclass(frozen=True)
class Source:
    """One input file (or object) of a history."""

    key: str  # relative to the input storage ("" when the input is this one file)
    name: str  # how messages name it
    size: int
    version: str  # changes with its content: mtime locally, the ETag on S3

    @property
    def compressed(self) -> bool:
        return self.name.endswith(".gz")

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "size": self.size, "version": self.version}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Source:
        return cls(
            str(document["key"]),
            str(document["name"]),
            int(document["size"]),
            str(document["version"]),
        )


@dataclass(frozen=True)
class Item:
    """One unit of the shuffle: the lines whose first byte is in [start, end) of a file's
    bytes, or of a .gz file's decompressed content. A .gz file's last range reads to its end
    (`to_end`): its `end` is where the plan estimated the content ends."""

    index: int
    source: Source
    start: int
    end: int
    to_end: bool = False

    @property
    def size(self) -> int:
        """The bytes the item reads (as estimated, for a .gz file's last range)."""
        return self.end - self.start

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "source": self.source.to_json(),
            "start": self.start,
            "end": self.end,
            "to_end": self.to_end,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Item:
        return cls(
            int(document["index"]),
            Source.from_json(document["source"]),
            int(document["start"]),
            int(document["end"]),
            bool(document["to_end"]),
        )


def list_sources(storage: Storage) -> list[Source]:
    """The history files of a file, folder or S3 prefix (`.jsonl`, `.jsonl.gz`), in name order.

    A location that is one file is read whatever its name (`.gz` means gzip)."""
    files: list[StoredFile] = storage.list()
    if len(files) == 1 and files[0].key == "":
        only = files[0]
        return [Source("", storage.name(""), only.size, only.version)]
    found = [
        Source(f.key, storage.name(f.key), f.size, f.version)
        for f in files
        if f.key.endswith(HISTORY_SUFFIXES) and not _hidden(f.key)
    ]
    if not found:
        if not files and not storage.exists(""):
            raise HistoryError(f"{storage.uri}: no such file, folder or prefix")
        raise HistoryError(f"{storage.uri}: no .jsonl or .jsonl.gz files")
    return found


def _hidden(key: str) -> bool:
    # A run's own bookkeeping (`_run/`) and editors' or tools' dot files are not history.
    return any(part.startswith(("_", ".")) for part in key.split("/"))


def plan_items(
    sources: Sequence[Source], json_bytes: Sequence[int], range_bytes: int = RANGE_BYTES
) -> list[Item]:
    """Work items: ranges of about `range_bytes` of each plain file, and of each .gz file's
    decompressed content, whose size `json_bytes` estimates (`estimated_sizes`), in at most
    `MAX_GZ_RANGES` ranges; a .gz file's last range reads to its end, whatever the estimate."""
    if range_bytes < 1:
        raise ValueError("range_bytes must be positive")
    items: list[Item] = []
    for source, estimate in zip(sources, json_bytes, strict=True):
        if source.compressed:
            ranges = min(MAX_GZ_RANGES, max(1, -(-estimate // range_bytes)))
            step = -(-estimate // ranges)
            for k in range(ranges):
                last = k == ranges - 1
                end = max(estimate, k * step) if last else (k + 1) * step
                items.append(Item(len(items), source, k * step, end, to_end=last))
        elif source.size <= range_bytes:
            items.append(Item(len(items), source, 0, source.size))
        else:
            for start in range(0, source.size, range_bytes):
                end = min(start + range_bytes, source.size)
                items.append(Item(len(items), source, start, end))
    return items


def estimated_sizes(storage: Storage, sources: Sequence[Source]) -> list[int]:
    """About how many bytes of JSON each source holds: a .gz file's size times the ratio of its
    first MiB decompressed."""
    sizes = []
    for source in sources:
        if not source.compressed or source.size == 0:
            sizes.append(source.size)
            continue
        head = storage.read(source.key, 0, _SAMPLE)
        decompressor = zlib.decompressobj(wbits=31)
        try:
            inflated = len(decompressor.decompress(head, 64 * _SAMPLE))
        except zlib.error as exc:
            raise HistoryError(f"{source.name}: not a valid gzip file ({exc})") from None
        consumed = len(head) - len(decompressor.unconsumed_tail) - len(decompressor.unused_data)
        ratio = inflated / consumed if consumed else 1.0
        sizes.append(round(source.size * max(ratio, 1.0)))
    return sizes


def partition_count(json_bytes: int, *, partition_bytes: int = PARTITION_BYTES) -> int:
    """Enough partitions for each to hold at most about `partition_bytes` of JSON, and at least
    `MIN_PARTITIONS` of a MiB or more."""
    wanted = -(-json_bytes // max(partition_bytes, 1))
    spread = min(MIN_PARTITIONS, json_bytes // MIB)
    return int(min(MAX_PARTITIONS, max(wanted, spread, 1)))


def partition_of(account_id: str, partitions: int) -> int:
    """The partition every event of an account goes to (stable across runs and machines)."""
    return zlib.crc32(account_id.encode("utf-8", "surrogatepass")) % partitions


# Step 1: shuffle one item ------------------------------------------------------------------------


@dataclass
class Shuffled:
    """What shuffling one item wrote: its object's partition segments and what it read."""

    item: int
    # Partition p's events are bytes [offsets[2p], offsets[2p + 1]) of the item's object, its id
    # rows the bytes right after them, [offsets[2p + 1], offsets[2p + 2]).
    offsets: list[int]
    events: int = 0
    payments: int = 0
    labelled: int = 0  # payments carrying a label
    fraud: int = 0  # of which labelled fraud
    read_bytes: int = 0  # the item's size (`Item.size`: a .gz file's last range, as estimated)

    def to_json(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "offsets": self.offsets,
            "events": self.events,
            "payments": self.payments,
            "labelled": self.labelled,
            "fraud": self.fraud,
            "read_bytes": self.read_bytes,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Shuffled:
        return cls(
            item=int(document["item"]),
            offsets=[int(o) for o in document["offsets"]],
            events=int(document["events"]),
            payments=int(document["payments"]),
            labelled=int(document["labelled"]),
            fraud=int(document["fraud"]),
            read_bytes=int(document["read_bytes"]),
        )

    def segment(self, partition: int) -> tuple[int, int]:
        """Where partition `partition`'s events are in the item's object."""
        return self.offsets[2 * partition], self.offsets[2 * partition + 1]

    def id_segment(self, partition: int) -> tuple[int, int]:
        """Where the id rows of the events whose id `partition_of` sends to `partition` are."""
        return self.offsets[2 * partition + 1], self.offsets[2 * partition + 2]


def item_lines(storage: Storage, item: Item) -> Iterator[tuple[str, bytes]]:
    """(where, line) of each line of the item: `where` names the file and line (or, inside a
    plain file's later ranges, the line's byte offset)."""
    name = item.source.name
    base = max(item.start - 1, 0)  # where `_lines` starts reading (see there)
    if item.source.compressed:
        skipped = _Skipped()
        end = _NO_END if item.to_end else item.end
        chunks = _inflated(storage, item.source, base, skipped)
        # Line numbers: the newlines before the range's first line (one more, when the range
        # does not start the file: the newline that ends the line before it).
        for index, (_, line) in enumerate(_lines(chunks, base, item.start, end)):
            yield f"{name}:{skipped.newlines + (item.start > 0) + index + 1}", line
        return
    lines = _lines(
        iter_chunks(storage, item.source.key, base, READ_CHUNK), base, item.start, item.end
    )
    if item.start == 0:
        for number, (_, line) in enumerate(lines, start=1):
            yield f"{name}:{number}", line
        return
    for offset, line in lines:
        yield f"{name} (the line at byte {offset})", line


_NO_END = 1 << 63  # a .gz file's last range: every line to the end of its content


def _lines(chunks: Iterable[bytes], base: int, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of every line whose first byte lies in [start, end), from `chunks`: the
    content from offset `base` on, which is `start - 1` when `start` > 0 (whether that byte is a
    newline says whether a line starts at `start`)."""
    skipping = start > 0  # the line straddling `start` belongs to the range before
    buffer = b""
    for chunk in chunks:
        buffer = buffer + chunk if buffer else chunk
        cursor = 0
        if skipping:
            newline = buffer.find(b"\n")
            if newline < 0:
                base += len(buffer)
                buffer = b""
                continue
            cursor, skipping = newline + 1, False
        while base + cursor < end:
            newline = buffer.find(b"\n", cursor)
            if newline < 0:
                break
            yield base + cursor, buffer[cursor:newline].rstrip(b"\r")
            cursor = newline + 1
        else:
            return
        base += cursor
        buffer = buffer[cursor:]
    if buffer and not skipping and base < end:
        yield base, buffer.rstrip(b"\r")


@dataclass
class _Skipped:
    """The newlines in the decompressed content before the offset `_inflated` starts at."""

    newlines: int = 0


def _inflated(storage: Storage, source: Source, base: int, skipped: _Skipped) -> Iterator[bytes]:
    """A .gz file's decompressed content from offset `base` on, a chunk at a time; the newlines
    before `base` are counted in `skipped`. HistoryError if it is not valid gzip."""
    position = 0
    for chunk in _decompressed(storage, source):
        if position + len(chunk) <= base:
            skipped.newlines += chunk.count(b"\n")
            position += len(chunk)
            continue
        if position < base:
            skipped.newlines += chunk.count(b"\n", 0, base - position)
            chunk = chunk[base - position :]
            position = base
        position += len(chunk)
        yield chunk


def _decompressed(storage: Storage, source: Source) -> Iterator[bytes]:
    """A .gz file's content, decompressed a chunk at a time; HistoryError if it is not gzip."""
    try:
        with closing(storage.stream(source.key)) as raw:
            yield from _inflate(iter(partial(raw.read, READ_CHUNK), b""))
    except (EOFError, zlib.error) as exc:
        raise HistoryError(f"{source.name}: not a valid gzip file ({exc})") from None


def _inflate(compressed: Iterable[bytes]) -> Iterator[bytes]:
    """Gzip members decompressed, as `gzip.GzipFile` reads them: zero bytes after a member are
    padding, anything else must be another member. Fed `INFLATE_FEED` bytes at a time, so each
    chunk is at most about a thousand times that (deflate's largest ratio)."""
    decompressor: Any = None
    members = 0
    for chunk in compressed:
        for at in range(0, len(chunk), INFLATE_FEED):
            data = chunk[at : at + INFLATE_FEED]
            while data:
                if decompressor is None:
                    if members and not (data := data.lstrip(b"\x00")):
                        break
                    decompressor = zlib.decompressobj(wbits=31)
                if inflated := decompressor.decompress(data):
                    yield inflated
                data = b""
                if decompressor.eof:
                    data, decompressor = decompressor.unused_data, None
                    members += 1
    if decompressor is not None:
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")


def parse_event(line: bytes, where: str, *, labels_required: bool) -> dict[str, Any] | None:
    """The validated event on one line (None for a blank line); HistoryError names a problem."""
    if not line.strip():
        return None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise HistoryError(f"{where}: invalid JSON ({str(exc)[:100]})") from None
    problems = validate(record, where=where, extra_fields=(LABEL,))
    if problems:
        raise HistoryError(f"{problems[0].field}: {problems[0].reason}")
    if record["type"] == "payment":
        if LABEL in record:
            if not isinstance(record[LABEL], bool):
                raise HistoryError(f"{where}.{LABEL}: a payment's label must be true or false")
        elif labels_required:
            raise HistoryError(f"{where}.{LABEL}: a payment's label must be true or false")
    elif LABEL in record:
        raise HistoryError(f"{where}.{LABEL}: only payments are labelled")
    return dict(record)


@dataclass
class _Spool:
    """An item's records grouped by segment: in memory, then in one local file per segment."""

    segments: int
    root: Path | None = None
    buffers: list[bytearray] = field(default_factory=list)
    written: list[int] = field(default_factory=list)
    held: int = 0
    folder: tempfile.TemporaryDirectory[str] | None = None

    def __post_init__(self) -> None:
        self.buffers = [bytearray() for _ in range(self.segments)]
        self.written = [0] * self.segments

    def add(self, segment: int, record: bytes, id_segment: int, id_row: bytes) -> None:
        """One event: its record into its account's segment, its id row into its id's."""
        self.buffers[segment] += record
        self.buffers[id_segment] += id_row
        self.held += len(record) + len(id_row)
        if self.held >= SPOOL_BUFFER:
            self.flush()

    def _path(self, segment: int) -> Path:
        assert self.folder is not None
        return Path(self.folder.name) / str(segment)

    def flush(self) -> None:
        if self.folder is None:
            self.folder = tempfile.TemporaryDirectory(prefix="sds-shuffle-", dir=self.root)
        for segment, buffer in enumerate(self.buffers):
            if buffer:
                with open(self._path(segment), "ab") as handle:
                    handle.write(buffer)
                self.written[segment] += len(buffer)
                buffer.clear()
        self.held = 0

    def write(self, handle: Any) -> list[int]:
        """Every segment's records, in segment order, into `handle`; the offsets."""
        offsets = [0]
        for segment, buffer in enumerate(self.buffers):
            if self.written[segment]:
                with open(self._path(segment), "rb") as spooled:
                    while chunk := spooled.read(READ_CHUNK):
                        handle.write(chunk)
            handle.write(buffer)
            offsets.append(offsets[-1] + self.written[segment] + len(buffer))
        return offsets

    def close(self) -> None:
        if self.folder is not None:
            self.folder.cleanup()


def shuffle_item(
    storage: Storage,
    item: Item,
    partitions: int,
    output: Storage,
    key: str,
    *,
    labels_required: bool = False,
    spool_root: Path | None = None,
) -> Shuffled:
    """Read, validate and partition one item's events into the object `key` of `output`, each
    partition's events followed by its id rows (`Shuffled.segment`, `Shuffled.id_segment`)."""
    spool = _Spool(2 * partitions, spool_root)
    pack_id = _ID_ROW.pack
    result = Shuffled(item=item.index, offsets=[])
    try:
        for position, (where, line) in enumerate(item_lines(storage, item)):
            try:
                event = parse_event(line, where, labels_required=labels_required)
            except HistoryError:
                # A gzip file under a plain name fails on its first line, in whichever of its
                # items is read first: say what it is (two bytes read, on the way out only).
                if not item.source.compressed:
                    head = storage.read(item.source.key, 0, len(GZIP_MAGIC))
                    problem = misnamed_gzip(item.source.name, head)
                    if problem is not None:
                        raise HistoryError(problem) from None
                raise
            if event is None:
                continue
            result.events += 1
            if event["type"] == "payment":
                result.payments += 1
                if LABEL in event:
                    result.labelled += 1
                    result.fraud += bool(event[LABEL])
            account = partition_of(event["account_id"], partitions)
            event_id = event["event_id"]
            spool.add(
                2 * account,
                b"%d\t%s\n" % (position, line.strip()),
                2 * partition_of(event_id, partitions) + 1,
                pack_id(_id_digest(event_id), account, position),
            )
        with output.open_write(key) as handle:
            result.offsets = spool.write(handle)
    finally:
        spool.close()
    result.read_bytes = item.size
    return result


# Step 2: one partition ----------------------------------------------------------------------------


def _id_digest(event_id: str) -> bytes:
    return hashlib.blake2b(
        event_id.encode("utf-8", "surrogatepass"), digest_size=ID_DIGEST_BYTES
    ).digest()


@dataclass(frozen=True)
class Origin:
    """Where a run's events came from: its items (by index) and the storage they were read
    from. It names an event's line the way validation does (`item_lines`)."""

    items: Sequence[Item]
    storage: Storage

    def where(self, item: int, position: int) -> str:
        """The file and line of the line at `position` (0-based) of item `item`; in a plain
        file's later range, the line's byte offset (found by reading the range again, as a
        .gz file's later range is for its line number)."""
        found = self.items[item]
        if found.start == 0:
            return f"{found.source.name}:{position + 1}"
        try:
            for index, (where, _) in enumerate(item_lines(self.storage, found)):
                if index == position:
                    return where
        except (HistoryError, StorageError):
            pass  # the input changed or went away since the shuffle: say what is known
        return f"{found.source.name} (line {position + 1} of the range from byte {found.start})"


def read_partition(
    storage: Storage,
    shuffled: Sequence[tuple[str, Shuffled]],
    partition: int,
    *,
    check_ids: Origin | None = None,
) -> list[tuple[int, bytes]]:
    """(input order, event line) of every event of `partition`, from each item's object
    (`shuffled`: (object key, what shuffling the item wrote)).

    With `check_ids` (the run's origin), the partition's id rows are read in the same read, and
    an event id held under two accounts anywhere in the history is refused first
    (`check_event_ids`): every partition's check together covers every id once."""
    lines: list[tuple[int, bytes]] = []
    ids: list[bytes] = []
    counts: list[tuple[int, int]] = []  # (item, its id rows)
    for key, done in shuffled:
        start, split = done.segment(partition)
        end = done.id_segment(partition)[1] if check_ids is not None else split
        if end <= start:
            continue
        data = storage.read(key, start, end)
        if len(data) != end - start:
            raise HistoryError(
                f"{storage.name(key)}: holds {len(data)} bytes of partition {partition}, "
                f"expected {end - start} (the shuffle's work files changed under the run)"
            )
        if end > split:
            ids.append(data[split - start :])
            counts.append((done.item, (end - split) // ID_ROW.itemsize))
            data = data[: split - start]
        base = done.item << 32
        for record in data.splitlines():
            position, _, line = record.partition(b"\t")
            lines.append((base | int(position), line))
    if check_ids is not None and ids:
        rows = np.frombuffer(b"".join(ids), ID_ROW)
        ids.clear()
        items = np.repeat(
            np.array([i for i, _ in counts], np.uint32), np.array([n for _, n in counts])
        )
        check_event_ids(rows, items, storage, shuffled, check_ids)
    return lines


def check_event_ids(
    rows: np.ndarray,
    items: np.ndarray,
    storage: Storage,
    shuffled: Sequence[tuple[str, Shuffled]],
    origin: Origin,
) -> None:
    """Refuse an event id that `rows` (id rows, `ID_ROW`, each of item `items[i]`) show under
    two accounts: HistoryError names the id, both accounts and both lines (its first occurrence
    and the first under another account). The same id under one account is a redelivery, or a
    conflict `load_partition` names: both are in one account partition.

    A digest seen under two account partitions is confirmed on the events themselves (read
    back from the shuffle's objects), so two ids that share a digest are never refused."""
    if len(rows) < 2:
        return
    hi, lo, account = rows["hi"], rows["lo"], rows["account"]
    order = np.lexsort((account, lo, hi))
    hi, lo, account = hi[order], lo[order], account[order]
    same = (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
    clash = same & (account[1:] != account[:-1])
    if not clash.any():
        return
    # Runs of one digest in sorted order; those that hold two account partitions, each in input
    # order, the run whose first occurrence comes first in the input first.
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    clashing = np.logical_or.reduceat(np.append(clash, False), starts)
    ends = np.append(starts[1:], len(order))
    position = rows["position"]
    groups = []
    for first, last in zip(starts[clashing].tolist(), ends[clashing].tolist(), strict=True):
        group = sorted(order[first:last].tolist(), key=lambda r: (items[r], position[r]))
        groups.append(group)
    groups.sort(key=lambda g: (items[g[0]], position[g[0]]))
    objects = {done.item: (key, done) for key, done in shuffled}
    segments: dict[tuple[int, int], bytes] = {}

    def event_at(item: int, partition: int, at: int) -> dict[str, Any]:
        if (item, partition) not in segments:
            key, done = objects[item]
            segments[item, partition] = b"\n" + storage.read(key, *done.segment(partition))
        data = segments[item, partition]
        found = data.find(b"\n%d\t" % at)
        if found < 0:
            raise HistoryError(
                f"{storage.name(objects[item][0])}: has no line {at} in partition {partition} "
                "(the shuffle's work files changed under the run)"
            )
        line_end = data.find(b"\n", found + 1)
        line = data[found + 1 : None if line_end < 0 else line_end].partition(b"\t")[2]
        event: dict[str, Any] = orjson.loads(line)
        return event

    for group in groups:
        seen: dict[str, tuple[int, int, str]] = {}  # id -> (item, position, account id)
        for row in group:
            item, at = int(items[row]), int(position[row])
            event = event_at(item, int(rows["account"][row]), at)
            event_id, account_id = event["event_id"], event["account_id"]
            known = seen.setdefault(event_id, (item, at, account_id))
            if known[2] != account_id:
                raise HistoryError(
                    conflict_message(
                        event_id,
                        (known[2], origin.where(known[0], known[1])),
                        (account_id, origin.where(item, at)),
                    )
                )


@dataclass(frozen=True)
class PartitionHistory:
    """One partition's distinct events in time order, labels apart."""

    events: list[dict[str, Any]]  # without labels
    times: np.ndarray  # occurred_at, microseconds (int64)
    order: np.ndarray  # input order (item << 32 | line position), the tie-breaker (int64)
    labels: dict[str, bool]  # event id -> label, for the payments that carry one
    duplicates: int

    @property
    def payments(self) -> np.ndarray:
        return np.fromiter(
            (i for i, e in enumerate(self.events) if e["type"] == "payment"), np.int64
        )


def load_partition(
    lines: Sequence[tuple[int, bytes]], origin: Origin | None = None
) -> PartitionHistory:
    """Parse a partition's events, drop redeliveries and order them by (time, input order).

    The same id with other content is refused (HistoryError), naming both lines when `origin`
    (the run's) is given."""
    records: dict[str, tuple[int, dict[str, Any]]] = {}
    duplicates = 0
    for position, line in sorted(lines, key=lambda pair: pair[0]):
        event = orjson.loads(line)
        event_id = event["event_id"]
        known = records.get(event_id)
        if known is not None:
            if known[1] != event:
                if origin is None:
                    raise HistoryError(f"event {event_id} appears twice with different content")
                raise HistoryError(
                    conflict_message(
                        event_id,
                        (known[1]["account_id"], origin.where(known[0] >> 32, known[0] & _LINE)),
                        (event["account_id"], origin.where(position >> 32, position & _LINE)),
                    )
                )
            duplicates += 1
            continue
        records[event_id] = (position, event)
    labels: dict[str, bool] = {}
    events: list[dict[str, Any]] = []
    for _, event in records.values():
        if LABEL in event:
            labels[event["event_id"]] = bool(event.pop(LABEL))
        events.append(event)
    times = times_of(events)
    order = np.fromiter((p for p, _ in records.values()), np.int64, len(events))
    ranked = np.lexsort((order, times))
    return PartitionHistory(
        events=[events[i] for i in ranked],
        times=times[ranked],
        order=order[ranked],
        labels=labels,
        duplicates=duplicates,
    )


def default_workers() -> int:
    return max(
        1,
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
    )
