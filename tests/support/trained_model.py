"""The small real model every suite shares: trained once per session by the `trained` fixture.

`train_small_model` trains it with the real training code (`training.train.train`) on generated
events into a `file://` registry, in a few seconds on 2 cores; the unit, security and end-to-end
suites serve, attack and promote this one model and copy its registry before changing anything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sds.kernel.registry import Registry, Version, open_registry
from sds.kernel.settings import ServingSettings
from training.data import write_jsonl
from training.synthetic import generate_activity
from training.train import STEPS, Progress, TrainParams, train

if TYPE_CHECKING:
    from sds.ops.local_api import PinnedApps

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fraud"
TRAINER = "trainer@ci"
SMALL_PARAMS = TrainParams(max_iter=20, seed=1)


@dataclass(frozen=True)
class TrainedModel:
    data: Path
    registry_root: Path
    version: Version
    feature_store: Path  # the (empty unless a test fills it) SQLite store the app reads

    @property
    def feature_store_uri(self) -> str:
        return f"sqlite://{self.feature_store}"

    @property
    def registry_uri(self) -> str:
        return self.registry_root.as_uri()

    def registry(self) -> Registry:
        return open_registry(self.registry_uri, MODEL)

    def copy_registry(self, destination: Path) -> Path:
        """A private copy of the registry, for tests that change or tamper with it."""
        shutil.copytree(self.registry_root, destination)
        return destination

    def settings(self, **overrides: object) -> ServingSettings:
        """Serving settings pinned to this version, as the CDK app would deploy them."""
        values: dict[str, object] = {
            "model_name": MODEL,
            "model_version": self.version.number,
            "model_sha256": self.version.sha256,
            "registry_uri": self.registry_uri,
            "environment": "test",
            "feature_store_uri": self.feature_store_uri,
        }
        values.update(overrides)
        return ServingSettings(**values)  # type: ignore[arg-type]

    def serving_locally(self, lock: Path, **overrides: Any) -> PinnedApps:
        """The local API's apps (`sds serve`) serving this version: pinned for dev in `lock`
        (a fresh lock file), with the limits of the unit tests, then `overrides`."""
        from sds.kernel.lock import Pin, write_pin
        from sds.ops.local_api import PinnedApps

        write_pin(lock, model=MODEL, env="dev", pin=Pin(self.version.number, self.version.sha256))
        values: dict[str, Any] = {
            "lock_path": lock,
            "model": MODEL,
            "env": "dev",
            "registry_uri": self.registry_uri,
            "max_events": 100,
            "max_body_bytes": 262_144,
            "feature_store_uri": self.feature_store_uri,
        }
        values.update(overrides)
        return PinnedApps(**values)

    def environ(self) -> dict[str, str]:
        """The Lambda environment variables for this version."""
        return {
            "MODEL_NAME": MODEL,
            "MODEL_VERSION": str(self.version.number),
            "MODEL_SHA256": self.version.sha256,
            "REGISTRY_URI": self.registry_uri,
            "ENVIRONMENT": "test",
            "FEATURE_STORE_URI": self.feature_store_uri,
        }

    def run_probe(self, source: str, *args: str, **environ: str) -> tuple[Any, list[str]]:
        """Run `source` in a fresh interpreter with this version's Lambda environment (quiet
        logs, then `environ`), as a cold start imports the handler; the JSON it printed after
        `RESULT `, and every line of its stdout."""
        result = subprocess.run(
            [sys.executable, "-c", source, *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, **self.environ(), "LOG_LEVEL": "WARNING", **environ},
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        return json.loads(next(x for x in lines if x.startswith("RESULT "))[7:]), lines


def train_small_model(work: Path, *, events: int = 4000, seed: int = 3) -> TrainedModel:
    """Generate `events` payments (and the logins around them), train `SMALL_PARAMS` into a
    registry under `work`, and give an empty SQLite feature store next to it."""
    data = write_jsonl(generate_activity(events, seed=seed), work / "data" / "history.jsonl")
    root = work / "registry"
    version = train(
        data=data,
        registry=open_registry(root.as_uri(), MODEL),
        params=SMALL_PARAMS,
        actor=TRAINER,
        reason="session fixture",
        progress=Progress(STEPS, enabled=False),
    )
    return TrainedModel(
        data=data, registry_root=root, version=version, feature_store=work / "features.db"
    )
