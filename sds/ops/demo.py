"""`sds demo` / `make demo`: the whole local loop in a few minutes, on the embedded defaults.

Generates account activity (logins and payments), trains two versions with different settings
(the account aggregates computed point in time from the events), promotes v1 to dev, serves it
over real HTTP through the real handler, streams a burst of failed logins through `POST /events`
and shows the next payment of that account scored higher (the aggregates read from the feature
store), promotes v2 and shows the served version change, shows a promotion gate refusing, rolls
back and shows v1 served again. It runs in its own workspace
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
from sds.kernel.features import format_time
from sds.ops.local_api import LocalApi, PinnedApps
from sds.ops.promotion import GateFailure, history, promote, rollback
from sds.ops.workspace import Workspace
from training.data import write_jsonl
from training.synthetic import LABEL, generate_activity

RISKY = {
    "event_id": "risky-1",
    "account_id": "acct-demo-risky",
    "amount": 1899.0,
    "currency": "EUR",
    "merchant_category": "electronics",
    "country": "BR",
    "card_country": "DE",
    "hour_of_day": 3,
    "account_age_days": 4,
    "is_new_device": True,
}
ROUTINE = {
    "event_id": "routine-1",
    "account_id": "acct-demo-routine",
    "amount": 42.5,
    "currency": "USD",
    "merchant_category": "grocery",
    "country": "US",
    "card_country": "US",
    "hour_of_day": 18,
    "account_age_days": 1460,
    "is_new_device": False,
}
# A payment from an account a burst of failed logins is about to hit (see _show_event_path).
TARGETED = {
    **ROUTINE,
    "event_id": "targeted-1",
    "account_id": "acct-demo-targeted",
    "amount": 420.0,
    "merchant_category": "online_retail",
}


def _now() -> str:
    return format_time(time.time_ns() // 1000)


def _payment(template: dict[str, Any], suffix: str = "") -> dict[str, Any]:
    return {**template, "event_id": template["event_id"] + suffix, "occurred_at": _now()}


class DemoFailure(SdsError, RuntimeError):
    """The demo did not see what it expected (the narrative says what)."""


def _say(text: str = "") -> None:
    print(text, flush=True)


def _cmd(text: str) -> None:
    _say(f"\n$ {text}")


def _post(
    url: str, path: str, events: list[dict[str, Any]]
) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps({"events": events}).encode(),
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
        status, body, headers = _post(url, "/predict", [_payment(RISKY), _payment(ROUTINE)])
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
    _show(body)
    return waited


def _show(body: dict[str, Any]) -> None:
    for prediction in body["predictions"]:
        flag = "FRAUD" if prediction["is_fraud"] else "ok"
        _say(
            f"  {prediction['event_id']:<12} fraud_probability={prediction['fraud_probability']:.4f}"
            f"  {flag}"
        )


def _score(url: str, event: dict[str, Any]) -> float:
    status, body, _ = _post(url, "/predict", [event])
    if status != 200:
        raise DemoFailure(f"scoring {event['event_id']}: HTTP {status} {body}")
    _show(body)
    return float(body["predictions"][0]["fraud_probability"])


def _show_event_path(url: str) -> tuple[float, float]:
    """A payment, then a burst of failed logins on its account, then the same payment again:
    the second score is higher because the account aggregates changed, not the payment."""
    _cmd(f"curl -s -X POST {url}/predict -d '{{\"events\": [{{... account acct-demo-targeted}}]}}'")
    before = _score(url, _payment(TARGETED, "-a"))
    logins = [
        {
            "type": "login",
            "event_id": f"demo-login-{time.time_ns()}-{i}",
            "account_id": TARGETED["account_id"],
            "occurred_at": _now(),
            "outcome": "failure" if i < 6 else "success",
        }
        for i in range(7)
    ]
    _cmd(f"curl -s -X POST {url}/events -d '{{\"events\": [6 failed logins, 1 login]}}'")
    status, body, _ = _post(url, "/events", logins)
    if status != 202:
        raise DemoFailure(f"POST /events: HTTP {status} {body}")
    _say(
        f"  HTTP {status}: {body['accepted']} events accepted, {body['applied']} counted by an "
        "aggregate (a successful login counts in none)"
    )
    _cmd(f"curl -s -X POST {url}/predict -d '{{\"events\": [{{the same payment, again}}]}}'")
    after = _score(url, _payment(TARGETED, "-b"))
    if not after > before:
        raise DemoFailure(
            f"a burst of failed logins did not raise the account's next score ({before} -> {after})"
        )
    _say(f"  the account's failed logins moved its payment from {before:.4f} to {after:.4f}")
    return before, after


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
        generated = generate_activity(events, seed=7)
        write_jsonl(generated, data)
        fraud = sum(e.get(LABEL, False) for e in generated)
        logins = sum(e["type"] == "login" for e in generated)
        _say(f"wrote {events} payments ({fraud} fraud, {fraud / events:.1%}) and {logins} logins")

        from training.train import STEPS, Progress, TrainParams, train

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
                progress=Progress(STEPS),
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
            burst = _show_event_path(api.url)

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
            failed_login_burst={"before": burst[0], "after": burst[1]},
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
