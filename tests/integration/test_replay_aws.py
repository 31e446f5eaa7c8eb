"""`sds --aws replay`: the activity archive replayed through the feature rule into the updater.

On moto's server, what the Features stack deploys (the bus, its archive of every event, the
feature rule to a queue) and its discovery parameters; the
feature updater's logic folds the queue's messages, as the event source mapping delivers them,
into a DynamoDB feature table. The replay must rebuild a lost table to the same aggregates, count
nothing twice when it replays what the table holds, reach the feature rule only, and refuse bad
input before anything starts.
"""

from __future__ import annotations

import io
import json
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from lambdas.features_updater.updater import FeatureUpdater
from sds.kernel.activity import SOURCE, put_events_entry
from sds.kernel.aggregates import MINUTE, SECOND
from sds.kernel.features import format_time
from sds.kernel.featurestore.dynamodb import DynamoDBFeatureStore, table_definition
from sds.kernel.online import OnlineFeatures, now_micros
from tests.integration.deployed import CliResult

ENV = "dev"


@dataclass
class Activity:
    """The event path of one environment, as the Features stack deploys it."""

    aws: Any
    bus: str
    archive: str
    rule_arn: str
    queue_url: str

    def put(self, events: list[dict[str, Any]]) -> None:
        client = self.aws.client("events")
        for start in range(0, len(events), 10):
            entries = [put_events_entry(e, bus=self.bus) for e in events[start : start + 10]]
            answer = client.put_events(Entries=entries)
            assert answer["FailedEntryCount"] == 0, answer

    def drain(self, updater: FeatureUpdater, queue_url: str | None = None) -> dict[str, int]:
        """Deliver the queue to `updater` in batches of 10, deleting what it applied; how many
        messages it took and how many it asked back."""
        sqs = self.aws.client("sqs")
        taken = asked_back = 0
        while True:
            messages = sqs.receive_message(
                QueueUrl=queue_url or self.queue_url, MaxNumberOfMessages=10
            ).get("Messages", [])
            if not messages:
                return {"taken": taken, "asked_back": asked_back}
            answer = updater.handle(
                {
                    "Records": [
                        {"messageId": m["MessageId"], "body": m["Body"], "eventSource": "aws:sqs"}
                        for m in messages
                    ]
                }
            )
            failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
            taken += len(messages)
            asked_back += len(failed)
            for message in messages:
                if message["MessageId"] not in failed:
                    sqs.delete_message(
                        QueueUrl=queue_url or self.queue_url,
                        ReceiptHandle=message["ReceiptHandle"],
                    )
            assert not failed, answer

    def pending(self, queue_url: str) -> int:
        attributes = self.aws.client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def _queue(aws: Any, name: str) -> tuple[str, str]:
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn


@pytest.fixture
def activity(aws: Any) -> Activity:
    suffix = uuid.uuid4().hex[:8]
    events = aws.client("events")
    bus = f"sds-{ENV}-activity-{suffix}"
    bus_arn = events.create_event_bus(Name=bus)["EventBusArn"]
    archive = f"sds-{ENV}-archive-{suffix}"
    account = aws.client("sts").get_caller_identity()["Account"]
    events.create_archive(
        ArchiveName=archive,
        EventSourceArn=bus_arn,
        EventPattern=json.dumps({"account": [account]}),
        RetentionDays=30,
    )
    queue_url, queue_arn = _queue(aws, f"features-{suffix}")
    rule_arn = events.put_rule(
        Name=f"features-{suffix}",
        EventBusName=bus,
        EventPattern=json.dumps({"source": [SOURCE], "detail-type": ["login", "payment"]}),
    )["RuleArn"]
    events.put_targets(
        Rule=f"features-{suffix}", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}]
    )
    ssm = aws.client("ssm")
    for key, value in {
        "event-bus": bus,
        "event-archive": archive,
        "feature-rule": rule_arn,
    }.items():
        ssm.put_parameter(Name=f"/sds/{ENV}/{key}", Value=value, Type="String", Overwrite=True)
    return Activity(aws, bus, archive, rule_arn, queue_url)


@pytest.fixture
def new_table(aws: Any) -> Callable[[], DynamoDBFeatureStore]:
    def make() -> DynamoDBFeatureStore:
        name = f"features-{uuid.uuid4().hex[:12]}"
        aws.client("dynamodb").create_table(**table_definition(name))
        return DynamoDBFeatureStore(name, consistent_read=True)

    return make


def history(now: int) -> list[dict[str, Any]]:
    """Logins and payments of three accounts over the last 50 minutes, one payment twice (a
    producer that retried PutEvents) and one out of order."""
    events: list[dict[str, Any]] = []
    for i in range(30):
        account = f"acct-{i % 3}"
        at = now - 50 * MINUTE + i * MINUTE
        if i % 2:
            events.append(
                {
                    "type": "login",
                    "event_id": f"l-{i}",
                    "account_id": account,
                    "occurred_at": format_time(at),
                    "outcome": "failure" if i % 3 else "success",
                }
            )
        else:
            events.append(
                {
                    "type": "payment",
                    "event_id": f"p-{i}",
                    "account_id": account,
                    "occurred_at": format_time(at),
                    "amount": 10.0 + i,
                    "currency": "USD",
                    "merchant_category": "grocery",
                    "country": ["US", "DE", "FR"][i % 3],
                    "card_country": "US",
                    "hour_of_day": 3,
                    "account_age_days": 40,
                    "is_new_device": False,
                }
            )
    events.append(dict(events[4]))  # the same payment again
    events.insert(2, events.pop(20))  # a late delivery
    return events


def aggregates(store: DynamoDBFeatureStore, at: int) -> list[dict[str, float]]:
    return OnlineFeatures(store).read([(f"acct-{i}", at) for i in range(3)])


def updater_for(store: DynamoDBFeatureStore, metrics: list[dict[str, float]]) -> FeatureUpdater:
    return FeatureUpdater(
        OnlineFeatures(store), environment=ENV, metrics=lambda values, _: metrics.append(values)
    )


def test_a_lost_table_is_rebuilt_from_the_archive_to_the_same_aggregates(
    activity: Activity,
    new_table: Callable[[], DynamoDBFeatureStore],
    cli: Callable[..., CliResult],
) -> None:
    # Given a history put on the bus and folded by the updater as it arrived
    now = now_micros()
    activity.put(history(now))
    live = new_table()
    activity.drain(updater_for(live, []))
    before = aggregates(live, now + SECOND)
    assert sum(a["txn_count_last_1h"] for a in before) == 15  # the duplicate counted once
    # When the table is lost (a new, empty one) and the archive is replayed into it
    rebuilt = new_table()
    result = cli("replay", "--env", ENV, "--since", "2h", "--wait", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    metrics: list[dict[str, float]] = []
    activity.drain(updater_for(rebuilt, metrics))
    # Then it completed from this environment's archive, to the feature rule
    assert report["state"] == "COMPLETED"
    assert report["replay"].startswith(f"sds-{ENV}-features-")
    assert (report["archive"], report["rule"]) == (activity.archive, activity.rule_arn)
    # And every account's aggregates are what the live table holds
    assert aggregates(rebuilt, now + SECOND) == before
    # (the successful logins count in no aggregate: read, not stored)
    assert (sum(m["Applied"] for m in metrics), sum(m["Ignored"] for m in metrics)) == (25, 5)


def test_replaying_what_the_table_holds_counts_nothing_twice(
    activity: Activity,
    new_table: Callable[[], DynamoDBFeatureStore],
    cli: Callable[..., CliResult],
) -> None:
    # Given a history folded as it arrived
    now = now_micros()
    activity.put(history(now))
    table = new_table()
    activity.drain(updater_for(table, []))
    before = aggregates(table, now + SECOND)
    # When the archive is replayed into the same table
    assert cli("replay", "--env", ENV, "--since", "2h", "--wait").code == 0
    metrics: list[dict[str, float]] = []
    activity.drain(updater_for(table, metrics))
    # Then every replayed event that counts is a duplicate, and nothing changed
    assert sum(m["Events"] for m in metrics) == 31
    assert sum(m["Applied"] for m in metrics) == 0
    assert sum(m["Duplicates"] for m in metrics) + sum(m["Ignored"] for m in metrics) == 31
    assert aggregates(table, now + SECOND) == before


def test_a_replay_is_addressed_to_the_feature_rule_only(
    activity: Activity, cli: Callable[..., CliResult]
) -> None:
    # Given events that both rules received when they were put
    activity.put(history(now_micros())[:5])
    assert activity.pending(activity.queue_url) == 5
    # When the archive is replayed
    result = cli("replay", "--env", ENV, "--since", "2h", "--wait")
    # Then the feature queue receives them again
    assert result.code == 0, result.err
    assert f"from archive {activity.archive} to the feature rule" in result.out
    assert activity.pending(activity.queue_url) == 10
    # And the replay was addressed to the activity bus through the feature rule only (EventBridge
    # then skips every other rule; moto's server delivers to all, so the request is checked)
    events = activity.aws.client("events")
    (replay,) = events.list_replays()["Replays"]
    destination = events.describe_replay(ReplayName=replay["ReplayName"])["Destination"]
    bus_arn = events.describe_event_bus(Name=activity.bus)["Arn"]
    assert destination == {"Arn": bus_arn, "FilterArns": [activity.rule_arn]}


def polled_as(monkeypatch: pytest.MonkeyPatch, *answers: dict[str, Any]) -> list[str]:
    """Make DescribeReplay answer `answers` (merged into moto's, whose replay completes at once)
    in turn, polled without waiting; the states moto answered, as the command polls."""
    import sds.kernel.sdk
    import sds.ops.replay

    polls: list[str] = []

    def rewritten(parsed: dict[str, Any], **_: Any) -> None:
        polls.append(parsed["State"])
        if len(polls) <= len(answers):
            parsed.update(answers[len(polls) - 1])

    real_client = sds.kernel.sdk.client

    def watched(service: str) -> Any:
        made = real_client(service)
        if service == "events":
            made.meta.events.register("after-call.events.DescribeReplay", rewritten)
        return made

    monkeypatch.setattr(sds.kernel.sdk, "client", watched)
    monkeypatch.setattr(sds.ops.replay, "time", SimpleNamespace(sleep=lambda seconds: None))
    return polls


def as_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """stdout and stderr in one stream, in the order they were written, as a terminal shows."""
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", terminal)
    return terminal


def test_with_wait_the_replay_says_what_it_started_then_its_progress_then_how_it_ended(
    activity: Activity, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a replay EventBridge reports running once before it completes
    activity.put(history(now_micros())[:5])
    halfway = datetime(2026, 11, 24, 13, 5, 41, tzinfo=UTC)
    polls = polled_as(monkeypatch, {"State": "RUNNING", "EventLastReplayedTime": halfway})
    terminal = as_on_a_terminal(monkeypatch)

    # When the replay is run with --wait
    result = cli("replay", "--env", ENV, "--since", "2h", "--wait")

    # Then the first line says what started (window, archive, replay), the progress follows,
    # and the last line says how it ended
    assert result.code == 0, terminal.getvalue()
    lines = terminal.getvalue().splitlines()
    assert len(polls) == 2, polls
    (name,) = [r["ReplayName"] for r in activity.aws.client("events").list_replays()["Replays"]]
    assert lines[0].startswith(f"{ENV}: replaying "), lines
    assert lines[0].endswith(
        f"from archive {activity.archive} to the feature rule: {name} STARTING"
    ), lines
    assert lines[1:] == [
        "  RUNNING: replayed up to 2026-11-24T13:05:41+00:00",
        f"{ENV}: replay {name} COMPLETED",
    ]


def test_a_replay_that_fails_while_waited_for_says_so_last_and_exits_1(
    activity: Activity, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a replay EventBridge reports failed
    polled_as(monkeypatch, {"State": "FAILED", "StateReason": "the bus is gone"})
    terminal = as_on_a_terminal(monkeypatch)

    # When the replay is run with --wait
    result = cli("replay", "--env", ENV, "--since", "2h", "--wait")

    # Then what started comes first, and the end says it failed and why
    assert result.code == 1
    lines = terminal.getvalue().splitlines()
    assert lines[0].endswith(" STARTING") and lines[0].startswith(f"{ENV}: replaying "), lines
    assert lines[1].startswith(f"{ENV}: replay sds-{ENV}-features-"), lines
    assert lines[1].endswith(" FAILED"), lines
    assert lines[2:] == ["sds: error: the replay FAILED: the bus is gone"]


def test_ctrl_c_while_waiting_stops_following_and_says_the_replay_goes_on(
    activity: Activity, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given Ctrl-C pressed while the command waits for the replay's first progress
    import sds.kernel.sdk

    real_client = sds.kernel.sdk.client

    def interrupted(**_: Any) -> None:
        raise KeyboardInterrupt

    def watched(service: str) -> Any:
        made = real_client(service)
        if service == "events":
            made.meta.events.register("before-call.events.DescribeReplay", interrupted)
        return made

    monkeypatch.setattr(sds.kernel.sdk, "client", watched)

    # When the replay is run with --wait
    result = cli("replay", "--env", ENV, "--since", "2h", "--wait")

    # Then it exits as interrupted, and says that the replay it started goes on in EventBridge
    # (Ctrl-C stopped the following, not the replay) and how to follow or cancel it
    (name,) = [r["ReplayName"] for r in activity.aws.client("events").list_replays()["Replays"]]
    assert result.code == 130
    assert result.err.splitlines() == [
        f"sds: interrupted: stopped following; the replay {name} goes on in EventBridge "
        f"(follow it with: aws events describe-replay --replay-name {name}; cancel it with: "
        f"aws events cancel-replay --replay-name {name})"
    ]


def test_under_json_a_replay_that_fails_is_its_report_with_the_error_in_it(
    activity: Activity, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a replay EventBridge reports failed
    polled_as(monkeypatch, {"State": "FAILED", "StateReason": "the bus is gone"})

    # When the replay is run with --wait --json
    result = cli("replay", "--env", ENV, "--since", "2h", "--wait", "--json")

    # Then it exits 1 with the same one line on stderr as without --json, and stdout is one
    # document: the replay's report, in the state it ended in, and the error as every command
    # reports one
    assert result.code == 1
    assert result.err.splitlines() == ["sds: error: the replay FAILED: the bus is gone"]
    document = json.loads(result.out)
    assert document["error"] == {
        "message": "the replay FAILED: the bus is gone",
        "type": "ReplayFailed",
        "exit_code": 1,
    }
    assert (document["state"], document["reason"]) == ("FAILED", "the bus is gone")
    assert document["replay"].startswith(f"sds-{ENV}-features-")


def test_under_json_a_waited_replay_is_one_document(
    activity: Activity, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a replay EventBridge reports running once before it completes
    polled_as(monkeypatch, {"State": "RUNNING"})

    # When the replay is run with --wait --json
    result = cli("replay", "--env", ENV, "--since", "2h", "--wait", "--json")

    # Then stdout is one JSON document, in the state it ended in, and no progress was printed
    assert result.code == 0, result.err
    assert json.loads(result.out)["state"] == "COMPLETED"
    assert result.err == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--since", "yesterday"), "--since 'yesterday': use an ISO 8601 time with a zone"),
        (("--until", "2026-11-20T00:00:00"), "--until '2026-11-20T00:00:00': say which time zone"),
        (("--since", "1h", "--until", "2h"), "must be before --until"),
        (("--since", "1000000d"), "--since '1000000d': a span back from now this long"),
        (("--until", "99999999999999999999h"), "--until '99999999999999999999h': a span back"),
    ],
)
def test_bad_times_are_refused_and_nothing_is_replayed(
    activity: Activity, cli: Callable[..., CliResult], argv: tuple[str, ...], message: str
) -> None:
    # When the replay is asked with a time it cannot use
    result = cli("replay", "--env", ENV, *argv)
    # Then it says what is wrong and starts nothing
    assert result.code != 0
    assert message in result.err
    assert activity.aws.client("events").list_replays()["Replays"] == []


def test_a_replay_far_back_says_what_cannot_count(
    activity: Activity, cli: Callable[..., CliResult]
) -> None:
    # When the replay starts before the archive's retention and the longest window
    result = cli("replay", "--env", ENV, "--since", "60d")
    # Then it starts, and says that the oldest part is not kept and could not count anyway
    assert result.code == 0, result.err
    assert "note: the archive keeps 30 days: nothing before" in result.out
    assert "count in no window any more: the updater drops them (TooOld)" in result.out
    assert "follow it with: aws events describe-replay --replay-name sds-dev-features-" in (
        result.out
    )


def test_an_environment_without_the_event_path_says_how_to_deploy_it(
    aws: Any, cli: Callable[..., CliResult]
) -> None:
    # Given an environment whose Features stack is not deployed
    del aws
    # When a replay is asked for it
    result = cli("replay", "--env", "staging")
    # Then the error names the missing parameter and the stack that publishes it
    assert result.code != 0
    assert "/sds/staging/event-archive not found" in result.err
    assert "cdk deploy 'staging/Features'" in result.err


def test_a_missing_archive_is_named(activity: Activity, cli: Callable[..., CliResult]) -> None:
    # Given discovery naming an archive that does not exist (deleted by hand)
    activity.aws.client("ssm").put_parameter(
        Name=f"/sds/{ENV}/event-archive", Value="gone", Type="String", Overwrite=True
    )
    # When a replay is asked
    result = cli("replay", "--env", ENV)
    # Then the error names the archive, and nothing was started
    assert result.code != 0
    assert "dev: describing the archive gone" in result.err
    assert activity.aws.client("events").list_replays()["Replays"] == []


def test_replay_is_an_aws_command(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a local workspace
    monkeypatch.setenv("SDS_TARGET", "local")
    # When a replay is asked without --aws
    result = cli("replay", "--env", ENV)
    # Then it says that replay works on a deployed environment, and what to do locally
    assert result.code != 0
    assert "add --aws" in result.err
    assert "sds ingest FILE" in result.err
