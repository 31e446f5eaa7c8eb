"""The inference Lambda's code folder: serves a request under Python 3.12, within size budget."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from stacks.bundling import LAMBDA_TASK_ROOT, folder_size

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
    size = folder_size(lambda_bundle)
    assert size < 250 * MB  # Lambda's hard limit, unzipped
    assert size < 140 * MB, f"bundle grew to {size / MB:.0f} MB (budget 140 MB)"


def test_bundle_ships_serving_dependencies_only(lambda_bundle: Path) -> None:
    top_level = {p.name for p in lambda_bundle.iterdir()}
    assert {"sds", "lambdas", "numpy", "onnxruntime", "numpy.libs"} <= top_level
    # boto3 comes with the runtime; training-only libraries never ship
    for absent in ("boto3", "botocore", "sklearn", "scipy", "skl2onnx", "skops", "bin"):
        assert absent not in top_level
    assert not list(lambda_bundle.glob("numpy/**/tests"))
    assert list(lambda_bundle.glob("numpy.libs/*.so*")), "shared objects must not be stripped"


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
    from training.data import generate_events, write_jsonl
    from training.train import main as train

    history = write_jsonl(generate_events(1500, seed=3), tmp_path / "history.jsonl")
    registry_uri = f"file://{tmp_path / 'registry'}"
    assert train(["--data", str(history), "--registry", registry_uri, "--max-iter", "10"]) == 0
    version = open_registry(registry_uri, "fraud").get_version(1)
    events = [
        {k: v for k, v in e.items() if k in FIELD_NAMES or k == "event_id"}
        for e in generate_events(3, seed=11)
    ]
    settings = {
        "MODEL_NAME": "fraud",
        "ENVIRONMENT": "test",
        "REGISTRY_URI": registry_uri,
        "MAX_EVENTS": "100",
        "MAX_BODY_BYTES": "262144",
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
