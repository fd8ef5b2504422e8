"""`report.html`: one self-contained page (no network, no CDN) rebuilt from a run directory.

What a reader sees first: the best model and ensemble with their test scores, then the
sortable leaderboard, test diagnostics, the search's history, which families and parameters
mattered, learning curves, what the ensembles are made of, the best network and the run's
facts. Figures are SVG inlined as data URIs in <img> tags (isolated from the page: nothing in
them can run), and every string that came from a user (column names, paths, parameters) is
HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

import automl.report.plots as plots
from automl.ensemble.build import best_ensemble, load_ensembles, load_targets
from automl.io import verify, write_text_atomic
from automl.metrics import METRICS, Metric
from automl.report.assets import SCRIPT, STYLE
from automl.report.leaderboard import columns_of, fmt, write_leaderboard
from automl.run import RunDir, TrialRecord, load_predictions, load_trials, model_dirs, opened_study

LEARNING_CURVES = 6
esc = html.escape


def figure(svg: str | None, caption: str, name: str) -> str:
    if svg is None:
        return ""
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return (
        f'<figure class="plot" data-plot="{esc(name)}"><img alt="{esc(caption)}" '
        f'src="data:image/svg+xml;base64,{data}"><figcaption>{esc(caption)}</figcaption></figure>'
    )


Built = TypeVar("Built")


def _safe(build: Callable[[], Built], what: str) -> Built | None:
    """A figure that cannot be drawn is left out with a warning; the report still gets written."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - a plot must never cost the user the whole report
        warnings.warn(f"report: {what} left out ({type(exc).__name__}: {exc})", stacklevel=2)
        return None


def param_importances(run: RunDir, metric: Metric, min_trials: int = 6) -> dict[str, dict]:
    """fANOVA importance of hyperparameters per family (optuna's evaluator), top 8 each."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState, create_trial

    with opened_study(run) as study:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    out: dict[str, dict[str, float]] = {}
    for family in sorted({str(t.params["family"]) for t in trials if "family" in t.params}):
        own = [t for t in trials if t.params.get("family") == family]
        if len(own) < min_trials:
            continue
        sub = optuna.create_study(direction=metric.direction)
        prefix = f"{family}."
        for t in own:
            params = {k[len(prefix) :]: v for k, v in t.params.items() if k.startswith(prefix)}
            dists = {
                k[len(prefix) :]: d for k, d in t.distributions.items() if k.startswith(prefix)
            }
            sub.add_trial(create_trial(params=params, distributions=dists, value=t.value))
        varied = {
            k
            for k in sub.trials[0].params
            if len({json.dumps(t.params.get(k), default=str) for t in sub.trials}) > 1
        }
        if not varied:
            continue
        importance = get_param_importances(
            sub, evaluator=FanovaImportanceEvaluator(seed=0), params=sorted(varied)
        )
        out[family] = dict(list(importance.items())[:8])
    return out


def _history(directory: Path) -> dict[str, list[float]]:
    import csv

    folder = model_dirs(directory)[0]  # under cv, the first fold's curve
    if not (folder / "history.csv").exists():
        return {}
    rows = list(csv.DictReader(verify(folder, "history.csv").open(encoding="utf-8")))
    keys = [k for k in (rows[0] if rows else {}) if k != "epoch"]
    return {k: [float(r[k]) for r in rows if r[k] != ""] for k in keys}


def keras_layers(model_file: Path) -> list[dict[str, Any]]:
    """Layers of a saved .keras model from its config.json (no TensorFlow needed)."""
    with zipfile.ZipFile(model_file) as archive:
        config = json.loads(archive.read("config.json"))

    def histories(node: Any) -> list[str]:
        if isinstance(node, dict):
            if "keras_history" in node:
                return [node["keras_history"][0]]
            return [n for v in node.values() for n in histories(v)]
        if isinstance(node, list):
            return [n for v in node for n in histories(v)]
        return []

    layers = []
    for layer in config.get("config", {}).get("layers", []):
        cfg = layer.get("config", {})
        detail = ", ".join(
            f"{k} {cfg[k]}"
            for k in ("units", "filters", "kernel_size", "rate", "activation", "batch_shape")
            if cfg.get(k) not in (None, "linear")
        )
        layers.append(
            {
                "name": layer.get("name", cfg.get("name", "?")),
                "class": layer.get("class_name", "?"),
                "inbound": histories(layer.get("inbound_nodes", [])),
                "detail": detail,
            }
        )
    return layers


def _best_network(run: RunDir, records: list[TrialRecord], greater: bool) -> tuple[str, list]:
    keras_trials = [r for r in records if r.status == "complete" and r.n_params is not None]
    keras_trials.sort(key=lambda r: r.score, reverse=greater)
    for record in keras_trials:
        folder = model_dirs(run.trial_dir(record.number))[0]
        if (folder / "model.keras").exists():
            return record.name, keras_layers(verify(folder, "model.keras"))
    return "", []


def _diagnostics(run: RunDir, info: dict, best: dict[str, Any] | None) -> tuple[str, str]:
    if best is None:
        return "", ""
    y_val, y_test = load_targets(run)
    # Without a test part (--test-size 0), the validation predictions: out-of-fold under cv.
    part, y = ("test", y_test) if len(y_test) else ("val", y_val)
    if best["family"] == "ensemble":
        name = best["name"].removeprefix("ensemble-")
        pred = np.load(verify(run.ensemble_dir(name), f"{part}_pred.npy"), allow_pickle=False)
    else:
        pred = load_predictions(run, int(best["name"][1:5]), part)
    title = f"{'test part' if part == 'test' else 'validation rows'}, {best['name']}"
    y_test = y
    if info["task"] == "regression":
        return figure(plots.residuals(y_test, pred), f"Residuals on the {title}", "residuals"), ""
    classes = info["classes"]
    return (
        figure(plots.confusion(y_test, pred, classes), f"Confusion matrix, {title}", "confusion"),
        figure(plots.roc(y_test, pred, classes), f"ROC curve, {title}", "roc"),
    )


def _leaderboard_table(rows: list[dict[str, Any]]) -> str:
    hidden = {"metric", "error", "params"}
    columns = [c for c in columns_of(rows) if c not in hidden] + ["params", "error"]
    head = "".join(
        f'<th data-col="{esc(c)}" aria-sort="none" title="click to sort">{esc(c)}</th>'
        for c in columns
    )
    body = []
    for r in rows:
        cells = []
        for c in columns:
            text = fmt(r.get(c))
            if c == "params" and text.startswith("{"):
                text = ", ".join(f"{k}={v}" for k, v in json.loads(text).items())
            cls = ' class="num"' if isinstance(r.get(c), int | float) else ""
            if c == "params" and len(text) > 90:
                cells.append(f'<td title="{esc(text)}">{esc(text[:90])}&hellip;</td>')
            else:
                cells.append(f"<td{cls}>{esc(text)}</td>")
        status = esc(str(r.get("status", "")))
        body.append(f'<tr class="{status} {esc(str(r.get("family")))}">{"".join(cells)}</tr>')
    return (
        f'<table id="leaderboard" class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _facts(run: RunDir, info: dict, records: list[TrialRecord], metric: Metric) -> dict:
    with opened_study(run) as study:
        attrs = study.user_attrs
    statuses = ("complete", "failed", "pruned", "interrupted")
    counts = {s: sum(r.status == s for r in records) for s in statuses}
    budget = attrs.get("time_budget")
    spent = attrs.get("spent_seconds", 0.0)
    columns = info["schema"]["numeric"] + info["schema"]["categorical"]
    return {
        "data": info["data"],
        "data sha256": info["data_sha256"],
        "target": info["target"],
        "task": info["task"],
        "metric": f"{metric.name} ({metric.direction})",
        "rows": ", ".join(f"{k} {v}" for k, v in info.get("rows", {}).items()),
        "validation": f"{info['cv']}-fold cross-fitting" if info.get("cv") else "holdout split",
        "scores": _scores_measured_on(run, info, records),
        "features": f"{len(info['schema']['numeric'])} numeric, "
        f"{len(info['schema']['categorical'])} categorical"
        + (f", dates {', '.join(info['schema']['dates'])}" if info["schema"].get("dates") else ""),
        "columns": ", ".join(columns[:60]) + (" ..." if len(columns) > 60 else ""),
        "search": f"{info.get('backend')}/{info.get('sampler')}, seed {info['seed']}",
        "executor": f"{attrs.get('executor', 'local')}, "
        f"{attrs.get('workers', 1)} worker{'s' if attrs.get('workers', 1) != 1 else ''}",
        "budget": f"{spent:.0f} s used of {budget:.0f} s given"
        if budget
        else f"{spent:.0f} s used (no time budget; trial count)",
        "trials": f"{counts['complete']} completed, {counts['failed']} failed, "
        f"{counts['pruned']} pruned, {counts['interrupted']} interrupted and re-run",
        "spaces": ", ".join(info.get("space_files", []))
        + (f" ({info['space_choice']})" if info.get("space_choice", "given") != "given" else ""),
        "storage": info["storage"] or "study.db in the run directory",
        "command": " ".join(info.get("command") or []),
        "created": info.get("created", ""),
        "versions": ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items()),
        "reproducibility": "a local run with the same seed proposes the same configurations; "
        "wall-clock budgets and thread timing can change how many trials fit",
    }


def _scores_measured_on(run: RunDir, info: dict, records: list[TrialRecord]) -> str:
    """What each score was measured on, and which models the refit replaced."""
    validation = (
        "validation: out-of-fold (each training row by a model fit without it)"
        if info.get("cv")
        else "validation: the holdout part of the training rows"
    )
    if not info.get("rows", {}).get("test"):
        test = "test: none (test_size 0)"
    elif info.get("test_data"):
        test = f"test: the rows of {info['test_data']}, which no model saw"
    else:
        test = "test: the split-off test part, which no search-time model saw"
    refit = [r.number for r in records if run.has_refit(r.number)]
    if refit:
        test += (
            f"; every test score is of the search-time models, measured before the refit of "
            f"trial(s) {', '.join(map(str, refit))} on every row"
            + ("" if info.get("test_data") else " (test part included)")
        )
    return f"{validation}; {test}"


def _cards(rows: list[dict], ensembles: list[dict], metric: Metric, facts: dict) -> str:
    singles = [r for r in rows if r["family"] != "ensemble" and r["status"] == "complete"]
    cards = []
    if rows and rows[0]["status"] == "complete":
        top = rows[0]
        cards.append(
            ("Best by validation", top["name"], f"test {metric.name} {fmt(top['test_score'])}")
        )
    if singles:
        s = singles[0]
        cards.append(("Best single model", s["name"], f"test {metric.name} {fmt(s['test_score'])}"))
    if ensembles:
        e = best_ensemble(ensembles, metric) or ensembles[0]
        gain = e.get("gain", {}).get("test")
        cards.append(
            (
                "Best ensemble",
                e["name"],
                f"test {metric.name} {fmt(e['test_score'])}"
                + (f", gain {gain:+.4f}" if gain is not None else ""),
            )
        )
    cards.append(("Trials", facts["trials"].split(",")[0], facts["budget"]))
    return "".join(
        f'<div class="card"><div class="label">{esc(a)}</div><div class="value">{esc(b)}</div>'
        f'<div class="sub">{esc(c)}</div></div>'
        for a, b, c in cards
    )


def _ensemble_section(ensembles: list[dict], metric: Metric) -> str:
    if not ensembles:
        return "<p>No ensemble yet: run <code>automl ensemble RUN_DIR</code>.</p>"
    head = (
        "<tr><th>ensemble</th><th>method</th><th>validation (fit on)</th>"
        "<th>validation (cross-validated)</th><th>test</th>"
        "<th>gain (val)</th><th>held-out gain</th><th>gain (test)</th><th>members</th>"
        "<th>fit s</th></tr>"
    )
    body = ""
    for e in ensembles:
        gain = e.get("gain", {})
        split = e.get("held_out", e.get("split_half", {}))  # the name before 5 folds
        body += (
            f"<tr><td>{esc(e['name'])}</td><td>{esc(e['method'])}</td>"
            f'<td class="num">{fmt(e["val_score"])}</td>'
            f'<td class="num">{fmt(e.get("honest_val_score"))}</td>'
            f'<td class="num">{fmt(e["test_score"])}</td>'
            f'<td class="num">{fmt(gain.get("val"))}</td>'
            f'<td class="num">{fmt(split.get("mean_gain"))}</td>'
            f'<td class="num">{fmt(gain.get("test"))}</td>'
            f'<td class="num">{len(e["members"])}</td>'
            f'<td class="num">{fmt(e.get("fit_seconds"))}</td></tr>'
        )
    best = best_ensemble(ensembles, metric) or ensembles[0]
    corr = best.get("error_correlation", {})
    parts = [
        f'<table class="compact">{head}{body}</table>',
        f'<p class="note">{esc(best.get("note", ""))}</p>',
        '<div class="grid">',
        figure(plots.ensemble_gains(ensembles), "Gain over the best single model", "gains"),
        figure(
            plots.ensemble_weights(best["members"], f"weights of {best['name']}"),
            f"Member weights, {best['name']}",
            "weights",
        ),
        figure(
            _safe(
                lambda: plots.correlation_heatmap(corr.get("members", []), corr.get("matrix", [])),
                "error correlation",
            ),
            f"Correlation of member errors on validation, {best['name']}",
            "correlation",
        ),
        "</div>",
    ]
    return "".join(parts)


def write_report(run: RunDir, out: Path | None = None) -> str:
    """Write leaderboard.csv/.md and a self-contained report.html into `out` (default the run
    directory; another folder for a run that cannot be written); return the HTML's path."""
    started = time.perf_counter()
    info = run.info()
    metric = METRICS[info["metric"]]
    greater = metric.greater_is_better
    records = load_trials(run)
    rows = write_leaderboard(run, records, out)
    ensembles = load_ensembles(run)
    facts = _facts(run, info, records, metric)
    best = rows[0] if rows and rows[0]["status"] == "complete" else None

    confusion_or_residuals, roc_figure = _safe(
        lambda: _diagnostics(run, info, best), "test diagnostics"
    ) or ("", "")
    importance = _safe(lambda: param_importances(run, metric), "importances") or {}
    top_family = max(importance, key=lambda f: sum(r.family == f for r in records), default=None)
    keras_done = sorted(
        (r for r in records if r.status == "complete" and r.n_params is not None),
        key=lambda r: r.score,
        reverse=greater,
    )[:LEARNING_CURVES]
    curves = [(r.name, _history(run.trial_dir(r.number))) for r in keras_done]
    network_name, layers = _safe(lambda: _best_network(run, records, greater), "network") or (
        "",
        [],
    )
    sections = [
        ("leaderboard", "Leaderboard", _leaderboard_table(rows)),
        (
            "diagnostics",
            "Test diagnostics",
            f'<div class="grid">{confusion_or_residuals}{roc_figure}</div>'
            if confusion_or_residuals or roc_figure
            else "<p>No completed trial yet.</p>",
        ),
        (
            "history",
            "Optimization history",
            figure(
                _safe(lambda: plots.history(records, metric.name, greater), "history"),
                "Validation score of each trial and the best so far, per family",
                "history",
            )
            + figure(
                _safe(lambda: plots.by_family(records, metric.name), "families"),
                "Validation scores by family",
                "families",
            ),
        ),
        (
            "importance",
            "Hyperparameter importance",
            (
                figure(
                    _safe(lambda: plots.importances(importance), "importances"),
                    "fANOVA importance of each family's hyperparameters (optuna)",
                    "importance",
                )
                + figure(
                    _safe(
                        lambda: plots.score_vs_params(
                            records, list(importance[top_family]), metric.name, top_family
                        ),
                        "score vs parameters",
                    ),
                    f"Validation score against the most important parameters of {top_family}",
                    "score-vs-params",
                )
            )
            if top_family
            else "<p>Too few trials per family to estimate importance (6 needed).</p>",
        ),
        (
            "curves",
            "Learning curves",
            figure(
                _safe(lambda: plots.learning_curves(curves), "learning curves"),
                f"Loss per epoch of the {len(curves)} best Keras trials",
                "learning-curves",
            )
            if curves
            else "<p>No Keras trial in this run.</p>",
        ),
        ("ensembles", "Ensembles", _ensemble_section(ensembles, metric)),
        (
            "network",
            "Best network",
            figure(
                _safe(lambda: plots.network(layers), "network diagram"),
                f"Layers of {network_name}",
                "network",
            )
            if layers
            else "<p>No Keras model was saved in this run.</p>",
        ),
        (
            "facts",
            "Run facts",
            '<table class="facts">'
            + "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts.items())
            + "</table>",
        ),
    ]
    nav = "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title, _ in sections)
    content = "".join(
        f'<section id="{key}"><h2>{esc(title)}</h2>{body}</section>'
        for key, title, body in sections
    )
    name = run.path.name
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>AutoML report: {esc(name)}</title><style>{STYLE}</style></head><body>
<header><h1>AutoML report: {esc(name)}</h1>
<p class="sub">{esc(info["task"])} on {esc(str(info["data"]))} (target {esc(info["target"])}),
metric {esc(metric.name)}, {esc(facts["budget"])}</p>
<div class="cards">{_cards(rows, ensembles, metric, facts)}</div>
<nav>{nav}</nav></header>
<main>{content}</main>
<footer>Written {esc(time.strftime("%Y-%m-%d %H:%M:%S"))} in
{time.perf_counter() - started:.1f} s from {esc(str(run.path))}.</footer>
<script>{SCRIPT}</script>
</body></html>
"""
    path = (out or run.path) / "report.html"
    write_text_atomic(path, page)
    return str(path)
