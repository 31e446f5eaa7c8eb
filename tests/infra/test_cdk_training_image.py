"""The training image's build context and pins (synth stages it; no Docker engine needed)."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.infra.synth import ROOT, SynthesizedApp


def _requirements(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_training_image_pins_match_the_project_pins() -> None:
    image = _requirements(ROOT / "training" / "requirements.txt")
    project = _requirements(ROOT / "requirements.txt")
    assert image == {name: project[name] for name in image}
    assert {"numpy", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "skops", "boto3"} <= set(
        image
    )


# What importing the container's entry points loads, as distributions (function-level imports,
# such as scikit-learn's, are not seen here; the pins above name them).
_IMPORTED_DISTRIBUTIONS = """
import importlib.metadata, json, sys
import training.train, training.partitioned, training.from_capture
first_party = {"sds", "training", "lambdas", "stacks"}
owners = importlib.metadata.packages_distributions()
third = {m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names) - first_party
print(json.dumps(sorted({d.lower() for m in third for d in owners.get(m, [])})))
"""


def test_training_image_installs_every_library_its_entry_points_import() -> None:
    # Given what importing training's entry points loads (the kernel's batch reader included)
    loaded = subprocess.run(
        [sys.executable, "-c", _IMPORTED_DISTRIBUTIONS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    imported = set(json.loads(loaded.stdout))

    # Then the image installs each of them (or it is installed with one it installs)
    installed = set(_requirements(ROOT / "training" / "requirements.txt"))
    dependencies = {"scipy", "joblib", "threadpoolctl", "protobuf", "botocore", "jmespath"}
    dependencies |= {"s3transfer", "python-dateutil", "six", "urllib3", "packaging", "flatbuffers"}
    dependencies.add("setuptools")  # its distutils shim, loaded by a .pth in every environment
    assert "orjson" in imported  # the batch shuffle's parser: the test sees module-level imports
    assert imported - dependencies <= installed, imported - dependencies - installed


def _image_files(context: Path) -> dict[str, Path]:
    """What the Dockerfile's COPY instructions put in the image, read from `context`: image path
    -> the file copied there (a source folder's files keep their place under the destination)."""
    copied: dict[str, Path] = {}
    for line in (ROOT / "training" / "Dockerfile").read_text().splitlines():
        if not line.startswith("COPY "):
            continue
        *sources, destination = shlex.split(line)[1:]
        for pattern in sources:
            for source in sorted(context.glob(pattern)):
                if source.is_dir():
                    for file in sorted(source.rglob("*")):
                        if file.is_file() and "__pycache__" not in file.parts:
                            copied[f"{destination}{file.relative_to(source)}"] = file
                else:
                    copied[f"{destination}{source.name}"] = source
    return copied


# The container's `python -m training.train`, run from the image's /app alone: the project's
# editable install (which would find any module of the checkout) is taken off the import path.
_ENTRY_POINT_ALONE = """
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
import training.partitioned, training.from_capture
sys.argv = ["python -m training.train", "--help"]
runpy.run_module("training.train", run_name="__main__")
"""


def test_the_image_holds_every_module_its_entry_point_imports(tmp_path: Path) -> None:
    # Given the image's /app, as the Dockerfile's COPY instructions lay it out
    app = tmp_path / "app"
    for name, source in _image_files(ROOT).items():
        target = app / name.removeprefix("/app/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)

    # When the container's entry point starts there
    started = subprocess.run(
        [sys.executable, "-c", _ENTRY_POINT_ALONE],
        cwd=app,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Then it finds every module of the project it imports (sds.config's task contract too)
    assert started.returncode == 0, started.stderr
    assert "usage: python -m training.train" in started.stdout


def test_dockerfile_runs_the_same_entry_point_as_local_training() -> None:
    dockerfile = (ROOT / "training" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "training.train"]' in dockerfile
    assert "FROM public.ecr.aws/docker/library/python:3.12" in dockerfile
    assert "\nUSER " in dockerfile


def test_image_build_context_holds_only_what_the_image_copies(synthesized: SynthesizedApp) -> None:
    # Given the docker image asset staged by synth (the whole repo root is the context)
    manifest_path = next(synthesized.outdir.glob("assembly-dev/devTraining*.assets.json"))
    manifest = json.loads(manifest_path.read_text())
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["dockerFile"] == "training/Dockerfile"
    context = (manifest_path.parent / image["source"]["directory"]).resolve()
    staged = {str(p.relative_to(context)) for p in context.rglob("*") if p.is_file()}
    # Then .dockerignore kept the shared package and training code, and nothing else
    assert "training/train.py" in staged and "sds/kernel/features.py" in staged
    tops = {name.split("/", 1)[0] for name in staged}
    assert tops <= {"sds", "training", ".dockerignore"}, tops
    assert not [name for name in staged if "__pycache__" in name or name.endswith(".pyc")]
    # And it holds every file the Dockerfile copies (a COPY of a file it ignores fails the build)
    assert _image_files(context).keys() == _image_files(ROOT).keys()
