"""The registry commands on a damaged registry: an audit event, a manifest or an alias that is not
what the registry writes. Each says in one line which file and what is wrong (a warning where
the command can go on, an error with its exit code where it cannot), never a traceback, and
leaves the file where it is.

The CLI runs in-process (`sds.cli.main.main`) on a throwaway project with local registries; the
registry's own checks run on every backend in tests/contract/test_registry_contract.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sds.ops.promotion import promote
from sds.ops.workspace import Workspace
from tests.unit.cli_run import sds

METRICS = {"roc_auc": 0.93, "pr_auc": 0.6, "expected_calibration_error": 0.01}
BAD_EVENT = "20990101T000000000000Z-damaged.json"


@pytest.fixture
def ws(project: Path) -> Workspace:
    """Versions 1, 2 and 3 in dev, promoted there in turn (3 is live)."""
    ws = Workspace.discover(project_dir=project)
    for tag in ("one", "two", "three"):
        payload = tag.encode() * 64
        version = ws.registry("dev").register(
            {"model.onnx": b"onnx" + payload, "model.skops": b"skops" + payload},
            {"metrics": METRICS},
            actor="tester",
            reason=tag,
        )
        promote(ws, to_env="dev", version=version.number)
    return ws


def model_dir(ws: Workspace, env: str = "dev") -> Path:
    return ws.home / "registries" / env / "models" / ws.model


# Audit events ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "problem"),
    [(b"[1]", "not a JSON object but an array"), (b"{bad", "not valid JSON")],
    ids=["array", "not-json"],
)
@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_history_names_an_unreadable_audit_event_and_lists_the_rest(
    ws: Workspace, capsys: pytest.CaptureFixture[str], stored: bytes, problem: str, as_json: bool
) -> None:
    # Given dev's audit trail, and an event file in it that is not an audit event
    bad = model_dir(ws) / "events" / BAD_EVENT
    bad.write_bytes(stored)

    # When the history is shown
    ended = sds(capsys, "history", "--env", "dev", *(["--json"] if as_json else []))

    # Then it succeeds with every readable event, and one warning line names the file and
    # what is wrong with it; the file is left as it was
    assert ended.code == 0, ended
    assert ended.err == (
        f"warning: dev: audit event {bad.as_uri()}: {problem} (left out of the history; the "
        "file is left as it is)\n"
    )
    if as_json:
        events = [(e["type"], e["version"]) for e in ended.json()]
        assert events == [(kind, n) for n in (1, 2, 3) for kind in ("registered", "promoted")]
    else:
        assert len(ended.out.splitlines()) == 1 + 6  # the header and the six events
    assert bad.read_bytes() == stored


@pytest.mark.parametrize("as_json", [False, True], ids=["stderr", "json"])
def test_a_rollback_past_an_unreadable_audit_event_is_refused_and_names_it(
    ws: Workspace, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    # Given a version 4 registered in dev but never promoted, and an event file in dev's audit
    # trail that is not an audit event
    ws.registry("dev").register(
        {"model.onnx": b"onnx four", "model.skops": b"skops four"},
        {"metrics": METRICS},
        actor="tester",
        reason="four",
    )
    bad = model_dir(ws) / "events" / BAD_EVENT
    bad.write_text("[1]")

    # When rolling back to that version, which dev never served
    ended = sds(capsys, *(["--json"] if as_json else []), "rollback", "--env", "dev", "--to", "4")

    # Then it is refused (exit 3) in one line that says the trail it read was incomplete and
    # where; nothing moved
    message = (
        "version 4 was never live in dev (it has served versions 1, 2 and 3; 1 audit event "
        f"could not be read and may show more, {bad.as_uri()}: not a JSON object but an array): "
        "a rollback returns only to a version dev served; to make version 4 live, promote it, "
        "gates first: sds promote 4 --to dev"
    )
    assert ended.code == 3, ended
    assert ended.error_line == f"sds: refused: {message}"
    if as_json:
        assert ended.json()["error"] == {"message": message, "type": "NeverServed", "exit_code": 3}
    state = ws.registry("dev").get_alias("dev")
    assert state is not None and state.version == 3


# Manifests ---------------------------------------------------------------------------------------


def reshape(ws: Workspace, version: int, field: str, value: object) -> str:
    """Set one field of a version's manifest (still valid JSON); the manifest as it was."""
    path = model_dir(ws) / "versions" / str(version) / "manifest.json"
    before = path.read_text()
    manifest = json.loads(before)
    document = manifest
    *parents, last = field.split("/")
    for name in parents:
        document = document[name]
    document[last] = value
    path.write_text(json.dumps(manifest))
    return before


SKOPS_NOT_AN_OBJECT = "version 1: manifest.json: artifacts.model.skops is a string, not an object"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("show", "1"), SKOPS_NOT_AN_OBJECT),
        (
            ("rollback", "--env", "dev", "--to", "1"),
            f"dev: cannot roll back to version 1: {SKOPS_NOT_AN_OBJECT}",
        ),
        (("promote", "1", "--to", "dev"), f"dev: {SKOPS_NOT_AN_OBJECT}"),
    ],
    ids=["show", "rollback", "promote"],
)
@pytest.mark.parametrize("as_json", [False, True], ids=["stderr", "json"])
def test_a_manifest_of_another_shape_is_an_error_naming_the_file_and_the_field(
    ws: Workspace,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    message: str,
    as_json: bool,
) -> None:
    # Given version 1's manifest listing an artifact that is not an object
    reshape(ws, 1, "artifacts/model.skops", "x")
    lock = ws.lock_path.read_text()

    # When a command reads version 1
    ended = sds(capsys, *(["--json"] if as_json else []), *argv)

    # Then it fails (exit 1) in one line naming the file and the field, and, for a rollback,
    # without claiming it may have landed: nothing moved
    assert ended.code == 1, ended
    assert ended.error_line == f"sds: error: {message}"
    if as_json:
        assert ended.json()["error"]["message"] == message
        assert ended.json()["error"]["exit_code"] == 1
    state = ws.registry("dev").get_alias("dev")
    assert state is not None and state.version == 3
    assert ws.lock_path.read_text() == lock


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_models_lists_a_manifest_of_another_shape_as_unreadable_with_a_warning(
    ws: Workspace, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    # Given version 1's metrics that are not an object of numbers
    reshape(ws, 1, "metrics", [1])

    # When the versions are listed
    ended = sds(capsys, "models", *(["--json"] if as_json else []))

    # Then all three are listed, version 1 as unreadable, and one warning names the problem
    problem = "version 1: manifest.json: metrics is an array, not an object"
    assert ended.code == 0, ended
    assert ended.err == (
        f"warning: dev: {problem} (listed as unreadable; sds show 1 --env dev verifies it)\n"
    )
    if as_json:
        rows = ended.json()["versions"]
        assert [(r["version"], r["problem"], r["live_in"]) for r in rows] == [
            (1, problem, []),
            (2, None, []),
            (3, None, ["dev"]),
        ]
    else:
        rows = [line.split() for line in ended.out.splitlines()[1:]]
        assert [(r[0], r[1]) for r in rows][:1] == [("1", "unreadable")]
        assert rows[2][-1] == "dev"


# Aliases -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_models_names_an_environment_whose_live_version_cannot_be_read(
    ws: Workspace, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    # Given dev's alias (version 3) corrupt, and staging and prod never deployed to
    alias = model_dir(ws) / "aliases" / "dev.json"
    alias.write_text("{oops")

    # When the versions are listed
    ended = sds(capsys, "models", *(["--json"] if as_json else []))

    # Then every version is listed, none as live in dev, and one warning says that which
    # version dev serves could not be read, and why; nothing about staging or prod
    problem = (
        f"alias 'dev' in {ws.registry('dev').uri} is corrupt (models/{ws.model}/aliases/dev.json): "
        "not valid JSON; the audit trail records where it last moved"
    )
    assert ended.code == 0, ended
    assert ended.err == (
        f"warning: dev: cannot tell which version is live in dev: {problem} (LIVE IN leaves dev "
        "out; sds status --env dev checks it)\n"
    )
    if as_json:
        document = ended.json()
        assert [(r["version"], r["live_in"]) for r in document["versions"]] == [
            (1, []),
            (2, []),
            (3, []),
        ]
        assert document["live_unknown"] == {"dev": problem}
    else:
        rows = [line.split() for line in ended.out.splitlines()[1:]]
        assert [(r[0], r[-1]) for r in rows] == [("1", "-"), ("2", "-"), ("3", "-")]
    assert alias.read_text() == "{oops"


def test_models_with_every_alias_readable_warns_about_nothing(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    ended = sds(capsys, "models", "--json")

    assert (ended.code, ended.err) == (0, "")
    assert ended.json()["live_unknown"] == {}
    assert [r["live_in"] for r in ended.json()["versions"]] == [[], [], ["dev"]]


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_models_names_an_environment_whose_alias_points_at_a_version_not_there(
    ws: Workspace, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    # Given dev's alias on version 3, whose manifest is gone (deleted, or never written whole)
    (model_dir(ws) / "versions" / "3" / "manifest.json").unlink()

    # When the versions are listed
    ended = sds(capsys, "models", *(["--json"] if as_json else []))

    # Then versions 1 and 2 are listed, neither live in dev, and one warning says that dev's
    # alias points at a version the registry does not hold, as --json's live_unknown does
    problem = f"its registry alias points at version 3, which is not in {ws.registry_uri('dev')}"
    assert ended.code == 0, ended
    assert ended.err == (
        f"warning: dev: cannot tell which version is live in dev: {problem} (LIVE IN leaves dev "
        "out; sds status --env dev checks it)\n"
    )
    if as_json:
        document = ended.json()
        assert [(r["version"], r["live_in"]) for r in document["versions"]] == [(1, []), (2, [])]
        assert document["live_unknown"] == {"dev": problem}


def test_models_lists_as_live_only_environments_of_the_same_promotion_chain(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a second promotion chain, sandbox, whose own version 1 (another model) is live there
    cdk_json = ws.project_dir / "cdk.json"
    document = json.loads(cdk_json.read_text())
    environments = document["context"]["environments"]
    environments["sandbox"] = environments["dev"]
    cdk_json.write_text(json.dumps(document))
    sandbox = Workspace.discover(project_dir=ws.project_dir)
    sandbox.registry("sandbox").register(
        {"model.onnx": b"sandbox's own"}, {"metrics": METRICS}, actor="tester"
    )
    promote(sandbox, to_env="sandbox", version=1)

    # When dev's versions, then sandbox's, are listed
    dev_rows = sds(capsys, "models", "--json").json()["versions"]
    sandbox_rows = sds(capsys, "models", "--env", "sandbox", "--json").json()["versions"]

    # Then dev's version 1 is not said to be live in sandbox, nor sandbox's in dev: version
    # numbers count each chain's own versions
    assert [(r["version"], r["live_in"]) for r in dev_rows] == [(1, []), (2, []), (3, ["dev"])]
    assert [(r["version"], r["live_in"]) for r in sandbox_rows] == [(1, ["sandbox"])]
