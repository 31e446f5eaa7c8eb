"""The feature updater's logic: SQS batches of activity events in, the store's aggregates folded,
the messages that must come back reported.

Each SQS record holds one EventBridge envelope around one activity event
(`sds.kernel.activity.activity_event`). The batch's valid events are folded together by
`sds.kernel.online.OnlineFeatures.apply` (one read for all their accounts, one compare-and-swap
commit per account), and the answer is SQS's partial batch response: only the messages whose
event could not be applied come back to the queue (`batchItemFailures`), to be delivered again
and, after the queue's `maxReceiveCount`, moved to the dead-letter queue, where an alarm fires.

- a redelivered event (already folded, or twice in the batch) succeeds and is counted once;
- an event older than the longest window and its lateness (`LATENESS`, an hour) is dropped,
  succeeds, and is counted (`TooOld`);
- an event no aggregate reads succeeds (`Ignored`);
- an invalid message (not an activity event, or one with problems, or an event id a message
  before it in the batch carries with other content) fails: retrying cannot fix it, but it is
  kept in the dead-letter queue for whoever sent it (`Invalid`, and the problems are logged,
  every one: a date ahead of the clock too);
- an event dated more than `FUTURE_TOLERANCE` after the updater's clock, and valid otherwise,
  fails (`FromTheFuture`, `sds.kernel.online.ahead_of_clock`, the check `sds ingest` and the
  local API make too, through the same validation): a producer's clock is wrong, and folding it
  would keep a bucket until that date;
- an event whose id the store already holds with other content (folded from an earlier batch:
  a producer reused the id) is never folded and fails (`Conflicts`, and the conflict is logged):
  like an invalid message, it ends in the dead-letter queue, while the rest of the batch is
  applied. Ids recorded before the store kept content digests cannot be told apart: a copy of
  one is a duplicate;
- an event the store could not take (a conflict that would not settle, DynamoDB unavailable)
  fails, and comes back;
- so does an event whose account's commit would start with less than `TIME_RESERVE_MS` of the
  invocation left (a slow table: each call may take two attempts of the store's timeout): the
  batch answers before the function's timeout, which would bring back every message of it,
  those already folded included.

One Embedded Metric Format line per batch (namespace `sds/features`, dimension `Environment`)
carries the counts: no API call, and no metric at all while nothing arrives.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from sds.kernel.activity import activity_event
from sds.kernel.errors import plural
from sds.kernel.events import conflict_message, content_digest, timed
from sds.kernel.features import Problem, TimeCheck
from sds.kernel.online import ApplyResult, OnlineFeatures, ahead_of_clock, now_micros

logger = logging.getLogger("sds.features_updater")

NAMESPACE = "sds/features"
METRICS = (
    "Events",
    "Applied",
    "Duplicates",
    "TooOld",
    "Ignored",
    "Invalid",
    "FromTheFuture",
    "Conflicts",
    "Failed",
    "Commits",
    "Retries",
)

MetricSink = Callable[[Mapping[str, float], Mapping[str, str]], None]

# The invocation's time no commit starts within: a commit and the read after it, two attempts of
# the handler's store timeout each, with room to answer.
TIME_RESERVE_MS = 15_000


def emf_metrics(values: Mapping[str, float], dimensions: Mapping[str, str]) -> None:
    """One CloudWatch Embedded Metric Format log line (no API call)."""
    document = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [sorted(dimensions)],
                    "Metrics": [{"Name": name, "Unit": "Count"} for name in values],
                }
            ],
        },
        **values,
        **dimensions,
    }
    sys.stdout.write(json.dumps(document, separators=(",", ":")) + "\n")


class _AheadOfClock:
    """`ahead_of_clock` at the batch's clock, as one message's `check_time`, counting its
    refusals: a message refused for its date alone is told from an invalid one."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.refused = 0

    def __call__(self, occurred: int) -> str | None:
        reason = ahead_of_clock(occurred, self.now)
        self.refused += reason is not None
        return reason


class FeatureUpdater:
    def __init__(
        self,
        online: OnlineFeatures,
        *,
        environment: str = "unknown",
        metrics: MetricSink = emf_metrics,
        clock: Callable[[], int] = now_micros,
    ) -> None:
        self.online = online
        self.dimensions = {"Environment": environment}
        self.metrics = metrics
        self.clock = clock

    def handle(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        """An SQS event source batch in; the partial batch response out. With Lambda's
        `context`, no commit starts with less than `TIME_RESERVE_MS` of the invocation left."""
        records = event.get("Records")
        if not isinstance(records, list):
            raise ValueError("not an SQS event: no Records list")
        now = self.clock()
        counts = dict.fromkeys(METRICS, 0.0)
        counts["Events"] = len(records)
        failed: list[str] = []
        pending: list[tuple[int, Mapping[str, Any]]] = []
        messages_of: dict[str, list[str]] = {}  # event id -> the messages that carry it
        first: dict[str, tuple[str, Mapping[str, Any]]] = {}  # event id -> its first message
        for record in records:
            message_id = str(record.get("messageId", "")) if isinstance(record, Mapping) else ""
            ahead = _AheadOfClock(now)
            parsed, problems = self._parse(record, ahead)
            if parsed is None:
                # Dated ahead and nothing else: the producer's clock; anything more: invalid.
                only_ahead = ahead.refused == len(problems)
                counts["FromTheFuture" if only_ahead else "Invalid"] += 1
                logger.warning(
                    "%s in message %s: %s",
                    "activity event dated ahead of the clock"
                    if only_ahead
                    else "invalid activity event",
                    message_id or "?",
                    "; ".join(f"{p.field}: {p.reason}" for p in problems[:10]),
                )
                failed.append(message_id)
                continue
            ((occurred, activity),) = timed([parsed])
            event_id = str(activity["event_id"])
            if event_id not in messages_of:
                pending.append((occurred, activity))
                first[event_id] = (message_id, activity)
            elif content_digest(first[event_id][1]) != content_digest(activity):
                # Not a redelivery: the same id with other content is refused, as `sds ingest`
                # and training refuse it; the message stays in the dead-letter queue to be seen.
                counts["Invalid"] += 1
                known_message, known = first[event_id]
                logger.warning(
                    "invalid activity event in message %s: %s",
                    message_id or "?",
                    conflict_message(
                        event_id,
                        (str(known["account_id"]), f"message {known_message or '?'}"),
                        (str(activity["account_id"]), f"message {message_id or '?'}"),
                    ),
                )
                failed.append(message_id)
                continue
            messages_of.setdefault(event_id, []).append(message_id)
        out_of_time = (
            None
            if context is None
            else lambda: context.get_remaining_time_in_millis() < TIME_RESERVE_MS
        )
        result = (
            self.online.apply(pending, now=now, out_of_time=out_of_time)
            if pending
            else ApplyResult()
        )
        for event_id, reason in result.failed.items():
            logger.error("event %s not applied: %s", event_id, reason)
            failed.extend(messages_of.get(event_id, []))
        for event_id, reason in result.conflicts.items():
            # Retrying cannot fix it: after the queue's receive count, the dead-letter queue.
            carried = messages_of.get(event_id, [])
            logger.warning(
                "event %s of %s %s not folded: %s",
                event_id,
                plural(len(carried), "message"),
                ", ".join(m or "?" for m in carried),
                reason,
            )
            failed.extend(carried)
        counts["Conflicts"] = sum(len(messages_of.get(i, [])) for i in result.conflicts)
        counts["Applied"] = result.applied
        # Copies of an event inside this batch are duplicates too (those of a conflict fail).
        counts["Duplicates"] = result.duplicates + sum(
            len(m) - 1 for i, m in messages_of.items() if i not in result.conflicts
        )
        counts["TooOld"] = result.too_old
        counts["Ignored"] = result.ignored
        counts["Failed"] = len(result.failed)
        counts["Commits"] = result.commits
        counts["Retries"] = result.retries
        self._emit(counts)
        return {"batchItemFailures": [{"itemIdentifier": m} for m in dict.fromkeys(failed)]}

    @staticmethod
    def _parse(record: Any, check_time: TimeCheck) -> tuple[dict[str, Any] | None, list[Problem]]:
        if not isinstance(record, Mapping) or "body" not in record:
            return None, [Problem("record", "is not an SQS message")]
        return activity_event(record["body"], check_time=check_time)

    def _emit(self, values: Mapping[str, float]) -> None:
        try:
            self.metrics(values, self.dimensions)
        except Exception:  # metrics must never fail a batch
            logger.exception("could not emit metrics")
