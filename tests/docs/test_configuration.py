"""The configuration keys of cdk.json, as docs/infrastructure.md documents them.

Given the key tables of docs/infrastructure.md (Configuration, and the drift monitor), then they
name every key `sds.config` accepts, and no other, each with the loader's default: a setting
added to the loader cannot go undocumented, nor a removed or misspelled one stay in the docs. And
every example of cdk.json the README and the docs show (a JSON block of an environment, its
`infra` or the `environments`; an inline object such as `must_beat_live` (`{...}`)) passes the
loader: an example a reader copies into cdk.json loads.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from sds.config import (
    CaptureSettings,
    Gates,
    Infra,
    LabelSettings,
    MonitorSettings,
    Serving,
    parse_project,
)

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
INFRASTRUCTURE = ROOT / "docs" / "infrastructure.md"
_ROW = re.compile(r"^\| `([\w.]+)` \| `([^`]*)` \|", re.MULTILINE)


def _section(text: str, heading: str) -> str:
    return text.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]


def documented() -> dict[str, str]:
    """Each key row of the configuration tables: dotted key -> its default as written."""
    text = INFRASTRUCTURE.read_text()
    rows: dict[str, str] = {}
    for heading in ("Configuration (`cdk.json`", "The drift monitor"):
        for key, default in _ROW.findall(_section(text, heading)):
            assert key not in rows, f"{key} is documented twice"
            rows[key] = default
    return rows


def _defaults(cls: type, prefix: str) -> dict[str, Any]:
    """Every key of a settings group with its default; an optional group (`must_beat_live`) is a
    key of its own (default null) and its keys' defaults apply once it is set."""
    found: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.metadata.get("key", f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        groups = [h for h in (hints[f.name], *typing.get_args(hints[f.name])) if _is_group(h)]
        if dataclasses.is_dataclass(default):
            found.update(_defaults(type(default), f"{key}."))
            continue
        found[key] = list(default) if isinstance(default, tuple) else default
        if groups:
            found.update(_defaults(groups[0], f"{key}."))
    return found


def _is_group(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def accepted() -> dict[str, Any]:
    """Every key the loader accepts, as the docs write it (`infra` keys without `infra.`)."""
    return {
        "model_name": "fraud",
        "promote_from": None,
        **_defaults(Infra, ""),
        **_defaults(Gates, "gates."),
        # The same keys as `gates` (one row says so, with its default: no gate).
        "shadow.gates": {},
        **_defaults(Serving, "serving."),
        **_defaults(CaptureSettings, "capture."),
        **_defaults(LabelSettings, "labels."),
        **_defaults(MonitorSettings, "monitor."),
    }


def test_every_key_is_documented_with_its_default() -> None:
    rows, keys = documented(), accepted()
    assert sorted(set(keys) - set(rows)) == [], "accepted by sds/config.py, not documented"
    assert sorted(set(rows) - set(keys)) == [], "documented, not accepted by sds/config.py"
    for key, default in keys.items():
        assert json.loads(rows[key]) == default, key


# Examples of cdk.json ----------------------------------------------------------------------------

_FENCE = re.compile(r"^```json\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE_OBJECT = re.compile(r"`([\w.]+)`\s*\(`(\{[^`]*\})`|`([\w.]+): (\{[^`]*\})`", re.DOTALL)
_ENV_KEYS = {"promote_from", "gates", "serving", "infra", "capture", "labels", "monitor", "shadow"}


def _committed() -> dict[str, Any]:
    context: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]
    return context


def _context_of(example: dict[str, Any]) -> dict[str, Any] | None:
    """The committed context with the example in its place; None if it is not cdk.json."""
    context = _committed()
    environments = context["environments"]
    if set(example) == {"environments"}:
        context["environments"] = example["environments"]
    elif set(example) == {"infra"}:
        environments["prod"]["infra"] = example["infra"]
    elif len(example) == 1 and isinstance(block := next(iter(example.values())), dict):
        if not set(block) or not set(block) <= _ENV_KEYS:
            return None
        environments.update(example)  # a new environment
    else:
        return None
    return context


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    """`gates.shadowed_in` -> {"gates": {"shadowed_in": value}}; a bare gate name is a gate."""
    head, *rest = dotted.split(".")
    if head not in _ENV_KEYS:
        head, rest = "gates", [head, *rest]
    block: Any = value
    for key in reversed(rest):
        block = {key: block}
    return {head: block}


def examples() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in DOCS:
        text = path.read_text()
        for match in _FENCE.finditer(text):
            line = text[: match.start()].count("\n") + 2
            # `...` in an example stands for keys left out.
            body = re.sub(r",\s*\.\.\.", "", match.group(1))
            try:
                example = json.loads("{" + body + "}")
            except json.JSONDecodeError:
                continue  # a whole document (an API answer, an event): not a fragment of cdk.json
            context = _context_of(example)
            if context is not None:
                found.append((f"{path.name}:{line}", context))
        for match in _INLINE_OBJECT.finditer(text):
            line = text[: match.start()].count("\n") + 1
            key = match.group(1) or match.group(3)
            value = json.loads(match.group(2) or match.group(4))
            context = _committed()
            context["environments"]["dev"].update(_nested(key, value))
            found.append((f"{path.name}:{line}", context))
    return found


EXAMPLES = examples()


def test_the_docs_show_examples_of_cdk_json() -> None:
    # The infra of prod, the environments of multi-account.md, a runbook's new environment, and
    # the inline gates: a change in how the examples are written must not empty this list.
    assert len(EXAMPLES) >= 5
    assert {where.split(":")[0] for where, _ in EXAMPLES} >= {
        "README.md",
        "infrastructure.md",
        "multi-account.md",
    }


@pytest.mark.parametrize("context", [c for _, c in EXAMPLES], ids=[w for w, _ in EXAMPLES])
def test_an_example_of_cdk_json_loads(context: dict[str, Any]) -> None:
    parse_project(copy.deepcopy(context))
