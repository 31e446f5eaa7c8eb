"""The bundle recipe's cache keys and interpreter lookup (no pip, no network)."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import pytest

from stacks.bundling import (
    UNUSED_ON_SERVING_PATH,
    BundleError,
    BundleSpec,
    _bundle_key,
    _deps_key,
    _strip,
    build_bundle,
    find_python,
    source_bundle,
)


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


def test_a_bundle_reused_by_a_synth_survives_the_bundles_built_after_it(source: Path) -> None:
    # Given three bundles built one after the other, the first of them the oldest
    def bundle(value: int) -> Path:
        (source / "pkg" / "logic.py").write_text(f"VALUE = {value}\n")
        return source_bundle(("pkg",), name="lambda-bundle", source_root=source)

    first, second, third = bundle(1), bundle(2), bundle(3)
    now = time.time()
    for age, built in ((300, first), (200, second), (100, third)):  # whatever the clock's grain
        os.utime(built, (now - age, now - age))
    # When a synth reuses the first (a cache hit), then builds a fourth
    assert bundle(1) == first
    fourth = bundle(4)
    # Then the three most recently used are kept: the least recently used one is dropped
    assert first.is_dir() and third.is_dir() and fourth.is_dir()
    assert not second.exists()


def test_a_synth_of_more_bundles_than_the_cache_keeps_prunes_none_of_them(source: Path) -> None:
    # Given two bundles (as the inference and updater bundles), each for both architectures: four
    # at once, more than the three builds the cache keeps. Their dependency trees are already
    # cached, so no pip runs; this interpreter compiles (the recipe wants 3.12, the test does not).
    (source / "other").mkdir()
    (source / "other" / "__init__.py").write_text("")
    (source / "other.txt").write_text("numpy==2.4.6\n")
    specs = [
        dataclasses.replace(_spec(source, architecture), packages=packages, requirements=source / r)
        for packages, r in ((("pkg",), "requirements.txt"), (("other",), "other.txt"))
        for architecture in ("x86_64", "arm64")
    ]
    for spec in specs:
        (spec.build_root / "lambda-deps" / _deps_key(spec)).mkdir(parents=True, exist_ok=True)
    specs = [dataclasses.replace(spec, python=sys.executable) for spec in specs]
    # When one synth builds them all, one after the other
    built = [build_bundle(spec) for spec in specs]
    # Then every one of them is still there for the assembly to name
    assert len(set(built)) == 4
    for spec, path in zip(specs, built, strict=True):
        assert (path / spec.packages[0] / "__init__.py").is_file(), spec
    # And edits to one bundle prune only that bundle's oldest builds
    edits = []
    for value in range(2, 6):
        (source / "pkg" / "logic.py").write_text(f"VALUE = {value}\n")
        edits.append(build_bundle(specs[0]))
    assert not built[0].exists() and not edits[0].exists()
    assert all(path.is_dir() for path in edits[1:] + built[1:])


def test_dependencies_are_keyed_by_requirements_and_platform(source: Path) -> None:
    x86 = _deps_key(_spec(source))
    assert _deps_key(_spec(source, "arm64")) != x86
    (source / "requirements.txt").write_text("numpy==2.4.7\n")
    assert _deps_key(_spec(source)) != x86


def test_dependencies_are_rebuilt_when_the_strip_list_changes(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cache is shared between work trees: a strip list edited without a RECIPE_VERSION bump
    # must still never reuse a tree stripped by the old list.
    before = _deps_key(_spec(source))
    fewer = UNUSED_ON_SERVING_PATH[1:]
    monkeypatch.setattr("stacks.bundling.UNUSED_ON_SERVING_PATH", fewer)
    assert _deps_key(_spec(source)) != before


def test_missing_lambda_python_is_a_clear_error() -> None:
    with pytest.raises(BundleError, match="SDS_LAMBDA_PYTHON"):
        find_python(["/nonexistent/python3.12", ""])


def test_unknown_architecture_is_rejected(source: Path) -> None:
    with pytest.raises(BundleError, match="architecture"):
        _spec(source, "sparc")


def test_strip_removes_what_serving_never_loads_and_keeps_what_it_links(tmp_path: Path) -> None:
    # Given a dependency tree laid out like the wheels pip installs for the Lambda platform
    files = [
        "onnxruntime/__init__.py",
        "onnxruntime/LICENSE",
        "onnxruntime/ThirdPartyNotices.txt",
        "onnxruntime/capi/onnxruntime_pybind11_state.cpython-312-x86_64-linux-gnu.so",
        "onnxruntime/capi/libonnxruntime_providers_shared.so",
        "onnxruntime/capi/libonnxruntime.so.1.32.0",
        "onnxruntime/backend/backend.py",
        "onnxruntime/tools/convert.py",
        "onnxruntime/transformers/machine_info.py",
        "onnxruntime-1.32.0.dist-info/METADATA",
        "numpy/__init__.py",
        "numpy/_core/tests/test_api.py",
        "numpy/_core/include/numpy/ndarrayobject.h",
        "numpy/_core/__init__.pyi",
        "numpy.libs/libscipy_openblas64_-32a4b2a6.so",
        "numpy.libs/libgfortran-040039e1-0352e75f.so.5.0.0",
        "numpy-2.4.6.dist-info/licenses/LICENSE.txt",
        "google/protobuf/descriptor_pb2.py",
        "protobuf-7.36.2.dist-info/METADATA",
        "flatbuffers/builder.py",
        "flatbuffers-25.12.19.dist-info/METADATA",
        "packaging/version.py",
        "packaging-26.4.dist-info/METADATA",
    ]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    # When the recipe strips it
    _strip(tmp_path)
    # Then the binding, the libraries it and numpy link against, licenses and metadata stay
    left = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert left == {
        "onnxruntime/__init__.py",
        "onnxruntime/LICENSE",
        "onnxruntime/ThirdPartyNotices.txt",
        "onnxruntime/capi/onnxruntime_pybind11_state.cpython-312-x86_64-linux-gnu.so",
        "onnxruntime/capi/libonnxruntime_providers_shared.so",
        "onnxruntime-1.32.0.dist-info/METADATA",
        "numpy/__init__.py",
        "numpy.libs/libscipy_openblas64_-32a4b2a6.so",
        "numpy.libs/libgfortran-040039e1-0352e75f.so.5.0.0",
        "numpy-2.4.6.dist-info/licenses/LICENSE.txt",
    }
    # And no empty top-level folder of a stripped package is left behind
    assert {p.name for p in tmp_path.iterdir()} == {
        "onnxruntime",
        "onnxruntime-1.32.0.dist-info",
        "numpy",
        "numpy.libs",
        "numpy-2.4.6.dist-info",
    }


def test_unused_entries_stay_inside_the_bundle_and_off_linked_libraries() -> None:
    for unused in UNUSED_ON_SERVING_PATH:
        for pattern in unused.paths:
            assert not Path(pattern).is_absolute() and ".." not in Path(pattern).parts
            assert ".libs" not in pattern, pattern
