"""End-to-end fixtures: trained throwaway projects for the CLI and local API tests."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.cli_project import Project, make_project


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A project with generated history and two versions registered in dev (trained once)."""
    project = make_project(tmp_path_factory.mktemp("project"))
    project.sds("generate", "--events", "8000", "--seed", "3", "--out", "data/events.jsonl.gz")
    for max_iter in ("10", "40"):
        project.sds(
            "train", "--data", "data/events.jsonl.gz", "--max-iter", max_iter, "--quiet",
            "--reason", f"max_iter {max_iter}",
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
