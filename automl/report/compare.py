"""`automl report --compare RUN_A RUN_B ...`: one dataset searched differently, side by side.

Runs must have searched the same data (same sha256, target and metric), or the comparison is
refused: comparing scores across datasets would mislead.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import automl.report.plots as plots
from automl.ensemble.build import best_ensemble, load_ensembles
from automl.errors import UserInputError
from automl.io import write_text_atomic
from automl.metrics import METRICS
from automl.report.assets import SCRIPT, STYLE
from automl.report.leaderboard import fmt
from automl.report.page import esc, figure
from automl.run import RunDir, TrialRecord, load_trials

SAME = ("data_sha256", "target", "task", "metric")


def _label(run: RunDir, info: dict[str, Any]) -> str:
    return f"{run.path.name} ({info.get('backend')}/{info.get('sampler')})"


def _best_curves(records: list[TrialRecord], greater: bool) -> tuple[list, list, list]:
    done = sorted(
        (r for r in records if r.status == "complete" and r.val_score is not None),
        key=lambda r: r.number,
    )
    if not done:
        return [], [], []
    pick = max if greater else min
    best = [pick(r.score for r in done[: i + 1]) for i in range(len(done))]
    start = min(r.started for r in done if r.started is not None) if done[0].started else 0.0
    seconds = [(r.finished or start) - start for r in done]
    return list(range(1, len(done) + 1)), seconds, best


def _curves_svg(series: list[tuple[str, list, list, list]], metric: str) -> str | None:
    if not any(s[1] for s in series):
        return None
    plt = plots._pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for i, (label, count, seconds, best) in enumerate(series):
        color = plots.PALETTE[i % len(plots.PALETTE)]
        left.step(count, best, where="post", color=color, label=label, linewidth=1.4)
        right.step(seconds, best, where="post", color=color, linewidth=1.4)
    left.set_xlabel("completed trials")
    right.set_xlabel("seconds since the first trial started")
    left.set_ylabel(f"best validation {metric}")
    left.legend(fontsize=7)
    return plots.to_svg(fig)


def write_comparison(run_dirs: list[str], out: str | Path) -> str:
    runs = [RunDir(d) for d in run_dirs]
    infos = [run.info() for run in runs]
    for run, info in zip(runs[1:], infos[1:], strict=True):
        differs = [k for k in SAME if info.get(k) != infos[0].get(k)]
        if differs:
            raise UserInputError(
                f"--compare: {run.path} searched different {', '.join(differs)} than "
                f"{runs[0].path}; compare runs on the same dataset, target and metric"
            )
    metric = METRICS[infos[0]["metric"]]
    greater = metric.greater_is_better
    rows, series = [], []
    for run, info in zip(runs, infos, strict=True):
        records = load_trials(run)
        done = [r for r in records if r.status == "complete" and r.val_score is not None]
        best = max(done, key=lambda r: r.score if greater else -r.score, default=None)
        ensembles = load_ensembles(run)
        best_ens = best_ensemble(ensembles, metric)
        count, seconds, curve = _best_curves(records, greater)
        series.append((_label(run, info), count, seconds, curve))
        rows.append(
            {
                "run": str(run.path),
                "search": f"{info.get('backend')}/{info.get('sampler')}, seed {info['seed']}",
                "spaces": ", ".join(Path(s).name for s in info.get("space_files", [])),
                "validation": f"{info['cv']}-fold" if info.get("cv") else "holdout",
                "trials": f"{len(done)} done, {sum(r.status == 'failed' for r in records)} failed",
                "search seconds": f"{seconds[-1]:.0f}" if seconds else "",
                "best single (val)": fmt(best.val_score) if best else "",
                "best single (test)": fmt(best.test_score) if best else "",
                "best single model": best.name if best else "",
                "best ensemble (test)": fmt(best_ens["test_score"]) if best_ens else "",
            }
        )
    columns = list(rows[0])
    table = (
        '<table id="comparison" class="sortable"><thead><tr>'
        + "".join(f'<th aria-sort="none">{esc(c)}</th>' for c in columns)
        + "</tr></thead><tbody>"
        + "".join(
            "<tr>" + "".join(f"<td>{esc(str(r[c]))}</td>" for c in columns) + "</tr>" for r in rows
        )
        + "</tbody></table>"
    )
    info = infos[0]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>AutoML comparison</title>
<style>{STYLE}</style></head><body>
<header><h1>AutoML comparison: {len(runs)} runs</h1>
<p class="sub">{esc(info["task"])} on {esc(str(info["data"]))} (target {esc(info["target"])},
sha256 {esc(info["data_sha256"][:12])}...), metric {esc(metric.name)}</p></header>
<main><section><h2>Runs</h2>{table}</section>
<section><h2>Best score as the searches went</h2>
{figure(_curves_svg(series, metric.name), "Best validation score by trials and by time", "curves")}
</section></main>
<footer>Written {esc(time.strftime("%Y-%m-%d %H:%M:%S"))}.</footer>
<script>{SCRIPT}</script></body></html>
"""
    path = Path(out)
    if path.is_dir():
        raise UserInputError(f"--out {path}: is a directory; expected an HTML file path")
    write_text_atomic(path, page)
    return str(path)
