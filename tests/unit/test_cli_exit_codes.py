"""How `sds` ends: the exit code an error declares, its one stderr line and its --json document;
environment names checked once, as the arguments are parsed.

The CLI runs in-process (`sds.cli.main.main`) on a throwaway project with local registries.
"""

from __future__ import annotations

import argparse
import errno
import gzip
import itertools
import shlex
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sds.cli.commands import envs
from sds.kernel.errors import Refused
from sds.kernel.lock import read_lock
from sds.kernel.registry import Registry, Version
from sds.kernel.signals import Terminated
from sds.ops.promotion import promote
from sds.ops.workspace import Workspace
from tests.support.trained_model import TrainedModel
from tests.unit.cli_run import sds
from training.data import write_jsonl
from training.synthetic import generate_activity

METRICS = {"roc_auc": 0.93, "pr_auc": 0.6, "expected_calibration_error": 0.01}


def register(ws: Workspace, tag: str) -> Version:
    payload = tag.encode() * 64
    return ws.registry("dev").register(
        {"model.onnx": b"onnx" + payload, "model.skops": b"skops" + payload},
        {"metrics": METRICS},
        actor="tester",
        reason=tag,
    )


# Errors carry their exit code ------------------------------------------------------------------


def test_a_local_rollback_that_loses_a_concurrent_update_is_refused_with_exit_3(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given dev serving v2 (after v1), and v3 registered
    ws = Workspace.discover(project_dir=project)
    one, two, three = (register(ws, tag) for tag in ("one", "two", "three"))
    promote(ws, to_env="dev", version=one.number)
    promote(ws, to_env="dev", version=two.number)
    pin_before = (project / "models.lock.json").read_text()

    # And another operator promoting v3 between the rollback's read of the alias and its write
    real_move = Registry.move_alias
    raced: list[str] = []

    def racing_move(self: Registry, alias: str, version: int, **kwargs: Any) -> Any:
        if kwargs.get("kind") == "rolled_back" and not raced:
            raced.append(alias)
            current = self.get_alias(alias)
            real_move(
                self,
                alias,
                three.number,
                expected=current,
                kind="promoted",
                actor="other",
                reason="meanwhile",
            )
        return real_move(self, alias, version, **kwargs)

    monkeypatch.setattr(Registry, "move_alias", racing_move)

    # When rolling back dev
    ended = sds(capsys, "rollback", "--env", "dev", "--reason", "incident", "--json")

    # Then it is refused (exit 3, as the same loss with --aws), in one line and as JSON
    assert raced == ["dev"]
    assert ended.code == 3, ended
    assert ended.error_line.startswith("sds: refused: dev: alias 'dev' was moved by someone else")
    error = ended.json()["error"]
    assert (error["type"], error["exit_code"]) == ("ConcurrentRollback", 3)
    # And nothing of its own was done: the alias is the other operator's, the pin untouched
    state = ws.registry("dev").get_alias("dev")
    assert state is not None and state.version == three.number
    assert not [e for e in ws.registry("dev").events() if e["type"] == "rolled_back"]
    assert (project / "models.lock.json").read_text() == pin_before


class _ChangedUnderneath(Refused):
    """An error class the CLI has never heard of: only its declared exit code can tell main."""

    def details(self) -> dict[str, Any]:
        return {"env": "dev", "retry": True}


def test_main_exits_with_the_code_an_error_declares_and_reports_its_details(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a command that fails with a refusal main does not know by name
    def refuse(args: argparse.Namespace) -> int:
        raise _ChangedUnderneath("dev changed while this command ran")

    monkeypatch.setattr(envs, "run", refuse)

    # When it runs, with and without --json
    plain = sds(capsys, "envs")
    as_json = sds(capsys, "envs", "--json")

    # Then both exit 3; stderr has the one line; the JSON has the error's own fields too
    assert plain.code == as_json.code == 3
    assert plain.out == ""
    assert plain.error_line == "sds: refused: dev changed while this command ran"
    assert as_json.json() == {
        "env": "dev",
        "retry": True,
        "error": {
            "message": "dev changed while this command ran",
            "type": "_ChangedUnderneath",
            "exit_code": 3,
        },
    }


@pytest.mark.parametrize(
    ("stop", "code", "how"),
    [
        (KeyboardInterrupt, 130, "interrupted"),
        (Terminated, 143, "stopped by SIGTERM"),
    ],
)
def test_an_interruption_under_json_is_a_json_document_too(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stop: type[KeyboardInterrupt],
    code: int,
    how: str,
) -> None:
    # Given a command stopped by Ctrl-C or SIGTERM, saying how to resume
    def stopped(args: argparse.Namespace) -> int:
        raise stop("run the same command again to resume")

    monkeypatch.setattr(envs, "run", stopped)

    # When it runs, with and without --json
    plain = sds(capsys, "envs")
    as_json = sds(capsys, "envs", "--json")

    # Then both exit with the signal's code and say so in one stderr line; under --json a
    # script also gets the error document on stdout, as for any other way a command ends
    assert plain.code == as_json.code == code
    assert plain.out == ""
    assert (
        plain.error_line
        == as_json.error_line
        == f"sds: {how}: run the same command again to resume"
    )
    assert as_json.json() == {
        "error": {
            "message": "run the same command again to resume",
            "type": stop.__name__,
            "exit_code": code,
        }
    }


@pytest.mark.parametrize(("stop", "code"), [(KeyboardInterrupt, 130), (Terminated, 143)])
def test_an_interrupted_ingest_says_that_running_it_again_stores_the_rest(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stop: type[KeyboardInterrupt],
    code: int,
) -> None:
    from sds.kernel.online import OnlineFeatures

    # Given a replay stopped (Ctrl-C or SIGTERM) after its first batch was committed
    apply = OnlineFeatures.apply
    batches = 0

    def stopped(self: OnlineFeatures, *args: Any, **kwargs: Any) -> Any:
        nonlocal batches
        batches += 1
        if batches > 1:
            raise stop()
        return apply(self, *args, **kwargs)

    monkeypatch.setattr(OnlineFeatures, "apply", stopped)
    data = write_jsonl(generate_activity(300, seed=5), project / "events.jsonl")

    # When it runs
    ended = sds(capsys, "ingest", str(data), "--clock", "events")

    # Then it exits with the signal's code, and its last line says how to finish the job
    assert ended.code == code
    assert ended.error_line.endswith(
        ": run the same command again to store the rest: what was stored counts as already there"
    )


@pytest.mark.parametrize(
    ("stop", "code", "how"),
    [(KeyboardInterrupt, 130, "interrupted"), (Terminated, 143, "stopped by SIGTERM")],
)
def test_a_promotion_interrupted_after_its_alias_moved_names_the_command_that_finishes_it(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stop: type[KeyboardInterrupt],
    code: int,
    how: str,
) -> None:
    from sds.kernel import lock as lock_file

    # Given version 1 live in dev, and a promotion of version 2 stopped (Ctrl-C or SIGTERM)
    # after its alias moved, as it writes the pin
    ws = Workspace.discover(project_dir=project)
    register(ws, "one")
    two = register(ws, "two")
    promote(ws, to_env="dev", version=1)
    write = lock_file.atomic_write_text

    def stopped(path: Path, text: str) -> None:
        raise stop()

    monkeypatch.setattr(lock_file, "atomic_write_text", stopped)

    # When it runs
    ended = sds(capsys, "promote", "2", "--to", "dev", "--reason", "better")

    # Then it exits with the signal's code, saying the promotion may have landed and the
    # command that finishes it
    assert ended.code == code
    assert ended.error_line == (
        f"sds: {how}: dev: promotion 1 -> 2 may have landed; finish it with: "
        "sds promote 2 --to dev (safe to repeat)"
    )

    # And that command, run as printed, writes the pin from the alias, and again does nothing
    monkeypatch.setattr(lock_file, "atomic_write_text", write)
    command = ended.error_line.split("finish it with: ")[1].removesuffix(" (safe to repeat)")
    finished = sds(capsys, *shlex.split(command)[1:])
    assert finished.code == 0, finished.err
    assert finished.out.splitlines() == [
        "dev already serves version 2",
        f"  pin rewritten in {ws.lock_path} to follow the alias (was version 1): "
        "deploy with: cdk deploy 'dev/*'",
    ]
    pin = read_lock(ws.lock_path, model=ws.model).pins["dev"]
    assert (pin.version, pin.sha256) == (2, two.sha256)
    state = ws.registry("dev").get_alias("dev")
    assert state is not None and state.version == 2
    (promoted,) = [e for e in ws.registry("dev").events() if e["id"] == state.event_id]
    assert (promoted["type"], promoted["reason"]) == ("promoted", "better")
    again = sds(capsys, *shlex.split(command)[1:])
    assert again.out == "dev already serves version 2; nothing to do\n"


def test_an_operating_system_error_exits_1_in_one_line(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an --out name longer than the file system takes (an --out below a file is checked
    # by generate itself: test_generating_under_a_file_names_the_file_in_the_way)
    out = project / f"{'e' * 300}.jsonl"

    # When generating into it
    ended = sds(capsys, "generate", "--events", "20", "--out", str(out), "--json")

    # Then it is an error (exit 1), named in one line and in the JSON document
    assert ended.code == 1
    assert ended.error_line.startswith("sds: error: ") and "File name too long" in ended.error_line
    assert ended.json()["error"]["exit_code"] == 1


CONTEXT_EXPECTED = 'expected a JSON object with a "context" object holding the project\'s settings'


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("[]", CONTEXT_EXPECTED),
        ('{"context": []}', CONTEXT_EXPECTED),
        ("{}", "environments: expected a non-empty object of environment settings"),
    ],
    ids=["array", "context-array", "no-environments"],
)
def test_a_cdk_json_of_another_shape_is_an_error_naming_the_file(
    project: Path, capsys: pytest.CaptureFixture[str], document: str, problem: str
) -> None:
    # Given the project's cdk.json replaced by valid JSON of another shape
    (project / "cdk.json").write_text(document)

    # When a registry command loads it
    ended = sds(capsys, "models", "--json")

    # Then it is one error line (exit 1, no traceback) naming the file and what is wrong
    message = f"{project / 'cdk.json'}: {problem}"
    assert ended.code == 1
    assert ended.error_line == f"sds: error: {message}"
    assert ended.json()["error"] == {"message": message, "type": "ConfigError", "exit_code": 1}


@pytest.mark.parametrize("how", ["--project-dir", "SDS_PROJECT_DIR"])
@pytest.mark.parametrize(
    ("made", "what"),
    [
        (None, "does not exist"),
        ("folder", "holds no cdk.json"),
        ("file", "is a file, not a directory"),
    ],
    ids=["missing", "empty", "a file"],
)
def test_a_project_dir_without_cdk_json_names_where_it_was_given(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    made: str | None,
    what: str,
) -> None:
    # Given a project directory named explicitly that does not exist, holds no cdk.json, or
    # is a file
    elsewhere = project / "elsewhere"
    if made == "folder":
        elsewhere.mkdir()
    elif made == "file":
        elsewhere.write_text("{}")
    if how == "SDS_PROJECT_DIR":
        monkeypatch.setenv("SDS_PROJECT_DIR", str(elsewhere))
        argv: tuple[str, ...] = ("status", "--json")
    else:
        argv = ("status", "--project-dir", str(elsewhere), "--json")

    # When a command looks for the project there
    ended = sds(capsys, *argv)

    # Then the error names the option or variable and the directory; running elsewhere would
    # not help (the explicit directory wins), so it does not say to
    message = (
        f"{how} names {elsewhere}, which {what}: name the directory that holds the project's "
        "cdk.json"
    )
    assert ended.code == 1
    assert ended.error_line == f"sds: error: {message}"
    assert ended.json()["error"]["message"] == message


def test_no_project_found_names_both_ways_to_point_at_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a directory with no cdk.json in it or above it, and no SDS_PROJECT_DIR
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.delenv("SDS_PROJECT_DIR", raising=False)
    assert not any((d / "cdk.json").exists() for d in (outside, *outside.parents))

    # When a command looks for the project
    ended = sds(capsys, "models", "--json")

    # Then the error says to run inside a project, or to name it either way sds takes one
    message = (
        f"no cdk.json in {outside} or any parent: run sds inside an sds project, or name its "
        "directory with --project-dir DIR or the SDS_PROJECT_DIR environment variable"
    )
    assert ended.code == 1
    assert ended.error_line == f"sds: error: {message}"
    assert ended.json()["error"]["message"] == message


@pytest.mark.parametrize("named", [True, False], ids=["SDS_HOME", "default .sds"])
@pytest.mark.parametrize("argv", [("models",), ("train", "--data", "e.jsonl")], ids=str)
def test_a_local_state_home_that_is_a_file_is_named_before_anything_is_read_or_written(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    named: bool,
    argv: tuple[str, ...],
) -> None:
    # Given the local state's home (SDS_HOME, or the project's .sds) is a file
    write_jsonl(generate_activity(2000, seed=7), project / "e.jsonl")  # enough to train on
    home = project / ("state" if named else ".sds")
    home.write_text("a file")
    if named:
        monkeypatch.setenv("SDS_HOME", str(home))
    else:
        monkeypatch.delenv("SDS_HOME", raising=False)

    # When a command reads (models) or writes (train) there
    ended = sds(capsys, *argv)

    # Then it fails (never "no versions" from a listing), naming the file, which is untouched
    how = f"SDS_HOME names {home}, which" if named else str(home)
    assert ended.code == 1, ended
    assert ended.error_line.startswith(f"sds: error: {how} is a file, not a directory: ")
    assert home.read_text() == "a file"


@pytest.mark.parametrize("uri", ["foo://x", "s3://", "file://host/path"])
def test_a_registry_override_that_is_no_registry_uri_is_named_by_its_variable(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, uri: str
) -> None:
    # Given dev's registry overridden with something that is no registry URI
    monkeypatch.setenv("SDS_REGISTRY_DEV", uri)

    # When listing the environments, dev's versions and dev's status
    listing = sds(capsys, "envs", "--json")
    models = sds(capsys, "models", "--json")
    status = sds(capsys, "status", "--env", "dev", "--json")

    # Then each says that SDS_REGISTRY_DEV is the problem, and exits 1: envs does not list it as
    # found (the listing cannot say where that registry is), the other environments still are;
    # envs and status say it in the same words, in one line and in the error object of --json
    assert listing.code == models.code == status.code == 1
    dev, staging, prod = listing.json()["environments"]
    assert dev["state"] == "unreachable" and dev["registry"] is None
    assert dev["problem"].startswith(f"SDS_REGISTRY_DEV={uri}: ")
    assert staging["state"] == prod["state"] == "found"
    unreachable = f"dev is unreachable: {dev['problem']}"
    assert listing.error_line == status.error_line == f"sds: error: {unreachable}"
    error = {"message": unreachable, "type": "Unreadable", "exit_code": 1}
    assert listing.json()["error"] == status.json()["error"] == error
    assert models.json()["error"]["message"] == dev["problem"]
    (env,) = status.json()["environments"]
    assert env["error"] == dev["problem"]


def test_a_usage_error_exits_2(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ended = sds(capsys, "train", "--json")
    assert ended.code == 2
    assert ended.error_line.startswith("sds: error: --data is required")
    assert ended.json()["error"] == {
        "message": ended.error_line.removeprefix("sds: error: "),
        "type": "UsageError",
        "exit_code": 2,
    }


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--max-iter", "0", "a whole number, 1 or more"),
        ("--learning-rate", "0", "a number above 0 and up to 1"),
        ("--max-leaf-nodes", "1", "a whole number, 2 or more"),
        ("--max-depth", "0", "a whole number, 1 or more"),
        ("--max-depth", "two", "a whole number, 1 or more"),
        ("--min-samples-leaf", "0", "a whole number, 1 or more"),
        ("--l2-regularization", "-1", "a number, 0 or more"),
        ("--l2-regularization", "nan", "a number, 0 or more"),
        ("--holdout-fraction", "0.9", "a number from 0.05 to 0.5"),
        ("--alert-rate", "0.5", "a number above 0 and below 0.5"),
        ("--negative-rate", "0", "a number from 0.001 to 1"),
        ("--seed", "-1", "a whole number from 0 to 4294967295"),
        ("--seed", "5000000000", "a whole number from 0 to 4294967295"),
    ],
)
def test_a_training_parameter_out_of_range_is_a_usage_error_naming_it_before_any_work(
    option: str, value: str, expected: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a history that is not there (reading it would be an error, exit 1)
    missing = project / "nowhere.jsonl"
    # When training with a parameter scikit-learn or numpy would refuse
    ended = sds(capsys, "train", "--data", str(missing), option, value, "--quiet", "--json")
    # Then the parser refuses it (exit 2), naming the option, before reading anything
    assert ended.code == 2, ended
    assert ended.error_line == (
        f"sds: error: argument {option}: {value!r}: must be {expected} (see: sds train --help)"
    )
    assert ended.json()["error"]["type"] == "UsageError"


@pytest.mark.parametrize("value", ["0", "-2", "week"])
def test_a_holdout_of_less_than_a_day_is_a_usage_error_naming_it_as_the_task_does(
    value: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When training from capture with no holdout (the environment's captures are never read)
    ended = sds(capsys, "train", "--from-capture", "--env", "dev", "--holdout-days", value)
    # Then the parser refuses it (exit 2) in the words of `python -m training.train`
    assert ended.code == 2, ended
    assert ended.error_line == (
        f"sds: error: argument --holdout-days: {value!r}: must be a whole number, 1 or more "
        "(see: sds train --help)"
    )


@pytest.mark.parametrize(
    ("given", "refused"),
    [
        (("--negative-rate", "0.5"), "--negative-rate"),
        (
            ("--holdout-fraction", "0.3", "--negative-rate", "0.1"),
            "--holdout-fraction, --negative-rate",
        ),
    ],
)
def test_training_from_capture_refuses_the_parameters_only_a_history_uses(
    given: tuple[str, ...], refused: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When training from capture with a parameter it has no use for (its manifest would record
    # it as if it had been applied)
    ended = sds(capsys, "train", "--from-capture", "--env", "dev", *given)
    # Then it is a usage error naming it, before the captures are read
    assert ended.code == 2, ended
    assert ended.error_line.startswith(f"sds: error: {refused}: only when training on a history")


@pytest.mark.parametrize(
    ("given", "refused"),
    [
        (("--since", "2026-01-01"), "--since"),
        (("--until", "2026-03-01", "--holdout-days", "3"), "--until, --holdout-days"),
    ],
)
def test_on_fargate_the_capture_window_flags_are_refused_not_ignored(
    given: tuple[str, ...], refused: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When running an environment's Fargate task with a flag of training from capture on
    # this machine (the task takes the window it is deployed with)
    ended = sds(capsys, "train", "--env", "dev", "--on-fargate", *given)
    # Then it is a usage error naming it, before anything is asked of AWS
    assert ended.code == 2, ended
    assert ended.error_line.startswith(
        f"sds: error: {refused}: only with --from-capture on this machine"
    )


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "inf"])
def test_an_activation_timeout_that_is_not_a_duration_is_a_usage_error(
    project: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    # When the parser reads it, before anything runs
    ended = sds(capsys, "--aws", "rollback", "--env", "prod", "--activation-timeout", value)
    # Then it is a usage error (exit 2) in one line that names the option
    assert ended.code == 2
    assert ended.error_line.startswith("sds: error: argument --activation-timeout: ")


def test_an_activation_timeout_on_a_local_rollback_is_a_usage_error_and_nothing_moves(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given dev serving v2 after v1, locally
    ws = Workspace.discover(project_dir=project)
    one, two = (register(ws, tag) for tag in ("one", "two"))
    promote(ws, to_env="dev", version=one.number)
    promote(ws, to_env="dev", version=two.number)
    # When a local rollback is given an option that only a Lambda switch uses
    ended = sds(capsys, "rollback", "--env", "dev", "--activation-timeout", "60")
    # Then it is a usage error that says so, and the alias did not move
    assert ended.code == 2
    assert "--activation-timeout applies to rollbacks on AWS only" in ended.error_line
    state = ws.registry("dev").get_alias("dev")
    assert state is not None and state.version == two.number


# Environment names, resolved once --------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("train", "--env", "qa", "--data", "missing.jsonl"),
        ("models", "--env", "qa"),
        ("show", "1", "--env", "qa"),
        ("promote", "1", "--to", "qa"),
        ("promote", "--from", "qa", "--to", "dev"),
        ("rollback", "--env", "qa"),
        ("history", "--env", "qa"),
        ("status", "--env", "qa"),
        ("serve", "--env", "qa", "--port", "0"),
    ],
    ids=lambda argv: " ".join(argv[:3]),
)
def test_an_unknown_environment_is_named_with_the_known_ones_before_anything_happens(
    argv: tuple[str, ...], project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When a command names an environment cdk.json does not define
    ended = sds(capsys, *argv, "--json")

    # Then it is one clear error (exit 1) that lists the known environments
    assert ended.code == 1, ended
    message = "unknown environment 'qa' (known: dev, staging, prod)"
    assert ended.error_line == f"sds: error: {message}"
    assert ended.json()["error"] == {"message": message, "type": "ConfigError", "exit_code": 1}
    # And nothing was created for it: no registry, no pin
    assert not (project / ".sds" / "registries" / "qa").exists()
    assert not (project / "models.lock.json").exists()


def test_without_env_a_command_works_on_the_first_environment_of_the_chain(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = Workspace.discover(project_dir=project)
    register(ws, "one")

    listing = sds(capsys, "models", "--json").json()

    assert listing["env"] == "dev"
    assert [v["version"] for v in listing["versions"]] == [1]


def test_promote_from_one_environment_to_the_next_resolves_both(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given v1 live in dev
    ws = Workspace.discover(project_dir=project)
    register(ws, "one")
    promote(ws, to_env="dev", version=1)

    # When promoting what is live in dev to staging
    ended = sds(capsys, "promote", "--from", "dev", "--to", "staging", "--quiet", "--json")

    # Then staging serves the copy, and both pins are written
    assert ended.code == 0, ended
    assert (ended.json()["env"], ended.json()["copied_from"]) == ("staging", "dev")
    pins = read_lock(ws.lock_path, model=ws.model).pins
    assert pins["staging"].version == pins["dev"].version == 1


@pytest.mark.parametrize(
    ("env", "instead"),
    [
        (
            "dev",
            "dev starts the promotion chain (it has no promote_from in cdk.json): make a version "
            "registered there live with sds promote VERSION --to dev",
        ),
        (
            "staging",
            "promote from the environment before it in the chain (dev, its promote_from in "
            "cdk.json): sds promote --from dev --to staging",
        ),
        (
            "prod",
            "promote from the environment before it in the chain (staging, its promote_from in "
            "cdk.json): sds promote --from staging --to prod",
        ),
    ],
)
def test_promoting_an_environment_into_itself_is_a_usage_error_saying_where_to_promote_from(
    project: Path, capsys: pytest.CaptureFixture[str], env: str, instead: str
) -> None:
    # Given v1 live in every environment
    ws = Workspace.discover(project_dir=project)
    register(ws, "one")
    for name in ("dev", "staging", "prod"):
        promote(ws, to_env=name, version=1)
    audit = {name: len(ws.registry(name).events()) for name in ("dev", "staging", "prod")}

    # When what is live in an environment is promoted into that same environment
    ended = sds(capsys, "promote", "--from", env, "--to", env, "--quiet", "--json")

    # Then it is refused as a usage error (exit 2) naming the mistake and the promotion meant,
    # not "nothing to do", and nothing was written
    message = (
        f"--from and --to are both {env}: an environment is not promoted into itself; {instead}"
    )
    assert ended.code == 2, ended
    assert ended.error_line == f"sds: error: {message}"
    assert ended.json()["error"]["message"] == message
    assert {name: len(ws.registry(name).events()) for name in audit} == audit


def test_promoting_a_named_version_or_from_the_environment_below_is_still_allowed(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given v1 and v2 registered
    ws = Workspace.discover(project_dir=project)
    register(ws, "one"), register(ws, "two")

    # When a version is promoted to the chain's start, what is live there to the next, and a
    # version already live promoted again
    named = sds(capsys, "promote", "1", "--to", "dev", "--quiet")
    onward = sds(capsys, "promote", "--from", "dev", "--to", "staging", "--quiet")
    again = sds(capsys, "promote", "1", "--to", "dev", "--quiet")

    # Then each does what it did before
    assert named.code == 0 and named.out.startswith("dev: nothing -> version 1"), named
    assert onward.code == 0 and onward.out.startswith("staging: nothing -> version 1"), onward
    assert again.code == 0 and "dev already serves version 1; nothing to do" in again.out, again


def test_promoting_back_a_version_already_in_the_targets_registry_says_nothing_was_copied(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given staging rolled back from version 2 (copied from dev) to version 1
    ws = Workspace.discover(project_dir=project)
    register(ws, "one"), register(ws, "two")
    first = sds(capsys, "promote", "1", "--to", "staging")
    assert first.out.splitlines()[0] == "staging: nothing -> version 1, copied from dev", first
    assert "copying version 1 into staging's registry" in first.err
    second = sds(capsys, "promote", "2", "--to", "staging", "--json").json()
    assert (second["copied"], second["copied_from"], second["from_env"]) == (True, "dev", "dev")
    assert sds(capsys, "rollback", "--env", "staging").code == 0
    events = len(ws.registry("staging").events())

    # When version 2 is promoted to staging again
    ended = sds(capsys, "promote", "2", "--to", "staging")

    # Then the headline says it was already there (and no copy progress was shown), not copied
    assert ended.code == 0, ended
    assert ended.out.splitlines()[0] == (
        "staging: version 1 -> version 2, already in staging's registry (nothing copied)"
    )
    assert "copying" not in ended.err
    # And the registry's trail has the promotion, no second copy
    assert [e["type"] for e in ws.registry("staging").events()[events:]] == ["promoted"]

    # And --json says the same: it comes from dev, but was not copied this time
    assert sds(capsys, "rollback", "--env", "staging").code == 0
    again = sds(capsys, "promote", "2", "--to", "staging", "--json").json()
    assert (again["changed"], again["previous"], again["version"]) == (True, 1, 2)
    assert (again["copied"], again["copied_from"], again["from_env"]) == (False, None, "dev")


def test_show_prints_the_threshold_in_full_never_above_the_scores_it_flags(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a version whose threshold is a served float32 score, 0.690989077...
    ws = Workspace.discover(project_dir=project)
    threshold = float(np.float32(0.69098908))
    ws.registry("dev").register(
        {"model.onnx": b"onnx", "model.skops": b"skops"},
        {"metrics": METRICS, "decision_threshold": threshold},
        actor="tester",
    )

    # When it is shown
    shown = sds(capsys, "show", "1")

    # Then the threshold is the very number decisions compare with (to 4 places it read 0.6910,
    # above the scores it flags)
    assert shown.code == 0, shown
    (line,) = [x for x in shown.out.splitlines() if x.split()[0] == "threshold"]
    assert float(line.split()[1]) == threshold


def test_show_says_over_which_share_of_the_holdout_precision_at_alert_was_measured(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a version whose tied top scores flagged 2.025% of its holdout for a 1% target, and
    # one registered before the share was recorded
    ws = Workspace.discover(project_dir=project)
    operating_point = {"alert_rate": 0.01, "precision_at_alert_rate": 0.4938}
    for tag, extra in (("tied", {"flagged_at_alert_rate": 0.02025}), ("old", {})):
        ws.registry("dev").register(
            {"model.onnx": b"onnx" + tag.encode(), "model.skops": b"skops" + tag.encode()},
            {"metrics": {**METRICS, **operating_point, **extra}},
            actor="tester",
        )

    # When each is shown
    tied, old = sds(capsys, "show", "1"), sds(capsys, "show", "2")

    # Then the precision line says the share flagged and the target (the share is also listed)
    assert tied.code == old.code == 0, (tied, old)
    lines = {line.split()[0]: line for line in tied.out.splitlines()}
    assert lines["precision_at_alert_rate"].split(maxsplit=1)[1] == (
        "0.4938 at 2.02% flagged (target 1%)"
    )
    assert lines["flagged_at_alert_rate"].split() == ["flagged_at_alert_rate", "0.0203"]
    # And the older manifest still reads, saying what it does not know
    (line,) = [x for x in old.out.splitlines() if x.split()[0] == "precision_at_alert_rate"]
    assert line.split(maxsplit=1)[1] == (
        "0.4938 at the threshold for 1% (share flagged not recorded)"
    )
    assert "flagged_at_alert_rate" not in old.out
    assert sds(capsys, "show", "1", "--json").json()["metrics"]["flagged_at_alert_rate"] == 0.02025
    # And `sds models --json` carries it beside the precision (None for the older version)
    rows = sds(capsys, "models", "--json").json()["versions"]
    assert [r["flagged_at_alert_rate"] for r in rows] == [0.02025, None]


def test_show_says_what_each_version_was_trained_on_and_by_which_code_or_not_recorded(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a version trained on a history, one trained from an environment's capture (its
    # manifest records payments and a window, no event count), and one recording neither
    ws = Workspace.discover(project_dir=project)
    history = {
        "events": 89425,
        "payments": 60000,
        "uri": "data/events.jsonl.gz",
        "fingerprint": "fb75fd9152e63bd",
    }
    capture = {
        "source": "capture",
        "env": "dev",
        "payments": 17513,
        "since": "2026-01-01T00:00:00.000000Z",
        "until": "2026-04-01T00:00:00.000000Z",
        "as_of": "2026-04-20T00:00:00.000000Z",
        "fingerprint": "2f67f27c54bb686",
    }
    for tag, data in (("history", history), ("capture", capture), ("none", None)):
        ws.registry("dev").register(
            {"model.onnx": b"onnx" + tag.encode(), "model.skops": b"skops" + tag.encode()},
            {"metrics": METRICS, **({"data": data, "code_version": "abc123"} if data else {})},
            actor="tester",
        )

    # When each is shown
    lines = []
    for version in ("1", "2", "3"):
        shown = sds(capsys, "show", version)
        assert shown.code == 0, shown
        (data,) = [x for x in shown.out.splitlines() if x.split()[0] == "data"]
        (code,) = [x for x in shown.out.splitlines() if x.split()[0] == "code"]
        lines.append((code.split(maxsplit=1)[1], data.split(maxsplit=1)[1]))

    # Then each says what its manifest records, never "None events" nor "code None"
    assert lines == [
        (
            "abc123",
            "89425 events (60000 payments) from data/events.jsonl.gz, fingerprint fb75fd9152e6...",
        ),
        (
            "abc123",
            "17513 payments captured in dev from 2026-01-01T00:00:00.000000Z until "
            "2026-04-01T00:00:00.000000Z, labels as of 2026-04-20T00:00:00.000000Z, fingerprint "
            "2f67f27c54bb...",
        ),
        ("not recorded", "not recorded"),
    ]
    # And --json is the manifest as stored: no code_version where none was recorded
    assert "code_version" not in sds(capsys, "show", "3", "--json").json()


# Version numbers: 3 or v3, as status prints them ----------------------------------------------


def test_a_version_copied_from_status_as_v2_is_taken_by_promote_rollback_and_show(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given v1 then v2 (given as `v2`) promoted in dev
    ws = Workspace.discover(project_dir=project)
    register(ws, "one")
    register(ws, "two")
    promote(ws, to_env="dev", version=1)
    promoted = sds(capsys, "promote", "v2", "--to", "dev", "--reason", "x", "--json")
    assert promoted.code == 0, promoted
    assert promoted.json()["version"] == 2
    # And `sds status` printing dev's pin as v2
    status = sds(capsys, "status")
    (row,) = [line.split() for line in status.out.splitlines() if line.startswith("dev ")]
    assert row[1] == "v2"

    # When that word is given back to show, and v1 to rollback
    show = sds(capsys, "show", row[1], "--json")
    rollback = sds(capsys, "rollback", "--env", "dev", "--to", "v1", "--reason", "x", "--json")

    # Then each took it as the number it names
    assert show.code == 0, show
    assert show.json()["version"] == 2
    assert rollback.code == 0, rollback
    assert rollback.json()["version"] == 1
    assert read_lock(ws.lock_path, model=ws.model).pins["dev"].version == 1


# (the argument as argparse names it, the command line with {v} where the version goes)
VERSION_ARGUMENTS = [
    ("version", ("show", "{v}")),
    ("version", ("promote", "{v}", "--to", "dev")),
    ("version", ("shadow", "{v}", "--env", "dev")),
    ("--to", ("rollback", "--env", "dev", "--to", "{v}")),
    ("--version", ("score", "--version", "{v}", "--data", "in.jsonl", "--out", "out")),
]


@pytest.mark.parametrize("value", ["vx", "0", "v0", "-1", "3.5", "v", "V3", "+3", " 3", "v-3"])
@pytest.mark.parametrize(
    ("argument", "argv"), VERSION_ARGUMENTS, ids=[argv[0] for _, argv in VERSION_ARGUMENTS]
)
def test_a_version_that_is_no_whole_number_from_1_is_a_usage_error_naming_argument_and_value(
    argument: str,
    argv: tuple[str, ...],
    value: str,
    project: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    words = [w.format(v=value) for w in argv]
    ended = sds(capsys, *words)
    assert ended.code == 2, ended
    assert ended.error_line == (
        f"sds: error: argument {argument}: {value!r}: a model version is a whole number, "
        f"1 or more, as in 3 or v3 (see: sds {words[0]} --help)"
    )
    assert not (project / "models.lock.json").exists()


def test_version_completion_offers_the_form_being_typed(project: Path) -> None:
    from sds.cli.arguments import complete_version

    ws = Workspace.discover(project_dir=project)
    for tag in ("one", "two"):
        register(ws, tag)
    parsed = argparse.Namespace(project_dir=str(project), env="dev")
    assert complete_version("", parsed) == ["1", "2"]
    assert complete_version("v", parsed) == ["v1", "v2"]
    assert complete_version("v2", parsed) == ["v2"]


# Usage errors: one line, exit 2, and JSON with --json -------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("promote", "abc", "--to", "dev", "--json"),
        ("--json", "promote", "abc", "--to", "dev"),
        ("promote", "--to", "dev", "--json", "--no-such-option"),
        ("--json", "no-such-command"),
    ],
    ids=["after", "before", "unknown option", "unknown command"],
)
def test_a_usage_error_the_parser_finds_is_json_when_json_is_anywhere_on_the_line(
    argv: tuple[str, ...], project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the command line cannot be parsed, with --json somewhere on it
    ended = sds(capsys, *argv)

    # Then it exits 2, in one line on stderr and as the same JSON document as any error
    assert ended.code == 2, ended
    assert "usage:" not in ended.err
    error = ended.json()["error"]
    assert (error["type"], error["exit_code"]) == ("UsageError", 2)
    assert ended.error_line == f"sds: error: {error['message']}"
    assert "--help" in error["message"]  # says where the usage is


@pytest.mark.parametrize(
    ("argv", "unknown", "see"),
    [
        (("show", "1", "--nope"), "--nope", "sds show --help"),
        (("promote", "1", "--to", "dev", "now", "--json"), "now", "sds promote --help"),
        (("completion", "bash", "--force"), "--force", "sds completion --help"),
        (("--nope", "show", "1"), "--nope", "sds --help"),
    ],
    ids=["option after a command", "word after a command", "option after a word", "before it"],
)
def test_an_unknown_word_points_at_the_help_of_the_command_it_was_given_to(
    argv: tuple[str, ...], unknown: str, see: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ended = sds(capsys, *argv)
    assert ended.code == 2, ended
    assert ended.error_line == f"sds: error: unrecognized arguments: {unknown} (see: {see})"


def test_a_usage_error_without_json_is_one_line_and_nothing_on_stdout(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ended = sds(capsys, "promote", "abc", "--to", "dev")
    assert ended.code == 2
    assert ended.out == ""
    assert ended.err.strip() == ended.error_line
    assert "argument version: 'abc': a model version is a whole number" in ended.error_line


def test_promote_without_a_version_is_a_usage_error(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ended = sds(capsys, "promote", "--to", "staging", "--json")
    assert ended.code == 2
    assert ended.json()["error"]["type"] == "UsageError"
    assert "say which version" in ended.error_line


@pytest.mark.parametrize(
    "argv",
    [
        ("--json", "--project-dir", "{project}", "models"),
        ("--project-dir", "{project}", "models", "--json"),
        ("models", "--json", "--project-dir", "{project}"),
    ],
    ids=["both before", "project before", "both after"],
)
def test_global_options_work_before_or_after_the_command(
    argv: tuple[str, ...],
    project: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a project found only through --project-dir (no $SDS_PROJECT_DIR, elsewhere)
    monkeypatch.delenv("SDS_PROJECT_DIR")
    monkeypatch.chdir("/")
    register(Workspace.discover(project_dir=project), "one")

    # When --project-dir and --json are given before or after the command
    ended = sds(capsys, *(word.format(project=project) for word in argv))

    # Then both apply
    assert ended.code == 0, ended
    assert [v["version"] for v in ended.json()["versions"]] == [1]


def test_completion_takes_json_too(capsys: pytest.CaptureFixture[str]) -> None:
    plain = sds(capsys, "completion", "bash")
    as_json = sds(capsys, "completion", "bash", "--json")
    assert plain.code == as_json.code == 0
    assert as_json.json() == {"shell": "bash", "script": plain.out}


@pytest.mark.parametrize(
    "argv",
    [
        ("compare", "--env", "dev"),
        ("monitor", "--env", "dev"),
        ("train", "--from-capture", "--env", "dev"),
    ],
    ids=lambda argv: argv[0],
)
@pytest.mark.parametrize("option", ["--since", "--until", "--as-of"])
def test_a_time_that_is_not_one_is_the_same_usage_error_for_every_command(
    argv: tuple[str, ...], option: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ended = sds(capsys, *argv, option, "garbage", "--json")
    assert ended.code == 2, ended
    assert ended.error_line == (
        f"sds: error: argument {option}: 'garbage': expected a date (2026-03-01) or an ISO 8601 "
        f"time with a time zone (2026-03-01T12:00:00Z) (see: sds {argv[0]} --help)"
    )


@pytest.mark.parametrize("events", ["0", "-5"])
def test_generating_no_events_is_a_usage_error_and_writes_nothing(
    events: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ended = sds(capsys, "generate", "--events", events, "--out", str(project / "e.jsonl"))
    assert ended.code == 2
    assert f"argument --events: '{events}': must be a whole number, 1 or more" in ended.error_line
    assert not (project / "e.jsonl").exists()


@pytest.mark.parametrize("beyond", ["numpy's sizes", "memory"])
def test_generating_more_than_the_machine_can_hold_is_an_error_naming_the_count(
    beyond: str, project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a count of payments numpy cannot size (10**30), or one this machine's memory cannot
    # hold (numpy's MemoryError, simulated: a real one would allocate hundreds of GiB first)
    events = str(10**30)
    if beyond == "memory":
        events = str(10**12)

        def refuse(*_: object, **__: object) -> None:
            raise MemoryError("Unable to allocate 298. GiB for an array")

        monkeypatch.setattr("training.synthetic._choice", refuse)
    out = project / "e.jsonl"

    # When generating them
    ended = sds(capsys, "generate", "--events", events, "--out", str(out), "--json")

    # Then one line names the count and what to do (no traceback), and no file is written
    assert ended.code == 1, ended
    assert ended.error_line.startswith(
        f"sds: error: {events} payments are more than this machine can generate at once ("
    )
    assert "generate fewer" in ended.error_line
    assert ended.json()["error"]["type"] == "TooMany"
    assert not out.exists()
    assert not [p for p in project.iterdir() if p.name.startswith(".e.jsonl")]


@pytest.mark.parametrize("events", ["0", "-5"])
def test_a_demo_of_no_events_is_a_usage_error_before_it_starts(
    events: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ended = sds(capsys, "demo", "--events", events)
    assert ended.code == 2, ended
    assert f"argument --events: '{events}': must be a whole number, 1 or more" in ended.error_line
    assert "sds generate" not in ended.out


@pytest.mark.parametrize("seed", ["-4", "seven", "1.5"])
def test_generating_with_a_seed_that_is_not_one_is_a_usage_error_naming_it(
    seed: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = project / "e.jsonl"
    ended = sds(capsys, "generate", "--events", "10", "--seed", seed, "--out", str(out))
    assert ended.code == 2, ended
    assert ended.error_line == (
        f"sds: error: argument --seed: {seed!r}: must be a whole number, 0 or more "
        "(see: sds generate --help)"
    )
    assert not out.exists()


def test_any_seed_numpy_takes_generates(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # default_rng takes any whole number from 0 up, beyond RandomState's 2**32 - 1
    for seed in ("0", "5000000000"):
        out = project / f"e-{seed}.jsonl"
        assert (
            sds(capsys, "generate", "--events", "10", "--seed", seed, "--out", str(out)).code == 0
        )
        assert out.exists()


# An existing --out: refused unless --force, and replaced only by a whole file ----------------


def test_generating_onto_an_existing_file_is_refused_and_leaves_it_as_it_was(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a file at --out (last week's history, say)
    (project / "data").mkdir()
    out = project / "data" / "events.jsonl.gz"
    out.write_bytes(b"last week's history")

    # When generating onto it without --force
    ended = sds(capsys, "generate", "--events", "10", "--out", "data/events.jsonl.gz", "--json")

    # Then it is a usage error naming the path and the way out, and the file is untouched
    assert ended.code == 2, ended
    assert ended.error_line == (
        "sds: error: --out data/events.jsonl.gz exists: choose another path, or pass --force "
        "to replace it"
    )
    assert ended.json()["error"]["type"] == "UsageError"
    assert out.read_bytes() == b"last week's history"
    assert [p.name for p in (project / "data").iterdir()] == ["events.jsonl.gz"]


def test_generating_with_force_replaces_the_file_with_the_one_the_seed_writes(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a file at --out, and the file the same seed writes where nothing was
    (project / "data").mkdir()
    out = project / "data" / "events.jsonl.gz"
    out.write_bytes(b"last week's history")
    assert sds(capsys, "generate", "--events", "10", "--out", "fresh.jsonl.gz").code == 0

    # When generating onto it with --force
    ended = sds(capsys, "generate", "--events", "10", "--out", str(out), "--force")

    # Then the file is replaced by the same bytes, and nothing else is left beside it
    assert ended.code == 0, ended
    assert out.read_bytes() == (project / "fresh.jsonl.gz").read_bytes()
    assert [p.name for p in (project / "data").iterdir()] == ["events.jsonl.gz"]


@pytest.mark.parametrize("before", [None, b"last week's history"], ids=["new", "--force"])
def test_an_interrupted_generate_leaves_no_partial_file_and_any_old_file_intact(
    before: bytes | None,
    project: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given no file at --out, or one that --force is to replace
    folder = project / "data"
    folder.mkdir()
    out = folder / "events.jsonl.gz"
    if before is not None:
        out.write_bytes(before)

    # And Ctrl-C arriving after a first chunk of records went to the file being written
    from training import synthetic

    real = synthetic.activity_chunks
    beside: list[str] = []

    def interrupted(payments: int, **kwargs: Any) -> Any:
        yield from itertools.islice(real(payments, **kwargs, chunk=64), 1)
        beside.extend(p.name for p in folder.iterdir())
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "activity_chunks", interrupted)

    # When generating
    force = () if before is None else ("--force",)
    ended = sds(capsys, "generate", "--events", "300", "--out", str(out), *force)

    # Then it stops as interrupted (130), the partial file that was there is gone, and --out
    # is what it was: absent, or the old file byte for byte
    assert ended.code == 130, ended
    assert [name for name in beside if name.startswith(".events.jsonl.gz.")], beside
    assert [p.name for p in folder.iterdir()] == ([] if before is None else ["events.jsonl.gz"])
    if before is not None:
        assert out.read_bytes() == before


@pytest.mark.parametrize(
    "argv",
    [
        ("score", "--data", "in.jsonl", "--out", "out"),
        ("backfill", "--data", "in.jsonl", "--out", "out"),
        ("train", "--data", "in.jsonl"),
    ],
    ids=lambda argv: argv[0],
)
@pytest.mark.parametrize("workers", ["0", "-3", "two"])
def test_workers_below_one_is_the_same_usage_error_for_every_command(
    argv: tuple[str, ...], workers: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When a command is given no workers at all (never silently "the default")
    ended = sds(capsys, *argv, "--workers", workers)
    # Then it is refused before anything runs, naming the valid range
    assert ended.code == 2, ended
    assert f"argument --workers: '{workers}': must be a whole number, 1 or more" in ended.err
    assert not (project / "out").exists()


READERS = {
    "train": ("train", "--data", "{data}", "--quiet"),
    "score": ("score", "--version", "{version}", "--data", "{data}", "--out", "out", "--quiet"),
    "backfill": ("backfill", "--data", "{data}", "--out", "out", "--quiet"),
    "ingest": ("ingest", "{data}"),
    "label": ("label", "{data}"),
}


@pytest.mark.parametrize("command", sorted(READERS))
@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("empty folder", "no .jsonl or .jsonl.gz files"),
        ("folder of other files", "no .jsonl or .jsonl.gz files"),
        ("nothing", "no such file, folder or prefix"),
    ],
)
def test_every_command_reading_events_says_the_same_of_a_location_without_any(
    command: str,
    given: str,
    problem: str,
    project: Path,
    trained: TrainedModel,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a folder with no history file in it, or nothing at all
    data = project / "events"
    if given != "nothing":
        data.mkdir()
    if given == "folder of other files":
        (data / "notes.txt").write_text("no events here")
        (data / ".hidden.jsonl").write_text("{}")
    monkeypatch.setenv("SDS_REGISTRY_DEV", trained.registry_uri)  # what score --version reads

    # When a command is given it to read
    words = READERS[command]
    ended = sds(capsys, *(w.format(data=data, version=trained.version.number) for w in words))

    # Then each one says what is missing there, in the same words
    assert ended.code == 1, ended
    assert ended.error_line == f"sds: error: {data}: {problem}"
    assert not (project / "out").exists()


@pytest.mark.parametrize("command", sorted(set(READERS) - {"label"}))  # label reads labels
@pytest.mark.parametrize(
    "given", ["empty file", "empty .jsonl.gz", "blank lines", "folder of empty files"]
)
def test_every_command_reading_events_refuses_a_history_with_no_events_in_the_same_words(
    command: str,
    given: str,
    project: Path,
    trained: TrainedModel,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given history files that hold no event
    data = {
        "empty file": project / "h.jsonl",
        "empty .jsonl.gz": project / "h.jsonl.gz",
        "blank lines": project / "h.jsonl",
        "folder of empty files": project / "events",
    }[given]
    if given == "empty file":
        data.write_bytes(b"")
    elif given == "empty .jsonl.gz":
        data.write_bytes(gzip.compress(b"", mtime=0))
    elif given == "blank lines":
        data.write_bytes(b"\n\n  \n")
    else:
        data.mkdir()
        (data / "a.jsonl").write_bytes(b"")
        (data / "b.jsonl.gz").write_bytes(gzip.compress(b"", mtime=0))
    monkeypatch.setenv("SDS_REGISTRY_DEV", trained.registry_uri)  # what score --version reads

    # When a command is given it to read
    words = READERS[command]
    ended = sds(capsys, *(w.format(data=data, version=trained.version.number) for w in words))

    # Then each one refuses it as a data error naming it, and a batch run leaves no --out
    assert ended.code == 1, ended
    assert ended.error_line == f"sds: error: {data}: no events"
    assert not (project / "out").exists()


# `sds ingest` is not one: logins are what it folds into the login aggregates.
COMPUTING_FROM_PAYMENTS = ("train", "score", "backfill")


@pytest.mark.parametrize("command", COMPUTING_FROM_PAYMENTS)
@pytest.mark.parametrize("given", ["file", "folder"])
def test_every_command_computing_from_payments_refuses_a_history_of_logins_in_the_same_words(
    command: str,
    given: str,
    project: Path,
    trained: TrainedModel,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a history of logins, without a single payment
    logins = [r for r in generate_activity(200, seed=5) if r["type"] == "login"]
    if given == "file":
        data = write_jsonl(logins, project / "h.jsonl.gz")
    else:
        data = project / "events"
        data.mkdir()
        write_jsonl(logins[:7], data / "a.jsonl")
        write_jsonl(logins[7:], data / "b.jsonl.gz")
    monkeypatch.setenv("SDS_REGISTRY_DEV", trained.registry_uri)  # what score --version reads
    monkeypatch.chdir(project)  # where --out out is

    # When a command that computes something for each payment is given it
    words = READERS[command]
    ended = sds(capsys, *(w.format(data=data, version=trained.version.number) for w in words))

    # Then each one refuses it as a data error naming it, in train's words, and a batch run
    # leaves no --out
    assert ended.code == 1, ended
    assert ended.error_line == f"sds: error: {data}: no payments among {len(logins)} events"
    assert not (project / "out").exists()


@pytest.mark.parametrize("command", sorted(READERS))
@pytest.mark.parametrize("where", ["file", "folder"])
def test_every_command_reading_events_names_a_gzip_file_without_gz_in_its_name(
    command: str,
    where: str,
    project: Path,
    trained: TrainedModel,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a gzip-compressed history named .jsonl, given as a file or in a folder
    (project / "events").mkdir()
    path = project / "events" / "h.jsonl"
    path.write_bytes(gzip.compress(trained.data.read_bytes()[:20_000], mtime=0))
    data = path if where == "file" else path.parent
    monkeypatch.setenv("SDS_REGISTRY_DEV", trained.registry_uri)  # what score --version reads

    # When a command reads it
    words = READERS[command]
    ended = sds(capsys, *(w.format(data=data, version=trained.version.number) for w in words))

    # Then it says what the file is and what to call it, not "invalid JSON"
    assert ended.code == 1, ended
    assert ended.error_line == (
        f"sds: error: {path}: gzip-compressed, but its name does not end in .gz: rename it "
        "h.jsonl.gz"
    )
    assert not (project / "out").exists()


def test_scoring_with_a_version_that_does_not_exist_is_the_error_show_gives(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "in.jsonl").write_text("")
    score = sds(capsys, "score", "--version", "99", "--data", "in.jsonl", "--out", "out", "--json")
    show = sds(capsys, "show", "99", "--json")
    assert score.code == show.code == 1
    assert score.json()["error"]["type"] == show.json()["error"]["type"] == "VersionNotFound"
    assert score.error_line == "sds: error: version 99 is not in dev's registry"


@pytest.mark.parametrize("registered", [0, 2], ids=["empty", "two"])
def test_showing_a_version_that_does_not_exist_says_where_the_versions_are_listed(
    project: Path, capsys: pytest.CaptureFixture[str], registered: int
) -> None:
    # Given dev's registry empty, or holding versions 1 and 2
    ws = Workspace.discover()
    for tag in ("one", "two")[:registered]:
        register(ws, tag)

    # When showing version 99, in text and in JSON
    text, as_json = sds(capsys, "show", "99"), sds(capsys, "show", "99", "--json")

    # Then it is one error (exit 1) naming the registry and the command that lists its versions
    message = (
        f"model 'fraud' has no version 99 in {ws.registry_uri('dev')}: sds models --env dev "
        "lists the versions it holds"
    )
    assert text.code == as_json.code == 1
    assert text.error_line == f"sds: error: {message}"
    assert as_json.json()["error"] == {
        "message": message,
        "type": "VersionNotFound",
        "exit_code": 1,
    }


def test_rolling_back_to_a_version_that_does_not_exist_is_the_error_show_gives(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given version 1 live in dev
    ws = Workspace.discover()
    ws.registry("dev").register({"model.onnx": b"m"}, {"metrics": {"roc_auc": 0.9}}, actor="t")
    promote(ws, to_env="dev", version=1)

    # When rolling dev back to version 99, which was never registered
    rollback = sds(capsys, "rollback", "--env", "dev", "--to", "99", "--reason", "x", "--json")
    show = sds(capsys, "show", "99", "--json")

    # Then it exits 1 with the error every command gives such a version, not a refusal (3)
    assert rollback.code == show.code == 1
    assert rollback.json()["error"]["type"] == show.json()["error"]["type"] == "VersionNotFound"
    assert rollback.json()["error"]["message"] == (
        "version 99 is not in dev's registry: a rollback returns only to a version dev served "
        "(version 1)"
    )


@pytest.mark.parametrize("target", ["dev", "staging"])
def test_promoting_a_version_that_does_not_exist_is_the_error_show_gives(
    project: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    # Given version 1 in dev's registry, the start of the chain (staging promotes from dev)
    register(Workspace.discover(), "one")

    # When promoting version 99, which was never registered, to dev or to staging
    promoted = sds(capsys, "promote", "99", "--to", target, "--json")
    shown = sds(capsys, "show", "99", "--env", "dev", "--json")

    # Then it is the error `show` gives of the registry it looked in (dev's): the same exit
    # code, type and message, never "promote it there first"
    assert promoted.code == shown.code == 1
    assert promoted.json() == shown.json()
    assert promoted.json()["error"]["type"] == "VersionNotFound"
    assert promoted.error_line == shown.error_line


def test_shadow_with_neither_a_version_nor_clear_says_one_of_them_is_needed(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    neither = sds(capsys, "shadow", "--env", "dev")
    both = sds(capsys, "shadow", "3", "--env", "dev", "--clear")
    assert neither.code == both.code == 2
    assert "not both" not in neither.error_line
    assert "say which version shadows" in neither.error_line and "--clear" in neither.error_line
    assert "not both" in both.error_line


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (("generate", "--events", "10", "--out", "{folder}"), "--out {folder} is a folder"),
        (("monitor", "--env", "dev", "--html", "{folder}"), "--html {folder} is a folder"),
    ],
    ids=["generate --out", "monitor --html"],
)
def test_a_folder_where_a_file_is_written_is_named_in_one_line(
    argv: tuple[str, ...],
    named: str,
    project: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given an existing folder, named where the command writes a file
    folder = tmp_path / "scr"
    folder.mkdir()

    # When the command runs
    ended = sds(capsys, *(word.format(folder=folder) for word in argv))

    # Then one line names the folder (no "[Errno 21]"), and nothing is left beside it
    assert ended.code == 2, ended
    assert ended.error_line.startswith(f"sds: error: {named.format(folder=folder)}: name the ")
    assert "Errno" not in ended.err
    assert list(folder.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_generating_under_a_file_names_the_file_in_the_way(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a file where the folder of --out should be
    (project / "data").write_text("a file")

    # When generating into that folder
    ended = sds(capsys, "generate", "--events", "10", "--out", "data/sub/e.jsonl")

    # Then one line names the file (not "[Errno 17] File exists"), and the file is untouched
    assert ended.code == 2, ended
    assert ended.error_line == "sds: error: --out data/sub/e.jsonl: data is a file, not a folder"
    assert (project / "data").read_text() == "a file"


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_on_a_port_that_is_not_one_is_a_usage_error(
    port: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ended = sds(capsys, "serve", "--env", "dev", "--port", port)
    assert ended.code == 2
    assert ended.error_line == (
        f"sds: error: argument --port: '{port}': a port is a number from 0 to 65535 "
        "(see: sds serve --help)"
    )


@pytest.mark.parametrize("limit", ["0", "-1", "1.5", "many"])
def test_serve_with_a_concurrency_limit_that_is_not_a_positive_whole_number_is_a_usage_error(
    limit: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ended = sds(capsys, "serve", "--env", "dev", "--limit-concurrency", limit)
    assert ended.code == 2
    assert ended.error_line == (
        f"sds: error: argument --limit-concurrency: '{limit}': must be a whole number, 1 or more "
        "(see: sds serve --help)"
    )


@pytest.mark.parametrize(("argv", "limit"), [((), 64), (("--limit-concurrency", "3"), 3)])
def test_serve_hands_its_concurrency_limit_to_the_server(
    argv: tuple[str, ...],
    limit: int,
    project: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sds.ops import local_api

    # Given a server that records its limits (and cannot listen, so the command ends there)
    given: list[local_api.ConnectionLimits] = []

    def recording(*_: Any, limits: local_api.ConnectionLimits, **__: Any) -> None:
        given.append(limits)
        raise OSError(errno.EADDRINUSE, "Address already in use")

    monkeypatch.setattr(local_api, "LocalApi", recording)
    # When serving with the default limit, or one given
    ended = sds(capsys, "serve", "--env", "dev", "--port", "0", *argv)
    # Then the server gets it, and the default is the server's own
    assert ended.code == 1
    assert [g.limit_concurrency for g in given] == [limit]
    assert local_api.ConnectionLimits().limit_concurrency == 64


def test_serve_on_a_port_in_use_names_the_host_and_port(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a port something already listens on
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        # When serving on it
        ended = sds(capsys, "serve", "--env", "dev", "--port", str(port), "--json")

    # Then one line says where it could not listen, and what to do
    assert ended.code == 1
    assert ended.error_line.startswith(
        f"sds: error: cannot listen on 127.0.0.1:{port}: address already in use; "
    )
    assert "--port" in ended.error_line
    assert ended.json()["error"]["exit_code"] == 1


def test_serve_on_an_ipv6_port_in_use_names_the_address_in_brackets(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an IPv6 loopback port something already listens on
    with socket.socket(socket.AF_INET6) as taken:
        try:
            taken.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback on this machine")
        taken.listen()
        port = taken.getsockname()[1]

        # When serving on it
        ended = sds(capsys, "serve", "--env", "dev", "--host", "::1", "--port", str(port))

    # Then the address is the one taken, in brackets, and the reason is that it is in use
    assert ended.code == 1
    assert ended.error_line.startswith(
        f"sds: error: cannot listen on [::1]:{port}: address already in use; "
    )


def test_serve_on_an_address_of_another_machine_says_which_addresses_it_can_take(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When serving on an address no interface of this machine has (TEST-NET-1, RFC 5737)
    ended = sds(capsys, "serve", "--env", "dev", "--host", "192.0.2.1", "--port", "0")
    # Then the error names it, and says what --host takes
    assert ended.code == 1
    assert ended.error_line == (
        "sds: error: cannot listen on 192.0.2.1:0: cannot assign requested address; --host "
        "takes an address of this machine (127.0.0.1, or 0.0.0.0 for all of them)"
    )


def test_monitor_since_after_as_of_without_until_says_until_is_needed(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When a window starts after --as-of, which --until defaults to
    ended = sds(capsys, "monitor", "--env", "dev", "--since", "2026-11-29", "--as-of", "2026-04-20")
    # Then the usage error says why the window is empty and what to add
    assert ended.code == 2
    assert ended.error_line == (
        "sds: error: the window is empty: --since 2026-11-29 is not before --until, which "
        "defaults to --as-of (2026-04-20): give --until too"
    )
