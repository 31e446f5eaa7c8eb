"""Small readers over synthesized CloudFormation templates (plain dicts), and `docs/cost.py`, the
one that prices them."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

_COST_SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "cost.py"


def cost_script() -> ModuleType:
    """`docs/cost.py` (`make cost`), imported from its file: docs/ is not a package."""
    spec = importlib.util.spec_from_file_location("sds_docs_cost", _COST_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def resources(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def one(template: dict[str, Any], type_: str, *, prefix: str = "") -> tuple[str, dict[str, Any]]:
    """The one resource of `type_` (whose logical id starts with `prefix`, when given)."""
    found = {k: v for k, v in resources(template, type_).items() if k.startswith(prefix)}
    named = f" named {prefix}*" if prefix else ""
    assert len(found) == 1, f"expected one {type_}{named}, found {sorted(found)}"
    return next(iter(found.items()))


def model_function(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The inference function (the Inference stack also holds the pruner's function)."""
    found = {
        k: v
        for k, v in resources(template, "AWS::Lambda::Function").items()
        if v["Properties"].get("Handler") == "lambdas.inference.handler.lambda_handler"
    }
    assert len(found) == 1, f"expected one inference function, found {sorted(found)}"
    return next(iter(found.items()))


def statements(policy_document: dict[str, Any]) -> list[dict[str, Any]]:
    found = policy_document["Statement"]
    return found if isinstance(found, list) else [found]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def actions_of(statement: dict[str, Any]) -> list[str]:
    return [str(a) for a in as_list(statement.get("Action", []))]


def resource_text(statement: dict[str, Any]) -> str:
    """A statement's resources flattened to text, so tests can look for key prefixes."""
    return json.dumps(statement.get("Resource"))


def role_statements(template: dict[str, Any], role_logical_id: str) -> list[dict[str, Any]]:
    """Every statement of every inline or managed policy attached to the role."""
    found: list[dict[str, Any]] = []
    for policy in resources(template, "AWS::IAM::Policy").values():
        roles = policy["Properties"].get("Roles", [])
        if {"Ref": role_logical_id} in roles:
            found.extend(statements(policy["Properties"]["PolicyDocument"]))
    role = template["Resources"][role_logical_id]["Properties"]
    for inline in role.get("Policies", []):
        found.extend(statements(inline["PolicyDocument"]))
    return found
