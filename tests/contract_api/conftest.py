"""Fixtures for the API contract: a real local API over HTTP serving a small trained model.

`contract_api_url` trains a small model once per session into a registry on disk, pins it in a
private lock file, and starts `sds.ops.local_api.LocalApi` (the real handler behind a local API
Gateway, and `POST /events` into a feature store and a labels folder) on a free loopback port. `contract_api_schema` loads the OpenAPI document the way a
client would: from `GET /openapi.json` of that server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sds.kernel.lock import Pin, write_pin
from sds.kernel.registry import open_registry
from sds.ops.capture_store import LabelFiles
from sds.ops.local_api import LocalApi, PinnedApps
from training.data import write_jsonl
from training.synthetic import generate_activity
from training.train import STEPS, Progress, TrainParams, train

MODEL = "fraud"
ENV = "contract"


@pytest.fixture(scope="session")
def contract_api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("contract-api")
    data = write_jsonl(generate_activity(3000, seed=11), root / "history.jsonl")
    registry_root = root / "registry"
    registry_root.mkdir()
    version = train(
        data=data,
        registry=open_registry(registry_root.as_uri(), MODEL),
        params=TrainParams(max_iter=10, seed=1),
        actor="contract@ci",
        reason="contract test fixture",
        progress=Progress(STEPS, enabled=False),
    )
    lock_path = root / "models.lock.json"
    write_pin(lock_path, model=MODEL, env=ENV, pin=Pin(version.number, version.sha256))
    apps = PinnedApps(
        lock_path=lock_path,
        model=MODEL,
        env=ENV,
        registry_uri=registry_root.as_uri(),
        max_events=100,
        max_body_bytes=262_144,
        feature_store_uri=f"sqlite://{root / 'features.db'}",
        labels=LabelFiles(root / "labels"),
    )
    with LocalApi(apps, host="127.0.0.1", port=0) as api:
        assert apps.current().model is not None, apps.current().unavailable
        yield api.url


@pytest.fixture(scope="session")
def contract_api_schema(contract_api_url: str) -> Any:
    import schemathesis

    return schemathesis.openapi.from_url(f"{contract_api_url}/openapi.json", timeout=10)
