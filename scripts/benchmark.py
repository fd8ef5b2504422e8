#!/usr/bin/env python
"""Accuracy at a fixed budget on tabular data (../shared/BENCHMARK.md), ours against baselines.

    python scripts/benchmark.py --budget 120 ../shared/data/credit_g.csv.gz:class \
        ../shared/data/wine_quality.csv.gz:quality:regression
    python scripts/benchmark.py --ensemble-timing   # fit seconds, 10-200 members x 10k-100k rows
    python scripts/benchmark.py --executors --budget 120   # overhead per trial; Ray scaling
    python scripts/benchmark.py --images ../shared/data/fashion_mnist_train.npz  # 5 and 30 min
    python scripts/benchmark.py --text ../shared/data/sms_spam.csv.gz:label --text-budget 300
    python scripts/benchmark.py --memory 50   # RSS over 50 consecutive Keras trials
    python scripts/benchmark.py --scaling     # search cost vs rows/columns; predict on 1M rows

Each dataset is split once, 80/20 (stratified for classes, seed 0). Every system sees only the
train part; the test part scores them all. Systems: ours with ensemble (what `automl predict`
uses), ours best single model, every recipe in ensembles/*.yaml scored on the same test part,
LightGBM with default parameters, random forest with 500 trees, and with --peers AutoGluon
best_quality and FLAML (scripts/peers.py, in their own virtualenv). Each runs in a fresh process
so its peak memory is its own. Results go to benchmarks/<name>.csv and benchmarks/<name>.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from automl.data import make_target, read_table, split_target  # noqa: E402
from automl.metrics import EXTRA_METRICS, get_metric  # noqa: E402


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise SystemExit(f"dataset {spec!r}: expected PATH:TARGET or PATH:TARGET:TASK")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def peak_mb() -> float:
    """This process's peak memory or its largest finished child's (the trials' worker
    processes), whichever is larger: what the peers' figures count too."""
    return max(
        resource.getrusage(who).ru_maxrss / 1024
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )


def trivial_prediction(task: str, y_train: np.ndarray, n_test: int, n_classes: int) -> np.ndarray:
    """What knows nothing but the training target: the class shares, or the mean."""
    if task == "regression":
        return np.full(n_test, float(np.mean(y_train)))
    shares = np.bincount(np.asarray(y_train, dtype=int), minlength=n_classes) / len(y_train)
    return np.tile(shares, (n_test, 1))


AGREEMENT = 0.99  # see check_beats_trivial


def check_beats_trivial(dataset: str, rows: list[dict[str, Any]], trivial: float,
                        greater_is_better: bool) -> None:  # fmt: skip
    """Every system must beat the trivial prediction on test (the class shares, the mean); one
    that does not stops the run: a harness bug (a label mix-up, a peer given the wrong
    column) until shown otherwise. Shown otherwise: a peer whose own `predict` names the class
    its saved probabilities rank first on at least `AGREEMENT` of the test rows gave that
    score itself; its row stays, and says so."""
    for row in rows:
        better = row["test_score"] > trivial if greater_is_better else row["test_score"] < trivial
        agreement = row.get("own_predict_agreement")
        if not better and agreement is not None and agreement >= AGREEMENT:
            row["detail"] = (
                f"{row['detail']}; below the trivial {trivial:.4f}, its own answer: its "
                f"predict() agrees with these probabilities on {agreement:.1%} of test rows"
            )
        elif not better:
            raise SystemExit(
                f"{dataset}: {row['system']} scored {row['metric']} {row['test_score']:.4f} on "
                f"test, no better than the class shares or the mean ({trivial:.4f}): a harness "
                "bug until shown otherwise"
            )


def run_measured(command: list[str], env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """Run `command`; return its exit code, its output's last lines, and the peak of the
    summed resident memory of it and every process under it (MB, sampled every 0.1 s): what
    a machine must hold for the job, whatever the number of worker processes."""
    import threading

    import psutil

    from automl.search.memory import tree_mb

    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        peak = 0.0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                try:
                    peak = max(peak, tree_mb(process.pid))
                except psutil.Error:  # the process has ended
                    return
                stop.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        stop.set()
        sampler.join()
        log.seek(0)
        tail = "\n".join(log.read().strip().splitlines()[-5:])
    return code, tail, peak


def run_ours(
    train: str,
    test: str,
    target: str,
    task: str | None,
    budget: float,
    workdir: str,
    threads: int,
    cv: int | str = "auto",
    classes: list | None = None,
    tables: bool = True,
    search_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The job as a user runs it: `automl search`, `automl ensemble`, `automl predict`, three
    processes, timed from before the first starts to the prediction file; the tables' other
    figures (before refit, best single, every recipe) come after, untimed."""
    automl = [sys.executable, "-m", "automl"]
    predictions = str(Path(workdir).parent / "ours_predictions.csv")
    steps = {
        "search": [*automl, "search", "--data", train, "--test-data", test, "--target", target,
                   "--out", workdir, "--time-budget", str(budget), "--threads", str(threads),
                   "--cv", str(cv), *(["--task", task] if task else []), *search_args],
        "ensembles+refit": [*automl, "ensemble", workdir],
        "predict": [*automl, "predict", workdir, "--data", test, "--out", predictions],
    }  # fmt: skip
    parts: dict[str, float] = {}
    peak = 0.0
    start = time.time()
    for step, command in steps.items():
        began = time.time()
        code, tail, step_peak = run_measured(command)
        parts[step] = round(time.time() - began, 1)
        peak = max(peak, step_peak)
        if code != 0:
            raise RuntimeError(f"automl {step} failed ({code}): {tail}")
    seconds = time.time() - start
    frame = pd.read_csv(predictions)
    if task == "regression":
        best = frame["prediction"].to_numpy(float)
    else:  # the probability columns, in the classes' order (not given: the file's, our Target's)
        columns = (
            [f"proba_{c}" for c in classes]
            if classes
            else [c for c in frame.columns if c.startswith("proba_")]
        )
        best = frame[columns].to_numpy(float)

    from automl.ensemble.build import (
        Recipe,
        build_ensemble,
        load_recipe,
    )
    from automl.predict import load_predictor
    from automl.run import RunDir, load_trials

    records = load_trials(RunDir(workdir))
    out: dict[str, Any] = {
        "best": best,
        "seconds": seconds,
        "parts": parts,
        "peak_mb": peak,
        "trials": sum(r.status in ("complete", "failed") for r in records),
        "failed": sum(r.status == "failed" for r in records),
        "pruned": sum(r.status == "pruned" for r in records),
    }
    test_frame = read_table(test)
    for which, refit, key in (("best", True, "best_name_only"),
                              ("best", False, "best_before_refit"),
                              ("best_single", False, "best_single")):  # fmt: skip
        predictor = load_predictor(workdir, which=which, refit=refit)
        out[f"{key}_name"] = predictor.name
        if key != "best_name_only":
            out[key] = (predictor.predict(test_frame) if predictor.task == "regression"
                        else predictor.predict_proba(test_frame))  # fmt: skip
    out["best_name"] = out.pop("best_name_only_name")
    if not tables:
        return out
    # Every recipe in ensembles/*.yaml on the same run, for the recipe table (not timed).
    # And the optimized recipe without its Nelder-Mead refinement, to show what that changed.
    recipes = [load_recipe(p) for p in sorted((ROOT / "ensembles").glob("*.yaml"))]
    recipes.append(Recipe("optimized", options={"nelder_mead_evaluations": 0}, name=NO_NM))
    ensembles = {r.label: build_ensemble(RunDir(workdir), r) for r in recipes}
    out["ensembles"] = {m: e["test_score"] for m, e in ensembles.items()}
    out["held_out"] = {m: e["held_out"]["mean_gain"] for m, e in ensembles.items()}
    refined = ensembles["optimized"]["nelder_mead"] or {}
    out["refinement"] = {
        "improved": refined.get("improved"),
        "evaluations": refined.get("evaluations"),
        "val_error": [refined.get("start_error"), refined.get("end_error")],
    }
    out["cv"] = RunDir(workdir).info()["cv"]
    return out


def _encode_for_trees(x_train: pd.DataFrame, x_test: pd.DataFrame, native: bool):  # noqa: ANN202
    x_train, x_test = x_train.copy(), x_test.copy()
    for column in x_train.columns:
        if not pd.api.types.is_numeric_dtype(x_train[column]):
            categories = pd.Categorical(x_train[column].astype("object")).categories
            x_train[column] = pd.Categorical(x_train[column], categories=categories)
            x_test[column] = pd.Categorical(x_test[column], categories=categories)
            if not native:
                x_train[column] = x_train[column].cat.codes.replace(-1, np.nan)
                x_test[column] = x_test[column].cat.codes.replace(-1, np.nan)
    return x_train, x_test


def run_baseline(
    name: str, train: str, test: str, target: str, task: str, classes: list, threads: int
) -> dict[str, Any]:
    import lightgbm
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    from automl.data import Target

    start = time.time()
    tgt = Target(task=task, classes=classes)
    x_train, y_train = split_target(read_table(train), target, train)
    x_test, _ = split_target(read_table(test), target, test)
    x_train, x_test = _encode_for_trees(x_train, x_test, native=name == "lightgbm_default")
    y = tgt.encode(y_train) if task != "regression" else y_train.to_numpy(float)
    regression = task == "regression"
    if name == "lightgbm_default":
        model = (lightgbm.LGBMRegressor if regression else lightgbm.LGBMClassifier)(
            n_jobs=threads, verbosity=-1, random_state=0
        )
    else:
        model = (RandomForestRegressor if regression else RandomForestClassifier)(
            n_estimators=500, n_jobs=threads, random_state=0
        )
    model.fit(x_train, y)
    pred = model.predict(x_test) if regression else model.predict_proba(x_test)
    return {"best": pred, "seconds": time.time() - start, "peak_mb": peak_mb(), "trials": 1}


PEERS = ("autogluon", "flaml")


def run_peer(
    system: str, python: str, train: str, test: str, target: str, task: str, classes: list,
    budget: float, threads: int, workdir: Path,
) -> dict[str, Any]:  # fmt: skip
    """A peer in its own virtualenv (scripts/peers.py), on the same files, budget and cores."""
    out = workdir / f"{system}_pred.npy"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    command = [python, str(ROOT / "scripts" / "peers.py"), system, train, test, target, task,
               json.dumps([str(c) for c in classes]), str(budget), str(threads), str(out),
               str(workdir / system)]  # fmt: skip
    start = time.time()  # before its process starts, as ours
    code, tail, peak = run_measured(command, env)
    seconds = time.time() - start
    if code != 0:
        print(f"  {system} failed: {tail.replace(chr(10), ' | ')}", flush=True)
        return {"best": None, "seconds": seconds, "peak_mb": float("nan")}
    facts = json.loads(Path(f"{out}.json").read_text())
    return {
        "best": np.load(out),
        "seconds": seconds,
        "fit_seconds": facts["seconds"],  # its own clock, after its imports
        "peak_mb": peak,
        "detail": facts["detail"],
        "own_predict_agreement": facts.get("own_predict_agreement"),
    }


def in_fresh_process(fn: Any, *args: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def benchmark_dataset(
    spec: str,
    budget: float,
    threads: int,
    workroot: Path,
    cv: int | str = "auto",
    peers_python: str | None = None,
    half_budget: bool = False,
    split_seed: int = 0,
    search_args: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    from sklearn.model_selection import train_test_split

    path, target, task = parse_spec(spec)
    name = Path(path).name.split(".")[0]
    frame = read_table(path)
    features, y = split_target(frame, target, path)
    tgt = make_target(y, task, path, target)
    strata = y.map(str) if tgt.task != "regression" else None
    train, test = train_test_split(
        frame.loc[y.index], test_size=0.2, random_state=split_seed, stratify=strata
    )
    workdir = workroot / name
    workdir.mkdir(parents=True, exist_ok=True)
    train_path, test_path = str(workdir / "train.csv"), str(workdir / "test.csv")
    train.to_csv(train_path, index=False)
    test.to_csv(test_path, index=False)
    y_test = tgt.encode(test[target]) if tgt.task != "regression" else test[target].to_numpy(float)
    metric = get_metric(None, tgt.task)
    extras = [get_metric(m, tgt.task) for m in EXTRA_METRICS[tgt.task]]

    results = {}
    print(
        f"[{name}] {len(train)} train / {len(test)} test rows, {tgt.task}, metric {metric.name}",
        flush=True,
    )
    ours = in_fresh_process(
        run_ours,
        train_path,
        test_path,
        target,
        tgt.task,
        budget,
        str(workdir / "run"),
        threads,
        cv,
        tgt.classes,
        True,
        search_args,
    )
    results["ours_ensemble"] = ours | {"detail": f"{ours['best_name']}; {ours['parts']}"}
    results["ours_before_refit"] = {
        **ours,
        "best": ours["best_before_refit"],
        "detail": f"{ours['best_before_refit_name']} (search-time models; not timed)",
    }
    results["ours_best_single"] = {
        **ours,
        "best": ours["best_single"],
        "detail": ours["best_single_name"],
    }
    if half_budget:  # the same job at half the budget, for the rank table
        half_dir = str(workdir / "run_half")
        half = in_fresh_process(run_ours, train_path, test_path, target, tgt.task, budget / 2,
                                half_dir, threads, cv, tgt.classes, False, search_args)  # fmt: skip
        results["ours_half"] = half | {"detail": f"{half['best_name']}; {half['parts']}"}
    for baseline in ("lightgbm_default", "random_forest_500"):
        results[baseline] = in_fresh_process(
            run_baseline, baseline, train_path, test_path, target, tgt.task, tgt.classes, threads
        )
    for peer in PEERS if peers_python else ():
        results[peer] = run_peer(peer, peers_python, train_path, test_path, target, tgt.task,
                                 tgt.classes, budget, threads, workdir)  # fmt: skip
    rows = []
    for system, result in results.items():
        if result["best"] is None:  # a peer that failed on this dataset
            continue
        row = {
            "dataset": name,
            "task": tgt.task,
            "system": system,
            "metric": metric.name,
            "test_score": metric(y_test, np.asarray(result["best"])),
            **{f"test_{m.name}": m(y_test, np.asarray(result["best"])) for m in extras},
            "wall_seconds": round(result["seconds"], 1),
            "trials": result.get("trials"),
            "pruned": result.get("pruned"),  # stopped early by ASHA or fold halving, or skipped
            "peak_mb": round(result["peak_mb"]) if np.isfinite(result["peak_mb"]) else None,
            "detail": result.get("detail", ""),
            "own_predict_agreement": result.get("own_predict_agreement"),
        }
        rows.append(row)
        print(
            f"  {system:<18} {metric.name} {row['test_score']:.4f}  ({row['wall_seconds']}s, "
            f"{row['trials']} trials, {row['peak_mb']} MB) {row['detail']}",
            flush=True,
        )
    y_train = tgt.encode(train[target])
    trivial = trivial_prediction(tgt.task, y_train, len(y_test), len(tgt.classes or []))
    check_beats_trivial(name, rows, metric(y_test, trivial), metric.greater_is_better)
    for method, score in ours["ensembles"].items():
        rows.append(
            {
                "dataset": name,
                "task": tgt.task,
                "system": f"ours_ens_{method}",
                "metric": metric.name,
                "test_score": score,
                "wall_seconds": None,
                "trials": ours["trials"],
                "peak_mb": None,
                "detail": f"fit on {'out-of-fold' if ours['cv'] else 'validation'} predictions; "
                f"held-out gain {ours['held_out'][method]}"
                + (
                    f"; refinement {json.dumps(ours['refinement'])}"
                    if method == "optimized"
                    else ""
                ),
            }
        )
    return rows


NO_NM = "optimized-no-nm"  # the optimized recipe with Nelder-Mead's refinement off


def _choice(rows: dict[str, Any]) -> str:
    """The model the timed job predicted with: the first part of its row's detail
    (`ensemble-stacking (refit on every row); {...}`)."""
    job = rows.get("ours_ensemble")
    return str(job.detail).split(";", 1)[0].split(" (", 1)[0] if job is not None else "-"


def refinement_table(table: pd.DataFrame) -> list[str]:
    """Per dataset, what Nelder-Mead's refinement did to the optimized ensemble: its
    validation error before and after, and the test score with and without it; and the
    model the job itself chose (`best`: ensembles by their honest 5-fold score, single trials
    by validation), as its prediction's row names it."""
    lines = [
        "",
        "Nelder-Mead's refinement of the optimized ensemble (validation: the metric as an error,"
        " lower is better, on the rows the weights were fit on; test: rows nothing saw):",
        "",
        "| dataset | refined (evaluations) | validation error before -> after | test without |"
        " test with | the job's choice |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, group in table.groupby("dataset", sort=False):
        rows = dict(zip(group.system, group.itertuples(), strict=True))
        if "ours_ens_optimized" not in rows or f"ours_ens_{NO_NM}" not in rows:
            continue
        detail = str(rows["ours_ens_optimized"].detail)
        info = json.loads(detail.split("; refinement ", 1)[1]) if "; refinement " in detail else {}
        before, after = info.get("val_error") or [None, None]
        refined = "yes" if info.get("improved") else "no"
        lines.append(
            f"| {dataset} | {refined} ({info.get('evaluations')}) | "
            + (f"{before:.6g} -> {after:.6g}" if before is not None else "-")
            + f" | {rows[f'ours_ens_{NO_NM}'].test_score:.4f} | "
            f"{rows['ours_ens_optimized'].test_score:.4f} | {_choice(rows)} |"
        )
    return lines


def ensemble_table(table: pd.DataFrame) -> list[str]:
    """Every ensemble recipe beside the best single model on test, and how often it wins."""
    methods = [
        s.removeprefix("ours_ens_") for s in table.system.unique() if s.startswith("ours_ens_")
    ]
    lines = [
        "",
        "Ensemble recipes on the same test split (each fit on validation predictions), "
        "next to the best single model by validation:",
        "",
        "| dataset | best single | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    wins = dict.fromkeys(methods, 0)
    datasets = 0
    for dataset, group in table.groupby("dataset", sort=False):
        score = dict(zip(group.system, group.test_score, strict=True))
        metric = get_metric(group.metric.iloc[0], group.task.iloc[0])
        single = score["ours_best_single"]
        cells = []
        for m in methods:
            value = score[f"ours_ens_{m}"]
            won = metric.better(value, single)
            wins[m] += won
            cells.append(f"{value:.4f}{' *' if won else ''}")
        datasets += 1
        lines.append(f"| {dataset} | {single:.4f} | " + " | ".join(cells) + " |")
    lines.append(
        f"| beats best single | of {datasets} | " + " | ".join(str(wins[m]) for m in methods) + " |"
    )
    lines += ["", "`*`: better than the best single model on test."]
    return lines


def _synthetic_members(members: int, rows: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Binary validation predictions: informative logits plus member-specific noise. The cost
    depends on the array sizes and the optimizer, not on where the numbers came from."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=rows)
    signal = (2 * y - 1) * 1.0 + rng.normal(size=rows)
    preds = []
    for i in range(members):
        logits = signal * rng.uniform(0.5, 2.0) + rng.normal(scale=0.5 + i / members, size=rows)
        p1 = 1 / (1 + np.exp(-logits))
        preds.append(np.column_stack([1 - p1, p1]))
    return preds, y


def _commit() -> str:
    """The commit measured (with `+changes` when the tree differs from it): a results file
    names what it measured."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    head = git("rev-parse", "--short", "HEAD").strip()
    dirty = git("status", "--porcelain", "automl", "scripts", "ensembles", "search_spaces")
    return f"{head}{'+changes' if dirty.strip() else ''}"


def _time_recipes(
    preds: list[np.ndarray], y: np.ndarray, repeats: int = 1
) -> list[tuple[Any, ...]]:
    """Each bundled recipe on both objectives: the whole `fit_ensemble` (the fit, the honest
    5-fold score, the held-out gain, leave-one-out effects) as `build_ensemble` runs it,
    and the fit alone, the median of `repeats` runs; the scores and Nelder-Mead's
    evaluations."""
    from automl.ensemble.build import fit_ensemble, load_recipe
    from automl.metrics import METRICS

    names = [f"m{i}" for i in range(len(preds))]
    test = ([p[:1] for p in preds], y[:1])  # the test part's cost is predicting, not measured
    out = []
    for path in sorted((ROOT / "ensembles").glob("*.yaml")):
        recipe = load_recipe(path)
        for metric_name in ("log_loss", "roc_auc"):
            wholes, fits = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                fitted = fit_ensemble(recipe, METRICS[metric_name], names, (preds, y), test)
                wholes.append(time.perf_counter() - start)
                fits.append(fitted.fit_seconds)
            whole = float(np.median(wholes))
            refined = getattr(fitted.ensembler, "nelder_mead_", None)
            out.append((recipe.label, metric_name, whole, float(np.median(fits)), fitted.val_score,
                         fitted.honest_val_score,
                         refined.evaluations if refined is not None else None))  # fmt: skip
            print(f"{len(preds)} x {len(y)} | {out[-1]}", flush=True)
    return out


def ensemble_timing(
    grid: tuple[tuple[int, int], ...] = ((10, 10_000), (50, 10_000), (200, 10_000),
                                         (50, 100_000)),
    seed: int = 0,
) -> str:  # fmt: skip
    """Seconds to build every recipe in ensembles/ on members x rows binary validation
    predictions (all members in the pool: the recipes' top_k is for run directories): the
    whole build and the fit alone, and the scores each reaches."""
    lines = [
        "# Ensemble build time: members x validation rows, binary, every recipe",
        "",
        f"Command: `python scripts/benchmark.py --ensemble-timing` on {_commit()}, 2 cores.",
        "Synthetic members (informative logits plus member-specific noise), seed 0. *Whole*:",
        "everything `build_ensemble` computes (`fit_ensemble`: the fit, the honest 5-fold",
        "score, the held-out gain on those folds, leave-one-out effects), reading and writing",
        "files aside; *fit*: the fit alone. Validation: the score on the rows fitted; honest:",
        "each row predicted by an ensemble fit without it. NM: Nelder-Mead's evaluations of the",
        "metric in the fit. Seconds: the median of 3 runs up to 50 x 10,000, one run above.",
        "",
        "| members | rows | recipe | metric | whole s | fit s | validation | honest | NM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for members, rows in grid:
        preds, y = _synthetic_members(members, rows, seed)
        repeats = 3 if members * rows <= 500_000 else 1  # the bar's size and below: a median
        for label, metric_name, whole, fit, score, honest, nm in _time_recipes(preds, y, repeats):
            lines.append(
                f"| {members} | {rows} | {label} | {metric_name} | {whole:.2f} | {fit:.2f} | "
                f"{score:.6f} | {honest:.6f} | {nm if nm is not None else '-'} |"
            )
    return "\n".join(lines) + "\n"


def _per_trial(trials: list[Any]) -> float:
    """Seconds per trial from the first start to the last completion."""
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    return (max(ends) - min(starts)).total_seconds() / len(trials)


def executor_overhead(n_trials: int = 50, workdir: Path | None = None) -> list[str]:
    """Seconds per trial of a bare optuna loop, the local executor and the Ray executor, all
    running the same trivial objective (the class-prior model on blood-transfusion)."""
    import optuna
    from sklearn.dummy import DummyClassifier

    from automl.data import load_dataset
    from automl.metrics import METRICS
    from automl.run import STUDY_NAME
    from automl.search.loop import run_search

    data_path = str(ROOT.parent / "shared" / "data" / "blood_transfusion.csv.gz")
    data = load_dataset(data_path, "Class")
    auc = METRICS["roc_auc"]
    space = ROOT / "search_spaces" / "dummy.yaml"
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: Any) -> float:
        model = DummyClassifier(
            strategy=trial.suggest_categorical("strategy", ["prior", "uniform", "stratified"])
        ).fit(data.x_fit, data.y_fit)
        return auc(data.y_val, model.predict_proba(data.x_val))

    rows = []
    bare = optuna.create_study(storage=f"sqlite:///{workdir / 'bare.db'}", direction="maximize")
    start = time.time()
    bare.optimize(objective, n_trials=n_trials)
    rows.append(("bare optuna loop (SQLite)", _per_trial(bare.trials), time.time() - start, 0.0))
    for executor, workers in (("local", 1), ("ray", 1), ("ray", 2)):
        out = workdir / f"{executor}-{workers}"
        start = time.time()
        run_search(
            data=data_path, target="Class", out=out, spaces=[space], trials=n_trials,
            executor=executor, workers=workers, threads=1, progress=lambda s: None,
        )  # fmt: skip
        wall = time.time() - start
        trials = optuna.load_study(
            study_name=STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}"
        ).trials
        per_trial = _per_trial(trials)
        rows.append(
            (f"{executor}, {workers} worker(s)", per_trial, wall, wall - per_trial * n_trials)
        )
    base = rows[0][1]
    lines = [
        f"# Executor overhead: {n_trials} trials of a trivial objective (class prior, blood)",
        "",
        "| executor | seconds per trial | overhead per trial vs bare optuna | wall seconds |"
        " start-up and wrap-up seconds |",
        "|---|---|---|---|---|",
    ]
    for name, per_trial, wall, fixed in rows:
        lines.append(
            f"| {name} | {per_trial:.3f} | {per_trial - base:+.3f} | {wall:.1f} | {fixed:.1f} |"
        )
    return lines


def executor_scaling(budget: float, workdir: Path) -> list[str]:
    """Trials per minute with 1 and 2 Ray workers on LightGBM over adult, one CPU per trial,
    and how far each search's wall time ended from its budget.

    The executor is measured where a trial costs the same with one worker as with two: the
    random sampler (same seed, same configurations in the same order), and TPE over a space
    whose parameters barely change a trial's cost (L1/L2 penalties, fixed learning rate and
    leaves). Over the costly space (learning rate and leaves searched) TPE's two runs search
    differently (constant-liar proposals explore more) and choose trials of another cost, so
    trials per minute mixes the executor's scaling with what the search chose to try; the
    fit seconds done per minute (the sum of every trial's fit time over the budget) show the
    executor's share there."""
    from automl.search.loop import run_search

    data_path = str(ROOT.parent / "shared" / "data" / "adult.csv.gz")
    header = "family: lightgbm\nparams:\n  n_estimators: {type: fixed, value: 300}\n"
    spaces = {
        "costly": header
        + "  learning_rate: {type: float, low: 0.02, high: 0.3, log: true, default: 0.1}\n"
        "  num_leaves: {type: int, low: 8, high: 128, log: true, default: 31}\n",
        "equal-cost": header + "  learning_rate: {type: fixed, value: 0.1}\n"
        "  num_leaves: {type: fixed, value: 31}\n"
        "  reg_alpha: {type: float, low: 1.0e-8, high: 10.0, log: true, default: 1.0e-8}\n"
        "  reg_lambda: {type: float, low: 1.0e-8, high: 10.0, log: true, default: 1.0e-8}\n",
    }
    lines = [
        f"# Ray executor scaling: LightGBM on adult, {budget:.0f} s budget, 1 CPU per trial",
        "",
        "| sampler | space | workers | trials finished | trials per minute | mean fit seconds |"
        " fit seconds per minute | driver CPU seconds | wall seconds | past the budget |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    speedups = []
    for sampler, space_name in (("random", "costly"), ("tpe", "equal-cost"), ("tpe", "costly")):
        space = workdir / f"lightgbm-{space_name}.yaml"
        space.write_text(spaces[space_name])
        rates, work = {}, {}
        for workers in (1, 2):
            out = workdir / f"scale-{sampler}-{space_name}-{workers}"
            start, cpu = time.time(), time.process_time()
            summary = run_search(
                data=data_path, target="class", out=out, spaces=[space], sampler=sampler,
                time_budget=budget, executor="ray", workers=workers, cpus_per_trial=1,
                progress=lambda s: None,
            )  # fmt: skip
            wall, cpu = time.time() - start, time.process_time() - cpu
            rates[workers] = summary.finished / (budget / 60)
            fits = pd.read_csv(out / "leaderboard.csv").fit_seconds
            work[workers] = fits.sum() / (budget / 60)
            lines.append(f"| {sampler} | {space_name} | {workers} | {summary.finished} | "
                         f"{rates[workers]:.1f} | {fits.mean():.2f} | {work[workers]:.1f} | "
                         f"{cpu:.1f} | {wall:.1f} | {wall - budget:+.1f} s |")  # fmt: skip
            print(lines[-1], flush=True)
        speedups.append(
            f"{sampler} over the {space_name} space {rates[2] / rates[1]:.2f}x trials per minute"
            f" ({work[2] / work[1]:.2f}x fit seconds per minute)"
        )
    lines += ["", "Speed-up with 2 workers:", *(f"- {s}" for s in speedups)]
    return lines


def executor_cluster(workdir: Path, trials: int = 16) -> list[str]:
    """Trials per minute on a loopback Ray cluster of one-CPU nodes whose workers cannot see
    the run directory (`loopback_cluster`, hide=`workdir`): the head alone against the head
    and one worker node, and what bringing a worker node's trial files home through Ray costs
    per trial. Random forests on phoneme: the heaviest trial files of the tabular families.
    Each search is an `automl search` process; its clock starts before the process does."""
    import optuna
    from loopback_cluster import loopback_cluster

    from automl.run import RunDir

    data = workdir / "phoneme.csv"
    read_table(str(ROOT.parent / "shared" / "data" / "phoneme.csv.gz")).to_csv(data, index=False)
    space = workdir / "forest.yaml"
    space.write_text(
        "family: random_forest\nparams:\n"
        "  n_estimators: {type: int, low: 100, high: 300, default: 200}\n"
    )
    automl = str(Path(sys.executable).parent / "automl")
    lines = [
        f"# Ray cluster without a shared disk: {trials} random-forest trials on phoneme, "
        "one-CPU nodes on loopback",
        "",
        "| nodes | workers | wall seconds | trials per minute (wall) | trials per minute"
        " (first start to last end) | trials moved | seconds moved, median / max |"
        " MB moved, median / max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rates = {}
    for nodes in (1, 2):
        out = workdir / f"cluster-{nodes}"
        with loopback_cluster(workers=nodes - 1, hide=workdir) as cluster:
            start = time.time()
            done = subprocess.run(
                [automl, "search", "--data", str(data), "--target", "Class", "--out", str(out),
                 "--space", str(space), "--trials", str(trials), "--cv", "0", "--seed", "0",
                 "--executor", "ray", "--workers", str(nodes), "--ray-address",
                 cluster.address],
                env=cluster.env, capture_output=True, text=True,
            )  # fmt: skip
            wall = time.time() - start
        if done.returncode != 0:
            raise SystemExit(f"cluster search on {nodes} node(s) failed: {done.stderr[-2000:]}")
        study = optuna.load_study(
            study_name=RunDir(out).study_name(), storage=RunDir(out).storage()
        )
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        moved = [t.user_attrs for t in complete if "transfer_bytes" in t.user_attrs]
        seconds = sorted(a["transfer_seconds"] for a in moved)
        megabytes = sorted(a["transfer_bytes"] / 1e6 for a in moved)
        rates[nodes] = 60 / _per_trial(complete)
        lines.append(
            f"| {nodes} | {nodes} | {wall:.1f} | {len(complete) / wall * 60:.1f} | "
            f"{rates[nodes]:.1f} | {len(moved)} | "
            + (f"{np.median(seconds):.3f} / {seconds[-1]:.3f} | "
               f"{np.median(megabytes):.1f} / {megabytes[-1]:.1f} |" if moved else "- | - |")
        )  # fmt: skip
        print(lines[-1], flush=True)
    lines += [
        "",
        f"Two nodes against one: {rates[2] / rates[1]:.2f}x trials per minute (first start to "
        "last end). Simulated: both nodes share this machine's two cores and its loopback, so "
        "a real cluster's network adds the MB above at its bandwidth, and its nodes do not "
        "compete for cores.",
    ]
    return lines


def _measured(command: list[str]) -> tuple[float, float]:
    """Run `command`; its wall seconds and peak RSS in MB (of the process itself, from wait4)."""
    import os
    import subprocess

    start = time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.time() - start
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def scaling(workdir: Path, trials: int = 8) -> str:
    """How one search's wall time and peak memory grow with rows (adult subsampled to 5k, 20k,
    all) and columns (20k rows plus 50 or 200 columns of real values shuffled across rows, so
    they carry no signal), and `automl predict` throughput on 1 million rows, streamed."""
    automl = str(Path(sys.executable).parent / "automl")
    adult = read_table(str(ROOT.parent / "shared" / "data" / "adult.csv.gz"))
    rng = np.random.default_rng(0)
    numeric = adult.select_dtypes("number").columns

    def noisy(frame: pd.DataFrame, extra: int) -> pd.DataFrame:
        noise = {f"noise_{i}": rng.permutation(frame[numeric[i % len(numeric)]].to_numpy())
                 for i in range(extra)}  # fmt: skip
        return pd.concat([frame, pd.DataFrame(noise, index=frame.index)], axis=1)

    variants = [
        ("rows", 5_000, 0), ("rows", 20_000, 0), ("rows", len(adult), 0),
        ("columns", 20_000, 50), ("columns", 20_000, 200),
    ]  # fmt: skip
    lines = [
        f"# How cost grows: one search ({trials} trials of the tabular bundle, 2 threads)",
        "",
        "Command: `python scripts/benchmark.py --scaling`. Data: adult; extra columns are real",
        "values shuffled across rows. Peak memory is the search process's own (Keras trials run",
        "in a worker process of their own, which TensorFlow dominates).",
        "",
        "| varied | rows | feature columns | wall seconds | seconds per trial | peak MB |",
        "|---|---|---|---|---|---|",
    ]
    measured: dict[str, list[tuple[int, float, float]]] = {"rows": [], "columns": []}
    for varied, rows, extra in variants:
        frame = adult.sample(n=rows, random_state=0) if rows < len(adult) else adult
        frame = noisy(frame, extra)
        path = workdir / f"adult_{rows}_{extra}.csv"
        frame.to_csv(path, index=False)
        out = workdir / f"run_{rows}_{extra}"
        search = ["search", "--data", str(path), "--target", "class", "--out", str(out)]
        wall, peak = _measured([automl, *search, "--trials", str(trials), "--threads", "2"])
        lines.append(f"| {varied} | {rows} | {frame.shape[1] - 1} | {wall:.1f} | "
                     f"{wall / trials:.2f} | {peak:.0f} |")  # fmt: skip
        print(lines[-1], flush=True)
        if varied == "rows":
            measured["rows"].append((rows, wall, peak))
        if rows == 20_000:  # the 20,000-row search without extra columns starts both series
            measured["columns"].append((frame.shape[1] - 1, wall, peak))
    lines += ["", *_growth_lines(measured)]
    run = workdir / "run_20000_0"
    lines += [
        "",
        "`automl predict` with the best model of the 20,000-row search (chunks of 100,000 rows):",
        "",
        "| rows | file | wall seconds | rows per second | peak MB |",
        "|---|---|---|---|---|",
    ]
    predicted = []
    for rows in (100_000, 1_000_000):
        big = adult.drop(columns=["class"]).sample(n=rows, replace=True, random_state=1)
        path = workdir / f"predict_{rows}.csv"
        big.to_csv(path, index=False)
        size = path.stat().st_size / 1e6
        wall, peak = _measured([automl, "predict", str(run), "--data", str(path), "--out",
                                str(workdir / f"predictions_{rows}.csv")])  # fmt: skip
        lines.append(f"| {rows} | {size:.0f} MB CSV | {wall:.1f} | {rows / wall:,.0f} | "
                     f"{peak:.0f} |")  # fmt: skip
        print(lines[-1], flush=True)
        predicted.append((rows, wall, peak))
    return "\n".join([*lines, "", *_growth_lines({"predicted rows": predicted})]) + "\n"


def _growth_lines(series: dict[str, list[tuple[int, float, float]]]) -> list[str]:
    """Growth exponents between consecutive sizes: the log-log slope of wall seconds and of peak
    memory against the size (1 is linear, above 1 faster than linear)."""
    lines = []
    for varied, points in series.items():
        for (x1, wall1, peak1), (x2, wall2, peak2) in zip(points, points[1:], strict=False):
            ratio = np.log(x2 / x1)
            lines.append(
                f"- {varied} {x1:,} -> {x2:,}: wall time grows as {varied}^"
                f"{np.log(wall2 / wall1) / ratio:.2f}, peak memory as {varied}^"
                f"{np.log(peak2 / peak1) / ratio:.2f}"
            )
    return ["Growth exponents (log-log slope between consecutive sizes; 1 is linear):", *lines]


RANKED = {
    "ours_ensemble": "ours",
    "ours_half": "ours at half the budget",
    "autogluon": "AutoGluon best_quality",
    "flaml": "FLAML",
    "lightgbm_default": "LightGBM default",
    "random_forest_500": "RF 500",
}


def rank_table(table: pd.DataFrame) -> list[str]:
    """Mean rank of the systems every dataset has (ties share the mean rank), and ours against
    each of them dataset by dataset."""
    present = [s for s in RANKED if s in set(table.system)]
    ranks: dict[str, list[float]] = {s: [] for s in present}
    versus: dict[str, list[int]] = {s: [0, 0, 0] for s in present if s != "ours_ensemble"}
    for _, group in table.groupby("dataset", sort=False):
        score = dict(zip(group.system, group.test_score, strict=True))
        if not all(s in score for s in present):
            continue
        metric = get_metric(group.metric.iloc[0], group.task.iloc[0])
        sign = -1.0 if metric.greater_is_better else 1.0
        values = pd.Series({s: sign * round(score[s], 6) for s in present})
        for s, r in values.rank(method="average").items():
            ranks[s].append(float(r))
        for s, wins in versus.items():
            ours, theirs = values["ours_ensemble"], values[s]
            wins[0 if ours < theirs else 1 if ours == theirs else 2] += 1
    lines = ["", "Mean rank on test (1 = best; ties share the mean rank):", ""]
    lines += ["| system | mean rank | datasets |", "|---|---|---|"]
    for s in sorted(present, key=lambda s: np.mean(ranks[s]) if ranks[s] else np.inf):
        lines.append(f"| {RANKED[s]} | {np.mean(ranks[s]):.2f} | {len(ranks[s])} |")
    lines += ["", "Ours against each (wins / ties / losses on test):", ""]
    lines += ["| against | wins | ties | losses |", "|---|---|---|---|"]
    for s, (won, tied, lost) in versus.items():
        lines.append(f"| {RANKED[s]} | {won} | {tied} | {lost} |")
    return lines


def replaced(rows: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` with `new` added: a system measured again on a dataset (`--append`) replaces its
    earlier row, so a table can hold peers measured once and ours on the latest commit."""
    again = {(row["dataset"], row["system"]) for row in new}
    return [row for row in rows if (row["dataset"], row["system"]) not in again] + new


def commits_line(table: pd.DataFrame) -> list[str]:
    """Which commit measured which systems (rows kept by `--append` keep theirs)."""
    if "commit" not in table:
        return []
    parts = []
    for commit, group in table.groupby(table["commit"].fillna("?"), sort=False):
        systems = ", ".join(sorted(set(group.system)))
        datasets = ", ".join(dict.fromkeys(group.dataset))
        parts.append(f"`{commit}`: {systems} on {datasets}")
    return ["", "Measured on: " + "; ".join(parts) + ".", ""]


def markdown(table: pd.DataFrame, budget: float) -> str:
    lines = [f"# Tabular benchmark, {budget:.0f} s budget, 80/20 split", ""]
    lines += commits_line(table)
    peers = [p for p in PEERS if p in set(table.system)]
    peer_names = {"autogluon": "AutoGluon best_quality", "flaml": "FLAML"}
    lines.append(
        "| dataset | metric | ours | ours before refit | ours (best single) | "
        + "".join(f"{peer_names[p]} | " for p in peers)
        + "LightGBM default | RF 500 | before refit beats best single | ours wall s | trials |"
    )
    lines.append("|---|---|---|---|---|" + "---|" * len(peers) + "---|---|---|---|---|")
    for dataset, group in table.groupby("dataset", sort=False):
        score = dict(zip(group.system, group.test_score, strict=True))
        metric = get_metric(group.metric.iloc[0], group.task.iloc[0])
        better = metric.better
        ours = group.loc[group.system == "ours_ensemble"].iloc[0]
        lines.append(
            f"| {dataset} | {metric.name} | {score['ours_ensemble']:.4f} | "
            f"{score['ours_before_refit']:.4f} | {score['ours_best_single']:.4f} | "
            + "".join(f"{score[p]:.4f} | " if p in score else "failed | " for p in peers)
            + f"{score['lightgbm_default']:.4f} | {score['random_forest_500']:.4f} | "
            f"{'yes' if better(score['ours_before_refit'], score['ours_best_single']) else 'no'} | "
            f"{ours.wall_seconds} | {int(ours.trials)} |"
        )
    lines += rank_table(table)
    lines += ensemble_table(table)
    lines += refinement_table(table)
    lines += [
        "",
        "Wall seconds and peak memory per system. Seconds: from before the first process "
        "starts to the prediction file (ours: `automl search`, `automl ensemble` and `automl "
        "predict`, three processes; a peer: its one process). Peak MB: ours and the peers, "
        "the most resident memory of the process and all its children together (sampled every "
        "0.1 s); the LightGBM and RF baselines, their one process:",
        "",
        "| dataset | system | seconds | peak MB | detail |",
        "|---|---|---|---|---|",
    ]
    for row in table.dropna(subset=["wall_seconds"]).itertuples():
        lines.append(
            f"| {row.dataset} | {row.system} | {row.wall_seconds} | {row.peak_mb} | {row.detail} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", help="PATH:TARGET[:TASK]")
    parser.add_argument(
        "--cv", default="auto", help="cross-fit each trial in K folds; 0: one holdout; auto"
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also AutoGluon best_quality and FLAML (own virtualenv: scripts/peers_venv.sh)",
    )
    parser.add_argument(
        "--ensemble-timing",
        action="store_true",
        help="time ensemble fits on 10-200 members x 10,000-100,000 rows instead",
    )
    parser.add_argument(
        "--executors",
        action="store_true",
        help="executor overhead (50 trivial trials) and Ray scaling with 1 vs 2 workers instead",
    )
    parser.add_argument(
        "--images", help="Fashion-MNIST-like .npz: test accuracy after --minutes (images part)"
    )
    parser.add_argument(
        "--image-jobs",
        nargs="+",
        default=["5:20000", "30:50000"],
        metavar="MINUTES:IMAGES",
        help="each a whole timed job on the first IMAGES training images (with --images)",
    )
    parser.add_argument(
        "--no-baselines", action="store_true", help="leave out the MLP and LightGBM baselines"
    )
    parser.add_argument("--text", help="PATH:TARGET of a text CSV such as sms_spam (text part)")
    parser.add_argument("--text-budget", type=float, default=300.0)
    parser.add_argument(
        "--memory", type=int, metavar="N", help="RSS over N consecutive Keras trials instead"
    )
    parser.add_argument(
        "--image-ensembles",
        metavar="NPZ",
        help="fit time of every recipe on a 5-minute search of 20,000 images instead",
    )
    parser.add_argument(
        "--epoch-speed",
        metavar="NPZ",
        help="seconds per epoch of the default CNN under CPU settings (60k images) instead",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="search cost against rows and columns, predict throughput on 1M rows instead",
    )
    parser.add_argument(
        "--budget", type=float, default=300.0, help="seconds per system and dataset"
    )
    parser.add_argument(
        "--half-budget",
        action="store_true",
        help="also run ours at half the budget (a row of the rank table)",
    )
    parser.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="the 80/20 split's seed: 0 for the headline; another for a development split "
        "on which choices are taken",
    )
    parser.add_argument(
        "--search-args", default="", help="more flags for `automl search`, e.g. '--cv-repeats 1'"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks"))
    parser.add_argument("--name", default="tabular")
    parser.add_argument(
        "--append", action="store_true", help="add to benchmarks/<name>.csv instead of replacing"
    )
    args = parser.parse_args()
    if args.ensemble_timing:
        out = Path(args.out) / "ensemble_timing.md"
        out.write_text(ensemble_timing())
        print(out.read_text())
        return 0
    if args.image_ensembles:
        from bench_media import image_ensembles

        with tempfile.TemporaryDirectory(prefix="automl-image-ens-") as workdir:
            out = Path(args.out) / "ensemble_timing_images.md"
            text = image_ensembles(args.image_ensembles, 5.0, 20_000, args.threads, Path(workdir))
            out.write_text(text)
        print(out.read_text())
        return 0
    if args.epoch_speed:
        from bench_media import epoch_speed

        out = Path(args.out) / "epoch_speed.md"
        out.write_text(epoch_speed(args.epoch_speed, args.threads))
        print(out.read_text())
        return 0
    if args.scaling:
        with tempfile.TemporaryDirectory(prefix="automl-scaling-") as workdir:
            out = Path(args.out) / "scaling.md"
            out.write_text(scaling(Path(workdir)))
        print(out.read_text())
        return 0
    if args.executors:
        with tempfile.TemporaryDirectory(prefix="automl-exec-") as workdir:
            lines = executor_overhead(workdir=Path(workdir))
            print("\n".join(lines), flush=True)
            cluster = executor_cluster(Path(workdir))
            (Path(args.out) / "executors_cluster.md").write_text(
                f"Command: `python scripts/benchmark.py --executors` on {_commit()}\n\n"
                + "\n".join(cluster)
                + "\n"
            )
            print("\n".join(cluster), flush=True)
            lines += ["", *executor_scaling(args.budget, Path(workdir))]
        out = Path(args.out) / "executors.md"
        out.write_text("\n".join(lines) + "\n")
        print(out.read_text())
        return 0
    if args.images or args.text or args.memory:
        from bench_media import images, memory, text

        with tempfile.TemporaryDirectory(prefix="automl-media-") as workdir:
            if args.images:
                out = Path(args.out) / "fashion_mnist.md"
                jobs = [(float(j.split(":")[0]), int(j.split(":")[1])) for j in args.image_jobs]
                report = images(
                    args.images, jobs, args.threads, Path(workdir), not args.no_baselines
                )
                out.write_text(report)
                print(out.read_text(), flush=True)
            if args.text:
                out = Path(args.out) / "sms_spam.md"
                out.write_text(text(args.text, args.text_budget, args.threads, Path(workdir)))
                print(out.read_text(), flush=True)
            if args.memory:
                out = Path(args.out) / "memory.md"
                out.write_text(memory(args.memory, args.threads, Path(workdir)))
                print(out.read_text(), flush=True)
        return 0
    if not args.datasets:
        parser.error("give at least one PATH:TARGET[:TASK], --ensemble-timing or --executors")
    cv = args.cv if args.cv == "auto" else int(args.cv)
    peers_python = None
    if args.peers:
        made = subprocess.run(["sh", str(ROOT / "scripts" / "peers_venv.sh")], cwd=ROOT,
                              check=True, capture_output=True, text=True)  # fmt: skip
        peers_python = str(ROOT / made.stdout.strip())
    rows: list[dict[str, Any]] = []
    previous = Path(args.out) / f"{args.name}.csv"
    if args.append and previous.exists():
        rows = pd.read_csv(previous).to_dict("records")
    commit = _commit()
    with tempfile.TemporaryDirectory(prefix="automl-bench-") as workroot:
        for spec in args.datasets:
            measured = benchmark_dataset(
                spec,
                args.budget,
                args.threads,
                Path(workroot),
                cv,
                peers_python,
                args.half_budget,
                args.split_seed,
                tuple(args.search_args.split()),
            )
            rows = replaced(rows, [row | {"commit": commit} for row in measured])
            table = pd.DataFrame(rows)
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            table.to_csv(out / f"{args.name}.csv", index=False)
            command = " ".join(["python", "scripts/benchmark.py", *sys.argv[1:]])
            (out / f"{args.name}.md").write_text(
                markdown(table, args.budget).replace(
                    "\n",
                    f"\n\nCommand: `{command}` on {_commit()}; split seed "
                    f"{args.split_seed} (0: the headline split; others: development splits)\n",
                    1,
                )
            )
    print((Path(args.out) / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
