"""Commands that have a result to report and fail all the same: an environment or the lock file
that could not be read, a registry alias that is corrupt, events the store did not take, a
`--check` that found a disagreement. Each prints its report as usual and fails as every error
does: one line on stderr and its exit code; with `--json`, one document holding the result's
fields and `{"error": {"message", "type", "exit_code"}}`.

The CLI runs in-process (`sds.cli.main.main`) on a throwaway project with local registries; the
AWS-only commands (`prune`, `replay`) are tested the same way on moto in tests/integration.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sds.kernel.featurestore import FeatureStoreError
from sds.ops.promotion import promote
from sds.ops.workspace import Workspace
from tests.unit.cli_run import sds

METRICS = {"roc_auc": 0.93, "pr_auc": 0.6, "expected_calibration_error": 0.01}


@pytest.fixture
def ws(project: Path) -> Workspace:
    """Version 1 registered in dev and promoted there (pinned in models.lock.json)."""
    ws = Workspace.discover(project_dir=project)
    ws.registry("dev").register(
        {"model.onnx": b"onnx one", "model.skops": b"skops one"},
        {"metrics": METRICS},
        actor="tester",
    )
    promote(ws, to_env="dev", version=1)
    return ws


# models.lock.json that cannot be read ------------------------------------------------------------


CONFLICT = "<<<<<<< HEAD\n{}\n=======\n{}\n>>>>>>> theirs\n"


@pytest.mark.parametrize("damage", ["conflict", "folder"])
def test_envs_lists_the_environments_and_names_a_lock_file_it_cannot_read_as_status_does(
    ws: Workspace, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    # Given models.lock.json mid-merge, or a folder where it should be
    ws.lock_path.unlink()
    if damage == "conflict":
        ws.lock_path.write_text(CONFLICT)
    else:
        ws.lock_path.mkdir()

    # When the environments are listed, and their status asked for, in text and in JSON
    envs, envs_json = sds(capsys, "envs"), sds(capsys, "envs", "--json")
    status, status_json = sds(capsys, "status"), sds(capsys, "status", "--json")

    # Then envs still lists every environment and where its registry is, says its pins could
    # not be read, and fails as status does: the same exit code and the same one line
    assert envs.code == status.code == 1, (envs, status)
    problem = envs.error_line.removeprefix("sds: error: ")
    assert problem.startswith(f"{ws.lock_path}: ")
    assert status.error_line == envs.error_line
    rows = [line.split() for line in envs.out.splitlines()]
    assert [row[0] for row in rows] == ["ENV", "dev", "staging", "prod"]
    assert [row[-2:] for row in rows[1:]] == [
        ["unreadable", ws.registry_uri(env)] for env in ("dev", "staging", "prod")
    ]
    # And --json says the same: the listing, and the error as every command reports one
    assert envs_json.code == status_json.code == 1
    document = envs_json.json()
    assert document["error"] == {"message": problem, "type": "Unreadable", "exit_code": 1}
    assert [(r["env"], r["state"], r["pin"]) for r in document["environments"]] == [
        ("dev", "found", None),
        ("staging", "found", None),
        ("prod", "found", None),
    ]
    assert status_json.json()["error"] == document["error"]
    assert status_json.json()["read"] is False


def test_envs_with_a_readable_lock_file_is_a_bare_list_as_before(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = sds(capsys, "envs", "--json")

    assert (listed.code, listed.err) == (0, "")
    assert [(r["env"], r["pin"] and r["pin"]["version"]) for r in listed.json()] == [
        ("dev", 1),
        ("staging", None),
        ("prod", None),
    ]


# A registry alias that was read, and is not an alias --------------------------------------------


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_status_says_a_corrupt_alias_is_corrupt_not_unreachable(
    ws: Workspace, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    # Given dev's registry alias overwritten with something that is not JSON
    alias = ws.home / "registries" / "dev" / "models" / ws.model / "aliases" / "dev.json"
    alias.write_text("{oops")

    # When asking for the status
    ended = sds(capsys, "status", *(["--json"] if as_json else []))

    # Then it could not tell what dev serves (exit 1), and says the alias is corrupt in the
    # registry's words, never that dev could not be reached; the other environments are read
    problem = (
        f"alias 'dev' in {ws.registry('dev').uri} is corrupt (models/{ws.model}/aliases/dev.json): "
        "not valid JSON; the audit trail records where it last moved"
    )
    assert ended.code == 1, ended
    assert ended.error_line == f"sds: error: {problem}"
    assert "unreachable" not in ended.out + ended.err
    if as_json:
        document = ended.json()
        assert document["error"] == {"message": problem, "type": "Unreadable", "exit_code": 1}
        dev, staging, prod = document["environments"]
        assert (dev["state"], dev["error"], dev["warnings"]) == ("alias corrupt", None, [problem])
        assert dev["pin"]["version"] == 1  # the pin was still read
        assert staging["state"] == prod["state"] == "nothing promoted"
    else:
        rows = [line.split() for line in ended.out.splitlines()[1:4]]
        assert rows[0][0] == "dev" and rows[0][-2:] == ["alias", "corrupt"]
        assert "warning:" not in ended.out  # the problem is the error, on stderr
    assert alias.read_text() == "{oops"


def test_status_says_each_environment_it_could_not_reach_in_one_line(
    ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given staging's and prod's registries overridden with something that is no registry
    monkeypatch.setenv("SDS_REGISTRY_STAGING", "foo://x")
    monkeypatch.setenv("SDS_REGISTRY_PROD", "foo://x")

    # When asking for the status in JSON
    ended = sds(capsys, "status", "--json")

    # Then both are unreachable, each with its cause, in the one error line and in the error
    # object next to the report
    document = ended.json()
    assert ended.code == document["error"]["exit_code"] == 1
    staging, prod = document["environments"][1:]
    assert staging["state"] == prod["state"] == "unreachable"
    assert ended.error_line == (
        f"sds: error: staging is unreachable: {staging['error']}; prod is unreachable: "
        f"{prod['error']}"
    )
    assert document["error"]["message"] == ended.error_line.removeprefix("sds: error: ")
    assert document["environments"][0]["state"] == "in sync"


# --check ------------------------------------------------------------------------------------------


def test_a_failed_check_is_an_error_in_json_too(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given dev's alias on version 1 and the lock file gone (no pin: the next deploy ships none)
    ws.lock_path.unlink()

    # When checking the status, and reporting it without --check
    checked = sds(capsys, "status", "--check", "--json")
    reported = sds(capsys, "status", "--json")

    # Then the check fails (exit 1) as an error naming where it found the disagreement; the
    # report itself is the same, and is no error without --check
    assert checked.code == 1, checked
    message = "dev is out of sync (the report's warnings say what disagrees and what to do)"
    assert checked.error_line == f"sds: error: {message}"
    document = checked.json()
    assert document.pop("error") == {"message": message, "type": "OutOfSync", "exit_code": 1}
    assert document == reported.json()
    assert (reported.code, reported.err) == (0, "")


# Events the store did not take --------------------------------------------------------------------


def test_events_the_store_did_not_take_fail_ingest_with_its_totals_in_json(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sds.kernel.featurestore.sqlite import SqliteFeatureStore
    from training.data import write_jsonl
    from training.synthetic import generate_activity

    # Given a few events, and a feature store whose commits fail
    events = project / "events.jsonl"
    write_jsonl(generate_activity(20, seed=3), events)

    def fail(*args: object, **kwargs: object) -> None:
        raise FeatureStoreError("disk I/O error")

    monkeypatch.setattr(SqliteFeatureStore, "commit", fail)

    # When they are ingested with --json
    ended = sds(capsys, "ingest", str(events), "--clock", "events", "--quiet", "--json")

    # Then it fails (exit 1) in one line saying how many were not stored and why, and the JSON
    # carries the totals (every failed event) next to the error
    document = ended.json()
    assert ended.code == document["error"]["exit_code"] == 1
    failed = document["failed"]
    assert failed and set(failed.values()) == {"disk I/O error"}
    assert document["error"]["type"] == "EventsNotStored"
    assert ended.error_line == f"sds: error: {document['error']['message']}"
    assert document["error"]["message"].startswith(f"{len(failed)} events were not stored: ")
