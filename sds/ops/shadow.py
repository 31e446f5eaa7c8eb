"""Shadow scoring: pin a challenger beside the live model, and compare the two on served traffic.

`set_shadow` pins a version as `env`'s shadow in models.lock.json (next to the live pin, version
and sha256), after the version is complete and verified in `env`'s registry (copied from the
environment below, as a promotion would, when it is not there yet) and passes the environment's
`shadow.gates`; `clear_shadow` removes the pin. Both write an audit event in `env`'s registry
(`shadowed`, `shadow_cleared`, with the reason), so `sds history` shows them. The deployed
function loads the challenger beside the live model and captures both scores for every captured
payment (`sds.kernel.capture`); the live model alone decides.

`compare` reads `env`'s captures (and, for the label-based metrics, its labels under the
environment's maturity policy, joined as training from capture joins them:
`training.capture_data`) and reports, per pair of models (live and shadow), on identical
payments: agreement, both alert rates, score correlation, the payments they disagree on, the
label-based metrics once labels mature, and the measured warm-path cost of the challenger.
`ShadowReport.to_dict` is what `sds compare --json` prints and what a report page embeds.

`shadowed_in` is the promotion gate built on it: the version shadowed the live model of an
environment on at least N matured payments and beat it there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sds.config import EnvironmentConfig, ShadowedIn
from sds.kernel.capture import Capture
from sds.kernel.features import format_time
from sds.kernel.lock import LockFileError, Pin, read_lock, write_shadow
from sds.kernel.registry import RegistryError, Version, VersionNotFound
from sds.kernel.serving import shown_score
from sds.ops.promotion import (
    Candidate,
    GateFailure,
    GateResult,
    OperationError,
    admit,
    candidate,
    lock_ready,
    verified_version,
)
from sds.ops.workspace import Workspace, command_prefix
from training.capture_data import DAY_US, capture_records, read_labels
from training.data import DataError
from training.evaluate import evaluate

# The alert rate the label metrics rank at (precision and recall at it), as training's default.
ALERT_RATE = 0.01
# Fewer matured payments (or one class only) and the label metrics are not computed.
MIN_LABELLED_EVENTS = 10
DISAGREEMENTS_LISTED = 20
# Label metrics that compare two models on the same payments.
_COMPARED = (
    "roc_auc",
    "pr_auc",
    "precision_at_alert_rate",
    "recall_at_alert_rate",
    "expected_calibration_error",
    "brier_score",
)


class ShadowGateFailure(GateFailure):
    """The version fails the environment's shadow gates; nothing was pinned."""

    refused_action = "shadow in"


@dataclass(frozen=True)
class ShadowChange:
    """What `sds shadow` did (or found already done)."""

    action: str  # "shadow" or "clear"
    env: str
    live: Pin | None
    shadow: Pin | None  # the pin now (None after a clear)
    previous: Pin | None  # the shadow pin before
    changed: bool
    copied_from: str | None = None
    gates: list[GateResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def pin(value: Pin | None) -> dict[str, Any] | None:
            return None if value is None else value.to_dict()

        return {
            "action": self.action,
            "env": self.env,
            "live": pin(self.live),
            "shadow": pin(self.shadow),
            "previous": pin(self.previous),
            "changed": self.changed,
            "copied_from": self.copied_from,
            "gates": [g.to_dict() for g in self.gates],
        }


def _candidate(ws: Workspace, env: str, version: int) -> Candidate:
    """`version`, verified where it is: in `env`'s registry, or else in the registry of the
    environment below (from which `admit` copies it, once the gates pass)."""
    config = ws.config.env(env)
    target = ws.registry(env)
    try:
        return Candidate(verified_version(ws, env, target, version), env, target)
    except VersionNotFound:
        if config.promote_from is None:
            raise
    except RegistryError as exc:
        raise OperationError(f"{env}: {exc}") from None  # exc names the version
    source_env = config.promote_from
    try:
        return candidate(ws, env=env, version=version, source_env=source_env)
    except OperationError:
        if version in ws.registry(source_env).list_versions():
            raise  # it is there but does not verify: the message says why
        raise OperationError(
            f"version {version} is in neither {env}'s nor {source_env}'s registry; promote it "
            f"to {source_env} first: {ws.command(f'promote {version} --to {source_env}')}"
        ) from None


def set_shadow(
    ws: Workspace,
    *,
    env: str,
    version: int,
    reason: str = "",
    on_upload: Callable[[str, int, int], None] | None = None,
) -> ShadowChange:
    """Pin `version` as `env`'s shadow (see the module docstring).

    In the order a promotion checks and moves (`sds.ops.promotion.admit`): the lock file must
    take the pin, the version must verify where it is and pass `env`'s shadow gates on its
    manifest; only then is it copied into `env`'s registry (when it comes from below) and pinned.
    A refused version leaves nothing behind.
    """
    config = ws.config.env(env)
    lock = lock_ready(ws, f"shadow version {version} in {env}")
    live = lock.pins.get(env)
    if live is None:
        raise OperationError(
            f"nothing is live in {env}: a shadow scores beside a live model; promote one first "
            f"({ws.command(f'promote VERSION --to {env}')})"
        )
    if live.version == version:
        raise OperationError(f"version {version} is live in {env}: it cannot shadow itself")
    previous = lock.shadows.get(env)
    chosen = _candidate(ws, env, version)
    admitted = admit(
        ws,
        env=env,
        candidate=chosen,
        gates=config.shadow.gates,
        refusal=ShadowGateFailure,
        reason=reason,
        on_upload=on_upload,
    )
    results, copied_from = admitted.gates, admitted.copied_from
    pin = Pin(version=version, sha256=chosen.version.sha256)
    if previous == pin:
        return ShadowChange("shadow", env, live, pin, previous, False, copied_from, results)
    try:
        write_shadow(ws.lock_path, model=ws.model, env=env, shadow=pin, live=live)
    except LockFileError as exc:
        raise OperationError(str(exc)) from None
    try:
        ws.registry(env).record_event(
            "shadowed",
            version=version,
            actor=ws.actor,
            reason=reason,
            alias=env,
            details={
                "env": env,
                "sha256": pin.sha256,
                "live_version": live.version,
                "previous_shadow": None if previous is None else previous.version,
            },
        )
    except Exception as exc:
        raise _unaudited(env, f"version {version} is pinned as {env}'s shadow", exc) from exc
    return ShadowChange("shadow", env, live, pin, previous, True, copied_from, results)


def _unaudited(env: str, landed: str, exc: Exception) -> OperationError:
    # The pin is the change (in models.lock.json, reviewed in its commit); the audit event in the
    # registry comes after it, and a re-run finds nothing to do, so say what landed.
    return OperationError(
        f"{env}: {landed} in models.lock.json, but its audit event could not be written to "
        f"{env}'s registry ({exc}); the pin stands: say why in the lock file's commit"
    )


def clear_shadow(ws: Workspace, *, env: str, reason: str = "") -> ShadowChange:
    """Remove `env`'s shadow pin (a no-op if it has none)."""
    ws.config.env(env)
    lock = lock_ready(ws, f"clear {env}'s shadow")
    previous = lock.shadows.get(env)
    live = lock.pins.get(env)
    if previous is None:
        return ShadowChange("clear", env, live, None, None, False)
    write_shadow(ws.lock_path, model=ws.model, env=env, shadow=None)
    try:
        ws.registry(env).record_event(
            "shadow_cleared",
            version=previous.version,
            actor=ws.actor,
            reason=reason,
            alias=env,
            details={"env": env, "sha256": previous.sha256},
        )
    except Exception as exc:
        raise _unaudited(
            env, f"the shadow pin (version {previous.version}) is removed", exc
        ) from exc
    return ShadowChange("clear", env, live, None, previous, True)


# Comparing live and shadow on served traffic ------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


def _quantiles(values: np.ndarray) -> dict[str, float] | None:
    if not len(values):
        return None
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "mean": round(float(values.mean()), 3),
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
    }


def _correlations(live: np.ndarray, shadow: np.ndarray) -> tuple[float | None, float | None]:
    """(Pearson on the scores, Spearman: Pearson on their ranks, ties averaged)."""
    if len(live) < 2 or live.std() == 0 or shadow.std() == 0:
        return None, None

    def ranks(values: np.ndarray) -> np.ndarray:
        order = np.argsort(values, kind="stable")
        ranked = np.empty(len(values), dtype=np.float64)
        ranked[order] = np.arange(len(values), dtype=np.float64)
        # average the ranks of tied scores
        _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        sums = np.bincount(inverse, weights=ranked)
        return np.asarray(sums[inverse] / counts[inverse])

    pearson = float(np.corrcoef(live, shadow)[0, 1])
    spearman = float(np.corrcoef(ranks(live), ranks(shadow))[0, 1])
    return round(pearson, 6), round(spearman, 6)


@dataclass
class PairFigures:
    """Live against shadow on the payments both scored (one pair of models)."""

    live: ModelRef
    shadow: ModelRef
    events: int  # captured payments the pair served (each counted once)
    shadow_failed: int  # of them, the challenger could not score
    compared: int  # scored by both
    agreement: float | None
    live_alert_rate: float | None
    shadow_alert_rate: float | None
    pearson: float | None
    spearman: float | None
    disagreements: int
    listed: list[dict[str, Any]]
    cost_us: dict[str, float] | None  # the challenger's scoring time per payment
    latency_ms: dict[str, float] | None  # the whole request's, shadow included
    labels: dict[str, Any]
    # For the gate: the matured, labelled payments (labels, live scores, shadow scores).
    matured: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "live": self.live.to_dict(),
            "shadow": self.shadow.to_dict(),
            "events": self.events,
            "shadow_failed": self.shadow_failed,
            "compared": self.compared,
            "agreement": self.agreement,
            "live_alert_rate": self.live_alert_rate,
            "shadow_alert_rate": self.shadow_alert_rate,
            "score_correlation": {"pearson": self.pearson, "spearman": self.spearman},
            "disagreements": self.disagreements,
            "disagreements_listed": self.listed,
            "shadow_cost_us_per_event": self.cost_us,
            "request_latency_ms": self.latency_ms,
            "labels": self.labels,
        }


@dataclass
class ShadowReport:
    env: str
    since: str | None
    until: str | None
    as_of: str
    matured_before: str
    maturity_days: int
    unlabelled: str
    records: int  # capture records read for the environment in the window
    without_shadow: int
    pinned_shadow: Pin | None
    pairs: list[PairFigures]
    target: str = "local"  # where the captures were read: "aws" or "local"

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "window": {"since": self.since, "until": self.until},
            "labels_policy": {
                "as_of": self.as_of,
                "matured_before": self.matured_before,
                "maturity_days": self.maturity_days,
                "unlabelled": self.unlabelled,
            },
            "records": self.records,
            "records_without_shadow": self.without_shadow,
            "shadow_pin": None if self.pinned_shadow is None else self.pinned_shadow.to_dict(),
            "pairs": [p.to_dict() for p in self.pairs],
        }

    def pair(self, shadow: Pin, live: Pin | None = None) -> PairFigures | None:
        for figures in self.pairs:
            if (figures.shadow.version, figures.shadow.sha256) != (shadow.version, shadow.sha256):
                continue
            if live is None or (figures.live.version, figures.live.sha256) == (
                live.version,
                live.sha256,
            ):
                return figures
        return None


def _records(location: str, env: str, since_us: int | None, until_us: int | None) -> list[Capture]:
    """`env`'s captures whose payment happened in [since, until), one per event id and pair of
    models (the first served, as training from capture takes them: a retried request scored the
    payment twice; a payment scored again after a shadow was pinned counts for the new pair)."""
    first_day = "0000-00-00" if since_us is None else format_time(since_us - DAY_US)[:10]
    chosen: dict[tuple[str, str, str | None], Capture] = {}
    for _name, record in capture_records(location, first_day):
        if record.env != env:
            continue
        if since_us is not None and record.occurred_at_us < since_us:
            continue
        if until_us is not None and record.occurred_at_us >= until_us:
            continue
        shadow = None if record.shadow is None else record.shadow.model_sha256
        key = (record.event_id, record.model_sha256, shadow)
        known = chosen.get(key)
        if known is None or record.received_at_us < known.received_at_us:
            chosen[key] = record
    return sorted(chosen.values(), key=lambda r: (r.occurred_at_us, r.event_id))


def _label_metrics(
    labels: np.ndarray, live: np.ndarray, shadow: np.ndarray
) -> tuple[dict[str, float] | None, dict[str, float] | None, str | None]:
    fraud = int(labels.sum())
    if len(labels) < MIN_LABELLED_EVENTS:
        return None, None, f"only {len(labels)} matured payments (needs {MIN_LABELLED_EVENTS})"
    if fraud in (0, len(labels)):
        return None, None, f"one class only among the {len(labels)} matured payments"
    out = []
    for scores in (live, shadow):
        metrics, _ = evaluate(labels.astype(np.int64), scores, alert_rate=ALERT_RATE)
        out.append({k: round(float(metrics[k]), 6) for k in _COMPARED})
    return out[0], out[1], None


def _decision_metrics(labels: np.ndarray, decisions: np.ndarray) -> dict[str, float | None]:
    """What the decisions themselves caught: precision and recall at the model's own threshold."""
    flagged = int(decisions.sum())
    fraud = int(labels.sum())
    caught = int((labels & decisions).sum())
    return {
        "flagged": flagged,
        "caught": caught,
        "precision": None if not flagged else round(caught / flagged, 6),
        "recall": None if not fraud else round(caught / fraud, 6),
    }


def _pair(
    live: ModelRef,
    shadow: ModelRef,
    records: list[Capture],
    labels: Mapping[str, bool],
    *,
    matured_before: int,
    unlabelled: str,
    limit: int,
) -> PairFigures:
    scored = [r for r in records if r.shadow is not None and r.shadow.score is not None]
    failed = len(records) - len(scored)
    n = len(scored)
    live_scores = np.fromiter((r.score for r in scored), np.float64, count=n)
    shadow_scores = np.fromiter((r.shadow.score for r in scored), np.float64, count=n)  # type: ignore[union-attr]
    live_flags = np.asarray([r.decision for r in scored], dtype=np.bool_)
    shadow_flags = np.asarray([r.shadow.decision for r in scored], dtype=np.bool_)  # type: ignore[union-attr]
    differ = np.flatnonzero(live_flags != shadow_flags)
    by_gap = sorted(differ.tolist(), key=lambda i: -abs(live_scores[i] - shadow_scores[i]))
    listed = [
        {
            "event_id": scored[i].event_id,
            "occurred_at": format_time(scored[i].occurred_at_us),
            "account_id": scored[i].account_id,
            # Shown beside their decisions as the API shows a score (`shown_score`): a score
            # flagged is never printed below its threshold.
            "live_score": shown_score(float(live_scores[i]), bool(live_flags[i])),
            "live_decision": bool(live_flags[i]),
            "shadow_score": shown_score(float(shadow_scores[i]), bool(shadow_flags[i])),
            "shadow_decision": bool(shadow_flags[i]),
            "label": labels.get(scored[i].event_id),
        }
        for i in by_gap[:limit]
    ]
    pearson, spearman = _correlations(live_scores, shadow_scores)
    costs = np.fromiter(
        (r.shadow.cost_us for r in scored if r.shadow.cost_us is not None),  # type: ignore[union-attr]
        np.float64,
    )
    latencies = np.fromiter((r.latency_ms for r in scored if r.latency_ms is not None), np.float64)
    # Label-based: the matured payments, labelled as training from capture labels them.
    rows = []
    for position, record in enumerate(scored):
        if record.occurred_at_us >= matured_before:
            continue
        label = labels.get(record.event_id)
        if label is None:
            if unlabelled == "exclude":
                continue
            label = False
        rows.append((position, label))
    index = np.asarray([i for i, _ in rows], dtype=np.int64)
    y = np.asarray([label for _, label in rows], dtype=bool)
    live_metrics, shadow_metrics, reason = _label_metrics(
        y, live_scores[index], shadow_scores[index]
    )
    label_figures: dict[str, Any] = {
        "matured": len(rows),
        "young": sum(1 for r in scored if r.occurred_at_us >= matured_before),
        "fraud": int(y.sum()),
        "live": live_metrics,
        "shadow": shadow_metrics,
        "live_decisions": _decision_metrics(y, live_flags[index]),
        "shadow_decisions": _decision_metrics(y, shadow_flags[index]),
    }
    if reason is not None:
        label_figures["reason"] = reason
    return PairFigures(
        live=live,
        shadow=shadow,
        events=len(records),
        shadow_failed=failed,
        compared=n,
        agreement=None if not n else round(float((live_flags == shadow_flags).mean()), 6),
        live_alert_rate=None if not n else round(float(live_flags.mean()), 6),
        shadow_alert_rate=None if not n else round(float(shadow_flags.mean()), 6),
        pearson=pearson,
        spearman=spearman,
        disagreements=len(differ),
        listed=listed,
        cost_us=_quantiles(costs),
        latency_ms=_quantiles(latencies),
        labels=label_figures,
        matured=(y, live_scores[index], shadow_scores[index]),
    )


def compare(
    ws: Workspace,
    *,
    env: str,
    since_us: int | None = None,
    until_us: int | None = None,
    as_of_us: int | None = None,
    limit: int = DISAGREEMENTS_LISTED,
) -> ShadowReport:
    """Live against shadow in `env`, on the payments it captured with both scores."""
    config: EnvironmentConfig = ws.config.env(env)
    at = time.time_ns() // 1000 if as_of_us is None else as_of_us
    maturity = config.labels.maturity_days
    matured_before = at - maturity * DAY_US
    if until_us is not None:
        matured_before = min(matured_before, until_us)
    records = _records(ws.captures_uri(env), env, since_us, until_us)
    groups: dict[tuple[ModelRef, ModelRef], list[Capture]] = {}
    without = 0
    for record in records:
        if record.shadow is None:
            without += 1
            continue
        key = (
            ModelRef(record.model_name, record.model_version, record.model_sha256),
            ModelRef(
                record.shadow.model_name, record.shadow.model_version, record.shadow.model_sha256
            ),
        )
        groups.setdefault(key, []).append(record)
    first_day = "0000-00-00" if since_us is None else format_time(since_us - DAY_US)[:10]
    labels = read_labels(ws.labels_uri(env), first_day=first_day, as_of_us=at).by_event
    pairs = [
        _pair(
            live,
            shadow,
            group,
            labels,
            matured_before=matured_before,
            unlabelled=config.labels.unlabelled,
            limit=limit,
        )
        for (live, shadow), group in sorted(
            groups.items(), key=lambda item: (item[0][0].version, item[0][1].version)
        )
    ]
    try:
        pinned = read_lock(ws.lock_path, model=ws.model).shadows.get(env)
    except LockFileError:
        pinned = None
    return ShadowReport(
        env=env,
        since=None if since_us is None else format_time(since_us),
        until=None if until_us is None else format_time(until_us),
        as_of=format_time(at),
        matured_before=format_time(matured_before),
        maturity_days=maturity,
        unlabelled=config.labels.unlabelled,
        records=len(records),
        without_shadow=without,
        pinned_shadow=pinned,
        pairs=pairs,
        target=ws.target,
    )


# The promotion gate -------------------------------------------------------------------------------


def shadowed_in(
    ws: Workspace, env: str, version: Version, gate: ShadowedIn, *, live: Pin | None
) -> GateResult:
    """Whether `version` shadowed the model live in the gate's environment on at least
    `gate.min_events` matured payments and beat it there in `gate.metric` by more than
    `gate.margin`. `live` is what is live in that environment now (None: nothing)."""
    name = "shadowed_in"
    where = gate.env or env
    if live is None:
        return GateResult(name, True, f"nothing is live in {where}: nothing to beat")
    if live.version == version.number and live.sha256 == version.sha256:
        return GateResult(name, True, f"version {version.number} is what {where} serves")
    try:
        report = compare(ws, env=where, limit=0)
    except (DataError, RegistryError, OSError) as exc:
        return GateResult(name, False, f"{where}'s captures could not be read: {exc}")
    pin = Pin(version=version.number, sha256=version.sha256)
    figures = report.pair(pin, live)
    if figures is None or figures.matured is None:
        return GateResult(
            name,
            False,
            f"version {version.number} has not shadowed version {live.version} (live in "
            f"{where}) on any captured payment: "
            f"{ws.command(f'shadow {version.number} --env {where}')}",
        )
    matured = len(figures.matured[0])
    if matured < gate.min_events:
        return GateResult(
            name,
            False,
            f"shadowed version {live.version} in {where} on {matured} matured payments "
            f"(needs {gate.min_events}; payments mature after {report.maturity_days} days)",
        )
    theirs_metrics, ours_metrics = figures.labels["live"], figures.labels["shadow"]
    if theirs_metrics is None or ours_metrics is None:
        return GateResult(name, False, f"cannot be compared in {where}: {figures.labels['reason']}")
    ours, theirs = ours_metrics[gate.metric], theirs_metrics[gate.metric]
    improvement = ours - theirs if gate.higher_is_better else theirs - ours
    needs = theirs + gate.margin if gate.higher_is_better else theirs - gate.margin
    sign = ">" if gate.higher_is_better else "<"
    return GateResult(
        name,
        improvement > gate.margin,
        f"{gate.metric} {ours:.4f} vs {theirs:.4f} for version {live.version}, on the same "
        f"{matured} matured payments {where} served (needs {sign} {needs:.4f})",
    )


def render_report(report: ShadowReport) -> Iterable[str]:
    """The report as lines for a terminal."""
    window = f"{report.since or 'the first capture'} to {report.until or 'now'}"
    yield f"{report.env}: live against shadow, payments from {window}"
    yield (
        f"  {report.records} captured payments, {report.without_shadow} without a shadow; "
        f"labels as of {report.as_of}, matured before {report.matured_before} "
        f"({report.maturity_days} days; unlabelled: {report.unlabelled})"
    )
    if report.pinned_shadow is not None:
        yield f"  shadow pinned now: version {report.pinned_shadow.version}"
    if not report.pairs:
        yield "  no payment was scored by a shadow in this window"
        if report.pinned_shadow is None:
            run = command_prefix(on_aws=report.target == "aws")
            yield f"  {report.env} has no shadow: pin one with: {run} shadow VERSION --env {report.env}"
        elif report.target == "aws":
            # On AWS a shadow pin scores only once deployed (locally the API follows the pin).
            yield (
                f"  shadow v{report.pinned_shadow.version} scores only once deployed: "
                f"sds --aws status --env {report.env} says whether it is "
                f"(deploy it with: cdk deploy '{report.env}/*')"
            )
        return
    for figures in report.pairs:
        yield ""
        yield f"  live v{figures.live.version} vs shadow v{figures.shadow.version}"
        rows: list[tuple[str, str]] = [
            ("payments", f"{figures.events} ({figures.shadow_failed} the shadow failed on)"),
            ("agreement", _percent(figures.agreement)),
            (
                "alert rate",
                f"live {_percent(figures.live_alert_rate)}, "
                f"shadow {_percent(figures.shadow_alert_rate)}",
            ),
            (
                "score correlation",
                f"pearson {_number(figures.pearson)}, spearman {_number(figures.spearman)}",
            ),
            ("disagreements", str(figures.disagreements)),
        ]
        if figures.cost_us is not None:
            cost = figures.cost_us
            rows.append(
                (
                    "shadow cost",
                    f"{cost['p50']:.1f} us per payment (p95 {cost['p95']:.1f}, "
                    f"mean {cost['mean']:.1f}), measured in the handler",
                )
            )
        labels = figures.labels
        rows.append(
            (
                "matured",
                f"{labels['matured']} payments ({labels['fraud']} fraud), "
                f"{labels['young']} too young",
            )
        )
        if labels["live"] is None:
            rows.append(("label metrics", str(labels.get("reason"))))
        for key, value in rows:
            yield f"    {key:<18} {value}"
        if labels["live"] is not None and labels["shadow"] is not None:
            yield f"    {'metric':<28} {'live':>10} {'shadow':>10}"
            for metric in _COMPARED:
                live_value, shadow_value = labels["live"][metric], labels["shadow"][metric]
                yield f"    {metric:<28} {live_value:>10.4f} {shadow_value:>10.4f}"
            for side in ("live", "shadow"):
                d = labels[f"{side}_decisions"]
                yield (
                    f"    {side + ' decisions':<28} flagged {d['flagged']}, caught {d['caught']}"
                    f" (precision {_number(d['precision'])}, recall {_number(d['recall'])})"
                )
        if figures.listed:
            yield "    disagreements (largest score gap first):"
            for row in figures.listed:
                label = {True: "fraud", False: "legit", None: "-"}[row["label"]]
                yield (
                    f"      {row['event_id']:<24} live {row['live_score']:.4f}"
                    f" {'FRAUD' if row['live_decision'] else 'ok':<5}"
                    f"  shadow {row['shadow_score']:.4f}"
                    f" {'FRAUD' if row['shadow_decision'] else 'ok':<5}  label {label}"
                )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
