"""The registry commands as users run them when something is wrong: an unreadable version, a lock
file left mid-merge, a rollback with nothing earlier. One subprocess per command."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.cli_project import Project


def test_one_corrupt_manifest_hides_no_other_version(fresh_copy: Callable[[], Project]) -> None:
    # Given version 1 live in dev and version 2's manifest corrupted
    project = fresh_copy()
    project.sds("promote", "1", "--to", "dev")
    versions = project.path / ".sds" / "registries" / "dev" / "models" / "fraud" / "versions"
    (versions / "2" / "manifest.json").write_text("{broken")

    # When the versions are listed
    listing = project.sds("models", check=False)

    # Then both are listed, version 2 marked unreadable and its problem named on stderr, and
    # the command succeeds: it listed what there is
    assert listing.code == 0, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert set(rows) == {"1", "2"}
    assert "unreadable" in rows["2"] and rows["1"].split()[-1] == "dev"
    assert listing.stderr == (
        "warning: dev: version 2: manifest.json is not valid JSON (listed as unreadable; "
        "sds show 2 --env dev verifies it)\n"
    )
    document = project.sds("models", "--json").json()
    assert [(v["version"], v["problem"]) for v in document["versions"]] == [
        (1, None),
        (2, "version 2: manifest.json is not valid JSON"),
    ]
    # And the commands that do not need version 2 keep working
    assert "in sync" in project.sds("status", "--env", "dev").stdout
    assert "promoted" in project.sds("history", "--env", "dev").stdout
    assert project.sds("show", "1").code == 0
    shown = project.sds("show", "2", check=False)
    assert shown.code == 1 and "manifest.json is not valid JSON" in shown.stderr


def test_a_promotion_mid_merge_is_refused_and_moves_nothing(
    fresh_copy: Callable[[], Project],
) -> None:
    # Given version 1 live in dev, and models.lock.json with git's conflict markers in it
    project = fresh_copy()
    project.sds("promote", "1", "--to", "dev")
    lock = project.path / "models.lock.json"
    conflicted = lock.read_text().replace(
        '    "dev": {\n', '    "dev": {\n<<<<<<< HEAD\n=======\n>>>>>>> other-branch\n', 1
    )
    lock.write_text(conflicted)
    history = project.sds("history", "--env", "dev", "--json").json()

    # When version 2 is promoted
    refused = project.sds("promote", "2", "--to", "dev", check=False)

    # Then it fails in one line naming the file and the merge conflict, and nothing moved
    assert refused.code == 1
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(f"sds: error: cannot promote version 2 to dev: {lock}: ")
    assert "resolve the merge conflict" in refused.stderr
    assert "nothing was changed" in refused.stderr
    assert project.sds("history", "--env", "dev", "--json").json() == history
    assert lock.read_text() == conflicted

    # And once the conflict is resolved, the same command promotes
    lock.write_text(conflicted.replace("<<<<<<< HEAD\n=======\n>>>>>>> other-branch\n", ""))
    assert "version 1 -> version 2" in project.sds("promote", "2", "--to", "dev").stdout


def test_a_rollback_past_the_first_version_says_what_was_served(
    fresh_copy: Callable[[], Project],
) -> None:
    # Given versions 1 then 2 live in dev, and a rollback to 1
    project = fresh_copy()
    project.sds("promote", "1", "--to", "dev")
    project.sds("promote", "2", "--to", "dev")
    project.sds("rollback", "--env", "dev")

    # When rolling back again
    again = project.sds("rollback", "--env", "dev", check=False)

    # Then it says there is nothing earlier, what dev served, and how to go forward again
    assert again.code == 1
    assert again.stderr == (
        "sds: error: nothing earlier to roll back to: dev serves version 1, the oldest on its "
        "rollback history (it has also served version 2: sds rollback --env dev --to 2 "
        "returns to it)\n"
    )
    forward = project.sds("rollback", "--env", "dev", "--to", "2")
    assert "version 1 -> version 2" in forward.stdout
