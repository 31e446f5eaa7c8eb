"""`sds monitor`: the drift report of what an environment served, per model version and day."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from sds.cli.arguments import Commands, env_option, moment_option, workspace
from sds.cli.render import fmt, print_json, table
from sds.config import EnvironmentConfig
from sds.kernel.errors import UsageError


def register(commands: Commands) -> None:
    parser = commands.add(
        "monitor",
        run,
        "report what an environment served, per model version and day: volume, alert rate, "
        "score and feature drift (PSI against the training holdout) and, once labels mature, "
        "precision and recall",
        [
            "sds monitor --env dev",
            "sds monitor --env prod --since 2026-03-01 --until 2026-03-15 --json",
            "sds monitor --env dev --html drift.html",
            "sds --aws monitor --env prod --since 2026-03-01",
        ],
    )
    env_option(parser, "--env", default_first=True, help="whose traffic (default: the first)")
    moment_option(
        parser,
        "--since",
        "payments received from (a date, 2026-03-01, or an ISO 8601 time; default: the "
        "start of the UTC day 14 days before --until's)",
    )
    moment_option(parser, "--until", "payments received before (default: --as-of)")
    moment_option(
        parser, "--as-of", "labels known by, and maturity measured at, this time (default: now)"
    )
    parser.add_argument(
        "--html",
        metavar="PATH",
        help="also write the report as one self-contained HTML page with plots",
    )


def run(args: argparse.Namespace) -> int:
    from sds.ops.monitor import DEFAULT_DAYS, monitor, registry_manifests
    from sds.ops.monitor_html import write
    from training.capture_data import DAY_US, Window, parse_moment
    from training.data import DataError

    ws = workspace(args)
    env: EnvironmentConfig = args.env
    try:
        as_of = (
            time.time_ns() // 1000
            if args.as_of is None
            else parse_moment(args.as_of, what="--as-of")
        )
        until = as_of if args.until is None else parse_moment(args.until, what="--until")
        # Whole UTC days: a first day cut at --until's time of day would show part of its
        # volume, which reads as a drop in traffic.
        since = (
            (until // DAY_US - DEFAULT_DAYS) * DAY_US
            if args.since is None
            else parse_moment(args.since, what="--since")
        )
        if args.until is None and since >= until:
            raise UsageError(
                f"the window is empty: --since {args.since} is not before --until, which "
                f"defaults to --as-of ({args.as_of or 'now'}): give --until too"
            )
        window = Window(
            since_us=since,
            until_us=until,
            as_of_us=as_of,
            maturity_days=env.labels.maturity_days,
            unlabelled=env.labels.unlabelled,
        )
    except DataError as exc:
        raise UsageError(str(exc)) from None
    html = Path(args.html) if args.html else None
    if html is not None and html.is_dir():
        raise UsageError(
            f"--html {args.html} is a folder: name the page to write, e.g. "
            f"{html / f'drift-{env.name}.html'}"
        )
    if html is not None and not html.parent.is_dir():
        what = (
            f"{html.parent} is a file, not a folder"
            if html.parent.exists()
            else f"the folder {html.parent} does not exist"
        )
        raise UsageError(f"--html {args.html}: {what}")
    report = monitor(
        env=env.name,
        captures=ws.captures_uri(env.name),
        labels=ws.labels_uri(env.name),
        window=window,
        manifests=registry_manifests(ws.registry(env.name)),
    ).to_dict()
    if html is not None:
        report["html"] = str(write(report, html))
    if args.json:
        print_json(report)
        return 0
    print(_text(report))
    return 0


def _text(report: dict[str, Any]) -> str:
    from sds.ops.monitor import records_read

    window, sources = report["window"], report["sources"]
    lines = [
        f"{report['env']}: payments received {window['since']} to {window['until']}, labels as "
        f"of {window['as_of']} (matured after {window['maturity_days']} days); "
        f"{records_read(sources)}"
        + (
            f", {sources['duplicates']} repeated event ids counted once"
            if sources["duplicates"]
            else ""
        ),
        f"PSI: {report['psi']['bins']}; < {report['psi']['stable_below']} stable, "
        f">= {report['psi']['drift_above']} drift",
    ]
    for version in report["versions"]:
        lines += [
            "",
            f"{version['model']} v{version['version']} (sha256 {version['sha256'][:12]}..."
            + (
                f"; its holdout's alert rate {100 * version['expected_alert_rate']:.2f}%)"
                if version["expected_alert_rate"] is not None
                else ")"
            ),
        ]
        if version["reference"]["note"]:
            lines.append(f"  {version['reference']['note']}")
        rows = []
        for day in [*version["days"], {**version["total"], "day": "all"}]:
            worst = day["max_feature_psi"]
            labels = day["labels"]
            label_status = (
                labels["status"]
                if labels["status"] in ("matured", "no payments")
                else f"{labels['status']} (on {labels['matures_on'][:10]})"
            )
            rows.append(
                [
                    day["day"],
                    str(day["captured"]),
                    f"{100 * day['alert_rate']:.2f}%" if day["alert_rate"] is not None else "-",
                    fmt(day["score_psi"], 3)
                    + (f" {day['score_drift']}" if day["score_psi"] is not None else ""),
                    f"{worst['feature']} {worst['psi']:.3f}" if worst else "-",
                    label_status,
                    fmt(labels["precision"], 3),
                    fmt(labels["recall"], 3),
                ]
            )
        lines.append(
            table(
                rows,
                [
                    "day",
                    "captured",
                    "alert rate",
                    "score PSI",
                    "worst feature PSI",
                    "labels",
                    "precision",
                    "recall",
                ],
            )
        )
        gaps = [day["day"] for day in version["days"] if day["gap"]]
        if gaps:
            lines.append(
                f"  no payments captured on {', '.join(gaps)}: the API down, capture off or its "
                "delivery broken? (docs/runbook.md, section 10)"
            )
        for day in version["days"]:
            if day["drifted_features"]:
                lines.append(
                    f"  {day['day']}: features with PSI >= {report['psi']['drift_above']}: "
                    + ", ".join(day["drifted_features"])
                )
    if "html" in report:
        lines += ["", f"HTML report: {report['html']}"]
    return "\n".join(lines)
