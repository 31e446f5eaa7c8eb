"""`sds shadow`, `sds compare` and the `shadowed_in` gate on local registries and captures:
the shadow pin, the comparison's figures on generated traffic and labels, and promotion of the
shadow."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from sds.kernel.capture import Capturer
from sds.kernel.errors import SdsError
from sds.kernel.features import N_FEATURES, format_time
from sds.kernel.lock import LockFileError, Pin, read_lock
from sds.kernel.registry import Version
from sds.ops.capture_store import CaptureFiles, LabelFiles
from sds.ops.promotion import GateFailure, OperationError, promote
from sds.ops.shadow import ShadowGateFailure, clear_shadow, compare, set_shadow
from sds.ops.workspace import Workspace
from tests.unit.cli_run import sds

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"roc_auc": 0.93, "pr_auc": 0.6, "expected_calibration_error": 0.01}
DAY_US = 86_400_000_000
NOW_US = time.time_ns() // 1000


def workspace(tmp_path: Path, **environments: dict[str, Any]) -> Workspace:
    """A project with the repository's cdk.json, each named environment's settings merged in."""
    document = json.loads((ROOT / "cdk.json").read_text())
    for env, settings in environments.items():
        document["context"]["environments"][env].update(settings)
    (tmp_path / "cdk.json").write_text(json.dumps(document))
    return Workspace.discover(project_dir=tmp_path, environ={"SDS_ACTOR": "tester"})


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return workspace(tmp_path)


def register(ws: Workspace, metrics: dict[str, float] | None = None) -> Version:
    payload = json.dumps(metrics or GOOD).encode() + bytes(range(16)) + str(time.time_ns()).encode()
    return ws.registry("dev").register(
        {"model.onnx": b"onnx" + payload, "model.skops": b"skops" + payload},
        {"metrics": metrics or GOOD},
        actor="tester",
        reason="test",
    )


def lock_entry(ws: Workspace, env: str) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(ws.lock_path.read_text())["environments"][env]
    return entry


# The shadow pin ----------------------------------------------------------------------------------


def test_shadow_pins_a_verified_version_beside_live_and_clear_removes_it(ws: Workspace) -> None:
    # Given version 1 live in dev and version 2 registered
    one, two = register(ws), register(ws)
    promote(ws, to_env="dev", version=1)

    # When version 2 shadows dev
    change = set_shadow(ws, env="dev", version=2, reason="challenger")

    # Then the lock file pins it beside the live pin, and the audit trail says who and why
    assert change.changed and change.shadow == Pin(2, two.sha256)
    assert lock_entry(ws, "dev") == {
        "version": 1,
        "sha256": one.sha256,
        "shadow": {"version": 2, "sha256": two.sha256},
    }
    (event,) = [e for e in ws.registry("dev").events(alias="dev") if e["type"] == "shadowed"]
    assert (event["version"], event["reason"], event["by"]) == (2, "challenger", "tester")
    # And the registry alias (what serves) did not move
    assert ws.registry("dev").get_alias("dev").version == 1  # type: ignore[union-attr]
    # And doing it again is a no-op
    assert not set_shadow(ws, env="dev", version=2).changed

    # When the shadow is cleared
    cleared = clear_shadow(ws, env="dev", reason="done")
    # Then only the live pin is left, and the trail says so
    assert cleared.changed and cleared.previous == Pin(2, two.sha256)
    assert lock_entry(ws, "dev") == {"version": 1, "sha256": one.sha256}
    assert [e["type"] for e in ws.registry("dev").events(alias="dev")].count("shadow_cleared") == 1
    assert not clear_shadow(ws, env="dev").changed


def test_shadowing_above_dev_copies_the_version_without_making_it_live(ws: Workspace) -> None:
    register(ws)
    two = register(ws)
    promote(ws, to_env="dev", version=1)
    promote(ws, to_env="staging", from_env="dev")

    change = set_shadow(ws, env="staging", version=2, reason="try it on staging traffic")

    assert change.copied_from == "dev"
    assert ws.registry("staging").verify_version(2).sha256 == two.sha256
    assert ws.registry("staging").get_alias("staging").version == 1  # type: ignore[union-attr]
    assert read_lock(ws.lock_path, model=ws.model).shadows == {"staging": Pin(2, two.sha256)}


@pytest.mark.parametrize(
    ("setup", "version", "message"),
    [
        ("nothing live", 2, "nothing is live in dev: a shadow scores beside a live model"),
        ("live", 1, "version 1 is live in dev: it cannot shadow itself"),
        ("live", 9, "model 'fraud' has no version 9 in .*: sds models --env dev lists"),
    ],
)
def test_a_shadow_that_cannot_be_is_refused_and_pins_nothing(
    ws: Workspace, setup: str, version: int, message: str
) -> None:
    register(ws)
    register(ws)
    if setup == "live":
        promote(ws, to_env="dev", version=1)
    before = ws.lock_path.read_text() if ws.lock_path.exists() else None
    with pytest.raises(SdsError, match=message):
        set_shadow(ws, env="dev", version=version)
    assert (ws.lock_path.read_text() if ws.lock_path.exists() else None) == before


def test_a_damaged_version_is_refused_as_promote_refuses_it_naming_it_once(
    ws: Workspace,
) -> None:
    # Given v2 in dev whose model.skops no longer matches its manifest
    register(ws)
    damaged = register(ws)
    promote(ws, to_env="dev", version=1)
    path = ws.home / "registries" / "dev" / "models" / ws.model / "versions" / "2" / "model.skops"
    path.write_bytes(path.read_bytes() + b"tampered")
    before = ws.lock_path.read_text()

    # When it is asked to shadow dev's live version, and to be promoted
    with pytest.raises(OperationError) as shadowed:
        set_shadow(ws, env="dev", version=damaged.number)
    with pytest.raises(OperationError) as promoted:
        promote(ws, to_env="dev", version=damaged.number)

    # Then both say the same: where, which version (once) and what is wrong; nothing is pinned
    assert str(shadowed.value) == str(promoted.value)
    assert str(shadowed.value).startswith("dev: version 2: model.skops does not match its manifest")
    assert ws.lock_path.read_text() == before


def test_the_shadow_gates_come_from_config(tmp_path: Path) -> None:
    # Given dev's shadow gates ask for a PR AUC the challenger does not have
    ws = workspace(tmp_path, dev={"shadow": {"gates": {"min_pr_auc": 0.7}}})
    register(ws)
    register(ws, metrics={**GOOD, "pr_auc": 0.5})
    promote(ws, to_env="dev", version=1)

    # Then shadowing it is refused, naming the gate, and nothing is pinned
    with pytest.raises(
        ShadowGateFailure, match=r"may not shadow in dev: min_pr_auc: pr_auc 0.5000"
    ):
        set_shadow(ws, env="dev", version=2)
    assert read_lock(ws.lock_path, model=ws.model).shadows == {}


def test_a_version_failing_the_shadow_gates_is_refused_before_it_is_copied(
    ws: Workspace,
) -> None:
    # Given version 1 live in staging, and version 2 in dev only, below staging's shadow gate
    register(ws)
    register(ws, metrics={**GOOD, "roc_auc": 0.76})
    promote(ws, to_env="dev", version=1)
    promote(ws, to_env="staging", from_env="dev")
    copied: list[str] = []

    # When it is asked to shadow staging
    with pytest.raises(ShadowGateFailure, match=r"may not shadow in staging: min_roc_auc"):
        set_shadow(ws, env="staging", version=2, on_upload=lambda name, *_: copied.append(name))

    # Then nothing of it reached staging: no version, no "copied" event, no upload, no pin
    staging = ws.registry("staging")
    assert staging.list_versions() == [1]
    assert [e["version"] for e in staging.events() if e["type"] == "copied"] == [1]
    assert copied == []
    assert read_lock(ws.lock_path, model=ws.model).shadows == {}


def test_a_shadow_is_refused_with_nothing_changed_while_the_lock_file_has_a_merge_conflict(
    ws: Workspace,
) -> None:
    # Given version 1 live in staging and the lock file left mid-merge by git
    register(ws)
    register(ws)
    promote(ws, to_env="dev", version=1)
    promote(ws, to_env="staging", from_env="dev")
    text = ws.lock_path.read_text()
    conflicted = text.replace('"staging": {', '"staging": {\n<<<<<<< HEAD\n=======\n>>>>>>> b\n', 1)
    ws.lock_path.write_text(conflicted)

    # When version 2 is asked to shadow staging
    with pytest.raises(LockFileError, match="merge conflict") as refused:
        set_shadow(ws, env="staging", version=2)

    # Then the message names the file and nothing was copied or pinned
    assert str(ws.lock_path) in str(refused.value) and "nothing was changed" in str(refused.value)
    assert ws.registry("staging").list_versions() == [1]
    assert ws.lock_path.read_text() == conflicted


def test_a_shadow_whose_audit_event_fails_says_the_pin_landed(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sds.kernel.registry import Registry
    from sds.kernel.registry.store import StoreError

    # Given version 1 live in dev, and a registry that refuses the next audit event
    register(ws)
    two = register(ws)
    promote(ws, to_env="dev", version=1)

    def refuse(self: Registry, kind: str, **_: Any) -> dict[str, Any]:
        raise StoreError("events/...: access denied")

    monkeypatch.setattr(Registry, "record_event", refuse)

    # When version 2 is pinned as dev's shadow
    with pytest.raises(OperationError) as failed:
        set_shadow(ws, env="dev", version=2, reason="challenger")

    # Then the error says what landed (the pin) and what did not (the audit event)
    assert str(failed.value) == (
        "dev: version 2 is pinned as dev's shadow in models.lock.json, but its audit event "
        "could not be written to dev's registry (events/...: access denied); the pin stands: "
        "say why in the lock file's commit"
    )
    assert read_lock(ws.lock_path, model=ws.model).shadows == {"dev": Pin(2, two.sha256)}


def test_promoting_the_shadow_moves_the_pin_from_shadow_to_live(ws: Workspace) -> None:
    register(ws)
    two = register(ws)
    promote(ws, to_env="dev", version=1)
    set_shadow(ws, env="dev", version=2)

    change = promote(ws, to_env="dev", shadow=True, reason="beat v1 in shadow")

    assert change.changed and (change.previous, change.version) == (1, 2)
    assert lock_entry(ws, "dev") == {"version": 2, "sha256": two.sha256}
    # And without a shadow there is nothing to promote
    with pytest.raises(OperationError, match="dev has no shadow to promote"):
        promote(ws, to_env="dev", shadow=True)


# Compare on generated traffic --------------------------------------------------------------------


def serve(
    ws: Workspace,
    env: str,
    live: Version,
    shadow: Version,
    *,
    n: int,
    days_ago: float,
    seed: int,
    shadow_signal: float = 0.6,
    prefix: str = "p",
) -> dict[str, np.ndarray]:
    """Capture `n` payments served in `env` by `live` with `shadow` beside it, and label the
    fraud among them (a chargeback each; the rest stay unlabelled: legitimate once matured).
    The shadow's scores carry more of the label than the live model's."""
    rng = np.random.default_rng(seed)
    fraud = rng.random(n) < 0.1
    live_scores = 0.3 * fraud + 0.7 * rng.random(n)
    shadow_scores = shadow_signal * fraud + (1 - shadow_signal) * rng.random(n)
    capturer = Capturer(
        env=env,
        model={"name": ws.model, "version": live.number, "sha256": live.sha256},
        threshold=0.6,
        sink=CaptureFiles(ws.capture_dir(env)),
    )
    capturer.with_shadow(
        model={"name": ws.model, "version": shadow.number, "sha256": shadow.sha256},
        threshold=0.5,
    )
    start = NOW_US - int(days_ago * DAY_US)
    events = [
        {
            "event_id": f"{prefix}-{i}",
            "account_id": f"acct-{i % 7}",
            "occurred_at": format_time(start + i * 1_000_000),
        }
        for i in range(n)
    ]
    for first in range(0, n, 50):  # requests of 50 payments
        chunk = slice(first, first + 50)
        capturer.capture(
            request_id=f"req-{prefix}-{first}",
            received_us=NOW_US,
            started_ns=time.perf_counter_ns(),
            events=events[chunk],
            features=np.zeros((len(events[chunk]), N_FEATURES), dtype=np.float32),
            scores=live_scores[chunk].tolist(),
            online_features=True,
            shadow_scores=shadow_scores[chunk].tolist(),
            shadow_ns=40_000,
        )
    LabelFiles(ws.labels_dir(env)).store(
        {
            "type": "label",
            "event_id": events[i]["event_id"],
            "is_fraud": True,
            "labelled_at": format_time(NOW_US - DAY_US),
            "source": "chargeback",
        }
        for i in np.flatnonzero(fraud)
    )
    return {"fraud": fraud, "live": live_scores, "shadow": shadow_scores}


def test_a_listed_disagreement_shows_each_score_on_the_side_of_its_own_decision(
    ws: Workspace,
) -> None:
    # Given a live model whose threshold is one of its float32 scores that rounding to nearest
    # would show below it (0.690989077... as 0.690989), flagging payments scored exactly there
    # and just below, and a shadow flagging the reverse
    one, two = register(ws), register(ws)
    threshold = float(np.float32(0.69098908))
    below = float(np.nextafter(np.float32(threshold), np.float32(0)))
    capturer = Capturer(
        env="dev",
        model={"name": ws.model, "version": one.number, "sha256": one.sha256},
        threshold=threshold,
        sink=CaptureFiles(ws.capture_dir("dev")),
    )
    capturer.with_shadow(
        model={"name": ws.model, "version": two.number, "sha256": two.sha256},
        threshold=threshold,
    )
    events = [
        {"event_id": f"t-{i}", "account_id": "acct-1", "occurred_at": format_time(NOW_US - i)}
        for i in range(2)
    ]
    capturer.capture(
        request_id="req-t",
        received_us=NOW_US,
        started_ns=time.perf_counter_ns(),
        events=events,
        features=np.zeros((2, N_FEATURES), dtype=np.float32),
        scores=[threshold, below],
        online_features=True,
        shadow_scores=[below, threshold],
        shadow_ns=40_000,
    )

    # When the two are compared
    (pair,) = compare(ws, env="dev", limit=5).pairs

    # Then every listed score is at least the threshold exactly when its decision flags it
    assert len(pair.listed) == 2
    for row in pair.listed:
        assert (row["live_score"] >= threshold) is row["live_decision"], row
        assert (row["shadow_score"] >= threshold) is row["shadow_decision"], row


def test_compare_reports_agreement_alert_rates_correlation_and_disagreements(
    ws: Workspace,
) -> None:
    # Given 400 matured payments served by v1 with v2 shadowing, and 100 too young to count
    one, two = register(ws), register(ws)
    old = serve(ws, "dev", one, two, n=400, days_ago=60, seed=1)
    young = serve(ws, "dev", one, two, n=100, days_ago=2, seed=2, prefix="y")

    # When the two are compared
    report = compare(ws, env="dev", limit=5)

    # Then the figures are those of the captured scores and decisions
    (pair,) = report.pairs
    live = np.concatenate([old["live"], young["live"]])
    shadow = np.concatenate([old["shadow"], young["shadow"]])
    live_flags, shadow_flags = live >= 0.6, shadow >= 0.5
    assert (pair.live.version, pair.shadow.version) == (1, 2)
    assert pair.events == pair.compared == 500 and pair.shadow_failed == 0
    assert pair.agreement == pytest.approx((live_flags == shadow_flags).mean(), abs=1e-6)
    assert pair.live_alert_rate == pytest.approx(live_flags.mean(), abs=1e-6)
    assert pair.shadow_alert_rate == pytest.approx(shadow_flags.mean(), abs=1e-6)
    assert pair.pearson == pytest.approx(np.corrcoef(live, shadow)[0, 1], abs=1e-6)
    assert pair.disagreements == int((live_flags != shadow_flags).sum())
    # And the disagreements are listed, largest score gap first, with their labels
    assert len(pair.listed) == 5
    gaps = [abs(row["live_score"] - row["shadow_score"]) for row in pair.listed]
    assert gaps == sorted(gaps, reverse=True)
    assert all(row["live_decision"] != row["shadow_decision"] for row in pair.listed)
    # And the label metrics use the matured payments only, unlabelled ones as legitimate
    labels = pair.labels
    assert (labels["matured"], labels["young"]) == (400, 100)
    assert labels["fraud"] == int(old["fraud"].sum())
    assert labels["live"]["roc_auc"] == pytest.approx(roc_auc_score(old["fraud"], old["live"]))
    assert labels["shadow"]["pr_auc"] == pytest.approx(
        average_precision_score(old["fraud"], old["shadow"]), abs=1e-6
    )
    assert labels["shadow"]["pr_auc"] > labels["live"]["pr_auc"]
    caught = int((old["fraud"] & (old["shadow"] >= 0.5)).sum())
    assert labels["shadow_decisions"]["caught"] == caught
    # And the shadow's measured cost is the captured one: 40 us per request of 50 payments
    assert pair.cost_us is not None and pair.cost_us["p50"] == pytest.approx(0.8)
    # And --json carries the same figures
    document = report.to_dict()
    assert document["pairs"][0]["agreement"] == pair.agreement
    assert document["pairs"][0]["score_correlation"]["pearson"] == pair.pearson


def test_compare_with_a_window_and_without_shadowed_traffic(ws: Workspace) -> None:
    one, two = register(ws), register(ws)
    serve(ws, "dev", one, two, n=100, days_ago=60, seed=3)
    serve(ws, "dev", one, two, n=100, days_ago=20, seed=4, prefix="late")

    since = NOW_US - 30 * DAY_US
    (pair,) = compare(ws, env="dev", since_us=since).pairs
    assert pair.events == 100
    assert compare(ws, env="staging").pairs == []


def test_compare_s_window_ends_at_as_of_unless_until_is_given(
    ws: Workspace, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given payments shadowed 60 and 20 days ago
    one, two = register(ws), register(ws)
    serve(ws, "dev", one, two, n=100, days_ago=60, seed=3)
    serve(ws, "dev", one, two, n=100, days_ago=20, seed=4, prefix="late")
    as_of = format_time(NOW_US - 40 * DAY_US)

    # When they are compared as of 40 days ago, with and without --until, and from after --as-of
    then = sds(capsys, "compare", "--env", "dev", "--as-of", as_of, "--json")
    until = format_time(NOW_US)
    later = sds(capsys, "compare", "--env", "dev", "--as-of", as_of, "--until", until, "--json")
    since = format_time(NOW_US - 30 * DAY_US)
    empty = sds(capsys, "compare", "--env", "dev", "--as-of", as_of, "--since", since)

    # Then --until defaults to --as-of, as for `sds monitor`: the payments that came after it
    # were not there to compare then; given, --until reaches past it
    assert then.code == 0, then
    assert then.json()["window"]["until"] == as_of
    assert [p["events"] for p in then.json()["pairs"]] == [100]
    assert later.code == 0, later
    assert [p["events"] for p in later.json()["pairs"]] == [200]
    # And a --since after the defaulted --until is a usage error that says where the end came from
    assert empty.code == 2
    assert "the window is empty" in empty.error_line
    assert f"defaults to --as-of ({as_of}): give --until too" in empty.error_line


# The shadowed_in gate ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_events", "shadow_signal", "passes", "detail"),
    [
        (300, 0.45, True, r"pr_auc 0\.\d+ vs 0\.\d+ for version 1, on the same 400 matured"),
        (1000, 0.45, False, r"on 400 matured payments \(needs 1000; payments mature after 30"),
        (300, 0.05, False, r"pr_auc 0\.\d+ vs 0\.\d+ for version 1.*\(needs > 0\.\d+\)"),
    ],
    ids=["beat-live", "too-few-matured", "worse-than-live"],
)
def test_the_shadowed_in_gate_needs_matured_payments_and_a_win_over_live(
    tmp_path: Path, min_events: int, shadow_signal: float, passes: bool, detail: str
) -> None:
    # Given dev requires a version to have shadowed its live model before it goes live
    gate = {"min_events": min_events, "metric": "pr_auc"}
    ws = workspace(tmp_path, dev={"gates": {"min_roc_auc": 0.75, "shadowed_in": gate}})
    one, two = register(ws), register(ws)
    promote(ws, to_env="dev", version=1)  # nothing live yet: nothing to have shadowed
    set_shadow(ws, env="dev", version=2)
    serve(ws, "dev", one, two, n=400, days_ago=60, seed=5, shadow_signal=shadow_signal)

    # When the shadow is promoted
    if passes:
        change = promote(ws, to_env="dev", shadow=True)
        (result,) = [g for g in change.gates if g.gate == "shadowed_in"]
        assert result.passed
        assert read_lock(ws.lock_path, model=ws.model).shadows == {}
        assert re.search(detail, result.detail), result.detail
        return
    with pytest.raises(GateFailure, match=f"shadowed_in: .*{detail}"):
        promote(ws, to_env="dev", shadow=True)
    # Then nothing moved: v1 is live, v2 still shadows
    assert lock_entry(ws, "dev")["version"] == 1
    assert lock_entry(ws, "dev")["shadow"]["version"] == 2


def test_the_shadowed_in_gate_refuses_a_version_that_never_shadowed(tmp_path: Path) -> None:
    gate = {"min_events": 10}
    ws = workspace(tmp_path, dev={"gates": {"shadowed_in": gate}})
    register(ws)
    register(ws)
    promote(ws, to_env="dev", version=1)
    with pytest.raises(GateFailure, match="version 2 has not shadowed version 1"):
        promote(ws, to_env="dev", version=2)


def test_a_shadowed_in_gate_naming_an_unknown_environment_is_a_config_error(
    tmp_path: Path,
) -> None:
    from sds.config import ConfigError

    with pytest.raises(ConfigError, match=r"dev\.gates\.shadowed_in\.env: unknown environment"):
        workspace(tmp_path, dev={"gates": {"shadowed_in": {"env": "qa"}}}).config  # noqa: B018


def test_clearing_copies_nothing_and_leaves_other_environments(ws: Workspace) -> None:
    register(ws)
    register(ws)
    promote(ws, to_env="dev", version=1)
    promote(ws, to_env="staging", from_env="dev")
    set_shadow(ws, env="dev", version=2)
    set_shadow(ws, env="staging", version=2)
    clear_shadow(ws, env="dev")
    assert set(read_lock(ws.lock_path, model=ws.model).shadows) == {"staging"}
    shutil.rmtree(ws.capture_dir("dev"), ignore_errors=True)


def test_status_shows_the_shadow_beside_the_pin(ws: Workspace) -> None:
    from sds.ops.status import environment_status

    register(ws)
    two = register(ws)
    promote(ws, to_env="dev", version=1)
    assert environment_status(ws, "dev").to_dict()["shadow"] is None
    set_shadow(ws, env="dev", version=2)
    status = environment_status(ws, "dev")
    assert status.shadow == Pin(2, two.sha256)
    assert status.to_dict()["shadow"] == {"version": 2, "sha256": two.sha256}
    assert status.state == "in sync"


def test_compare_reads_a_capture_file_cut_short_up_to_its_last_whole_record(
    ws: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    # Given 50 payments served with a shadow, the capture file cut short in its last record
    one, two = register(ws), register(ws)
    serve(ws, "dev", one, two, n=50, days_ago=60, seed=3)
    (file,) = ws.capture_dir("dev").rglob("*.jsonl")
    file.write_bytes(file.read_bytes()[:-30])
    # When the two are compared
    with caplog.at_level(logging.WARNING, logger="sds.capture"):
        (pair,) = compare(ws, env="dev").pairs
    # Then the 49 whole records are compared, and a warning names the file
    assert pair.events == 49
    assert any(f"{file}: the last line (50) is incomplete" in m for m in caplog.messages)


def test_a_payment_scored_again_counts_once_per_pair(ws: Workspace) -> None:
    # Given the same payments served twice by the same pair (a retried request), and once more
    # before the shadow was pinned
    one, two = register(ws), register(ws)
    serve(ws, "dev", one, two, n=50, days_ago=60, seed=8)
    serve(ws, "dev", one, two, n=50, days_ago=60, seed=8)
    alone = Capturer(
        env="dev",
        model={"name": ws.model, "version": 1, "sha256": one.sha256},
        threshold=0.6,
        sink=CaptureFiles(ws.capture_dir("dev")),
    )
    alone.capture(
        request_id="before",
        received_us=NOW_US,
        started_ns=time.perf_counter_ns(),
        events=[{"event_id": f"p-{i}", "account_id": "a", "occurred_at": "2026-01-01T00:00:00Z"}
                for i in range(50)],
        features=np.zeros((50, N_FEATURES), dtype=np.float32),
        scores=[0.1] * 50,
        online_features=True,
    )  # fmt: skip
    # Then the pair counts each payment once, and the unshadowed scoring apart
    report = compare(ws, env="dev")
    (pair,) = report.pairs
    assert pair.events == 50
    assert report.without_shadow == 50
