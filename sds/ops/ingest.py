"""`sds ingest`: activity events from files into an environment's local feature store.

The same updater as the feature-updater Lambda (`sds.kernel.online.OnlineFeatures`), over the
embedded SQLite store `sds serve` reads. The whole input is validated first: a file with a
problem stores nothing, and neither does one that reuses an event id the store already holds with
other content (an exact copy of a stored event is a duplicate, counted and skipped). Two clocks:
`wall` (events older than the longest window and its lateness are dropped, as they would be live,
and one dated ahead of this machine's clock refuses the input, as the feature updater refuses it)
and `events` (a replay: time stands at the latest event applied so far, so a history is folded
exactly as it would have been when it happened).
"""

from __future__ import annotations

import codecs
import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sds.kernel.aggregates import LATENESS
from sds.kernel.errors import UsageError, counted
from sds.kernel.events import first_conflict, validate
from sds.kernel.features import TimeCheck, json_int, parse_time
from sds.kernel.featurestore import open_feature_store
from sds.kernel.online import ApplyResult, OnlineFeatures, ahead_of_clock, now_micros
from sds.kernel.signals import reworded
from sds.ops.workspace import Workspace
from sds.progress import Progress
from training.data import LABEL, DataError, decoded, sources

CLOCKS = ("wall", "events")
BATCH = 500
STEPS = 3  # read, check the store's ids, fold
MAX_PROBLEMS_SHOWN = 5


@dataclass
class IngestResult:
    env: str
    store: str
    events: int = 0
    totals: ApplyResult = field(default_factory=ApplyResult)

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "store": self.store,
            "events": self.events,
            **self.totals.to_dict(),
        }


@dataclass
class InputEvents:
    """A validated input: each event with its time, and with where it is (file:line)."""

    timed: list[tuple[int, dict[str, Any]]]
    located: list[tuple[str, dict[str, Any]]]


def read_events(location: str, *, check_time: TimeCheck | None = None) -> InputEvents:
    """Every event of a file, directory or s3:// prefix, validated, with its time and place;
    labels on payments (training data) are dropped. A problem anywhere (a line that is not JSON,
    an invalid event, a time `check_time` refuses, one event id with two contents) raises,
    naming its file and line, before anything is stored: every problem at once, line by line."""
    found: list[tuple[int, dict[str, Any]]] = []
    located: list[tuple[str, dict[str, Any]]] = []
    as_read: list[tuple[str, dict[str, Any]]] = []  # with their labels: what training compares
    problems: list[str] = []
    for name, raw in sources(location):
        data = decoded(name, raw)
        for lineno, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{name}:{lineno}"
            if lineno == 1 and line.startswith(codecs.BOM_UTF8):
                # The standard library's parser would skip it; training and batch runs refuse it.
                problems.append(
                    f"{where}: the file starts with a UTF-8 byte order mark (BOM), which training "
                    "and batch runs refuse too: save it without one"
                )
                continue
            try:
                record = json.loads(line, parse_int=json_int)
            except json.JSONDecodeError as exc:
                problems.append(f"{where}: invalid JSON ({exc.msg})")
                continue
            except UnicodeDecodeError:
                problems.append(f"{where}: not valid UTF-8")
                continue
            except RecursionError:
                problems.append(f"{where}: invalid JSON (nested too deeply)")
                continue
            except ValueError as exc:
                problems.append(f"{where}: invalid JSON ({str(exc)[:100]})")
                continue
            found_problems = validate(
                record, where=where, extra_fields=(LABEL,), check_time=check_time
            )
            if found_problems:
                problems.extend(f"{p.field}: {p.reason}" for p in found_problems)
                continue
            event = {k: v for k, v in record.items() if k != LABEL}
            found.append((parse_time(event["occurred_at"]), event))
            located.append((where, event))
            as_read.append((where, record))
    # One event id with two contents is refused as training and batch runs refuse it, a label
    # included (an exact copy is a redelivery: the updater counts it once).
    conflict = first_conflict(as_read)
    if conflict is not None:
        problems.append(conflict)
    if problems:
        raise refused_input(problems)
    if not found:
        raise DataError(f"{location}: no events")
    return InputEvents(timed=found, located=located)


def refused_input(problems: list[str]) -> DataError:
    """How an input with problems is refused, by `sds ingest` and `sds label` alike: how many,
    the first few, and that nothing of it was stored."""
    shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
    more = (
        f" (and {len(problems) - MAX_PROBLEMS_SHOWN} more)"
        if len(problems) > MAX_PROBLEMS_SHOWN
        else ""
    )
    return DataError(f"{counted(len(problems), 'problem')}, nothing was stored: {shown}{more}")


def ingest(
    ws: Workspace,
    env: str,
    location: str,
    *,
    clock: str = "wall",
    progress: Progress | None = None,
) -> IngestResult:
    """Validate every event of `location`, then fold them into `env`'s feature store, in
    `STEPS` steps of `progress` (none shown without one).

    An interruption (Ctrl-C, SIGTERM) says what it left: nothing while the input is read and
    checked; after that, each account's events are committed atomically with their ids, so
    running the same command again stores the rest."""
    if clock not in CLOCKS:
        raise UsageError(f"--clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    if ws.on_aws:
        raise UsageError(
            "sds ingest feeds the local feature store; on AWS, producers put events on the "
            f"environment's event bus ({env}/Features), and an archive replay refills a table"
        )
    progress = progress or Progress(STEPS, enabled=False)
    uri = ws.feature_store_uri(env)
    try:
        events = progress.run(
            f"reading {location}",
            lambda: _read_input(location, clock),
            lambda found: f"{len(found.timed)} valid events",
        )
        online = OnlineFeatures(open_feature_store(uri))
        # An id the store holds with other content refuses the whole input before anything is
        # committed; a writer racing in between is caught at commit (`totals.conflicts`).
        conflicts = progress.run(
            f"checking the event ids {env}'s feature store holds",
            lambda: online.recorded_conflicts(events.located),
            lambda found: f"{len(found)} held with other content",
        )
    except KeyboardInterrupt as exc:
        raise reworded(exc, "nothing was stored (the input was still being read)") from None
    if conflicts:
        raise refused_input([message for _, message in conflicts])
    timed = events.timed
    result = IngestResult(env=env, store=uri, events=len(timed))
    try:
        progress.run(
            f"folding {len(timed)} events into {env}'s feature store ({clock} clock)",
            lambda: _fold(online, timed, result.totals, clock=clock, progress=progress),
            lambda totals: f"{totals.applied} applied, {totals.duplicates} already there",
        )
    except KeyboardInterrupt as exc:
        raise reworded(
            exc,
            "run the same command again to store the rest: what was stored counts as already there",
        ) from None
    key = online.entity_key
    totals = result.totals
    totals.entities = len(
        {str(e[key]) for _, e in timed if str(e["event_id"]) not in totals.conflicts}
    )
    return result


def _read_input(location: str, clock: str) -> InputEvents:
    """The input, validated; in time order for a replay (`clock="events"`)."""
    # On the wall clock, an event dated ahead of it is refused as the feature updater refuses it,
    # named with the input's other problems.
    not_ahead = functools.partial(ahead_of_clock, now=now_micros()) if clock == "wall" else None
    events = read_events(location, check_time=not_ahead)
    if clock == "events":
        events.timed.sort(key=lambda pair: pair[0])
    return events


def _fold(
    online: OnlineFeatures,
    timed: Sequence[tuple[int, dict[str, Any]]],
    totals: ApplyResult,
    *,
    clock: str,
    progress: Progress,
) -> ApplyResult:
    """Apply `timed` in `_batches`, adding up into `totals` (kept as far as it got, if stopped)."""
    # Counted in events: a replay's batches are as many as its hours of history.
    with progress.transfer("folded", len(timed), unit="events") as advance:
        for batch in _batches(timed, replay=clock == "events"):
            # A replay folds a batch at its last event's time (the latest so far); live, at the
            # wall clock.
            done = online.apply(batch, now=batch[-1][0] if clock == "events" else None)
            totals.applied += done.applied
            totals.duplicates += done.duplicates
            totals.too_old += done.too_old
            totals.ignored += done.ignored
            totals.commits += done.commits
            totals.retries += done.retries
            totals.failed.update(done.failed)
            totals.conflicts.update(done.conflicts)
            advance(len(batch))
    return totals


def _batches(
    timed: Sequence[tuple[int, dict[str, Any]]], *, replay: bool
) -> Iterator[Sequence[tuple[int, dict[str, Any]]]]:
    """The input in batches of at most `BATCH` events. A replay's (sorted by time) also spans at
    most `LATENESS`: folded at its last event's time, no event of it is judged against a time
    more than that after its own, so none is dropped as too old that was not too old when it
    happened, and no bucket is expired that a window of one of its events still holds (a sparse
    history's 500 events can span weeks: batched by count alone, a replay dropped most of them)."""
    start = 0
    while start < len(timed):
        stop = min(start + BATCH, len(timed))
        if replay:
            last = timed[start][0] + LATENESS
            # The first event past the span ends the batch (times are sorted).
            stop = next((i for i in range(start + 1, stop) if timed[i][0] > last), stop)
        yield timed[start:stop]
        start = stop
