"""Two batch runs started into one folder at the same moment: the plan is created only if absent.

Each run looks for a plan first; two that start together can both find none. Only one plan can
then be created (a hard link of a complete file, which fails if the name exists), so the other
run reads the winner's, as a run started a moment later would: the same arguments join it, others
are refused in the words a later run hears, and neither overwrites the other's plan to mix
results in one folder. tests/integration/test_batch_aws.py plays the same race on S3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sds.kernel.batch.run import PLAN, RunMismatch, RunPlan, begin, make_plan
from sds.kernel.batch.storage import AlreadyExists, LocalStorage, S3Storage
from tests.support.batch_race import rival_first
from training.data import write_jsonl
from training.synthetic import generate_activity


@pytest.fixture
def history(tmp_path: Path) -> LocalStorage:
    return LocalStorage(write_jsonl(generate_activity(60, seed=3), tmp_path / "h.jsonl"))


def features_plan(history: LocalStorage, out: Path, *, partitions: int, run_id: str) -> RunPlan:
    return make_plan(
        "features", history, str(out), model=None, partitions=partitions, run_id=run_id
    )


def stored_plan(out: Path) -> dict[str, Any]:
    document = json.loads((out / PLAN).read_text())
    assert isinstance(document, dict)
    return document


# The create-only write -----------------------------------------------------------------------------


def test_a_second_create_only_write_into_a_folder_loses_and_leaves_the_first(
    tmp_path: Path,
) -> None:
    # Given an object created in a folder
    output = LocalStorage(tmp_path / "out")
    output.create_bytes(PLAN, b"first\n")

    # When another writer creates it too
    with pytest.raises(AlreadyExists) as lost:
        output.create_bytes(PLAN, b"second\n")

    # Then it is told it lost, naming the file, and the first content is there whole, alone
    assert str(lost.value).startswith(f"{tmp_path / 'out' / PLAN}: already exists")
    assert (tmp_path / "out" / PLAN).read_bytes() == b"first\n"
    assert [p.name for p in (tmp_path / "out" / "_run").iterdir()] == ["plan.json"]


class ConflictingS3:
    """An S3 client whose conditional PutObject first meets another conditional write of the
    key in flight (409), then the answers given."""

    def __init__(self, *answers: str) -> None:
        self.answers = ["409", *answers]
        self.calls: list[dict[str, Any]] = []

    def put_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        answer = self.answers.pop(0)
        if answer == "ok":
            return {"ETag": '"e"'}
        code = {"409": "ConditionalRequestConflict", "412": "PreconditionFailed"}[answer]
        error = {"Error": {"Code": code, "Message": "..."}}
        raise ClientError({**error, "ResponseMetadata": {"HTTPStatusCode": int(answer)}}, "Put")


@pytest.mark.parametrize(("then", "created"), [("412", False), ("ok", True)])
def test_a_create_only_write_s3_answers_409_is_sent_again_until_s3_says_which_write_won(
    monkeypatch: pytest.MonkeyPatch, then: str, created: bool
) -> None:
    # Given S3 writing another run's plan at the moment this one's arrives (409: retry)
    monkeypatch.setattr("sds.kernel.batch.storage.CONFLICT_RETRY_SECONDS", 0)
    client = ConflictingS3(then)
    output = S3Storage("bucket", "batch/x", client=client)

    # When this run creates its plan
    if created:
        output.create_bytes(PLAN, b"{}")
    else:
        with pytest.raises(AlreadyExists):
            output.create_bytes(PLAN, b"{}")

    # Then it was sent again, create-only both times, and lost only if the other write landed
    assert len(client.calls) == 2
    assert all(c["IfNoneMatch"] == "*" and c["Key"] == "batch/x/" + PLAN for c in client.calls)


# Two runs at once -----------------------------------------------------------------------------------


def test_of_two_runs_started_at_once_with_other_arguments_the_slower_is_refused_as_a_later_run(
    tmp_path: Path, history: LocalStorage
) -> None:
    # Given two runs of other partitions into one folder, both finding no plan there
    out = tmp_path / "out"
    output = LocalStorage(out)
    theirs = features_plan(history, out, partitions=3, run_id="theirs")
    mine = features_plan(history, out, partitions=2, run_id="mine")
    racing = LocalStorage(out)
    rival = rival_first(racing, lambda: begin(theirs, output))

    # When the other one writes its plan first
    with pytest.raises(RunMismatch) as refused:
        begin(mine, racing)

    # Then this one is refused as a run started a moment later is, saying what differs
    assert rival.began == (theirs, False)
    with pytest.raises(RunMismatch) as later:
        begin(mine, output)
    assert str(refused.value) == str(later.value)
    assert "it has 3 partitions, this one 2" in str(refused.value)
    # And the folder holds the other run's plan, untouched
    assert stored_plan(out) == theirs.to_json()


def test_of_two_runs_started_at_once_with_the_same_arguments_the_slower_joins_the_other(
    tmp_path: Path, history: LocalStorage
) -> None:
    # Given two runs of the same input and partitions into one folder, both finding no plan
    out = tmp_path / "out"
    output = LocalStorage(out)
    theirs = features_plan(history, out, partitions=2, run_id="theirs")
    mine = features_plan(history, out, partitions=2, run_id="mine")
    racing = LocalStorage(out)
    rival = rival_first(racing, lambda: begin(theirs, output))

    # When the other one writes its plan first
    plan, resumed = begin(mine, racing)

    # Then this one goes on with the other's plan, as a resumed run does (parts are idempotent)
    assert rival.began == (theirs, False)
    assert (plan, resumed) == (theirs, True)
    assert stored_plan(out) == theirs.to_json()


def test_a_restart_that_another_run_beats_to_the_new_plan_is_refused_and_discards_nothing_of_it(
    tmp_path: Path, history: LocalStorage
) -> None:
    # Given an old run in a folder, restarted by one run while another starts there too
    out = tmp_path / "out"
    output = LocalStorage(out)
    begin(features_plan(history, out, partitions=1, run_id="old"), output)
    theirs = features_plan(history, out, partitions=3, run_id="theirs")
    mine = features_plan(history, out, partitions=2, run_id="mine")
    racing = LocalStorage(out)
    rival = rival_first(racing, lambda: begin(theirs, output))

    # When the restart has discarded the old run and the other run writes its plan first
    with pytest.raises(RunMismatch, match="it has 3 partitions, this one 2"):
        begin(mine, racing, restart=True)

    # Then the restart does not discard the other run: the folder holds its plan
    assert rival.began == (theirs, False)
    assert stored_plan(out) == theirs.to_json()
