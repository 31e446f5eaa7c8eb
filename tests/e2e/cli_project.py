"""A throwaway sds project, and the CLI run as users run it (one subprocess per command)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Project:
    path: Path
    env: dict[str, str]

    def sds(self, *args: str, check: bool = True, timeout: float = 120) -> Result:
        done = subprocess.run(
            [sys.executable, "-m", "sds", *args],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result = Result(done.returncode, done.stdout, done.stderr)
        if check and done.returncode != 0:
            raise AssertionError(f"sds {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return result

    @property
    def lock(self) -> dict[str, Any]:
        return json.loads((self.path / "models.lock.json").read_text())


def make_project(root: Path) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "cdk.json", root / "cdk.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDS_", "AWS_", "MODEL_"))}
    env.update({"SDS_ACTOR": "e2e-tester", "PYTHONPATH": str(ROOT)})
    return Project(root, env)
