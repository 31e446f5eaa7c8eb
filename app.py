#!/usr/bin/env python3
"""CDK entry point: the only place that reads context and the environment.

It loads the environments from cdk.json (`sds.config`), the model pins from models.lock.json
(`sds.kernel.lock`), builds the Lambda code folder once per architecture, and creates one Stage per
environment. cdk-nag (AWS Solutions, Serverless, PCI DSS 3.2.1 and NIST 800-53 rev 5 packs) runs
on every synth: an unacknowledged finding fails `cdk synth`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import (
    AwsSolutionsChecks,
    NagPack,
    NIST80053R5Checks,
    PCIDSS321Checks,
    ServerlessChecks,
)

from sds.config import parse_project
from sds.kernel.lock import read_lock
from stacks.bundling import BundleSpec, build_bundle, find_python
from stacks.components.drift_monitor import monitor_bundle_spec
from stacks.config import EnvironmentSpec, TrainingImage
from stacks.stage import EnvironmentStage

ROOT = Path(__file__).resolve().parent
LOCK_FILE = "models.lock.json"
# The cdk-nag packs every synth runs; an unacknowledged finding of any of them fails `cdk synth`.
NAG_PACKS: tuple[type[NagPack], ...] = (
    AwsSolutionsChecks,
    ServerlessChecks,
    PCIDSS321Checks,
    NIST80053R5Checks,
)
# What the inference Lambda carries: the serving kernel and its handler, nothing else (the
# pruner's code ships in its own function: an edit to it never publishes an inference version).
LAMBDA_PACKAGES = ("sds.kernel", "lambdas.inference")
# The feature updater's, in its own bundle: an edit to it never publishes an inference version.
UPDATER_PACKAGES = ("sds.kernel", "lambdas.features_updater")


def lambda_python_candidates() -> list[str]:
    """Where to find the Lambda runtime's Python (3.12) on this machine, most explicit first."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    return [
        os.environ.get("SDS_LAMBDA_PYTHON", ""),
        "python3.12",
        *(str(p / "bin" / "python3") for p in sorted(pyenv_root.glob("versions/3.12*"))),
        "/usr/bin/python3.12",
        "/usr/local/bin/python3.12",
    ]


def lambda_bundle_spec(*, root: Path = ROOT, architecture: str, python: str) -> BundleSpec:
    """The inference Lambda's bundle: the kernel and the handler, wheels for the Lambda platform."""
    return BundleSpec(
        source_root=root,
        packages=LAMBDA_PACKAGES,
        requirements=root / "lambdas" / "inference" / "requirements.txt",
        architecture=architecture,
        python=python,
        pip=(sys.executable, "-m", "pip"),
        build_root=root / "build",
    )


def updater_bundle_spec(*, root: Path = ROOT, architecture: str, python: str) -> BundleSpec:
    """The feature updater's bundle: the kernel and its handler, with numpy (event validation)."""
    return BundleSpec(
        source_root=root,
        packages=UPDATER_PACKAGES,
        requirements=root / "lambdas" / "features_updater" / "requirements.txt",
        architecture=architecture,
        python=python,
        pip=(sys.executable, "-m", "pip"),
        build_root=root / "build",
    )


def build(
    app: cdk.App,
    *,
    root: Path = ROOT,
    lock_path: Path | None = None,
    lambda_python: str | None = None,
    nag: bool = True,
) -> list[EnvironmentStage]:
    """Add every environment in the `environments` context to `app`."""
    # All of the context: parse_project reads its own keys and refuses one misspelled.
    project = parse_project(app.node.get_all_context())
    # `-c sds:lock_file=PATH` previews a lock file that is not (yet) the committed one, e.g.
    # `cdk diff 'prod/*' -c sds:lock_file=proposed.lock.json` in review.
    lock_path = lock_path or Path(app.node.try_get_context("sds:lock_file") or root / LOCK_FILE)
    lock = read_lock(lock_path, model=project.model_name)
    python = lambda_python or find_python(lambda_python_candidates())
    bundles: dict[str, Path] = {}
    updaters: dict[str, Path] = {}
    monitor_code: Path | None = None
    stages = []
    for name, environment in project.environments.items():
        architecture = environment.infra.lambda_.architecture
        if architecture not in bundles:
            bundles[architecture] = build_bundle(
                lambda_bundle_spec(root=root, architecture=architecture, python=python)
            )
            updaters[architecture] = build_bundle(
                updater_bundle_spec(root=root, architecture=architecture, python=python)
            )
        if monitor_code is None:  # one arm64 bundle, whatever the environments' architecture
            monitor_code = build_bundle(monitor_bundle_spec(root=root, python=python))
        spec = EnvironmentSpec(
            model_name=project.model_name,
            environment=environment,
            pin=lock.pins.get(name),
            shadow=lock.shadows.get(name),
            lambda_code_dir=bundles[architecture],
            training_image=TrainingImage(context_dir=root),
            updater_code_dir=updaters[architecture],
            monitor_code_dir=monitor_code,
        )
        stages.append(EnvironmentStage(app, name, spec=spec))
    if nag:
        cdk.Validations.of(app).add_plugins(*(pack(app) for pack in NAG_PACKS))
    return stages


def main() -> None:
    app = cdk.App()
    build(app)
    app.synth()


if __name__ == "__main__":
    main()
