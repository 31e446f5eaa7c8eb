"""The shadow workflow as a user runs it: `sds shadow`, `sds serve` scoring with both models
(the response unchanged, both scores captured), `sds compare`, `sds promote --shadow`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sds.kernel.serving import shown_scores
from tests.e2e.cli_project import Project
from tests.e2e.test_serve import EVENT, predict, serving, wait_for_version


def captured(project: Project, env: str = "dev") -> list[dict[str, Any]]:
    files = sorted((project.path / ".sds" / "capture" / env).glob("dt=*/*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def test_serve_follows_the_shadow_pin_and_compare_and_promote_use_what_it_captured(
    fresh_copy: Callable[[], Project],
) -> None:
    project = fresh_copy()
    project.sds("promote", "1", "--to", "dev")
    events = [{**EVENT, "event_id": f"e-{i}", "amount": 20.0 * i} for i in range(20)]
    with serving(project) as url:
        wait_for_version(url, 1)
        # Given the answer of version 1 alone
        status, headers, alone = predict(url, events)
        assert status == 200

        # When version 2 shadows dev, while the server runs
        shadowed = project.sds("shadow", "2", "--env", "dev", "--reason", "e2e", "--json").json()
        assert shadowed["shadow"]["version"] == 2 and shadowed["live"]["version"] == 1
        assert project.lock["environments"]["dev"]["shadow"]["version"] == 2

        # Then the next request's answer is still version 1's, exactly
        status, again_headers, again = predict(url, events)
        assert status == 200 and again == alone
        assert again_headers["X-Model-Version"] == headers["X-Model-Version"] == "1"

    # And the capture holds both models' results for those payments
    records = [r for r in captured(project) if "shadow" in r]
    assert len(records) == 20
    assert {r["shadow"]["model"]["version"] for r in records} == {2}
    assert [shown_scores([r["score"]], r["threshold"])[0] for r in records] == [
        p["fraud_probability"] for p in again["predictions"]
    ]

    # And sds compare reports the pair on those payments
    report = project.sds("compare", "--env", "dev", "--json").json()
    (pair,) = report["pairs"]
    assert (pair["live"]["version"], pair["shadow"]["version"]) == (1, 2)
    assert pair["events"] == 20 and pair["shadow_failed"] == 0
    assert 0 <= pair["agreement"] <= 1
    text = project.sds("compare", "--env", "dev").stdout
    assert "live v1 vs shadow v2" in text and "agreement" in text

    # And promoting the shadow moves the pin from shadow to live in one write
    project.sds("promote", "--shadow", "--to", "dev", "--reason", "e2e")
    # (the pin carries the alert rate its manifest expects, for the alarms, and no shadow)
    assert set(project.lock["environments"]["dev"]) == {"version", "sha256", "expected_alert_rate"}
    assert project.lock["environments"]["dev"]["version"] == 2
    history = project.sds("history", "--env", "dev", "--json").json()
    assert "shadowed" in json.dumps(history)


def test_shadow_refusals_name_the_problem(fresh_copy: Callable[[], Project]) -> None:
    project = fresh_copy()
    nothing_live = project.sds("shadow", "2", "--env", "dev", check=False)
    assert nothing_live.code == 1
    assert "nothing is live in dev" in nothing_live.stderr
    usage = project.sds("shadow", "--env", "dev", check=False)
    assert usage.code == 2 and "--clear" in usage.stderr
    cleared = project.sds("shadow", "--env", "dev", "--clear")
    assert "has no shadow" in cleared.stdout
    assert not Path(project.path / "models.lock.json").exists()
