"""`sds demo` / `make demo`: the whole local loop in a few minutes, on the embedded defaults.

Generates events, trains two versions with different settings, promotes v1 to dev, serves it
over real HTTP through the real handler, promotes v2 and shows the served version change, shows
a promotion gate refusing, rolls back and shows v1 served again. It runs in its own workspace
(.sds/demo, with its own lock file) so it never touches the project's models.lock.json, and it
checks what it shows: a step that does not behave as promised fails the demo.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sds.kernel.errors import SdsError
from sds.ops.local_api import LocalApi, PinnedApps
from sds.ops.promotion import GateFailure, history, promote, rollback
from sds.ops.workspace import Workspace
from training.data import generate_events, write_jsonl

RISKY = {
    "event_id": "risky-1",
    "amount": 1899.0,
    "currency": "EUR",
    "merchant_category": "electronics",
    "country": "BR",
    "card_country": "DE",
    "hour_of_day": 3,
    "account_age_days": 4,
    "is_new_device": True,
    "num_failed_logins_last_24_hours": 5,
    "txn_count_last_1h": 7,
}
ROUTINE = {
    "event_id": "routine-1",
    "amount": 42.5,
    "currency": "USD",
    "merchant_category": "grocery",
    "country": "US",
    "card_country": "US",
    "hour_of_day": 18,
    "account_age_days": 1460,
    "is_new_device": False,
    "num_failed_logins_last_24_hours": 0,
    "txn_count_last_1h": 1,
}


class DemoFailure(SdsError, RuntimeError):
    """The demo did not see what it expected (the narrative says what)."""


def _say(text: str = "") -> None:
    print(text, flush=True)


def _cmd(text: str) -> None:
    _say(f"\n$ {text}")


def _predict(url: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(
        f"{url}/predict",
        data=json.dumps({"events": [RISKY, ROUTINE]}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def _show_predictions(url: str, expect_version: int) -> float:
    started = time.monotonic()
    while True:
        status, body, headers = _predict(url)
        served = body.get("model", {}).get("version")
        if status == 200 and served == expect_version:
            break
        if time.monotonic() - started > 1.0:
            raise DemoFailure(
                f"expected version {expect_version} to be served, got {status} {body}"
            )
        time.sleep(0.02)
    waited = time.monotonic() - started
    _say(f"  HTTP {status}, X-Model-Version: {headers.get('X-Model-Version')}")
    for prediction in body["predictions"]:
        flag = "FRAUD" if prediction["is_fraud"] else "ok"
        _say(
            f"  {prediction['event_id']:<10} fraud_probability={prediction['fraud_probability']:.4f}  {flag}"
        )
    return waited


def run_demo(
    project: Workspace, *, events: int = 60_000, keep: bool = False, as_json: bool = False
) -> int:
    """Run the demo; with `as_json` the narrative goes to stderr and a summary to stdout."""
    report: dict[str, Any] = {"ok": False}
    if not as_json:
        return _run(project, events=events, keep=keep, report=report)
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        code = _run(project, events=events, keep=keep, report=report)
    print(json.dumps(report, indent=2, sort_keys=True), file=stdout)
    return code


def _run(project: Workspace, *, events: int, keep: bool, report: dict[str, Any]) -> int:
    started = time.monotonic()
    home = project.home / "demo"
    shutil.rmtree(home, ignore_errors=True)
    ws = dataclasses.replace(
        project,
        home=home,
        lock_path=home / "models.lock.json",
        registry_overrides={},
        local_actor=f"{project.local_actor} (demo)",
    )
    env = ws.config.first_environment
    timings: dict[str, float] = {}
    try:
        _say(f"sds demo: everything below runs locally, in {home}")
        _cmd(f"sds generate --events {events} --out {home}/data/events.jsonl.gz")
        data = home / "data" / "events.jsonl.gz"
        generated = generate_events(events, seed=7)
        write_jsonl(generated, data)
        fraud = sum(e["is_fraud"] for e in generated)
        _say(f"wrote {events} events ({fraud} fraud, {fraud / events:.1%})")

        from training.train import Progress, TrainParams, train

        versions = []
        for label, params in (
            ("quick", TrainParams(max_iter=8, max_leaf_nodes=4, learning_rate=0.1)),
            ("tuned", TrainParams(max_iter=120, max_leaf_nodes=15, learning_rate=0.08)),
        ):
            _cmd(
                f"sds train --data {data} --max-iter {params.max_iter} "
                f"--max-leaf-nodes {params.max_leaf_nodes} --reason '{label} model'"
            )
            t0 = time.monotonic()
            version = train(
                data=data,
                registry=ws.registry(env),
                params=params,
                actor=ws.actor,
                reason=f"demo: {label} model",
                progress=Progress(7),
            )
            timings[f"train v{version.number}"] = time.monotonic() - t0
            m = version.metrics
            _say(
                f"registered version {version.number}: ROC AUC {m['roc_auc']:.4f}, "
                f"PR AUC {m['pr_auc']:.4f}, precision@1% {m['precision_at_alert_rate']:.3f}"
            )
            versions.append(version.number)
        v1, v2 = versions

        _cmd(f"sds promote {v1} --to {env} --reason 'first model'")
        change = promote(ws, to_env=env, version=v1, reason="demo: first model")
        _say(f"{env}: nothing -> version {change.version}; pin written to {ws.lock_path}")

        apps = PinnedApps.for_environment(ws, env)
        with LocalApi(apps) as api:
            _cmd(f"sds serve --env {env}   # started on {api.url}")
            _cmd(f"curl -s -X POST {api.url}/predict -d '{{\"events\": [...]}}'")
            _show_predictions(api.url, v1)

            _cmd(f"sds promote {v2} --to {env} --reason 'tuned model'")
            change = promote(ws, to_env=env, version=v2, reason="demo: tuned model")
            _say(f"{env}: version {change.previous} -> version {change.version}")
            _cmd(f"curl -s -X POST {api.url}/predict ...   # same server, no restart")
            timings["switch to v2 seen by the API"] = _show_predictions(api.url, v2)

            upper = [n for n, e in ws.config.environments.items() if e.promote_from == env]
            if upper:
                top = [n for n, e in ws.config.environments.items() if e.promote_from == upper[0]]
                target = top[0] if top else upper[0]
                _cmd(f"sds promote {v2} --from {env} --to {target}   # skipping a stage")
                try:
                    promote(
                        ws, to_env=target, version=v2, from_env=env, reason="demo: skip a stage"
                    )
                    _say(f"{target}: promoted (no gate stopped it)")
                except GateFailure as refused:
                    _say(f"refused: {refused}")
                _cmd(f"sds promote --from {env} --to {upper[0]} --reason 'passed dev checks'")
                try:
                    moved = promote(
                        ws, to_env=upper[0], from_env=env, reason="demo: passed dev checks"
                    )
                    _say(
                        f"{upper[0]}: nothing -> version {moved.version} "
                        f"(copied from {moved.copied_from}, sha256 verified)"
                    )
                    for gate in moved.gates:
                        _say(f"  gate {gate.gate}: passed ({gate.detail})")
                except GateFailure as refused:
                    _say(f"refused: {refused}")

            _cmd(f"sds rollback --env {env} --reason 'false positives on routine payments'")
            t0 = time.monotonic()
            change = rollback(ws, env=env, reason="demo: false positives on routine payments")
            timings["rollback"] = time.monotonic() - t0
            _say(f"{env}: version {change.previous} -> version {change.version}")
            _cmd(f"curl -s -X POST {api.url}/predict ...")
            timings["switch to v1 seen by the API"] = _show_predictions(api.url, v1)

        _cmd(f"sds history --env {env}")
        for event in history(ws, env):
            _say(
                f"  {str(event['at'])[:19]}  {event['type']:<12} v{event['version']}  "
                f"{event.get('reason') or ''}"
            )
        _say("\nsummary")
        _say(f"  versions trained        {v1}, {v2}")
        _say(f"  served after promote    v{v1} -> v{v2} -> v{v1} (after rollback)")
        for name, seconds in timings.items():
            _say(f"  {name:<30} {seconds * 1000:8.0f} ms")
        _say(f"  total                          {time.monotonic() - started:8.1f} s")
        _say("\nnext: make test; see README.md for deploying, diffing and rolling back on AWS")
        report.update(
            ok=True,
            env=env,
            versions=[v1, v2],
            served=[v1, v2, v1],
            timings_ms={name: round(seconds * 1000, 1) for name, seconds in timings.items()},
            total_s=round(time.monotonic() - started, 2),
        )
        return 0
    except DemoFailure as exc:
        _say(f"demo failed: {exc}")
        report["error"] = str(exc)
        return 1
    finally:
        if not keep:
            _cleanup(home)


def _cleanup(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)
