"""`sds demo` / `make demo`: the whole local loop in a few minutes, on the embedded defaults.

Generates account activity (logins and payments), trains two versions with different settings
(the account aggregates computed point in time from the events), promotes v1 to dev, serves it
over real HTTP through the real handler, streams a burst of failed logins through `POST /events`
and shows the next payment of that account scored higher (the aggregates read from the feature
store), promotes v2 and shows the served version change, shows a promotion gate refusing, rolls
back and shows v1 served again. Then it closes the loop: it streams new traffic through the same
API (each payment scored as of its time, the account aggregates read from the feature store),
every scored payment captured under .sds/demo/capture, ingests the chargebacks and reviews that
followed as labels, retrains twice from what was served, and shows the must_beat_live gate
refuse the candidate that does not beat the live model on the same held-out payments and decide
on the one that might. It runs in its own workspace (.sds/demo, with its own lock file) so it
never touches the project's models.lock.json, and it checks what it shows: a step that does not
behave as promised fails the demo.
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

from sds.config import MustBeatLive
from sds.kernel.errors import SdsError
from sds.kernel.features import format_time, parse_time
from sds.ops.labels import ingest_labels
from sds.ops.local_api import LocalApi, PinnedApps
from sds.ops.promotion import GateFailure, flagged_phrase, history, promote, rollback
from sds.ops.shadow import compare, render_report, set_shadow
from sds.ops.traffic import replay
from sds.ops.workspace import Workspace
from training.data import write_jsonl
from training.params import TrainParams, flag
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


# The versions the demo trains, each with the word its reason starts with: two on the history,
# then two from the captured traffic (one that beats the live model, one that cannot).
HISTORY_MODELS = (
    ("quick", TrainParams(max_iter=8, max_leaf_nodes=4, learning_rate=0.1)),
    ("tuned", TrainParams(max_iter=120, max_leaf_nodes=15, learning_rate=0.08)),
)
CAPTURE_MODELS = (
    ("retrained", TrainParams(max_iter=120, max_leaf_nodes=15, learning_rate=0.08)),
    ("underfit", TrainParams(max_iter=1, max_leaf_nodes=2, learning_rate=0.1)),
)


def parameter_flags(params: TrainParams) -> str:
    """The `sds train` flags of every parameter not at its default: the command the demo prints
    trains the model the demo trains (`--max-iter 120 --learning-rate 0.08 ...`)."""
    defaults = TrainParams()
    return " ".join(
        f"{flag(field.name)} {getattr(params, field.name)}"
        for field in dataclasses.fields(TrainParams)
        if getattr(params, field.name) != getattr(defaults, field.name)
    )


# How the demo's requests are shown: as curl needs them to be sent (without the header, `curl -d`
# sends a form, which the API refuses with 415).
JSON_BODY = "-H 'Content-Type: application/json'"


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
    _cmd(
        f"curl -s -X POST {url}/predict {JSON_BODY} -d '{{\"events\": [{{... account acct-demo-targeted}}]}}'"
    )
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
    _cmd(
        f"curl -s -X POST {url}/events {JSON_BODY} -d '{{\"events\": [6 failed logins, 1 login]}}'"
    )
    status, body, _ = _post(url, "/events", logins)
    if status != 202:
        raise DemoFailure(f"POST /events: HTTP {status} {body}")
    _say(
        f"  HTTP {status}: {body['accepted']} events accepted, {body['applied']} counted by an "
        "aggregate (a successful login counts in none)"
    )
    _cmd(
        f"curl -s -X POST {url}/predict {JSON_BODY} -d '{{\"events\": [{{the same payment, again}}]}}'"
    )
    after = _score(url, _payment(TARGETED, "-b"))
    if not after > before:
        raise DemoFailure(
            f"a burst of failed logins did not raise the account's next score ({before} -> {after})"
        )
    _say(f"  the account's failed logins moved its payment from {before:.4f} to {after:.4f}")
    return before, after


DAY_US = 86_400_000_000


def chargebacks(traffic: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The labels that follow the traffic: a chargeback for each fraud, 5 to 44 days after the
    payment (some arrive after the retraining, as in life), and a review's verdict on every
    fiftieth legitimate payment, the next day."""
    labels = []
    for number, event in enumerate(e for e in traffic if e["type"] == "payment"):
        at = parse_time(event["occurred_at"])
        if event[LABEL]:
            delay, source = 5 + number % 40, "chargeback"
        elif number % 50 == 0:
            delay, source = 1, "review"
        else:
            continue
        labels.append(
            {
                "type": "label",
                "event_id": event["event_id"],
                "is_fraud": bool(event[LABEL]),
                "labelled_at": format_time(at + delay * DAY_US),
                "source": source,
            }
        )
    return labels


def _day(micros: int) -> str:
    return format_time(micros)[:10]


def _show_capture_loop(
    ws: Workspace, env: str, url: str, apps: PinnedApps, *, payments: int, live: int
) -> dict[str, Any]:
    """Stream new traffic, label it, retrain from it twice and let must_beat_live decide."""
    home = ws.home
    traffic = generate_activity(payments, seed=8)
    logins = sum(1 for e in traffic if e["type"] == "login")
    assert apps.online is not None
    _cmd(
        f"stream {payments} new payments ({logins} logins around them) through POST "
        f"{url}/predict, each scored as of its time"
    )
    started = time.monotonic()

    def score(batch: list[dict[str, Any]]) -> None:
        status, body, _ = _post(url, "/predict", batch)
        if status != 200:
            raise DemoFailure(f"POST /predict: HTTP {status} {body}")

    streamed = replay(traffic, score=score, online=apps.online)
    seconds = time.monotonic() - started
    files = sorted(ws.capture_dir(env).rglob("*.jsonl"))
    records = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    traffic_ids = {e["event_id"] for e in traffic if e["type"] == "payment"}
    captured = [r for r in records if r["event_id"] in traffic_ids]
    if len(captured) != payments:
        raise DemoFailure(f"{payments} payments scored, {len(captured)} captured")
    _say(
        f"  {streamed.payments} payments scored in {streamed.requests} requests "
        f"({seconds:.1f} s), the account aggregates folded from {streamed.events} events"
    )
    _say(f"  captured: {len(captured)} records in {files[-1].relative_to(home.parent)}")
    sample = captured[-1]
    _say(
        f"  one record: event {sample['event_id']}, model v{sample['model']['version']}, "
        f"score {sample['score']:.4f}, decision {sample['decision']}, "
        f"{len(sample['features'])} features as scored, the raw event, request "
        f"{str(sample['request_id'])[:8]}..."
    )

    labels = chargebacks(traffic)
    path = home / "data" / "labels.jsonl"
    write_jsonl(labels, path)
    _cmd(f"sds label {path} --env {env}   # chargebacks and reviews, as they came in")
    stored = ingest_labels(ws, env, str(path))
    _say(
        f"{env}: {stored.stored} labels stored ({stored.fraud} fraud, "
        f"{stored.stored - stored.fraud} legitimate)"
    )

    times = sorted(parse_time(e["occurred_at"]) for e in traffic)
    since, until = _day(times[0]), _day(times[-1] + DAY_US)
    # The retraining happens three weeks after the traffic ends: the payments of its last ten
    # days are younger than the 30-day maturity window, and some chargebacks have not come yet.
    as_of = _day(times[-1] + 20 * DAY_US)
    maturity = ws.config.env(env).labels.maturity_days
    gated = _with_must_beat_live(ws, env)
    gate = gated.config.env(env).gates.must_beat_live
    assert gate is not None
    from training.from_capture import STEPS as CAPTURE_STEPS
    from training.from_capture import make_window, train_from_capture
    from training.train import Progress

    candidates = {}
    for label, params in CAPTURE_MODELS:
        _cmd(
            f"sds train --from-capture --env {env} --since {since} --until {until} --as-of "
            f"{as_of} {parameter_flags(params)} --reason '{label} on served traffic'"
        )
        window = make_window(
            since=since,
            until=until,
            as_of=as_of,
            window_days=90,
            maturity_days=maturity,
            unlabelled=ws.config.env(env).labels.unlabelled,
            now_us=times[-1],
        )
        version = train_from_capture(
            captures=ws.captures_uri(env),
            labels=ws.labels_uri(env),
            env=env,
            window=window,
            holdout_days=ws.config.env(env).infra.training.holdout_days,
            registry=ws.registry(env),
            params=params,
            actor=ws.actor,
            reason=f"demo: {label} on served traffic",
            progress=Progress(CAPTURE_STEPS),
        )
        counts = version.manifest["data"]["counts"]
        (served,) = [s for s in version.manifest["comparison"]["served"] if s["version"] == live]
        _say(
            f"registered version {version.number}: trained on {version.manifest['data']['payments']} "
            f"matured payments ({counts['young']} younger than {maturity} days left out, "
            f"{counts['unlabelled_as_legitimate']} without a label counted legitimate)"
        )
        if served["live"] is None:
            raise DemoFailure(f"v{live} could not be compared: {served['reason']}")
        _say(
            f"  on the {served['events']} held-out payments v{live} served: "
            f"{gate.metric} {served['candidate'][gate.metric]:.4f} vs "
            f"{served['live'][gate.metric]:.4f} for v{live}"
        )
        candidates[label] = version.number

    decisions: dict[str, bool] = {}
    number = candidates["underfit"]
    _cmd(f"sds promote {number} --to {env} --reason 'underfit on served traffic'")
    try:
        promote(gated, to_env=env, version=number, reason="demo: underfit on served traffic")
        decisions["underfit"] = True
    except GateFailure as refused:
        _say(f"refused: {refused}")
        decisions["underfit"] = False
    if decisions["underfit"]:
        raise DemoFailure("must_beat_live let through a model that does not beat the live one")
    shadowed = _show_shadow(gated, env, url, apps, challenger=candidates["retrained"], live=live)
    decisions["retrained"] = shadowed["promoted"]
    return {
        "traffic": streamed.to_dict() | {"captured": len(captured), "seconds": round(seconds, 2)},
        "labels": stored.to_dict(),
        "candidates": candidates,
        "promoted": decisions,
        "shadow": shadowed,
        "window": {"since": since, "until": until, "as_of": as_of},
    }


def _show_shadow(
    ws: Workspace, env: str, url: str, apps: PinnedApps, *, challenger: int, live: int
) -> dict[str, Any]:
    """Shadow the challenger on new traffic (the live model alone decides), compare the two on
    the same payments, then promote the shadow: the pin moves from shadow to live."""
    _cmd(f"sds shadow {challenger} --env {env} --reason 'retrained on served traffic'")
    set_shadow(ws, env=env, version=challenger, reason="demo: retrained on served traffic")
    _say(f"{env}: v{challenger} shadows v{live}: it scores every payment, v{live} alone decides")
    traffic = generate_activity(2000, seed=9)
    assert apps.online is not None

    def score(batch: list[dict[str, Any]]) -> None:
        status, body, _ = _post(url, "/predict", batch)
        if status != 200:
            raise DemoFailure(f"POST /predict: HTTP {status} {body}")
        if body.get("model", {}).get("version") != live:
            raise DemoFailure(f"a payment was decided by another version than the live v{live}")

    streamed = replay(traffic, score=score, online=apps.online)
    _say(f"  {streamed.payments} more payments scored, every answer from v{live}")
    _cmd(f"sds compare --env {env}")
    report = compare(ws, env=env)
    for line in list(render_report(report))[2:10]:
        _say(line)
    pairs = [p for p in report.pairs if p.shadow.version == challenger]
    if not pairs or pairs[0].events < streamed.payments:
        raise DemoFailure(
            f"v{challenger} did not score the {streamed.payments} payments it shadowed"
        )
    _cmd(f"sds promote --shadow --to {env} --reason 'beat v{live} on served traffic'")
    try:
        change = promote(
            ws, to_env=env, shadow=True, reason=f"demo: beat v{live} on served traffic"
        )
    except GateFailure as refused:
        _say(f"refused: {refused}")
        return {"version": challenger, "payments": pairs[0].events, "promoted": False}
    # As `sds promote` prints it: the move, the gates, what happened to the shadow pin.
    _say(f"{env}: version {change.previous} -> version {change.version}")
    for result in change.gates:
        _say(f"  gate {result.gate}: passed ({result.detail})")
    shadow = None if change.lock is None else change.lock.shadow_phrase()
    if shadow is not None:
        _say(f"  {shadow}")
    _show_predictions(url, challenger)
    return {
        "version": challenger,
        "payments": pairs[0].events,
        "agreement": pairs[0].agreement,
        "promoted": True,
    }


def _write_monitor_report(
    ws: Workspace, project: Workspace, env: str, loop: dict[str, Any]
) -> Path:
    """`sds monitor` over what the demo served (received today), as a summary and an HTML page
    kept outside the demo's folder, so the page survives the clean-up."""
    from sds.ops.monitor import monitor, registry_manifests
    from sds.ops.monitor_html import write
    from training.capture_data import Window, parse_moment

    config = ws.config.env(env)
    now = time.time_ns() // 1000
    # Payments received from yesterday to the end of today (the captures are stamped when they
    # were served), labels as of three weeks after the replayed payments, as the retraining saw
    # them. The window is the printed command's, parsed as `sds monitor` parses it: it runs as
    # typed (--until is needed: it defaults to --as-of, months before these payments arrived).
    since, until, as_of = _day(now - DAY_US), _day(now + DAY_US), loop["window"]["as_of"]
    path = project.home / "reports" / f"drift-{env}.html"
    _cmd(f"sds monitor --env {env} --since {since} --until {until} --as-of {as_of} --html {path}")
    report = monitor(
        env=env,
        captures=ws.captures_uri(env),
        labels=ws.labels_uri(env),
        window=Window(
            since_us=parse_moment(since, what="--since"),
            until_us=parse_moment(until, what="--until"),
            as_of_us=parse_moment(as_of, what="--as-of"),
            maturity_days=config.labels.maturity_days,
            unlabelled=config.labels.unlabelled,
        ),
        manifests=registry_manifests(ws.registry(env)),
    ).to_dict()
    for version in report["versions"]:
        total = version["total"]
        psi = total["score_psi"]
        _say(
            f"  v{version['version']}: {total['captured']} payments, alert rate "
            f"{100 * total['alert_rate']:.2f}% (its holdout's: "
            + (
                f"{100 * version['expected_alert_rate']:.2f}%"
                if version["expected_alert_rate"] is not None
                else "not recorded"
            )
            + "), score PSI "
            + (f"{psi:.3f} ({total['score_drift']})" if psi is not None else "n/a")
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return write(report, path)


def _with_must_beat_live(ws: Workspace, env: str) -> Workspace:
    """The workspace with `env` gated by must_beat_live (opt-in in cdk.json), if it is not."""
    config = ws.config.env(env)
    if config.gates.must_beat_live is not None:
        return ws
    gates = dataclasses.replace(config.gates, must_beat_live=MustBeatLive())
    environments = {**ws.config.environments, env: dataclasses.replace(config, gates=gates)}
    return dataclasses.replace(ws, config=dataclasses.replace(ws.config, environments=environments))


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

        from training.train import STEPS, Progress, train

        versions = []
        for label, params in HISTORY_MODELS:
            _cmd(f"sds train --data {data} {parameter_flags(params)} --reason '{label} model'")
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
                f"PR AUC {m['pr_auc']:.4f}, precision {m['precision_at_alert_rate']:.3f} "
                + flagged_phrase(m)
            )
            versions.append(version.number)
        v1, v2 = versions

        _cmd(f"sds promote {v1} --to {env} --reason 'first model'")
        change = promote(ws, to_env=env, version=v1, reason="demo: first model")
        _say(f"{env}: nothing -> version {change.version}; pin written to {ws.lock_path}")

        apps = PinnedApps.for_environment(ws, env)
        with LocalApi(apps) as api:
            # Any free port (a demo must not fail on a busy 8080): the command names it.
            port = api.server.server_address[1]
            _cmd(f"sds serve --env {env} --port {port}   # started on {api.url}")
            _cmd(f"curl -s -X POST {api.url}/predict {JSON_BODY} -d '{{\"events\": [...]}}'")
            _show_predictions(api.url, v1)
            burst = _show_event_path(api.url)

            _cmd(f"sds promote {v2} --to {env} --reason 'tuned model'")
            change = promote(ws, to_env=env, version=v2, reason="demo: tuned model")
            _say(f"{env}: version {change.previous} -> version {change.version}")
            _cmd(f"curl -s -X POST {api.url}/predict {JSON_BODY} ...   # same server, no restart")
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
                    came = (
                        f"copied from {moved.from_env}, sha256 verified"
                        if moved.copied
                        else f"already in {upper[0]}'s registry"
                    )
                    before = "nothing" if moved.previous is None else f"version {moved.previous}"
                    _say(f"{upper[0]}: {before} -> version {moved.version} ({came})")
                    for gate in moved.gates:
                        _say(f"  gate {gate.gate}: passed ({gate.detail})")
                except GateFailure as refused:
                    _say(f"refused: {refused}")

            _cmd(f"sds rollback --env {env} --reason 'false positives on routine payments'")
            t0 = time.monotonic()
            change = rollback(ws, env=env, reason="demo: false positives on routine payments")
            timings["rollback"] = time.monotonic() - t0
            _say(f"{env}: version {change.previous} -> version {change.version}")
            _cmd(f"curl -s -X POST {api.url}/predict {JSON_BODY} ...")
            timings["switch to v1 seen by the API"] = _show_predictions(api.url, v1)

            _say(
                f"\nthe loop: {env} now gates promotions with must_beat_live "
                "(pr_auc, margin 0), as gates.must_beat_live in cdk.json would"
            )
            t0 = time.monotonic()
            loop = _show_capture_loop(
                ws, env, api.url, apps, payments=max(events // 3, 6000), live=v1
            )
            timings["capture loop and shadow"] = time.monotonic() - t0
            report_path = _write_monitor_report(ws, project, env, loop)

        _cmd(f"sds history --env {env}")
        for event in history(ws, env).events:
            _say(
                f"  {str(event['at'])[:19]}  {event['type']:<12} v{event['version']}  "
                f"{event.get('reason') or ''}"
            )
        _say("\nsummary")
        _say(f"  versions trained        {v1}, {v2}")
        _say(f"  served after promote    v{v1} -> v{v2} -> v{v1} (after rollback)")
        promoted = [n for label, n in loop["candidates"].items() if loop["promoted"][label]]
        _say(
            f"  from capture            {loop['traffic']['captured']} payments captured, "
            f"{loop['labels']['stored']} labels; v{loop['candidates']['underfit']} refused by "
            "must_beat_live" + (f", v{promoted[0]} promoted" if promoted else ", nothing promoted")
        )
        shadow = loop["shadow"]
        _say(
            f"  shadow                  v{shadow['version']} scored {shadow['payments']} payments "
            f"beside the live model, then "
            + ("was promoted" if shadow["promoted"] else "was refused promotion")
        )
        for name, seconds in timings.items():
            _say(f"  {name:<30} {seconds * 1000:8.0f} ms")
        _say(f"  total                          {time.monotonic() - started:8.1f} s")
        _say(f"  monitor report          {report_path}")
        where = ws.capture_dir(env)
        _say(
            f"  captures                {where}"
            + ("" if keep else " (removed with the demo; --keep keeps them)")
        )
        _say("\nnext: make test; see README.md for deploying, diffing and rolling back on AWS")
        report.update(
            ok=True,
            env=env,
            versions=[v1, v2],
            served=[v1, v2, v1],
            capture=loop,
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
