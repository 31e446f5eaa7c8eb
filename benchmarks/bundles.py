"""The two Lambda bundles under test, built by the project's own recipe (`stacks.bundling`).

Ours is exactly the bundle `app.py` deploys (same spec, same cache key). The baseline goes through
the same recipe (pip for the Lambda platform, stripping, Python 3.12 `unchecked-hash` bytecode) with
scikit-learn instead of ONNX Runtime, plus its handler under `benchmarks/baseline`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import LAMBDA_PACKAGES
from stacks.bundling import BundleSpec, build_bundle, find_python, folder_size

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
# Lambda's limits for a .zip deployment package: 250 MB unzipped (code and layers), 50 MB zipped
# for a direct upload (AWS counts these in MiB).
LAMBDA_UNZIPPED_LIMIT = 250 * MIB
LAMBDA_ZIPPED_LIMIT = 50 * MIB

HANDLERS = {
    "ours": "lambdas.inference.handler.lambda_handler",
    "baseline": "benchmarks.baseline.handler.lambda_handler",
}


@dataclass(frozen=True)
class Bundle:
    name: str
    path: Path
    handler: str


def lambda_python() -> str:
    from app import lambda_python_candidates

    return find_python(lambda_python_candidates())


def build(name: str, python: str) -> Bundle:
    if name == "ours":
        packages: tuple[str, ...] = LAMBDA_PACKAGES
        requirements = ROOT / "lambdas" / "inference" / "requirements.txt"
        build_root = ROOT / "build"  # the cache app.py uses: the very bundle cdk deploys
    else:
        packages = (*LAMBDA_PACKAGES, "benchmarks")
        requirements = ROOT / "benchmarks" / "baseline" / "requirements.txt"
        # Its own cache, so the baseline never prunes the bundles synth keeps.
        build_root = ROOT / "build" / "bench"
    path = build_bundle(
        BundleSpec(
            source_root=ROOT,
            packages=packages,
            requirements=requirements,
            architecture="x86_64",
            python=python,
            pip=(sys.executable, "-m", "pip"),
            build_root=build_root,
        )
    )
    return Bundle(name, path, HANDLERS[name])


def zipped_size(root: Path) -> int:
    """Size of the folder as a deflated zip (what CDK uploads), in bytes."""
    with tempfile.TemporaryDirectory(prefix="sds-bench-zip-") as tmp:
        target = Path(tmp) / "bundle.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
            for directory, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for filename in sorted(filenames):
                    path = Path(directory) / filename
                    if path.is_file() and not path.is_symlink():
                        archive.write(path, path.relative_to(root))
        return target.stat().st_size


def sizes(bundle: Bundle, *, reuse: bool = False) -> dict[str, Any]:
    """Unzipped and zipped size. Bundle folders are named by a hash of everything in them, so
    with `reuse` (quick runs) a zipped size measured earlier for the same folder is taken."""
    cache_file = ROOT / "build" / "bench" / "zipped-sizes.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    key = str(bundle.path)
    if reuse and key in cache:
        zipped, reused = int(cache[key]), True
    else:
        zipped, reused = zipped_size(bundle.path), False
        cache[key] = zipped
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache))
    return {
        "unzipped_bytes": folder_size(bundle.path),
        "zipped_bytes": zipped,
        "zipped_size_reused": reused,
        "path": str(bundle.path.relative_to(ROOT)),
    }
