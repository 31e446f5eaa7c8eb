"""`make demo` runs `sds demo`: it must pass on its own and prove the served version changes."""

from __future__ import annotations

from tests.e2e.cli_project import Project


def test_demo_trains_promotes_serves_and_rolls_back(trained_project: Project) -> None:
    result = trained_project.sds("demo", "--events", "8000", timeout=300)
    out = result.stdout
    assert "X-Model-Version: 1" in out and "X-Model-Version: 2" in out
    assert out.index("X-Model-Version: 2") < out.rindex("X-Model-Version: 1")
    assert "refused: version 2 may not go to prod" in out
    assert "served after promote    v1 -> v2 -> v1" in out
    # The demo works in its own workspace: the project's lock file is untouched.
    assert not (trained_project.path / "models.lock.json").exists()
    assert not (trained_project.path / ".sds" / "demo").exists()
