"""The `sds` command as users run it: a subprocess per command, against a throwaway project."""

from __future__ import annotations

from collections.abc import Callable

from cli_project import Project


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
        (("promote", "7", "--to", "dev"), 1, "version 7 is not in dev's registry"),
        (("promote", "1", "--to", "qa"), 1, "unknown environment 'qa'"),
        (("rollback", "--env", "dev"), 1, "nothing is live in dev"),
        (("show", "9"), 1, "no version 9"),
        (("promote", "--to", "dev"), 2, "say which version"),
        (("train", "--data", "missing.jsonl"), 1, "missing.jsonl: no such file"),
    ]
    for args, code, message in cases:
        result = project.sds(*args, check=False)
        assert result.code == code, (args, result)
        assert message in result.stderr, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        # Progress lines may precede it; the error itself is one line, and the last.
        assert [line for line in lines if line.startswith("sds:")] == [lines[-1]], lines
        assert "Traceback" not in result.stderr


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
