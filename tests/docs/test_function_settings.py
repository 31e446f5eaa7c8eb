"""The inference function's environment variables, as docs/infrastructure.md lists them.

Given the "Function settings" table, when the kernel writes the environment of a function with
every option set (a pin, a shadow pin, a feature store, excluded capture fields), then the table
names exactly those variables: one added to the contract cannot go undocumented, nor a removed
one stay in the table.
"""

from __future__ import annotations

import re
from pathlib import Path

from sds.kernel.lock import Pin
from sds.kernel.settings import function_environment

ROOT = Path(__file__).resolve().parents[2]


def documented_variables() -> set[str]:
    text = (ROOT / "docs" / "infrastructure.md").read_text()
    section = text.split("## Function settings (environment variables)", 1)[1].split("\n## ", 1)[0]
    table = section.split("\n\n", 2)[1]  # the table, up to the paragraph after it
    return {
        name
        for row in table.splitlines()[2:]
        for name in re.findall(r"`([A-Z0-9_]+)`", row.split(" | ", 1)[0])
    }


def test_the_table_names_every_variable_of_the_function() -> None:
    written = function_environment(
        model_name="fraud",
        environment="prod",
        pin=Pin(version=7, sha256="b" * 64),
        registry_uri="s3://registry",
        max_events=100,
        max_body_bytes=262_144,
        feature_store_uri="dynamodb://features",
        when_features_unavailable="refuse",
        capture_exclude=("account_id",),
        shadow=Pin(version=8, sha256="c" * 64),
    )
    assert documented_variables() == set(written)
