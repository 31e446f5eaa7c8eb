"""Ways an attacker or a broken upload can damage a registered version, applied to a file registry.

Each tamper function takes the registry root and the version, changes objects the way a hostile
writer with bucket access (or a torn upload) would, and returns what it did in one line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.support.trained_model import MODEL

Tamper = Callable[[Path, int], str]


def version_dir(root: Path, version: int) -> Path:
    return root / "models" / MODEL / "versions" / str(version)


def _manifest(root: Path, version: int) -> tuple[Path, dict[str, object]]:
    path = version_dir(root, version) / "manifest.json"
    return path, json.loads(path.read_text())


def flip_a_byte(root: Path, version: int) -> str:
    path = version_dir(root, version) / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return "one byte of model.onnx flipped (same size)"


def truncate(root: Path, version: int) -> str:
    path = version_dir(root, version) / "model.onnx"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "model.onnx truncated to half (a torn upload)"


def delete_artifact(root: Path, version: int) -> str:
    (version_dir(root, version) / "model.onnx").unlink()
    return "model.onnx deleted, manifest left"


def manifest_disagrees(root: Path, version: int) -> str:
    path, manifest = _manifest(root, version)
    manifest["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))
    return "manifest sha256 disagrees with its own artifact entry"


def manifest_for_another_version(root: Path, version: int) -> str:
    path, manifest = _manifest(root, version)
    manifest["version"] = version + 1
    path.write_text(json.dumps(manifest))
    return "manifest describes another version"


def corrupt_manifest(root: Path, version: int) -> str:
    path = version_dir(root, version) / "manifest.json"
    path.write_bytes(path.read_bytes()[:100])
    return "manifest.json truncated (invalid JSON)"


def manifest_of_another_shape(root: Path, version: int) -> str:
    path, manifest = _manifest(root, version)
    artifacts = manifest["artifacts"]
    assert isinstance(artifacts, dict)
    artifacts["model.skops"] = "x"
    path.write_text(json.dumps(manifest))
    return "manifest (valid JSON) lists an artifact entry that is not an object"


def consistent_substitution(root: Path, version: int) -> str:
    """The strongest registry-side attack: a different but valid model, with a manifest whose
    sha256 and size describe it correctly. Only the pin (deployed with the code) can catch it."""
    import hashlib

    directory = version_dir(root, version)
    onnx = directory / "model.onnx"
    data = onnx.read_bytes() + b"\x00"  # still parses as the same protobuf? no matter: new bytes
    onnx.write_bytes(data)
    path, manifest = _manifest(root, version)
    digest = hashlib.sha256(data).hexdigest()
    manifest["sha256"] = digest
    manifest["size"] = len(data)
    artifacts = manifest["artifacts"]
    assert isinstance(artifacts, dict)
    artifacts["model.onnx"] = {**artifacts["model.onnx"], "sha256": digest, "size": len(data)}
    path.write_text(json.dumps(manifest))
    return "model.onnx replaced and the manifest rewritten to match it"


def remove_version(root: Path, version: int) -> str:
    import shutil

    shutil.rmtree(version_dir(root, version))
    return "the whole version deleted"


def other_features(root: Path, version: int) -> str:
    path, manifest = _manifest(root, version)
    schema = manifest["feature_schema"]
    assert isinstance(schema, dict)
    schema["features"] = [*schema["features"], "something_new"]
    path.write_text(json.dumps(manifest))
    return "manifest says the model was trained on other features"


TAMPERS: dict[str, Tamper] = {
    "tampered artifact (sha256 mismatch)": flip_a_byte,
    "truncated object": truncate,
    "artifact missing": delete_artifact,
    "manifest/artifact mismatch": manifest_disagrees,
    "manifest for another version": manifest_for_another_version,
    "corrupt manifest": corrupt_manifest,
    "manifest of another shape": manifest_of_another_shape,
    "consistent substitution (only the pin catches it)": consistent_substitution,
    "version missing": remove_version,
    "trained on other features": other_features,
}
