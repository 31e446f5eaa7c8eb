"""The built Lambda bundle, run the way Lambda runs it: Python 3.12, AWS's runtime interface
client (`awslambdaric`) polling a Runtime API endpoint, the model loaded from S3 (moto).

The bundle is exactly what `app.py` deploys (stacks/bundling.py, cached in build/). Like the
Lambda runtime, the test supplies boto3 and awslambdaric from outside the bundle: both are
installed for CPython 3.12 / manylinux into their own cached folder, never into the bundle.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import app as cdk_app
from stacks.bundling import build_bundle, find_python
from tests.integration.deployed import ROOT
from tests.integration.runtime_api import RuntimeApi

RIC_REQUIREMENTS = ("awslambdaric", "boto3")


def _pinned(name: str) -> str:
    for requirements in ("requirements-dev.txt", "requirements.txt"):
        for line in (ROOT / requirements).read_text().splitlines():
            if line.strip().startswith(f"{name}=="):
                return line.strip()
    raise AssertionError(f"{name} is not pinned in requirements*.txt")


@pytest.fixture(scope="module")
def lambda_python() -> str:
    return find_python(cdk_app.lambda_python_candidates())


@pytest.fixture(scope="module")
def lambda_bundle(lambda_python: str) -> Path:
    return build_bundle(cdk_app.lambda_bundle_spec(architecture="x86_64", python=lambda_python))


@pytest.fixture(scope="module")
def runtime_site() -> Path:
    """awslambdaric and boto3 for CPython 3.12 on manylinux: what the Lambda runtime provides."""
    pins = [_pinned(name) for name in RIC_REQUIREMENTS]
    key = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:16]
    final = ROOT / "build" / "lambda-runtime" / key
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--target", str(tmp), "--platform", "manylinux2014_x86_64",
            "--platform", "manylinux_2_28_x86_64", "--python-version", "3.12",
            "--implementation", "cp", "--only-binary=:all:", *pins,
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    try:
        tmp.rename(final)
    except OSError:  # another session finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return final


@pytest.fixture
def trained_model_on_s3(aws: Any, tmp_path: Path) -> dict[str, str]:
    """A model trained with the project's own code and registered in a moto S3 bucket."""
    from sds.kernel.registry import open_registry
    from training.data import write_jsonl
    from training.synthetic import generate_activity
    from training.train import main as train

    bucket = aws.bucket()
    history = write_jsonl(generate_activity(1500, seed=3), tmp_path / "history.jsonl")
    registry_uri = f"s3://{bucket}"
    assert train(["--data", str(history), "--registry", registry_uri, "--max-iter", "10"]) == 0
    version = open_registry(registry_uri, "fraud").get_version(1)
    return {
        "MODEL_NAME": "fraud",
        "MODEL_VERSION": "1",
        "MODEL_SHA256": version.sha256,
        "REGISTRY_URI": registry_uri,
        "ENVIRONMENT": "test",
        "MAX_EVENTS": "100",
        "MAX_BODY_BYTES": "262144",
        "FEATURE_STORE_URI": f"sqlite://{tmp_path / 'features.db'}",
    }


@pytest.fixture
def runtime_api() -> Iterator[RuntimeApi]:
    api = RuntimeApi()
    yield api
    api.close()


def api_event(method: str, path: str, body: Any = None) -> dict[str, Any]:
    import json

    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {"Content-Type": ["application/json"]},
        "queryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {"requestId": "req", "stage": "test", "httpMethod": method},
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


def start_function(
    python: str,
    bundle: Path,
    site: Path,
    runtime_api: RuntimeApi,
    aws: Any,
    settings: dict[str, str],
    tmp_path: Path,
    *,
    handler: str = "lambdas.inference.handler.lambda_handler",
    extra_path: Path | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    python_path = f"{bundle}:{site}" + (f":{extra_path}" if extra_path else "")
    environment = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": python_path,
        "PYTHONNOUSERSITE": "1",
        "LAMBDA_TASK_ROOT": str(bundle),
        "AWS_LAMBDA_RUNTIME_API": runtime_api.address,
        "AWS_LAMBDA_FUNCTION_NAME": "sds-test-inference",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "_HANDLER": handler,
        **aws.environment,
        **settings,
    }
    log = tmp_path / "function.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            # -S: no site-packages of this machine's 3.12; only the bundle and the runtime's libs
            [python, "-S", "-m", "awslambdaric", handler],
            cwd=bundle,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return process, log


def test_the_bundle_serves_api_gateway_events_under_awslambdaric_cold_and_warm(
    lambda_python: str,
    lambda_bundle: Path,
    runtime_site: Path,
    trained_model_on_s3: dict[str, str],
    runtime_api: RuntimeApi,
    aws: Any,
    tmp_path: Path,
) -> None:
    import json

    from sds.kernel.features import FIELD_NAMES
    from training.synthetic import generate_activity

    # Given the bundle started by awslambdaric under Python 3.12, pinned to model 1 on S3
    started = time.monotonic()
    process, log = start_function(
        lambda_python, lambda_bundle, runtime_site, runtime_api, aws, trained_model_on_s3, tmp_path
    )
    try:
        events = [
            {k: v for k, v in e.items() if k in FIELD_NAMES}
            for e in generate_activity(3, seed=11)
            if e["type"] == "payment"
        ]
        # When API Gateway events arrive: the first one cold, the next ones warm
        cold = runtime_api.invoke(api_event("POST", "/predict", {"events": events}))
        warm = runtime_api.invoke(api_event("POST", "/predict", {"events": events[:1]}))
        model = runtime_api.invoke(api_event("GET", "/model"))
        bad = runtime_api.invoke(api_event("POST", "/predict", {"events": [{"amount": "x"}]}))
    finally:
        process.kill()
        process.wait()
    output_text = log.read_text(errors="replace")

    # Then every answer is a proper proxy response from the pinned model, with no init error
    assert runtime_api.init_errors == [], output_text[-3000:]
    for invocation in (cold, warm, model, bad):
        assert invocation.error is None, (invocation.error, output_text[-3000:])
    assert cold.result["statusCode"] == 200, cold.result
    assert cold.result["headers"]["X-Model-Version"] == "1"
    assert len(json.loads(cold.result["body"])["predictions"]) == 3
    assert warm.result["statusCode"] == 200
    assert json.loads(model.result["body"])["version"] == 1
    assert bad.result["statusCode"] == 400
    # And the model was loaded (from S3, verified) once, at init, not per request
    assert output_text.count("loaded model fraud v1") == 1, output_text[-3000:]
    # And each scored payment's capture record, and each scored request's behaviour metrics,
    # reached the runtime's stdout whole, one JSON document per line
    lines = [json.loads(x) for x in output_text.splitlines() if x.startswith("{")]
    captured = [x["event_id"] for x in lines if x.get("record") == "sds.capture"]
    assert captured == [e["event_id"] for e in events] + [events[0]["event_id"]]
    assert [x["Predictions"] for x in lines if "Predictions" in x] == [3, 1]
    init_ms = (runtime_api.first_poll_at - started) * 1000
    print(f"\nawslambdaric: init (imports + verified model load from S3) {init_ms:.0f} ms")


def test_a_model_that_fails_verification_answers_503_without_a_crash_loop(
    lambda_python: str,
    lambda_bundle: Path,
    runtime_site: Path,
    trained_model_on_s3: dict[str, str],
    runtime_api: RuntimeApi,
    aws: Any,
    tmp_path: Path,
) -> None:
    from sds.kernel.features import FIELD_NAMES
    from training.synthetic import generate_activity

    # Given a pin whose sha256 does not match the model in the registry
    settings = {**trained_model_on_s3, "MODEL_SHA256": "0" * 64}
    process, log = start_function(
        lambda_python, lambda_bundle, runtime_site, runtime_api, aws, settings, tmp_path
    )
    try:
        # When requests arrive
        events = [
            {k: v for k, v in e.items() if k in FIELD_NAMES}
            for e in generate_activity(1, seed=5)
            if e["type"] == "payment"
        ]
        first = runtime_api.invoke(api_event("POST", "/predict", {"events": events}))
        second = runtime_api.invoke(api_event("GET", "/health"))
        alive = process.poll() is None
    finally:
        process.kill()
        process.wait()
    # Then the environment stays up and answers 503 naming the mismatch, never an init error
    assert runtime_api.init_errors == [] and alive, log.read_text(errors="replace")[-3000:]
    assert first.result["statusCode"] == 503
    assert "does not match the deployed pin" in first.result["body"]
    assert second.result["statusCode"] == 503


# The probe wraps the real handler and reports, with each response, which of these modules the
# Lambda process has loaded by then.
_PROBE_HANDLER = """
import sys

from lambdas.inference.handler import lambda_handler as real_handler

WATCHED = ("boto3", "botocore", "s3transfer", "urllib3", "http.client", "email")


def lambda_handler(event, context):
    response = real_handler(event, context)
    loaded = sorted(name for name in WATCHED if name in sys.modules)
    response.setdefault("headers", {})["X-Probe-Loaded"] = ",".join(loaded) or "none"
    return response
"""


def test_the_model_is_loaded_from_s3_without_the_aws_sdk(
    lambda_python: str,
    lambda_bundle: Path,
    runtime_site: Path,
    trained_model_on_s3: dict[str, str],
    runtime_api: RuntimeApi,
    aws: Any,
    tmp_path: Path,
) -> None:
    from sds.kernel.features import FIELD_NAMES
    from training.synthetic import generate_activity

    # Given the bundle under awslambdaric, boto3 on its path as on Lambda, wrapped by a probe
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    (probe_dir / "sds_probe.py").write_text(_PROBE_HANDLER)
    process, log = start_function(
        lambda_python,
        lambda_bundle,
        runtime_site,
        runtime_api,
        aws,
        trained_model_on_s3,
        tmp_path,
        handler="sds_probe.lambda_handler",
        extra_path=probe_dir,
    )
    try:
        # When it loads the pinned model from S3 and serves requests
        events = [
            {k: v for k, v in e.items() if k in FIELD_NAMES}
            for e in generate_activity(2, seed=7)
            if e["type"] == "payment"
        ]
        scored = runtime_api.invoke(api_event("POST", "/predict", {"events": events}))
        described = runtime_api.invoke(api_event("GET", "/model"))
    finally:
        process.kill()
        process.wait()
    output_text = log.read_text(errors="replace")

    # Then it serves the verified model, and the process never loaded the AWS SDK (nor
    # http.client and its email package: the kernel's own client carried the S3 reads)
    assert runtime_api.init_errors == [], output_text[-3000:]
    assert scored.result["statusCode"] == 200, scored.result
    assert scored.result["headers"]["X-Model-Version"] == "1"
    assert described.result["statusCode"] == 200
    assert scored.result["headers"]["X-Probe-Loaded"] == "none", output_text[-3000:]
    assert described.result["headers"]["X-Probe-Loaded"] == "none"
    # And boto3 was there to be loaded: the runtime folder carries it, as /var/runtime does
    assert (runtime_site / "boto3" / "__init__.py").is_file()
