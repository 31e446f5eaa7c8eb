"""What promote and rollback tell the user: the commands their hints name run against the
target the command ran against (`--aws` repeated), and their output says what they changed in
models.lock.json (a stale pin rewritten, a shadow pin removed), in text and in `--json`.

The CLI runs in-process on a throwaway project with local registries; the AWS side of the same
hints is in tests/integration (test_rollback_aws.py, test_promotion_aws.py).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from sds.kernel.lock import read_lock
from sds.ops.workspace import Workspace
from tests.unit.cli_run import Ended, sds
from tests.unit.test_shadow_ops import register

ROOT = Path(__file__).resolve().parents[2]


def local(project: Path) -> Workspace:
    return Workspace.discover(project_dir=project, environ={"SDS_ACTOR": "tester"})


def lock_file(project: Path) -> Path:
    """The project's lock file as the commands name it: by its resolved path."""
    return (project / "models.lock.json").resolve()


def lock_document(project: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((project / "models.lock.json").read_text())
    return document


def stale(project: Path, env: str, version: int, sha256: str) -> None:
    """Make `env`'s pin say `version` whatever the alias says (a hand edit, a bad merge)."""
    document = lock_document(project)
    document["environments"][env] = {"version": version, "sha256": sha256}
    (project / "models.lock.json").write_text(json.dumps(document))


# The helper every hint goes through ---------------------------------------------------------------


def test_a_hint_repeats_aws_whichever_way_the_target_was_chosen(project: Path) -> None:
    # Given the same project, on the local target, with --aws, and with SDS_TARGET=aws
    on_this_machine = Workspace.discover(project_dir=project, environ={})
    by_flag = Workspace.discover(project_dir=project, environ={}, target="aws")
    by_variable = Workspace.discover(project_dir=project, environ={"SDS_TARGET": "aws"})

    # When each renders the same command, Then only the local one leaves --aws out: a hint
    # pasted into a shell without SDS_TARGET must still reach AWS
    assert on_this_machine.command("promote 3 --to dev") == "sds promote 3 --to dev"
    assert by_flag.command("promote 3 --to dev") == "sds --aws promote 3 --to dev"
    assert by_variable.command("promote 3 --to dev") == "sds --aws promote 3 --to dev"


# Hints that name an `sds` command: every one through Workspace.command ---------------------------

# What acts on the target: a hint naming one of these without `--aws` is wrong on AWS.
TARGETED = (
    "backfill|compare|envs|history|models|monitor|promote|prune|replay|rollback|score|shadow|"
    "show|status|train"
)
BARE = re.compile(rf"(?<![\w`-])sds (?:{TARGETED})\b")


def literal_hints(path: Path, name: str) -> list[str]:
    """The string literals of `path` that name a targeted command without `--aws`, leaving out
    docstrings and whole command lines (the examples of each command's --help, the demo's
    narration of the commands it runs locally)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    # The literal pieces of an f-string are read with it, not again on their own.
    skipped |= {
        id(piece)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for piece in node.values
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            pieces = [v.value for v in node.values if isinstance(v, ast.Constant)]
            text = "".join(str(p) for p in pieces)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in skipped:
                continue
            text = node.value
        else:
            continue
        # A line that is a whole command line is an example (--help, the demo), not a hint.
        hints = [line for line in text.splitlines() if not line.lstrip().startswith("sds ")]
        found += [f"{name}:{node.lineno}: {line!r}" for line in hints if BARE.search(line)]
    return found


def test_no_hint_names_a_command_without_going_through_the_workspace() -> None:
    # Given every module of the operator layer
    modules = [*(ROOT / "sds" / "ops").glob("*.py"), *(ROOT / "sds" / "cli").rglob("*.py")]
    names = sorted(str(path.relative_to(ROOT)) for path in modules)

    # When looking for string literals that spell out `sds <command>` for the user to run
    bare = [hint for name in names for hint in literal_hints(ROOT / name, name)]

    # Then there is none: each is rendered by Workspace.command, so it says --aws on AWS
    assert bare == []


def test_the_check_finds_a_bare_hint(tmp_path: Path) -> None:
    # Given a module with a hint spelled out, beside an example, a docstring and a good hint
    module = tmp_path / "probe.py"
    module.write_text(
        '"""Docstring naming sds promote is fine."""\n'
        'EXAMPLE = "sds promote 3 --to dev"\n'
        "def hint(env: str, ws: object) -> str:\n"
        '    return f"promote it first: sds promote 3 --to {env}"\n'
        "def good(env: str, ws: object) -> str:\n"
        "    return f\"promote it first: {ws.command('promote 3 --to ' + env)}\"\n"
    )

    # When the check reads it, Then it names the spelled-out hint, and only it
    assert literal_hints(module, "probe.py") == [
        "probe.py:4: 'promote it first: sds promote 3 --to '"
    ]


# What promote and rollback say about the lock file --------------------------------------------------


def test_promoting_the_shadow_says_the_shadow_pin_is_gone(project: Path, capsys: Any) -> None:
    # Given version 1 live in dev and version 2 its shadow
    ws = local(project)
    register(ws), register(ws)
    assert sds(capsys, "promote", "1", "--to", "dev").code == 0
    assert sds(capsys, "shadow", "2", "--env", "dev").code == 0

    # When the shadow is promoted
    ended = sds(capsys, "promote", "--shadow", "--to", "dev")

    # Then the output says the live pin moved and the shadow pin was removed, as the file shows
    assert ended.code == 0, ended.err
    assert ended.out.splitlines() == [
        "dev: version 1 -> version 2",
        *[line for line in ended.out.splitlines() if line.startswith("  gate ")],
        "  shadow pin removed: its version 2 is live in dev now",
        f"  pin written to {lock_file(project)}: deploy with: cdk deploy 'dev/*'",
    ]
    assert "shadow" not in lock_document(project)["environments"]["dev"]


def test_promoting_the_shadow_with_json_has_the_lock_file_change(
    project: Path, capsys: Any
) -> None:
    # Given version 1 live in dev and version 2 its shadow
    ws = local(project)
    one, two = register(ws), register(ws)
    assert sds(capsys, "promote", "1", "--to", "dev").code == 0
    assert sds(capsys, "shadow", "2", "--env", "dev").code == 0

    # When the shadow is promoted with --json
    ended = sds(capsys, "promote", "--shadow", "--to", "dev", "--json")

    # Then `lock_file` names the pin before and after and the shadow pin it removed
    assert ended.code == 0, ended.err
    change = ended.json()["lock_file"]
    assert change["changed"] is True and change["pin_rewritten"] is True
    assert (change["pin_was"]["version"], change["pin_was"]["sha256"]) == (1, one.sha256)
    assert (change["pin"]["version"], change["pin"]["sha256"]) == (2, two.sha256)
    assert change["shadow_removed"] == {"version": 2, "sha256": two.sha256}


def test_a_promotion_already_live_says_it_rewrote_a_stale_pin(project: Path, capsys: Any) -> None:
    # Given version 2 live in dev, and a pin that still says version 1
    ws = local(project)
    one, two = register(ws), register(ws)
    assert sds(capsys, "promote", "1", "--to", "dev").code == 0
    assert sds(capsys, "promote", "2", "--to", "dev").code == 0
    stale(project, "dev", 1, one.sha256)

    # When version 2 is promoted to dev again
    ended = sds(capsys, "promote", "2", "--to", "dev")

    # Then it does not say "nothing to do": it says the pin was rewritten, and from what
    assert ended.code == 0, ended.err
    assert ended.out.splitlines() == [
        "dev already serves version 2",
        f"  pin rewritten in {lock_file(project)} to follow the alias (was version 1): "
        "deploy with: cdk deploy 'dev/*'",
    ]
    pin = read_lock(project / "models.lock.json", model=ws.model).pins["dev"]
    assert (pin.version, pin.sha256) == (2, two.sha256)

    # And with --json, `lock_file` says the same; a run on a pin in line has nothing to do
    stale(project, "dev", 1, one.sha256)
    change = sds(capsys, "promote", "2", "--to", "dev", "--json").json()
    assert change["changed"] is False
    assert change["lock_file"]["changed"] is True
    assert change["lock_file"]["pin_was"] == {"version": 1, "sha256": one.sha256}
    assert change["lock_file"]["shadow_removed"] is None
    again = sds(capsys, "promote", "2", "--to", "dev")
    assert again.out == "dev already serves version 2; nothing to do\n"
    assert sds(capsys, "promote", "2", "--to", "dev", "--json").json()["lock_file"] == {
        "changed": False,
        "pin_rewritten": False,
        "pin_was": change["lock_file"]["pin"],
        "pin": change["lock_file"]["pin"],
        "shadow_removed": None,
    }


def test_a_promotion_already_live_says_it_wrote_a_missing_pin(project: Path, capsys: Any) -> None:
    # Given version 1 live in dev, and a lock file that lost dev's pin
    ws = local(project)
    register(ws)
    assert sds(capsys, "promote", "1", "--to", "dev").code == 0
    document = lock_document(project)
    del document["environments"]["dev"]
    (project / "models.lock.json").write_text(json.dumps(document))

    # When version 1 is promoted to dev again, Then it says the pin was written, from nothing
    ended = sds(capsys, "promote", "1", "--to", "dev")
    assert ended.out.splitlines()[1] == (
        f"  pin rewritten in {lock_file(project)} to follow the alias (there was none): "
        "deploy with: cdk deploy 'dev/*'"
    )
    assert lock_document(project)["environments"]["dev"]["version"] == 1


def test_a_rollback_to_the_live_version_says_it_rewrote_a_stale_pin(
    project: Path, capsys: Any
) -> None:
    # Given version 2 live in dev after version 1, and a pin that still says version 1
    ws = local(project)
    one, _ = register(ws), register(ws)
    assert sds(capsys, "promote", "1", "--to", "dev").code == 0
    assert sds(capsys, "promote", "2", "--to", "dev").code == 0
    stale(project, "dev", 1, one.sha256)

    # When rolling back to version 2, where dev already is
    ended: Ended = sds(capsys, "rollback", "--env", "dev", "--to", "2")

    # Then it says the pin was rewritten to follow the alias, not "nothing to do"
    assert ended.code == 0, ended.err
    assert ended.out.splitlines() == [
        "dev already serves version 2",
        f"  pin rewritten in {lock_file(project)} to follow the alias (was version 1): commit it",
    ]
    assert lock_document(project)["environments"]["dev"]["version"] == 2
    rerun = sds(capsys, "rollback", "--env", "dev", "--to", "2", "--json").json()
    assert rerun["lock_file"]["changed"] is False


def test_promote_shadow_and_rollback_name_the_lock_file_they_wrote_by_its_full_path(
    project: Path, capsys: Any, monkeypatch: Any
) -> None:
    # Given SDS_LOCK_FILE naming a lock file in another folder, by a relative path
    (project / "elsewhere").mkdir()
    monkeypatch.setenv("SDS_LOCK_FILE", "elsewhere/rw-lock.json")
    lock = (project / "elsewhere" / "rw-lock.json").resolve()
    ws = local(project)
    register(ws), register(ws), register(ws)

    # When versions are promoted, shadowed and rolled back
    promoted = [sds(capsys, "promote", version, "--to", "dev") for version in ("1", "2")]
    shadowed = sds(capsys, "shadow", "3", "--env", "dev")
    rolled_back = sds(capsys, "rollback", "--env", "dev")

    # Then each says where the pin went as `sds serve` says where it reads it: the path
    # resolved, not a base name that could be any folder's
    deploy = "deploy with: cdk deploy 'dev/*'"
    assert promoted[0].out.splitlines()[-1] == f"  pin written to {lock}: {deploy}"
    assert promoted[1].out.splitlines()[-1] == f"  pin written to {lock}: {deploy}"
    assert shadowed.out.splitlines()[-1] == f"  pin written to {lock}: {deploy}"
    assert rolled_back.out.splitlines()[0].endswith(f"; pin updated in {lock})")
    assert read_lock(lock, model=ws.model).pins["dev"].version == 1
