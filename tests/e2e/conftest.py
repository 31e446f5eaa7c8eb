"""End-to-end fixtures: trained throwaway projects for the CLI and local API tests."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.cli_project import Project, make_project
from tests.e2e.stopping import SCORE, two_file_history


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A project with generated history and two versions registered in dev (trained once)."""
    project = make_project(tmp_path_factory.mktemp("project"))
    project.sds("generate", "--events", "8000", "--seed", "3", "--out", "data/events.jsonl.gz")
    # The second run reads the history with one worker, its partitions under the project's data
    # folder: the options reach training (an unknown folder is refused: test_cli).
    for max_iter, reading in (("10", ()), ("40", ("--workers", "1", "--work-dir", "data"))):
        project.sds(
            "train", "--data", "data/events.jsonl.gz", "--max-iter", max_iter, "--quiet",
            "--reason", f"max_iter {max_iter}", *reading,
        )  # fmt: skip
    return project


@pytest.fixture
def fresh_copy(trained_project: Project, tmp_path: Path) -> Callable[[], Project]:
    """A private copy of the trained project, so each test starts from the same state."""

    def copy() -> Project:
        target = tmp_path / "copy"
        shutil.copytree(trained_project.path, target)
        return Project(target, dict(trained_project.env))

    return copy


@pytest.fixture(scope="module")
def history(trained_project: Project, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A history in two files, for the runs stopped mid-way (test_interrupt, test_terminate)."""
    return two_file_history(trained_project, tmp_path_factory.mktemp("history"))


@pytest.fixture(scope="module")
def uninterrupted(
    trained_project: Project, history: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """What `sds score` writes for `history` when nothing stops it: a stopped run's rerun must
    finish with the same."""
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    trained_project.sds(*SCORE, "--data", str(history), "--out", str(out), "--quiet")
    return out
