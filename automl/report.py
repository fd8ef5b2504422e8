"""Leaderboard (CSV and Markdown) and a self-contained HTML report, rebuilt from a run directory.

Rows are every trial plus every ensemble, ranked by validation score; failed and interrupted
trials follow, with their error. Every user-provided string is escaped in HTML.
"""

from __future__ import annotations

import html
import io
import json
import math
from typing import Any

from automl.ensemble.build import load_ensembles
from automl.io import write_text_atomic
from automl.metrics import METRICS
from automl.run import RunDir, TrialRecord, load_trials

COLUMNS = ["rank", "name", "family", "status", "metric", "val_score", "test_score", "fit_seconds"]


def leaderboard_rows(run: RunDir, records: list[TrialRecord] | None = None) -> list[dict[str, Any]]:
    info = run.info()
    metric = METRICS[info["metric"]]
    rows: list[dict[str, Any]] = []
    for record in load_trials(run) if records is None else records:
        rows.append(
            {
                "name": record.name,
                "family": record.family,
                "status": record.status,
                "metric": metric.name,
                "val_score": record.val_score,
                "test_score": record.test_score,
                "fit_seconds": record.fit_seconds,
                **(record.extra or {}),
                "params": json.dumps(record.params, sort_keys=True),
                "error": record.error,
            }
        )
    for ensemble in load_ensembles(run):
        rows.append(
            {
                "name": f"ensemble-{ensemble['name']}",
                "family": "ensemble",
                "status": "complete",
                "metric": metric.name,
                "val_score": ensemble["val_score"],
                "test_score": ensemble["test_score"],
                "fit_seconds": None,
                "params": json.dumps(
                    {m["name"]: round(m["weight"], 4) for m in ensemble["members"]}
                ),
                "error": "",
            }
        )
    sign = -1.0 if metric.greater_is_better else 1.0

    def key(row: dict[str, Any]) -> tuple[int, float]:
        if row["status"] != "complete" or row["val_score"] is None:
            return (1, 0.0)
        return (0, sign * row["val_score"])

    rows.sort(key=key)
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    extra = sorted({k for r in rows for k in r} - set(COLUMNS) - {"params", "error"})
    return COLUMNS + extra + ["params", "error"]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_leaderboard(
    run: RunDir, records: list[TrialRecord] | None = None
) -> list[dict[str, Any]]:
    import csv

    rows = leaderboard_rows(run, records)
    columns = _columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _fmt(row.get(c)) for c in columns})
    write_text_atomic(run.path / "leaderboard.csv", buffer.getvalue())
    md_columns = [c for c in columns if c not in ("params", "error")]
    lines = ["| " + " | ".join(md_columns) + " |", "|" + "---|" * len(md_columns)]
    for row in rows:
        cells = [_fmt(row.get(c)).replace("|", "\\|") for c in md_columns]
        lines.append("| " + " | ".join(cells) + " |")
    write_text_atomic(run.path / "leaderboard.md", "\n".join(lines) + "\n")
    return rows


def format_table(rows: list[dict[str, Any]], limit: int = 15) -> str:
    """A plain-text leaderboard for the terminal."""
    columns = ["rank", "name", "status", "val_score", "test_score", "fit_seconds"]
    shown = rows[:limit]
    cells = [[_fmt(r.get(c)) for c in columns] for r in shown]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    if len(rows) > limit:
        out.append(f"... {len(rows) - limit} more rows in leaderboard.csv")
    return "\n".join(out)


def _history_svg(records: list[TrialRecord], metric_name: str, greater: bool) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in records if r.status == "complete" and r.val_score is not None]
    if not records:
        return "<p>No completed trials yet.</p>"
    records.sort(key=lambda r: r.number)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    families = sorted({r.family for r in records})
    for family in families:
        pts = [r for r in records if r.family == family]
        ax.scatter([r.number for r in pts], [r.val_score for r in pts], label=family, s=22)
    best, xs, ys = None, [], []
    for r in records:
        if best is None or (r.val_score > best if greater else r.val_score < best):
            best = r.val_score
        xs.append(r.number)
        ys.append(best)
    ax.step(xs, ys, where="post", color="black", linewidth=1.2, label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric_name}")
    ax.legend(fontsize=8, ncol=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.find("<svg") :]


def write_report(run: RunDir) -> str:
    """Write leaderboard.csv/.md and a self-contained report.html; return the HTML's path."""
    info = run.info()
    metric = METRICS[info["metric"]]
    records = load_trials(run)
    rows = write_leaderboard(run, records)
    columns = [c for c in _columns(rows) if c != "error"]
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    facts = {
        "data": info["data"],
        "data sha256": info["data_sha256"],
        "target": info["target"],
        "task": info["task"],
        "metric": f"{metric.name} ({metric.direction})",
        "sampler": f"{info.get('backend')}/{info.get('sampler')}",
        "seed": info["seed"],
        "rows (fit / val / test)": " / ".join(str(v) for v in info.get("rows", {}).values()),
        "features": f"{len(info['schema']['numeric'])} numeric, "
        f"{len(info['schema']['categorical'])} categorical",
        "columns": ", ".join((info["schema"]["numeric"] + info["schema"]["categorical"])[:40]),
        "storage": info["storage"],
        "versions": ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items()),
    }
    facts_html = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts.items()
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>AutoML report: {esc(run.path.name)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}
table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ddd;padding:3px 6px;text-align:left}}
th{{background:#f4f4f4}} .facts th{{width:14rem}}
</style></head><body>
<h1>AutoML report: {esc(run.path.name)}</h1>
<h2>Run</h2><table class="facts">{facts_html}</table>
<h2>Optimization history</h2>{_history_svg(records, metric.name, metric.greater_is_better)}
<h2>Leaderboard</h2>
<table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
</body></html>
"""
    path = run.path / "report.html"
    write_text_atomic(path, page)
    return str(path)
