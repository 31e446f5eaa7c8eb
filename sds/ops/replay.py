"""`sds --aws replay`: replay an environment's activity archive into its feature table.

EventBridge replays the events its archive recorded between two times back onto the bus, to the
feature rule only (`FilterArns`), so the updater folds them again and nothing else on the bus
sees them twice. Folding is idempotent per event id, so a replay over events the table already
holds counts none twice; after the aggregate definitions change (a new fingerprint, a fresh
namespace in the table), it fills the new definitions' state from history. Events older than the
longest window count in no window: the updater drops them (`TooOld`), so the default start is
exactly that far back.

What it needs is found through SSM `/sds/<env>/` (the archive's name and the feature rule's ARN);
the bus comes from the archive itself. EventBridge names the calls: `DescribeArchive`,
`StartReplay`, and with `wait`, `DescribeReplay` until the replay ends (the replay policy of
the Features stack allows exactly these).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sds.config import REPLAY_DAYS
from sds.kernel.activity import replay_prefix
from sds.kernel.errors import Refused, UsageError
from sds.kernel.signals import reworded
from sds.ops.aws import AwsError, Clients
from sds.ops.workspace import Workspace

AWS_ERRORS = (BotoCoreError, ClientError)
DEFAULT_SINCE = timedelta(days=REPLAY_DAYS)
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED")
_RELATIVE = re.compile(r"^(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_when(text: str, *, now: datetime, option: str) -> datetime:
    """An ISO 8601 time with a zone (`2026-11-20T00:00:00Z`) or a span back from now (`9d`,
    `36h`, `90m`)."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        try:
            return now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
        except OverflowError:
            raise UsageError(
                f"{option} {text!r}: a span back from now this long reaches before the year 1"
            ) from None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: use an ISO 8601 time with a zone (2026-11-20T00:00:00Z) or a "
            "span back from now (9d, 36h, 90m)"
        ) from None
    if parsed.tzinfo is None:
        raise UsageError(f"{option} {text!r}: say which time zone (a trailing Z for UTC)")
    return parsed.astimezone(UTC)


@dataclass
class ReplayReport:
    env: str
    name: str
    arn: str
    archive: str
    rule: str
    since: datetime
    until: datetime
    state: str
    started: datetime
    retention_days: int | None = None
    warnings: list[str] = field(default_factory=list)
    last_replayed: datetime | None = None
    reason: str | None = None

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def ok(self) -> bool:
        return self.state not in ("FAILED", "CANCELLED")

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "replay": self.name,
            "arn": self.arn,
            "state": self.state,
            "archive": self.archive,
            "rule": self.rule,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "started": _iso(self.started),
            "archive_retention_days": self.retention_days,
            "last_replayed": None if self.last_replayed is None else _iso(self.last_replayed),
            "reason": self.reason,
            "warnings": list(self.warnings),
        }


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def replay_archive(
    ws: Workspace,
    *,
    env: str,
    since: str | None = None,
    until: str | None = None,
    wait: bool = False,
    poll_seconds: float = 5.0,
    clients: Clients | None = None,
    now: datetime | None = None,
    on_progress: Callable[[ReplayReport], None] | None = None,
    on_started: Callable[[ReplayReport], None] | None = None,
) -> ReplayReport:
    """Start a replay of `env`'s archive from `since` (default: the longest window plus its
    lateness ago) to `until` (default: now), to the feature rule; with `wait`, follow it.

    `on_started` sees the report once the replay has started, before it is followed: what
    started (window, archive, replay), in its first state."""
    if not ws.on_aws:
        raise UsageError(
            "replay sends a deployed environment's archived activity events through its feature "
            "updater again: add --aws (locally, `sds ingest FILE --clock events` refolds a "
            "history into the local store)"
        )
    # Whole seconds: the replay's name and the times it reports are read by people.
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    start = parse_when(since, now=now, option="--since") if since else now - DEFAULT_SINCE
    end = parse_when(until, now=now, option="--until") if until else now
    if end > now:
        end = now  # nothing is archived after now
    if start >= end:
        raise UsageError(f"--since ({_iso(start)}) must be before --until ({_iso(end)})")
    clients = clients or ws.discovery.clients
    events = clients["events"]
    archive_name = ws.discovery.get(env, "event-archive")
    rule_arn = ws.discovery.get(env, "feature-rule")
    try:
        archive = events.describe_archive(ArchiveName=archive_name)
    except AWS_ERRORS as exc:
        raise _aws_error(f"{env}: describing the archive {archive_name}", exc) from exc
    state = str(archive.get("State", ""))
    if state not in ("ENABLED", ""):
        raise Refused(
            f"{env}: the archive {archive_name} is {state} ({archive.get('StateReason', '')}); "
            "nothing was replayed"
        )
    retention = archive.get("RetentionDays")
    warnings: list[str] = []
    if retention:
        kept_from = now - timedelta(days=int(retention))
        if start < kept_from:
            warnings.append(
                f"the archive keeps {retention} days: nothing before {_iso(kept_from)} can be "
                "replayed"
            )
    oldest_useful = now - DEFAULT_SINCE
    if start < oldest_useful:
        warnings.append(
            f"events before {_iso(oldest_useful)} count in no window any more: the updater "
            "drops them (TooOld)"
        )
    name = f"{replay_prefix(env)}{now.strftime('%Y%m%dT%H%M%SZ')}"
    try:
        answer = events.start_replay(
            ReplayName=name,
            Description=f"sds {env}: refold {_iso(start)} .. {_iso(end)} into the feature table",
            EventSourceArn=archive["ArchiveArn"],
            EventStartTime=start,
            EventEndTime=end,
            Destination={"Arn": archive["EventSourceArn"], "FilterArns": [rule_arn]},
        )
    except AWS_ERRORS as exc:
        if "ResourceAlreadyExists" in type(exc).__name__ or "already exists" in str(exc):
            raise Refused(
                f"{env}: a replay named {name} already exists (one was started this second); "
                "nothing was started"
            ) from exc
        raise _aws_error(f"{env}: starting the replay", exc) from exc
    report = ReplayReport(
        env=env,
        name=name,
        arn=str(answer.get("ReplayArn", "")),
        archive=archive_name,
        rule=rule_arn,
        since=start,
        until=end,
        state=str(answer.get("State", "STARTING")),
        started=now,
        retention_days=None if retention is None else int(retention),
        warnings=warnings,
    )
    if on_started is not None:
        on_started(report)
    if wait:
        try:
            follow(report, events, poll_seconds=poll_seconds, on_progress=on_progress)
        except KeyboardInterrupt as exc:
            # Ctrl-C (or SIGTERM) stops the following, not the replay: say so, and how to follow
            # or cancel it (`main` prints this after "sds: interrupted").
            raise reworded(
                exc,
                f"stopped following; the replay {name} goes on in EventBridge (follow it with: "
                f"aws events describe-replay --replay-name {name}; cancel it with: aws events "
                f"cancel-replay --replay-name {name})",
            ) from None
    return report


def follow(
    report: ReplayReport,
    events: Any,
    *,
    poll_seconds: float,
    on_progress: Callable[[ReplayReport], None] | None = None,
) -> None:
    """Describe the replay until it ends, updating `report` (state, last event replayed)."""
    while True:
        try:
            found = events.describe_replay(ReplayName=report.name)
        except AWS_ERRORS as exc:
            raise _aws_error(f"{report.env}: following the replay {report.name}", exc) from exc
        report.state = str(found.get("State", report.state))
        report.reason = found.get("StateReason") or None
        last = found.get("EventLastReplayedTime")
        if isinstance(last, datetime):
            report.last_replayed = last
        if on_progress is not None:
            on_progress(report)
        if report.done:
            return
        time.sleep(poll_seconds)


def _aws_error(what: str, exc: Exception) -> AwsError:
    return AwsError(f"{what}: {exc}")
