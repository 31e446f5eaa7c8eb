"""The bundle recipe's cache keys and interpreter lookup (no pip, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacks.bundling import BundleError, BundleSpec, _bundle_key, _deps_key, find_python


def _spec(root: Path, architecture: str = "x86_64") -> BundleSpec:
    return BundleSpec(
        source_root=root,
        packages=("pkg",),
        requirements=root / "requirements.txt",
        architecture=architecture,
        python="python3.12",
        build_root=root / "build",
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    (tmp_path / "pkg" / "tests").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "logic.py").write_text("VALUE = 1\n")
    (tmp_path / "pkg" / "tests" / "test_logic.py").write_text("")
    (tmp_path / "requirements.txt").write_text("numpy==2.4.6\n")
    return tmp_path


def test_bundle_is_rebuilt_when_shipped_source_changes_only(source: Path) -> None:
    spec = _spec(source)
    before = _bundle_key(spec, _deps_key(spec))
    (source / "pkg" / "tests" / "test_logic.py").write_text("assert True\n")
    assert _bundle_key(spec, _deps_key(spec)) == before  # tests are not shipped
    (source / "pkg" / "logic.py").write_text("VALUE = 2\n")
    assert _bundle_key(spec, _deps_key(spec)) != before


def test_dependencies_are_keyed_by_requirements_and_platform(source: Path) -> None:
    x86 = _deps_key(_spec(source))
    assert _deps_key(_spec(source, "arm64")) != x86
    (source / "requirements.txt").write_text("numpy==2.4.7\n")
    assert _deps_key(_spec(source)) != x86


def test_missing_lambda_python_is_a_clear_error() -> None:
    with pytest.raises(BundleError, match="SDS_LAMBDA_PYTHON"):
        find_python(["/nonexistent/python3.12", ""])


def test_unknown_architecture_is_rejected(source: Path) -> None:
    with pytest.raises(BundleError, match="architecture"):
        _spec(source, "sparc")
