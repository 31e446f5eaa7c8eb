"""Build the inference Lambda's code folder without Docker, cached under build/.

The zip must run on the Lambda platform, not on the machine that synthesizes: wheels are fetched
for `manylinux_2_28_<arch>` / CPython 3.12 with `pip --platform`, and bytecode is compiled by a real
Python 3.12 with `unchecked-hash` invalidation. CDK zips assets with a fixed 1980 timestamp, so
timestamp-checked .pyc files would never match their sources and Lambda (read-only /var/task)
would recompile every module on every cold start.

Two cache levels keep synth fast: third-party dependencies are keyed by the requirements file,
the target platform and this module's recipe version; the final bundle adds a hash of our own
sources on top and is assembled with hard links, so a source edit costs a copy of a few files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Bump when the recipe below changes, so stale caches are never reused.
RECIPE_VERSION = "5"
LAMBDA_PYTHON_VERSION = "3.12"
LAMBDA_TASK_ROOT = "/var/task"

_PLATFORMS = {"x86_64": "manylinux_2_28_x86_64", "arm64": "manylinux_2_28_aarch64"}
# Wheels for an older glibc run on the Lambda's too (Amazon Linux 2023, glibc 2.34), and pip takes
# them only if asked: orjson publishes manylinux_2_17 wheels alone. pip prefers the first platform.
_OLDER_PLATFORMS = {"x86_64": "manylinux_2_17_x86_64", "arm64": "manylinux_2_17_aarch64"}

# Not needed to serve a request, anywhere in the tree: test suites, type stubs, C and Cython
# sources and headers, console scripts, and bytecode (compiled again below, by Python 3.12).
_STRIP_DIRS = frozenset({"tests", "test", "__pycache__", "include", "bin"})
_STRIP_SUFFIXES = (".pyi", ".pyc", ".pyx", ".pxd", ".c", ".h", ".hpp")


@dataclass(frozen=True)
class Unused:
    """Files a wheel installs that nothing loads to serve a request, and the evidence for it."""

    paths: tuple[str, ...]  # globs relative to the bundle root
    modules: tuple[str, ...]  # the import names they provide (nothing shipped may import them)
    reason: str


# Found by serving every route from the bundle under Python 3.12 and recording the files mapped
# (/proc/self/maps) and opened (an audit hook): 47.4 of 121.9 MiB were neither, 33.2 MiB of it
# the first entry below. The rest stays: sources for tracebacks, licenses, metadata, and numpy
# modules that are lazily imported by other code (the benchmark's scikit-learn baseline goes
# through this recipe too). tests/infra/test_cdk_bundle.py proves on every build that every
# shared object left loads with its linked libraries, that the handler serves, and that no
# shipped module imports anything listed here. `*.libs` folders (the libraries the wheels link
# against) are never listed.
UNUSED_ON_SERVING_PATH: tuple[Unused, ...] = (
    Unused(
        ("onnxruntime/capi/libonnxruntime.so*",),
        (),
        "ONNX Runtime's C/C++ API library (33.2 MiB), for programs that link the runtime "
        "themselves. The Python binding (onnxruntime_pybind11_state) carries the runtime "
        "statically: it has no DT_NEEDED entry for it (x86_64 and aarch64 wheels), no module "
        "loads it, and it is never mapped while serving.",
    ),
    Unused(
        (
            "onnxruntime/transformers",
            "onnxruntime/quantization",
            "onnxruntime/tools",
            "onnxruntime/datasets",
        ),
        (
            "onnxruntime.transformers",
            "onnxruntime.quantization",
            "onnxruntime.tools",
            "onnxruntime.datasets",
        ),
        "ONNX Runtime's model conversion and optimization tool kits and sample models; the "
        "handler only creates an InferenceSession.",
    ),
    Unused(
        ("onnxruntime/backend",),
        ("onnxruntime.backend",),
        "The ONNX backend-test API: it imports the `onnx` package and `unittest`'s test "
        "machinery, and `onnx` does not ship, so it cannot even be imported here.",
    ),
    Unused(
        (
            "google/protobuf",
            "protobuf-*.dist-info",
            "flatbuffers",
            "flatbuffers-*.dist-info",
            "packaging",
            "packaging-*.dist-info",
        ),
        ("google.protobuf", "flatbuffers", "packaging"),
        "onnxruntime's declared Python dependencies, imported only by the tool kits and the "
        "backend above (3.2 MiB). The runtime parses models with the C++ protobuf and "
        "flatbuffers linked into its binding, not with these packages.",
    ),
)


class BundleError(RuntimeError):
    """The Lambda bundle could not be built; the message says what to install or fix."""


@dataclass(frozen=True)
class BundleSpec:
    """What goes into the inference Lambda's code folder."""

    source_root: Path
    packages: tuple[str, ...]
    requirements: Path
    architecture: str
    python: str
    build_root: Path
    pip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.architecture not in _PLATFORMS:
            raise BundleError(f"unsupported Lambda architecture {self.architecture!r}")


def find_python(candidates: Iterable[str], version: str = LAMBDA_PYTHON_VERSION) -> str:
    """Return the first candidate interpreter that really is Python `version`."""
    tried: list[str] = []
    for candidate in candidates:
        if not candidate:
            continue
        tried.append(candidate)
        try:
            result = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0 and result.stdout.strip() == version:
            return candidate
    raise BundleError(
        f"no Python {version} found (tried: {', '.join(tried) or 'nothing'}). The Lambda bundle's "
        f"bytecode must be compiled by the Lambda runtime's Python: install Python {version} or "
        "point SDS_LAMBDA_PYTHON at it."
    )


def _digest(parts: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:20]


def source_files(spec: BundleSpec) -> list[Path]:
    """Our own modules that ship in the bundle, in a stable order (tests excluded).

    A package may be dotted (`sds.kernel`): its parents' `__init__.py` ship too, and nothing else
    of theirs, so an edit to a sibling package leaves the bundle (and its asset hash) unchanged.
    """
    files: set[Path] = set()
    for package in spec.packages:
        parts = package.split(".")
        root = spec.source_root.joinpath(*parts)
        if not (root / "__init__.py").is_file():
            raise BundleError(f"{root} is not a package (no __init__.py)")
        for depth in range(1, len(parts)):
            files.add(spec.source_root.joinpath(*parts[:depth], "__init__.py"))
        for path in root.rglob("*.py"):
            relative = path.relative_to(spec.source_root)
            if not _stripped(relative.parts[:-1]):
                files.add(path)
    return sorted(files)


def _stripped(dir_parts: Sequence[str]) -> bool:
    return any(part in _STRIP_DIRS for part in dir_parts)


def _strip_recipe() -> bytes:
    """What `_strip` removes, so a change to the lists alone never reuses a stale cache."""
    paths = [unused.paths for unused in UNUSED_ON_SERVING_PATH]
    return repr((sorted(_STRIP_DIRS), _STRIP_SUFFIXES, paths)).encode()


def _deps_key(spec: BundleSpec) -> str:
    return _digest(
        [
            RECIPE_VERSION.encode(),
            _strip_recipe(),
            _PLATFORMS[spec.architecture].encode(),
            _OLDER_PLATFORMS[spec.architecture].encode(),
            LAMBDA_PYTHON_VERSION.encode(),
            spec.requirements.read_bytes(),
        ]
    )


def _bundle_key(spec: BundleSpec, deps_key: str) -> str:
    parts = [deps_key.encode()]
    for path in source_files(spec):
        parts.append(str(path.relative_to(spec.source_root)).encode())
        parts.append(path.read_bytes())
    return _digest(parts)


def _run(command: Sequence[str], what: str) -> None:
    result = subprocess.run(list(command), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise BundleError(f"{what} failed ({' '.join(command[:4])} ...):\n{tail}")


def _strip(root: Path) -> None:
    for unused in UNUSED_ON_SERVING_PATH:
        for pattern in unused.paths:
            for path in sorted(root.glob(pattern)):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                # A namespace folder (google/) left empty goes too.
                parent = path.parent
                while parent != root and not any(parent.iterdir()):
                    parent.rmdir()
                    parent = parent.parent
    for directory, dirnames, filenames in os.walk(root, topdown=True):
        # `*.libs` folders hold the shared objects the wheels link against: never touch them.
        keep = [d for d in dirnames if d not in _STRIP_DIRS or d.endswith(".libs")]
        for removed in set(dirnames) - set(keep):
            shutil.rmtree(Path(directory) / removed)
        dirnames[:] = keep
        for name in filenames:
            if name.endswith(_STRIP_SUFFIXES):
                (Path(directory) / name).unlink()


def _compile(spec: BundleSpec, root: Path, targets: Sequence[Path]) -> None:
    _run(
        [
            spec.python,
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            # Tracebacks in CloudWatch name /var/task paths, not this machine's build folder.
            "-s",
            str(root),
            "-p",
            LAMBDA_TASK_ROOT,
            *[str(t) for t in targets],
        ],
        "compiling bytecode",
    )


def _publish(tmp: Path, final: Path) -> Path:
    """Move a finished build into place; a concurrent build that finished first wins."""
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise
    return final


def _build_dependencies(spec: BundleSpec, key: str) -> Path:
    final = spec.build_root / "lambda-deps" / key
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
    pip = list(spec.pip) or [spec.python, "-m", "pip"]
    _run(
        [
            *pip,
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(tmp),
            "--platform",
            _PLATFORMS[spec.architecture],
            "--platform",
            _OLDER_PLATFORMS[spec.architecture],
            "--only-binary=:all:",
            "--python-version",
            LAMBDA_PYTHON_VERSION,
            "--implementation",
            "cp",
            "--no-compile",
            "-r",
            str(spec.requirements),
        ],
        "pip install for the Lambda platform",
    )
    _strip(tmp)
    for dist_info in tmp.glob("*.dist-info"):
        # RECORD lists files we stripped; nothing at runtime reads it.
        (dist_info / "RECORD").unlink(missing_ok=True)
    _compile(spec, tmp, [tmp])
    return _publish(tmp, final)


def build_bundle(spec: BundleSpec) -> Path:
    """Return a folder ready for `lambda_.Code.from_asset`, building it only when inputs changed."""
    deps_key = _deps_key(spec)
    key = _bundle_key(spec, deps_key)
    final = spec.build_root / "lambda-bundle" / _family(spec) / key
    if final.is_dir():
        return _reused(final)
    deps = _build_dependencies(spec, deps_key)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
    tmp.rmdir()
    # Hard links: the dependency tree is ~85 MiB and identical for every source change.
    shutil.copytree(deps, tmp, copy_function=os.link)
    for path in source_files(spec):
        target = tmp / path.relative_to(spec.source_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    _compile(spec, tmp, sorted({tmp / package.split(".")[0] for package in spec.packages}))
    published = _publish(tmp, final)
    _prune(final.parent, keep=published)
    return published


def _family(spec: BundleSpec) -> str:
    """The folder that holds one bundle's builds, one per source edit (`kind-arch-digest`).

    Pruning keeps the last few builds of each family: with one folder for all, a synth that built
    more bundles than the folder kept (the inference and updater bundles of both architectures, or
    a test's own monitor build) pruned a bundle it had built a moment before, and the assembly
    named a folder that no longer existed.
    """
    kind = spec.packages[-1].rsplit(".", 1)[-1] if spec.packages else "bundle"
    identity = _digest(
        [
            *(package.encode() for package in spec.packages),
            str(spec.requirements.relative_to(spec.source_root)).encode()
            if spec.requirements.is_relative_to(spec.source_root)
            else str(spec.requirements).encode(),
            spec.architecture.encode(),
        ]
    )
    return f"{kind}-{spec.architecture}-{identity[:8]}"


def _reused(bundle: Path) -> Path:
    """A cached bundle, marked as just used: `_prune` keeps the most recently used, so a bundle a
    synth reuses is not dropped by the bundles that synth then builds (it was, when it was the
    oldest there: the assembly then named a folder that no longer existed)."""
    with contextlib.suppress(OSError):  # a read-only cache: nothing is pruned from it either
        os.utime(bundle)
    return bundle


def _prune(folder: Path, *, keep: Path, retain: int = 3) -> None:
    """Drop all but the few most recently built or used builds in `folder` (one bundle's family,
    or one source bundle's folder; `_reused` marks a use), so build/ does not grow with every
    edit."""
    bundles = sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in bundles[retain:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def folder_size(root: Path) -> int:
    """Unzipped size in bytes, as Lambda counts it (hard links count once per path)."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def source_bundle(
    packages: tuple[str, ...], *, name: str, source_root: Path, build_root: Path | None = None
) -> Path:
    """A code folder of our own sources only (no wheels), `build/<name>/<hash of the sources>`,
    built once: for the small functions that need nothing but the kernel, the standard library
    and the AWS SDK the Lambda runtime provides (the pruner, the activation hook).

    Each has its own asset, so an edit to one never publishes a version of another function.
    """
    build_root = build_root or source_root / "build"
    spec = BundleSpec(
        source_root=source_root,
        packages=packages,
        requirements=source_root / "lambdas" / "inference" / "requirements.txt",  # not installed
        architecture="arm64",
        python="",
        build_root=build_root,
    )
    files = source_files(spec)
    digest = hashlib.sha256()
    for path in files:
        relative = str(path.relative_to(source_root)).encode()
        digest.update(len(relative).to_bytes(8, "big") + relative)
        content = path.read_bytes()
        digest.update(len(content).to_bytes(8, "big") + content)
    final = build_root / name / digest.hexdigest()[:20]
    if final.is_dir():
        return _reused(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    for path in files:
        target = tmp / path.relative_to(source_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    published = _publish(tmp, final)
    _prune(final.parent, keep=published)
    return published
