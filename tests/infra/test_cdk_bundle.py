"""The inference Lambda's code folder: serves a request under Python 3.12, within size budget."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path
from typing import Any

from stacks.bundling import LAMBDA_TASK_ROOT, UNUSED_ON_SERVING_PATH, folder_size

MB = 1024 * 1024

# Runs inside the bundle with a bare Python 3.12 (-I -S: no site-packages, no user site), like
# the Lambda runtime. It counts modules compiled from source: with valid unchecked-hash .pyc
# files in the bundle there must be none from the bundle itself.
_SERVE = r"""
import importlib._bootstrap_external as external, json, sys
bundle = sys.argv[1]
sys.path.insert(0, bundle)
compiled = []
original = external.SourceLoader.source_to_code
def counting(self, data, path, *args, **kwargs):
    compiled.append(path)
    return original(self, data, path, *args, **kwargs)
external.SourceLoader.source_to_code = counting
import lambdas.inference.handler as handler
request = json.loads(sys.stdin.read())
responses = [handler.lambda_handler(event, None) for event in request]
print(json.dumps({
    "version": list(sys.version_info[:2]),
    "responses": responses,
    "compiled_from_bundle": [p for p in compiled if p.startswith(bundle)],
    "modules": sorted(m.split(".")[0] for m in sys.modules),
}))
"""


def _api_event(method: str, path: str, body: Any = None) -> dict[str, Any]:
    return {
        "httpMethod": method,
        "path": path,
        "resource": path,
        "headers": {"Content-Type": "application/json"},
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
        "requestContext": {"requestId": "test", "stage": "test"},
    }


def _serve(
    python: str, bundle: Path, environment: dict[str, str], events: list[dict[str, Any]]
) -> dict[str, Any]:
    result = subprocess.run(
        [python, "-I", "-S", "-c", _SERVE, str(bundle)],
        input=json.dumps(events),
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LAMBDA_TASK_ROOT": LAMBDA_TASK_ROOT, **environment},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return document


def test_bundle_size_is_far_below_the_lambda_limit(lambda_bundle: Path) -> None:
    # The size is a property of the artifact (same wheels, same recipe, same bytes), not a timing.
    size = folder_size(lambda_bundle)
    assert size < 250 * MB  # Lambda's hard limit, unzipped
    assert size <= 90 * MB, f"bundle grew to {size / MB:.1f} MiB (budget 90 MiB)"


def test_bundle_ships_serving_dependencies_only(lambda_bundle: Path) -> None:
    top_level = {p.name for p in lambda_bundle.iterdir()}
    assert {"sds", "lambdas", "numpy", "onnxruntime", "numpy.libs"} <= top_level
    # boto3 comes with the runtime; training-only libraries never ship
    for absent in ("boto3", "botocore", "sklearn", "scipy", "skl2onnx", "skops", "bin"):
        assert absent not in top_level
    assert not list(lambda_bundle.glob("numpy/**/tests"))
    assert list(lambda_bundle.glob("numpy.libs/*.so*")), "shared objects must not be stripped"
    # Nothing the recipe lists as unused is left, and what serving maps is still there
    for unused in UNUSED_ON_SERVING_PATH:
        for pattern in unused.paths:
            assert not list(lambda_bundle.glob(pattern)), (pattern, unused.reason)
    capi = lambda_bundle / "onnxruntime" / "capi"
    assert list(capi.glob("onnxruntime_pybind11_state.cpython-312-*.so"))
    assert (capi / "libonnxruntime_providers_shared.so").is_file()
    # Licenses ship with the binaries that need them
    assert (lambda_bundle / "onnxruntime" / "ThirdPartyNotices.txt").is_file()
    assert list(lambda_bundle.glob("numpy-*.dist-info/licenses/LICENSE.txt"))


# Loads every shared object of the bundle the way the dynamic loader does on import (ctypes uses
# RTLD_NOW): a library that one of them links against and the recipe stripped fails here, also for
# extension modules this handler never imports (numpy.random, numpy.fft, ...).
_LOAD_ALL = r"""
import ctypes, json, pathlib, sys
bundle = pathlib.Path(sys.argv[1])
loaded, failed = [], {}
for path in sorted(bundle.rglob("*.so*")):
    if not path.is_file() or not (path.name.endswith(".so") or ".so." in path.name):
        continue
    try:
        ctypes.CDLL(str(path))
        loaded.append(str(path.relative_to(bundle)))
    except OSError as exc:
        failed[str(path.relative_to(bundle))] = str(exc)
print(json.dumps({"loaded": loaded, "failed": failed}))
"""


def test_every_shared_object_left_loads_with_its_libraries_under_python_312(
    lambda_bundle: Path, lambda_python: str
) -> None:
    # Given the trimmed bundle
    # When Python 3.12 loads each of its shared objects with every symbol resolved
    result = subprocess.run(
        [lambda_python, "-I", "-S", "-c", _LOAD_ALL, str(lambda_bundle)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # Then all of them load: nothing they link against was stripped
    assert report["failed"] == {}
    binding = "onnxruntime/capi/onnxruntime_pybind11_state.cpython-312-x86_64-linux-gnu.so"
    assert binding in report["loaded"]
    assert any(name.startswith("numpy.libs/libscipy_openblas") for name in report["loaded"])
    assert len(report["loaded"]) > 20


def _imports(path: Path, bundle: Path) -> set[str]:
    """Every module name a file imports (relative imports resolved, `from a import b` as a.b)."""
    package = list(path.relative_to(bundle).parts[:-1])  # a/b/c.py and a/b/__init__.py: a.b
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # importlib.import_module("...") and friends
    return names


# Imports of stripped modules that cannot run from this bundle, each reviewed by reading the code.
_UNREACHABLE_IMPORTS = {
    # In print_debug_info(), a function called only by hand, and only for a CUDA build of ONNX
    # Runtime with psutil, py-cpuinfo and py3nvml installed: the CPU wheel has no CUDA version
    # and none of the three ship.
    "onnxruntime/__init__.py": {
        "onnxruntime.transformers.machine_info",
        "onnxruntime.transformers.machine_info.get_device_info",
    },
}


def test_no_module_left_in_the_bundle_imports_what_the_recipe_strips(lambda_bundle: Path) -> None:
    # Given the import names of everything the recipe strips as unused
    stripped = {module for unused in UNUSED_ON_SERVING_PATH for module in unused.modules}
    assert {"google.protobuf", "packaging", "onnxruntime.backend"} <= stripped
    # When every shipped module's imports are read
    importers: dict[str, set[str]] = {}
    everything: set[str] = set()
    for path in sorted(lambda_bundle.rglob("*.py")):
        names = _imports(path, lambda_bundle)
        everything |= names
        hits = {n for n in names if any(n == m or n.startswith(f"{m}.") for m in stripped)}
        if hits:
            importers[str(path.relative_to(lambda_bundle))] = hits
    # Then none of them imports a stripped module, statically or by name, where it could run
    assert importers == _UNREACHABLE_IMPORTS
    # (and the scan sees imports, relative ones resolved, in every package that ships)
    assert {"onnxruntime.capi._pybind_state", "numpy._core", "sds.kernel.features"} <= everything


def test_bytecode_is_compiled_for_312_with_unchecked_hashes(lambda_bundle: Path) -> None:
    handler_pyc = next(lambda_bundle.glob("lambdas/__pycache__/__init__.cpython-312.pyc"))
    flags = int.from_bytes(handler_pyc.read_bytes()[4:8], "little")
    assert flags == 0b01  # hash-based, source not checked: valid despite CDK's zip timestamps


def test_bundle_imports_and_serves_under_python_312(
    lambda_bundle: Path, lambda_python: str, tmp_path: Path
) -> None:
    # Given a model trained and registered with the project's own code in a file registry
    from sds.kernel.features import FIELD_NAMES
    from sds.kernel.registry import open_registry
    from training.data import write_jsonl
    from training.synthetic import generate_activity
    from training.train import main as train

    history = write_jsonl(generate_activity(1500, seed=3), tmp_path / "history.jsonl")
    registry_uri = f"file://{tmp_path / 'registry'}"
    assert train(["--data", str(history), "--registry", registry_uri, "--max-iter", "10"]) == 0
    version = open_registry(registry_uri, "fraud").get_version(1)
    events = [
        {k: v for k, v in e.items() if k in FIELD_NAMES}
        for e in generate_activity(3, seed=11)
        if e["type"] == "payment"
    ]
    settings = {
        "MODEL_NAME": "fraud",
        "ENVIRONMENT": "test",
        "REGISTRY_URI": registry_uri,
        "MAX_EVENTS": "100",
        "MAX_BODY_BYTES": "262144",
        "FEATURE_STORE_URI": f"sqlite://{tmp_path / 'features.db'}",
    }
    # When the bundle's handler serves a prediction with the pin in its environment
    pinned = _serve(
        lambda_python,
        lambda_bundle,
        {**settings, "MODEL_VERSION": "1", "MODEL_SHA256": version.sha256},
        [_api_event("POST", "/predict", {"events": events})],
    )
    # Then it runs on 3.12 from compiled bytecode and answers 200 with the model version
    assert pinned["version"] == [3, 12]
    assert pinned["compiled_from_bundle"] == []
    (response,) = pinned["responses"]
    assert response["statusCode"] == 200, response
    assert response["headers"]["X-Model-Version"] == "1"
    assert "sklearn" not in pinned["modules"] and "scipy" not in pinned["modules"]
    # And without a pin the same bundle answers 503, not a crash
    unpinned = _serve(
        lambda_python, lambda_bundle, settings, [_api_event("POST", "/predict", {"events": events})]
    )
    assert unpinned["responses"][0]["statusCode"] == 503
