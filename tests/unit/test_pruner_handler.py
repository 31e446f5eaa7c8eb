"""The pruner Lambda's entry point without AWS: which events prune, which only plan, and which
are refused before anything is read or deleted (the pruning itself: tests/integration/
test_prune_aws.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from lambdas.pruner import handler
from sds.kernel.errors import SdsError
from sds.kernel.retention import PruneTarget

TARGET = PruneTarget("fn", "prod", "fraud", "s3://registry", "app", "group", 3)


class Planned:
    """Stands in for `prune`: records the dry_run of each call, deletes nothing."""

    def __init__(self) -> None:
        self.dry_runs: list[bool] = []

    def __call__(self, target: PruneTarget, *, dry_run: bool = False, **_: Any) -> Any:
        self.dry_runs.append(dry_run)
        return _Report()


class _Report:
    ok = True

    def to_dict(self) -> dict[str, Any]:
        return {"action": "prune"}


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch) -> Planned:
    for name, value in TARGET.to_environ().items():
        monkeypatch.setenv(name, value)
    fake = Planned()
    monkeypatch.setattr(handler, "prune", fake)
    monkeypatch.setattr(handler.sdk, "client", lambda service: object())
    monkeypatch.setattr(handler, "open_registry", lambda uri, model: object())
    return fake


@pytest.mark.parametrize(
    ("event", "dry_run"),
    [
        ({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event"}, False),
        (
            {
                "source": "aws.codedeploy",
                "detail-type": "CodeDeploy Deployment State-change Notification",
                "detail": {"state": "SUCCESS"},
            },
            False,
        ),
        ({"dry_run": True}, True),
        ({"dry_run": False}, False),
        ({}, False),
    ],
    ids=["schedule", "deployment", "dry-run", "no-dry-run", "empty"],
)
def test_its_two_rules_prune_and_a_dry_run_by_hand_only_plans(
    planned: Planned, event: dict[str, Any], dry_run: bool
) -> None:
    handler.lambda_handler(event, None)
    assert planned.dry_runs == [dry_run]


@pytest.mark.parametrize(
    "event",
    [{"dry_run": "true"}, {"dry_run": 1}, {"dryRun": True}, {"key1": "value1"}, ["dry_run"]],
    ids=["string", "number", "misspelt", "console-test-event", "list"],
)
def test_an_event_that_asks_for_something_else_is_refused_and_nothing_is_pruned(
    planned: Planned, event: Any
) -> None:
    # When it is invoked by hand with a dry run it does not understand
    with pytest.raises(SdsError) as refused:
        handler.lambda_handler(event, None)
    # Then nothing was pruned (a mistyped dry run must not delete), and the error says what
    # it takes
    assert planned.dry_runs == []
    assert '{"dry_run": true}' in str(refused.value)
    assert "nothing was deleted" in str(refused.value)


def test_a_failed_run_counts_the_versions_already_gone_as_deleted_as_its_log_line_does(
    planned: Planned, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a run that deleted version 1, found version 2 gone (a concurrent run deleted it)
    # and could not delete version 3
    report = SimpleNamespace(
        ok=False,
        deleted=[1],
        already_gone=[2],
        failed={3: "ResourceConflictException: in use"},
        to_dict=lambda: {"action": "prune", "deleted": [1, 2], "failed": {"3": "in use"}},
    )
    monkeypatch.setattr(handler, "prune", lambda target, **_: report)

    # When it runs, then it fails naming version 3, and says 2 were deleted, as its log line
    with pytest.raises(handler.PruneFailed) as failed:
        handler.lambda_handler({}, None)
    assert "1 version of fn could not be deleted (3: " in str(failed.value)
    assert str(failed.value).endswith("; deleted 2")
    assert '"deleted": [1, 2]' in capsys.readouterr().out
