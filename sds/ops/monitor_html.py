"""The drift report as one self-contained HTML page: inline CSS and SVG plots, no script, no
network, so it opens from a CI artifact or an e-mail attachment as it is.

Drawn from the report's JSON document (`sds.ops.monitor.Report.to_dict`), so the page shows
exactly what `--json` prints. Per model version: volume and alert rate per day, the score's PSI
per day against the stable and drift lines, the score's distribution served against the training
holdout, and each feature's PSI per day as a coloured grid. A day without payments (a gap) is
marked red in the table and on every plot: the volume drops to zero there, and the rates, which
it has none of, break their lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from sds.kernel.drift import verdict
from sds.kernel.lock import atomic_write_text
from sds.ops.monitor import records_read

_WIDTH, _HEIGHT, _PAD = 560, 180, 36
_COLOURS = {"stable": "#e7f5e9", "moderate": "#fff3cd", "drift": "#f8d7da", "-": "#f4f4f4"}
_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 2em; border-top: 1px solid #ccc;
padding-top: 1em; } table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; font-variant-numeric:
tabular-nums; } th { background: #f4f4f4; } td.name { text-align: left; }
.note { background: #fff3cd; padding: 0.5em; } .plots { display: flex; flex-wrap: wrap; gap: 1em; }
.note.gap, tr.gap td { background: #f8d7da; }
svg { background: #fafafa; border: 1px solid #eee; } .legend { font-size: 12px; color: #555; }
"""


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _axis(value: float) -> str:
    """An axis label: counts with thousands separators, small values in 3 significant digits."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _line_chart(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    lines: Mapping[str, float] | None = None,
    gaps: Sequence[bool] = (),
) -> str:
    """A line per series over the days, with optional horizontal reference lines. A day marked
    in `gaps` (no payments) gets a red band, and a series without a value that day (a rate of no
    payments) breaks its line there instead of joining its neighbours across it."""
    values = [v for s in series.values() for v in s if v is not None]
    values += list((lines or {}).values())
    top = max([*values, 1e-12]) * 1.1
    n = max(len(labels), 1)
    step = (_WIDTH - 2 * _PAD) / max(n - 1, 1)

    def y(v: float) -> float:
        return _HEIGHT - _PAD - (_HEIGHT - 2 * _PAD) * v / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="{_PAD}" y="16" font-size="13">{escape(title)}</text>',
        f'<line x1="{_PAD}" y1="{_HEIGHT - _PAD}" x2="{_WIDTH - _PAD}" y2="{_HEIGHT - _PAD}" '
        'stroke="#999"/>',
        f'<text x="{_PAD - 4}" y="{y(top / 1.1) + 4:.1f}" font-size="10" text-anchor="end">'
        f"{_axis(top / 1.1)}</text>",
        f'<text x="{_PAD - 4}" y="{y(0) + 4:.1f}" font-size="10" text-anchor="end">0</text>',
    ]
    band = max(min(step * 0.6, 24.0), 4.0)
    for i, gap in enumerate(gaps):
        if gap:
            parts.append(
                f'<rect class="gap" x="{_PAD + i * step - band / 2:.1f}" y="{_PAD:.1f}" '
                f'width="{band:.1f}" height="{_HEIGHT - 2 * _PAD}" fill="#f8d7da">'
                f"<title>{escape(labels[i])}: no payments captured</title></rect>"
            )
    if any(gaps):
        parts.append(
            f'<text x="{_WIDTH - _PAD}" y="{_HEIGHT - 4}" font-size="11" text-anchor="end" '
            'fill="#c00">red: no payments</text>'
        )
    for name, level in (lines or {}).items():
        parts.append(
            f'<line x1="{_PAD}" y1="{y(level):.1f}" x2="{_WIDTH - _PAD}" y2="{y(level):.1f}" '
            'stroke="#c00" stroke-dasharray="4 3"/>'
            f'<text x="{_WIDTH - _PAD}" y="{y(level) - 3:.1f}" font-size="10" '
            f'text-anchor="end" fill="#c00">{escape(name)}</text>'
        )
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
    for index, (name, points) in enumerate(series.items()):
        colour = palette[index % len(palette)]
        runs: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(points):
            if v is None:
                runs.append([])
            else:
                runs[-1].append((_PAD + i * step, y(v)))
        for run in runs:
            if len(run) > 1:
                parts.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                    + " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in run)
                    + '"/>'
                )
            parts += [
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{colour}"/>' for cx, cy in run
            ]
        parts.append(
            f'<text x="{_PAD + 120 * index}" y="{_HEIGHT - 4}" font-size="11" fill="{colour}">'
            f"{escape(name)}</text>"
        )
    for i, label in enumerate(labels):
        if n <= 8 or i % max(1, n // 8) == 0:
            parts.append(
                f'<text x="{_PAD + i * step:.1f}" y="{_HEIGHT - _PAD + 14}" font-size="10" '
                f'text-anchor="middle">{escape(label[5:])}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _histogram_chart(histogram: Mapping[str, Any]) -> str:
    """Bars per bin: the training holdout's share beside the served share."""
    reference, served = histogram["reference"], histogram["served"]
    bins = len(reference)
    width = (_WIDTH - 2 * _PAD) / max(bins, 1)
    top = max([*reference, *served, 1e-12])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" role="img" '
        'aria-label="score distribution">',
        '<text x="36" y="16" font-size="13">score distribution: share per bin</text>',
    ]
    for i, (r, s) in enumerate(zip(reference, served, strict=True)):
        x = _PAD + i * width
        for offset, share, colour in ((0.1, r, "#999"), (0.5, s, "#1f77b4")):
            height = (_HEIGHT - 2 * _PAD) * share / top
            parts.append(
                f'<rect x="{x + width * offset:.1f}" y="{_HEIGHT - _PAD - height:.1f}" '
                f'width="{width * 0.4:.1f}" height="{height:.1f}" fill="{colour}"/>'
            )
    edges = histogram["edges"]
    for i, edge in enumerate(edges):
        if bins <= 10 or i % 2 == 0:
            parts.append(
                f'<text x="{_PAD + (i + 1) * width:.1f}" y="{_HEIGHT - _PAD + 14}" '
                f'font-size="9" text-anchor="middle">{edge:.3g}</text>'
            )
    parts.append(
        f'<text x="{_PAD}" y="{_HEIGHT - 4}" font-size="11" fill="#999">training holdout</text>'
        f'<text x="{_PAD + 130}" y="{_HEIGHT - 4}" font-size="11" fill="#1f77b4">served</text>'
        "</svg>"
    )
    return "".join(parts)


def _feature_grid(days: Sequence[Mapping[str, Any]]) -> str:
    names = sorted({name for day in days for name in day["feature_psi"]})
    if not names:
        return ""
    head = "".join(f"<th>{escape(day['day'][5:])}</th>" for day in days)
    rows = []
    for name in names:
        cells = []
        for day in days:
            value = day["feature_psi"].get(name)
            colour = _COLOURS[verdict(value)]
            cells.append(f'<td style="background:{colour}">{_num(value)}</td>')
        rows.append(f'<tr><td class="name">{escape(name)}</td>{"".join(cells)}</tr>')
    return (
        "<h3>PSI per feature and day</h3><table><tr><th>feature</th>"
        f"{head}</tr>{''.join(rows)}</table>"
    )


def _day_table(version: Mapping[str, Any]) -> str:
    header = (
        "<tr><th>day</th><th>captured</th><th>served (est.)</th><th>alert rate</th>"
        "<th>score PSI</th><th>worst feature</th><th>labels</th><th>precision</th>"
        "<th>recall</th></tr>"
    )
    rows = []
    for day in [*version["days"], {**version["total"], "day": "all days"}]:
        worst = day["max_feature_psi"]
        labels = day["labels"]
        colour = _COLOURS[day["score_drift"]]
        rows.append(
            ('<tr class="gap">' if day.get("gap") else "<tr>")
            + f'<td class="name">{escape(day["day"])}</td><td>{day["captured"]}</td>'
            f"<td>{_num(day['served_estimate'], 0)}</td><td>{_pct(day['alert_rate'])}</td>"
            f'<td style="background:{colour}">{_num(day["score_psi"])}</td>'
            f"<td>{escape(worst['feature']) + ' ' + _num(worst['psi']) if worst else '-'}</td>"
            f'<td class="name">{escape(labels["status"])}'
            + (
                f" (on {escape(labels['matures_on'][:10])})"
                if labels["status"] not in ("matured", "no payments")
                else ""
            )
            + f"</td><td>{_num(labels['precision'])}</td><td>{_num(labels['recall'])}</td></tr>"
        )
    return f"<table>{header}{''.join(rows)}</table>"


def _version_section(version: Mapping[str, Any]) -> str:
    days = version["days"]
    labels = [day["day"] for day in days]
    gaps = [day["gap"] for day in days]
    gap_days = [day["day"] for day in days if day["gap"]]
    note = version["reference"]["note"]
    expected = version["expected_alert_rate"]
    parts = [
        f"<h2>{escape(version['model'])} version {version['version']} "
        f"<small>sha256 {escape(version['sha256'][:12])}&hellip;</small></h2>",
        f'<p class="note">{escape(note)}</p>' if note else "",
        (
            f'<p class="note gap">No payments captured on {escape(", ".join(gap_days))} (marked '
            "red): the API down, capture off or its delivery broken?</p>"
            if gap_days
            else ""
        ),
        _day_table(version),
        '<div class="plots">',
        _line_chart(
            "captured payments per day",
            labels,
            {"captured": [d["captured"] for d in days]},
            gaps=gaps,
        ),
        _line_chart(
            "alert rate per day",
            labels,
            {"alert rate": [d["alert_rate"] for d in days]},
            lines={"expected": expected} if expected is not None else None,
            gaps=gaps,
        ),
    ]
    if version["reference"]["available"]:
        parts.append(
            _line_chart(
                "score PSI per day",
                labels,
                {"score PSI": [d["score_psi"] for d in days]},
                lines={"0.1": 0.1, "0.25": 0.25},
                gaps=gaps,
            )
        )
        if version["total"]["score_histogram"]:
            parts.append(_histogram_chart(version["total"]["score_histogram"]))
    parts.append("</div>")
    parts.append(_feature_grid(days))
    return "".join(parts)


def render(report: Mapping[str, Any]) -> str:
    """The page of a report document."""
    window, psi, sources = report["window"], report["psi"], report["sources"]
    title = f"sds drift report: {report['env']}"
    sections = [_version_section(v) for v in report["versions"]] or [
        "<p>No payments served in the window.</p>"
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f"<p>Payments received from {escape(window['since'])} to {escape(window['until'])}; "
        f"labels known at {escape(window['as_of'])}, matured after "
        f"{window['maturity_days']} days (unlabelled: {escape(window['unlabelled'])}). "
        f"{escape(records_read(sources))} read from {escape(sources['captures'])}, "
        f"{sources['duplicates']} repeated event ids counted once. Generated "
        f"{escape(report['generated_at'])}.</p>"
        f'<p class="legend">PSI bins: {escape(psi["bins"])}. Below {psi["stable_below"]} '
        f"stable, below {psi['drift_above']} moderate, from it on drift; no PSI under "
        f"{psi['min_events']} payments.</p>" + "".join(sections) + "</body></html>\n"
    )


def write(report: Mapping[str, Any], path: Path) -> Path:
    """Write the page of `report` to `path` whole (a temporary file, then a rename: a reader
    never sees half a page); its absolute path."""
    atomic_write_text(path, render(report))
    return path.resolve()
