"""An edit outside the serving kernel never publishes a new Lambda version.

The app is synthesized from a copy of the project before and after each kind of edit, and the
Lambda asset hash (the zip's S3 key, what makes CloudFormation publish a version and CodeDeploy
start a canary) is compared. The training image asset is checked the same way, and the code
version the task records with it (an edit that keeps the image keeps it: no `cdk diff` noise).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

import app as cdk_app
from sds.kernel.lock import LockFile, Pin

ROOT = Path(__file__).resolve().parents[2]
COPIED = ("app.py", "cdk.json", ".dockerignore", "sds", "lambdas", "training", "stacks")
# Modules of every layer above the kernel (docs/architecture.md): none of them ships in the bundle.
OUTSIDE_THE_BUNDLE = (
    "sds/cli/main.py",
    "sds/ops/promotion.py",
    "sds/ops/status.py",
    "sds/config.py",
    "sds/progress.py",
    "training/train.py",
    "stacks/components/model_function.py",
    "lambdas/pruner/pruning.py",  # another function's handler: the pruner's asset changes
    "lambdas/features_updater/updater.py",  # the feature updater's: its own asset changes
    "lambdas/training_endpoints/leases.py",  # the training endpoints' lease function's
)


def _copy_project(target: Path) -> Path:
    target.mkdir()
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)
    # Reuse the wheels already built for the Lambda platform: only our sources differ.
    (target / "build").mkdir()
    (target / "build" / "lambda-deps").symlink_to(ROOT / "build" / "lambda-deps")
    return target


def _asset_hashes(project: Path, outdir: Path, lambda_python: str) -> tuple[str, str, str]:
    """(Lambda code asset, training image asset, the code version the task records) of dev,
    synthesized from `project`."""
    context = json.loads((project / "cdk.json").read_text())["context"]
    context["environments"] = {"dev": context["environments"]["dev"]}
    lock = outdir.parent / "models.lock.json"
    lock.write_text(
        LockFile(context["model_name"], {"dev": Pin(version=3, sha256="a" * 64)}).to_json()
    )
    app = cdk.App(context=context, outdir=str(outdir))
    (stage,) = cdk_app.build(
        app, root=project, lock_path=lock, lambda_python=lambda_python, nag=False
    )
    app.synth()
    functions = Template.from_stack(stage.inference).find_resources(
        "AWS::Lambda::Function",
        {"Properties": {"Handler": "lambdas.inference.handler.lambda_handler"}},
    )
    (function,) = functions.values()
    code_key = str(function["Properties"]["Code"]["S3Key"])
    tasks = Template.from_stack(stage.training).find_resources("AWS::ECS::TaskDefinition")
    (task,) = tasks.values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    image = json.dumps(container["Image"], sort_keys=True)
    environment = {v["Name"]: v["Value"] for v in container["Environment"]}
    return code_key, image, str(environment["SDS_CODE_VERSION"])


def _edit(project: Path, relative: str) -> None:
    with open(project / relative, "a") as handle:
        handle.write("\n# an edit that changes the file's bytes\n")


@pytest.fixture(scope="module")
def before(
    tmp_path_factory: pytest.TempPathFactory, lambda_bundle: Path, lambda_python: str
) -> tuple[str, str, str]:
    del lambda_bundle  # built first, so the wheels for the Lambda platform are in build/
    work = tmp_path_factory.mktemp("hash-before")
    project = _copy_project(work / "project")
    return _asset_hashes(project, work / "cdk.out", lambda_python)


def test_edits_above_the_kernel_leave_the_lambda_asset_unchanged(
    before: tuple[str, str, str], tmp_path: Path, lambda_python: str
) -> None:
    # Given the CLI, the operator application, the config loader, training and a stack edited
    project = _copy_project(tmp_path / "project")
    for relative in OUTSIDE_THE_BUNDLE:
        _edit(project, relative)
    # When the app is synthesized again
    code, _image, _version = _asset_hashes(project, tmp_path / "cdk.out", lambda_python)
    # Then the Lambda code asset is the very same: no new version, no canary
    assert code == before[0]


def test_edits_outside_training_leave_the_training_image_unchanged(
    before: tuple[str, str, str], tmp_path: Path, lambda_python: str
) -> None:
    project = _copy_project(tmp_path / "project")
    for relative in ("sds/cli/main.py", "sds/ops/fargate.py", "lambdas/inference/app.py"):
        _edit(project, relative)
    _code, image, version = _asset_hashes(project, tmp_path / "cdk.out", lambda_python)
    assert image == before[1]
    # and so the code version its versions record, which `cdk diff` would otherwise show
    assert version == before[2]


@pytest.mark.parametrize("relative", ["sds/kernel/features.py", "lambdas/inference/app.py"])
def test_an_edit_to_what_the_lambda_carries_changes_its_asset(
    before: tuple[str, str, str], tmp_path: Path, lambda_python: str, relative: str
) -> None:
    project = _copy_project(tmp_path / "project")
    _edit(project, relative)
    code, image, version = _asset_hashes(project, tmp_path / "cdk.out", lambda_python)
    assert code != before[0]
    # and the training image follows the kernel, not the handler, its code version with it
    assert (image != before[1]) == relative.startswith("sds/kernel/")
    assert (version != before[2]) == relative.startswith("sds/kernel/")


def test_an_edit_to_the_training_dockerfile_changes_the_image_and_its_code_version(
    before: tuple[str, str, str], tmp_path: Path, lambda_python: str
) -> None:
    # Given the training image's Dockerfile edited (and nothing it copies)
    project = _copy_project(tmp_path / "project")
    _edit(project, "training/Dockerfile")
    # When the app is synthesized again
    code, image, version = _asset_hashes(project, tmp_path / "cdk.out", lambda_python)
    # Then the image is a new asset (built and pushed on deploy), recorded as new code
    assert image != before[1]
    assert version != before[2]
    assert code == before[0]
