"""The leaderboard (CSV, Markdown, a terminal table), rebuilt from a run directory.

Rows are every trial plus every ensemble, ranked by validation score; failed and interrupted
trials follow, with their error.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
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
                "predict_seconds": record.predict_seconds,
                "n_params": record.n_params,
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
                # Ranked like `load("best")` ranks it: by its cross-validated score.
                "val_score": ensemble.get("honest_val_score"),
                "val_score_fit_on": ensemble["val_score"],
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


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    extra = sorted({k for r in rows for k in r} - set(COLUMNS) - {"params", "error"})
    return COLUMNS + extra + ["params", "error"]


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_leaderboard(
    run: RunDir, records: list[TrialRecord] | None = None, out: Path | None = None
) -> list[dict[str, Any]]:
    """leaderboard.csv and leaderboard.md into `out` (default the run directory); the rows."""
    import csv

    out = out or run.path
    rows = leaderboard_rows(run, records)
    columns = columns_of(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: fmt(row.get(c)) for c in columns})
    write_text_atomic(out / "leaderboard.csv", buffer.getvalue())
    md_columns = [c for c in columns if c not in ("params", "error")]
    lines = ["| " + " | ".join(md_columns) + " |", "|" + "---|" * len(md_columns)]
    for row in rows:
        cells = [fmt(row.get(c)).replace("|", "\\|") for c in md_columns]
        lines.append("| " + " | ".join(cells) + " |")
    write_text_atomic(out / "leaderboard.md", "\n".join(lines) + "\n")
    return rows


def format_table(rows: list[dict[str, Any]], limit: int = 15) -> str:
    """A plain-text leaderboard for the terminal."""
    columns = ["rank", "name", "status", "val_score", "test_score", "fit_seconds"]
    shown = rows[:limit]
    cells = [[fmt(r.get(c)) for c in columns] for r in shown]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    if len(rows) > limit:
        out.append(f"... {len(rows) - limit} more rows in leaderboard.csv")
    return "\n".join(out)
