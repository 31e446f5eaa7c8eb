"""The `sds` command as users run it: a subprocess per command, against a throwaway project."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.e2e.cli_project import Project


def test_models_lists_versions_metrics_and_where_they_are_live(
    fresh_copy: Callable[[], Project],
) -> None:
    project = fresh_copy()
    project.sds("promote", "2", "--to", "dev", "--reason", "better")
    listing = project.sds("models", "--json").json()
    assert [v["version"] for v in listing["versions"]] == [1, 2]
    assert listing["versions"][1]["live_in"] == ["dev"]
    assert all(0.5 < v["roc_auc"] <= 1 for v in listing["versions"])
    table = project.sds("models").stdout
    assert "VERSION" in table and "LIVE IN" in table and "dev" in table


def test_show_prints_the_verified_manifest(fresh_copy: Callable[[], Project]) -> None:
    project = fresh_copy()
    manifest = project.sds("show", "1", "--json").json()
    assert manifest["version"] == 1
    for key in ("sha256", "metrics", "params", "feature_schema", "library_versions", "data"):
        assert key in manifest
    assert manifest["created_by"] == "e2e-tester"
    assert "(verified)" in project.sds("show", "1").stdout


def test_promote_chain_rollback_and_history(fresh_copy: Callable[[], Project]) -> None:
    project = fresh_copy()
    first = project.sds("promote", "1", "--to", "dev", "--reason", "first", "--json").json()
    assert first["changed"] and first["version"] == 1
    project.sds("promote", "2", "--to", "dev", "--reason", "second")
    up = project.sds("promote", "--from", "dev", "--to", "staging", "--json").json()
    assert up["copied_from"] == "dev" and up["version"] == 2
    assert {g["gate"] for g in up["gates"]} >= {"min_roc_auc", "min_pr_auc"}
    project.sds("promote", "--from", "staging", "--to", "prod", "--reason", "release")
    assert {e: p["version"] for e, p in project.lock["environments"].items()} == {
        "dev": 2,
        "staging": 2,
        "prod": 2,
    }

    back = project.sds("rollback", "--env", "dev", "--reason", "incident 42")
    assert "version 2 -> version 1" in back.stdout
    assert project.lock["environments"]["dev"]["version"] == 1
    assert project.lock["environments"]["prod"]["version"] == 2  # other pins untouched

    events = project.sds("history", "--env", "dev", "--json").json()
    assert [e["type"] for e in events] == [
        "registered",
        "registered",
        "promoted",
        "promoted",
        "rolled_back",
    ]
    assert events[-1]["reason"] == "incident 42" and events[-1]["by"] == "e2e-tester"
    assert "rolled_back" in project.sds("history", "--env", "dev").stdout


def test_refused_promotion_exits_3_and_lists_failed_gates(
    fresh_copy: Callable[[], Project],
) -> None:
    project = fresh_copy()
    project.sds("promote", "1", "--to", "dev")
    refused = project.sds("promote", "1", "--from", "dev", "--to", "prod", "--json", check=False)
    assert refused.code == 3
    assert "require_live_in" in refused.stderr
    gates = refused.json()["gates"]
    assert [g["gate"] for g in gates if not g["passed"]] == ["require_live_in"]
    assert "prod" not in project.lock["environments"]


def test_errors_are_one_clear_line_and_non_zero(fresh_copy: Callable[[], Project]) -> None:
    project = fresh_copy()
    cases = [
        (("promote", "7", "--to", "dev"), 1, "no version 7"),
        (("promote", "1", "--to", "qa"), 1, "unknown environment 'qa'"),
        (("rollback", "--env", "dev"), 1, "nothing is live in dev"),
        (("show", "9"), 1, "no version 9"),
        (("promote", "--to", "dev"), 2, "say which version"),
        (("train", "--data", "missing.jsonl"), 1, "missing.jsonl: no such file"),
        (
            ("train", "--data", "data/events.jsonl.gz", "--workers", "0"),
            2,
            "--workers: '0': must be",
        ),
        (("train", "--data", "data/events.jsonl.gz", "--work-dir", "nowhere"), 2, "no such folder"),
        (("train", "--on-fargate", "--workers", "2"), 2, "--workers: only when this machine"),
        (("train", "--from-capture", "--work-dir", "data"), 2, "not with --from-capture"),
    ]
    for args, code, message in cases:
        result = project.sds(*args, check=False)
        assert result.code == code, (args, result)
        assert message in result.stderr, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        # Progress lines may precede it; the error itself is one line, and the last.
        assert [line for line in lines if line.startswith("sds:")] == [lines[-1]], lines
        assert "Traceback" not in result.stderr


def test_train_backfill_and_score_refuse_an_event_id_held_under_two_accounts(
    fresh_copy: Callable[[], Project],
) -> None:
    from sds.kernel.batch.shuffle import partition_count, partition_of
    from training.data import write_jsonl
    from training.synthetic import generate_activity

    # Given a history of two files large enough for several partitions, the second redelivering
    # an event of the first under another account, which the shuffle puts in another partition
    project = fresh_copy()
    records = generate_activity(8000, seed=41)
    twin = [r for r in records if r["type"] == "payment"][7]
    half = len(records) // 2
    first = write_jsonl(records[:half], project.path / "data" / "dup" / "a.jsonl")
    size = first.stat().st_size * 2
    partitions = partition_count(size)
    home = partition_of(twin["account_id"], partitions)
    other = min(
        r["account_id"] for r in records if partition_of(r["account_id"], partitions) != home
    )
    second = write_jsonl(
        [*records[half:], {**twin, "account_id": other}],
        project.path / "data" / "dup" / "b.jsonl",
    )
    assert partitions > 1 and partition_count(first.stat().st_size + second.stat().st_size) == (
        partitions
    )
    refusal = (
        f"event {twin['event_id']} appears twice with different content, under two accounts: "
        f"{twin['account_id']} (data/dup/a.jsonl:{records.index(twin) + 1}) and {other} "
        f"(data/dup/b.jsonl:{len(records) - half + 1})"
    )

    # When each command reads it as users run them, with two worker processes
    commands = [
        ("train", "--data", "data/dup", "--workers", "2", "--quiet"),
        ("backfill", "--data", "data/dup", "--out", "data/features", "--workers", "2"),
        ("score", "--version", "1", "--data", "data/dup", "--out", "data/scores", "--workers", "2"),
    ]
    for args in commands:
        result = project.sds(*args, check=False)

        # Then each exits 1 with one line naming the id, both accounts and both lines
        assert result.code == 1, (args, result)
        assert result.stderr.strip().splitlines()[-1].endswith(refusal), (args, result.stderr)
        assert "Traceback" not in result.stderr
    # And training registered nothing
    assert [v["version"] for v in project.sds("models", "--json").json()["versions"]] == [1, 2]


def test_a_tampered_artifact_is_refused_everywhere(fresh_copy: Callable[[], Project]) -> None:
    project = fresh_copy()
    onnx = project.path / ".sds/registries/dev/models/fraud/versions/1/model.onnx"
    data = bytearray(onnx.read_bytes())
    data[100] ^= 0xFF
    onnx.write_bytes(bytes(data))
    for args in (("show", "1"), ("promote", "1", "--to", "dev")):
        result = project.sds(*args, check=False)
        assert result.code == 1 and "does not match its manifest" in result.stderr
    assert not (project.path / "models.lock.json").exists()


def test_python_dash_m_and_console_script_agree(trained_project: Project) -> None:
    import shutil
    import subprocess

    script = shutil.which("sds") or ""
    help_text = trained_project.sds("--help").stdout
    assert "promote" in help_text and "rollback" in help_text and "examples:" in help_text
    if script:
        out = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
        assert out.stdout.startswith("sds ")


def test_status_shows_pin_and_registry_alias_and_warns_when_they_disagree(
    fresh_copy: Callable[[], Project],
) -> None:
    project = fresh_copy()
    empty = project.sds("status", "--check")
    assert empty.stdout.splitlines()[0].split() == ["ENV", "PIN", "SHADOW", "REGISTRY", "STATE"]
    assert empty.stdout.splitlines()[1].split() == ["dev", "-", "-", "-", "nothing", "promoted"]

    project.sds("promote", "1", "--to", "dev", "--reason", "first")
    synced = project.sds("status", "--env", "dev", "--json", "--check").json()
    (dev,) = synced["environments"]
    assert synced["ok"] and dev["state"] == "in sync" and dev["warnings"] == []
    assert dev["pin"]["version"] == dev["registry"]["alias"]["version"] == 1
    assert dev["lambda"] is None  # locally the API follows the pin; --aws reads the Lambda

    # Someone else promotes v2 and their lock file change is not in this checkout yet
    ours = (project.path / "models.lock.json").read_text()
    project.sds("promote", "2", "--to", "dev", "--reason", "theirs")
    (project.path / "models.lock.json").write_text(ours)
    behind = project.sds("status", "--check", check=False)
    assert behind.code == 1
    assert behind.stdout.splitlines()[1].split() == ["dev", "v1", "-", "v2", "out", "of", "sync"]
    assert "warning: dev: models.lock.json pins v1 but the registry alias is v2" in behind.stdout
    assert "sds promote 2 --to dev" in behind.stdout
    assert project.sds("status").code == 0  # a report is not a failure without --check

    # The command it names makes them agree again
    project.sds("promote", "2", "--to", "dev")
    assert "dev (local): in sync" in project.sds("status", "--env", "dev", "--check").stdout

    # And a challenger pinned beside the model shows in its own column
    project.sds("shadow", "1", "--env", "dev", "--reason", "challenger")
    shadowed = project.sds("status", "--check").stdout.splitlines()[1].split()
    assert shadowed == ["dev", "v2", "v1", "v2", "in", "sync"]


def test_with_json_errors_are_json_on_stdout_too(fresh_copy: Callable[[], Project]) -> None:
    project = fresh_copy()
    cases = [
        (("show", "9", "--json"), 1, "no version 9"),
        (("promote", "--to", "dev", "--json"), 2, "say which version"),
        (("status", "--env", "qa", "--json"), 1, "unknown environment 'qa'"),
    ]
    for args, code, message in cases:
        result = project.sds(*args, check=False)
        assert result.code == code, (args, result)
        error = result.json()["error"]
        assert message in error["message"] and error["exit_code"] == code
        assert message in result.stderr  # and the one line on stderr, as without --json


def test_shell_completion_completes_commands_environments_and_versions(
    trained_project: Project, tmp_path: Path
) -> None:
    bash = shutil.which("bash")
    script = Path(sys.executable).parent / "sds"
    # make installs the console script (pip install -e .) and runs its recipes with bash
    assert bash is not None and script.exists(), (bash, script)
    env = dict(trained_project.env, PATH=f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    completion = trained_project.sds("completion", "bash").stdout
    (tmp_path / "sds.bash").write_text(completion)
    # What the shell does on <TAB>: the registered function fills COMPREPLY
    probe = r"""
source "$1"
complete -p sds
t() {
  COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; read -ra COMP_WORDS <<< "$COMP_LINE"
  [[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=()
  _python_argcomplete sds
  echo "${COMPREPLY[*]}"
}
t "sds st"
t "sds promote --from dev --to st"
t "sds show "
t "sds rollback --env "
"""
    done = subprocess.run(
        [bash, "-c", probe, "probe", str(tmp_path / "sds.bash")],
        cwd=trained_project.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [line.split() for line in done.stdout.splitlines()]
    assert "_python_argcomplete" in lines[0] and lines[0][-1] == "sds"
    assert lines[1] == ["status"]
    assert lines[2] == ["staging"]
    assert {"1", "2"} <= set(lines[3]) and "--env" in lines[3]
    assert lines[4] == ["dev", "staging", "prod"]


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    # Given a command whose reader closes its end of the pipe before the output arrives
    # (`sds completion bash | head -0`)
    process = subprocess.Popen(
        [sys.executable, "-m", "sds", "completion", "bash"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()

    # Then it exits with SIGPIPE's status and says nothing: no error line, no traceback
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert stderr == ""


def _with_reader_gone(*args: str, buffered: bool = True) -> tuple[int, str]:
    """Run `sds ARGS` with the reader of its stdout gone before anything is written: its exit
    status and stderr. Buffered, as in a user's shell, the output is written as the command
    ends; unbuffered (PYTHONUNBUFFERED, as CI runners often set), as it is printed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "sds", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    stderr = process.stderr.read().decode()
    return process.wait(timeout=60), stderr


def test_a_reader_that_goes_away_ends_the_command_quietly_with_buffered_output() -> None:
    # Given stdout buffered, so that the output is written when the command ends
    # When the reader has gone by then (`sds completion bash | head -0`)
    code, stderr = _with_reader_gone("completion", "bash")

    # Then the last write ends the command as SIGPIPE would: 141, no traceback, nothing said
    assert (code, stderr) == (141, "")


def test_an_error_whose_reader_went_away_says_its_line_and_exits_quietly(
    tmp_path: Path,
) -> None:
    cases = [
        # a usage error, reported before any command runs
        (("--json", "promote"), "the following arguments are required: --to"),
        # an error a command raises
        (("--json", "--project-dir", str(tmp_path), "models"), "holds no cdk.json"),
    ]
    for (args, message), buffered in itertools.product(cases, (True, False)):
        # Given a command that fails with --json, its reader gone before the error's document
        code, stderr = _with_reader_gone(*args, buffered=buffered)

        # Then the error's one line is still on stderr, with no traceback, and the command
        # ends as any that loses its reader: 141
        assert code == 141, (args, buffered, code, stderr)
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("sds: error: "), (args, buffered, stderr)
        assert message in lines[0], (args, stderr)
