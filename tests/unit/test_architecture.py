"""The layers in docs/architecture.md hold in the code: no import runs back up.

The rules come from the table in the document itself, so the page cannot drift from the code:
every import in the project's own packages (module-level and inside functions) is checked
against the row of the importing module.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
PROJECT_TOPS = ("sds", "lambdas", "training", "stacks", "app")
SOURCES = ("sds", "lambdas", "training", "stacks", "app.py")
# The Lambda runtime provides the AWS SDK; everything else the kernel and handler import must be
# a wheel the bundle ships.
RUNTIME_PROVIDED = frozenset({"boto3", "botocore"})


@dataclass(frozen=True)
class Layers:
    members: Mapping[str, str]  # module prefix -> layer
    allowed: Mapping[str, frozenset[str]]  # layer -> layers it may import (itself included)

    def layer_of(self, module: str) -> str | None:
        best: tuple[int, str] | None = None
        for prefix, layer in self.members.items():
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[0]
            ):
                best = (len(prefix), layer)
        return None if best is None else best[1]


def parse_layers(text: str) -> Layers:
    block = text.split("<!-- layers:", 1)[1].split("<!-- end layers -->", 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("|")][2:]
    members: dict[str, str] = {}
    allowed: dict[str, frozenset[str]] = {}
    for row in rows:
        layer, modules, may = (cell.strip() for cell in row.strip("|").split("|"))
        for module in re.findall(r"`([a-z_.]+)`", modules):
            members[module] = layer
        imports = {name.strip() for name in may.split(",")} - {"nothing of the project"}
        allowed[layer] = frozenset({layer, *imports})
    unknown = {name for names in allowed.values() for name in names} - set(allowed)
    assert not unknown, f"{DOC.name} names layers it does not define: {unknown}"
    return Layers(members=members, allowed=allowed)


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def source_files() -> list[Path]:
    files: list[Path] = []
    for entry in SOURCES:
        path = ROOT / entry
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return files


def imports_of(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "__future__":
                continue
            for alias in node.names:
                # `from sds.kernel import features` imports a module: check the module.
                candidate = f"{base}.{alias.name}"
                as_path = ROOT.joinpath(*candidate.split("."))
                is_module = (
                    as_path.with_suffix(".py").is_file() or (as_path / "__init__.py").is_file()
                )
                yield node.lineno, candidate if is_module else base


def violations(layers: Layers, files: list[Path]) -> list[str]:
    found: list[str] = []
    for path in files:
        module = module_name(path)
        layer = layers.layer_of(module)
        if layer is None:
            found.append(f"{module}: in no layer of {DOC.name}")
            continue
        for line, imported in imports_of(path, module):
            if imported.split(".")[0] not in PROJECT_TOPS:
                continue
            target = layers.layer_of(imported)
            if target is None or target not in layers.allowed[layer]:
                found.append(
                    f"{path.relative_to(ROOT)}:{line}: {module} ({layer}) imports {imported} "
                    f"({target or 'no layer'})"
                )
    return found


@pytest.fixture(scope="module")
def layers() -> Layers:
    return parse_layers(DOC.read_text())


def test_every_import_follows_the_documented_layers(layers: Layers) -> None:
    assert violations(layers, source_files()) == []


def test_the_check_catches_an_upward_import(layers: Layers, tmp_path: Path) -> None:
    # Given a kernel module that reaches up into the CLI, written where the checker looks
    probe = ROOT / "sds" / "kernel" / "_probe_upward_import.py"
    probe.write_text("def f() -> None:\n    from sds.cli.main import main\n")
    try:
        found = violations(layers, [probe])
    finally:
        probe.unlink()
    # Then it is reported with its line
    assert found == [
        "sds/kernel/_probe_upward_import.py:2: sds.kernel._probe_upward_import (kernel) "
        "imports sds.cli.main (cli)"
    ]


def test_every_project_module_is_in_a_layer(layers: Layers) -> None:
    homeless = [m for m in map(module_name, source_files()) if layers.layer_of(m) is None]
    assert homeless == []


def _wheels() -> set[str]:
    names = set()
    for line in (ROOT / "lambdas" / "inference" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[=<>~ \[]", line, maxsplit=1)[0].lower().replace("-", "_"))
    return names


def test_the_lambda_code_imports_only_what_its_bundle_ships(layers: Layers) -> None:
    # The bundle is the kernel and the handler (app.LAMBDA_PACKAGES) plus the listed wheels.
    shipped = _wheels() | RUNTIME_PROVIDED
    outside: list[str] = []
    for path in source_files():
        module = module_name(path)
        if layers.layer_of(module) not in ("kernel", "handler"):
            continue
        for line, imported in imports_of(path, module):
            top = imported.split(".")[0]
            if top in PROJECT_TOPS or top in sys.stdlib_module_names or top in shipped:
                continue
            outside.append(f"{path.relative_to(ROOT)}:{line}: {imported}")
    assert outside == []


def test_the_bundle_packages_are_exactly_the_kernel_and_the_inference_handler(
    layers: Layers,
) -> None:
    import app

    assert {layers.layer_of(p) for p in app.LAMBDA_PACKAGES} == {"kernel", "handler"}
    # The handler layer holds every function's handler; the inference bundle carries its own
    # only (the pruner ships in its own function, stacks/components/pruner.py).
    assert set(app.LAMBDA_PACKAGES) == {"sds.kernel", "lambdas.inference"}


def test_the_pruner_carries_the_kernel_and_its_handler_only(layers: Layers) -> None:
    from stacks.components.pruner import PACKAGES

    assert set(PACKAGES) == {"sds.kernel", "lambdas.pruner"}
    assert {layers.layer_of(p) for p in PACKAGES} == {"kernel", "handler"}


def test_the_training_endpoints_lease_function_carries_the_kernel_and_its_handler_only(
    layers: Layers,
) -> None:
    from stacks.components.training_runs import PACKAGES

    assert set(PACKAGES) == {"sds.kernel", "lambdas.training_endpoints"}
    assert {layers.layer_of(p) for p in PACKAGES} == {"kernel", "handler"}


def bare_test_imports(tests: Path) -> list[str]:
    """Imports in the test tree that reach a helper by its bare file name (or a conftest): the
    ones that only work because pytest put the importing file's folder on sys.path."""
    local = {path.stem for path in tests.rglob("*.py")} - {"__init__"}
    found = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            found += [
                f"{path.relative_to(tests.parent)}:{node.lineno} imports {name}"
                for name in names
                if name.split(".")[0] in local | {"conftest"}
            ]
    return found


def test_the_tests_are_packages_that_import_their_helpers_as_modules() -> None:
    # Given the test tree
    tests = ROOT / "tests"

    # Then every folder of it is a package (so `pytest tests/infra tests/unit` collects both in
    # one run), and every shared helper is imported by its dotted name, never as a bare module
    # or from a conftest
    folders = {path.parent for path in tests.rglob("*.py")}
    assert [str(f) for f in sorted(folders) if not (f / "__init__.py").is_file()] == []
    assert bare_test_imports(tests) == []


def test_the_test_import_check_catches_a_bare_helper_import(tmp_path: Path) -> None:
    # Given a test tree whose test imports its folder's helper by bare name, and one a conftest
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tests" / "unit" / "helper.py").write_text("X = 1\n")
    (tmp_path / "tests" / "unit" / "test_a.py").write_text(
        "from helper import X\nfrom tests.unit.helper import X as Y\nfrom conftest import Z\n"
    )

    # Then the check names both bare imports, and not the dotted one
    assert bare_test_imports(tmp_path / "tests") == [
        "tests/unit/test_a.py:1 imports helper",
        "tests/unit/test_a.py:3 imports conftest",
    ]
