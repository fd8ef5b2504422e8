"""Fit an ensemble from a run directory's saved predictions; nothing is retrained.

The pool is the top-K completed trials by validation score (optionally top-K per family so a
weaker but different model gets its chance); members whose saved predictions are missing,
tampered with, of the wrong shape or not finite are left out with a warning.
"""

from __future__ import annotations

import io
import os
import re
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import joblib
import numpy as np
import yaml
from threadpoolctl import threadpool_limits

from automl.ensemble import METHODS, Ensembler
from automl.ensemble.base import stack
from automl.ensemble.insight import (
    cross_validated_predictions,
    describe,
    held_out_check,
    honest_folds,
    signed_gain,
)
from automl.ensemble.keras_export import export_if_keras
from automl.errors import UserInputError
from automl.io import (
    verify,
    write_bytes_atomic,
    write_json_atomic,
    write_manifest,
    write_npy_atomic,
)
from automl.metrics import METRICS, Metric
from automl.run import RunDir, TrialRecord, load_predictions, load_trials

DEFAULT_TOP_K = 20
ENSEMBLE_THREADS = min(4, os.cpu_count() or 1)  # an ensemble's fits at once (`fit_ensemble`)
# Stacking gives every member it saw a coefficient, so each of them is refit and predicts:
# its default pool is small, and the search reserves refit time for as many trials
# (`search.budget.REFIT_MEMBERS`).
STACKING_POOL = 5
DEFAULT_TOP_K_BY_METHOD = {"stacking": STACKING_POOL}
DEFAULT = "default"  # names the default recipes where a recipe's name or path is expected
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
TARGETS_DIR = "targets"
COMBINER_FILE = "combiner.joblib"


def save_targets(run: RunDir, y_val: np.ndarray, y_test: np.ndarray) -> None:
    directory = run.path / TARGETS_DIR
    for name, y in (("y_val.npy", y_val), ("y_test.npy", y_test)):
        write_npy_atomic(directory / name, y)
    write_manifest(directory, ["y_val.npy", "y_test.npy"])


def load_targets(run: RunDir) -> tuple[np.ndarray, np.ndarray]:
    directory = run.path / TARGETS_DIR
    return (
        np.load(verify(directory, "y_val.npy"), allow_pickle=False),
        np.load(verify(directory, "y_test.npy"), allow_pickle=False),
    )


@dataclass
class Recipe:
    """How to build one ensemble: the method, the member pool, the method's options."""

    method: str
    top_k: int | None = None  # None: the method's default pool (`default_top_k`)
    per_family: bool = False
    options: dict[str, Any] | None = None
    name: str | None = None
    families: list[str] | None = None  # only trials of these families join the pool

    @property
    def label(self) -> str:
        return self.name or self.method

    @property
    def pool_size(self) -> int:
        return self.top_k if self.top_k is not None else default_top_k(self.method)


def default_recipes(top_k: int | None = None) -> list[Recipe]:
    """What `automl ensemble` and the estimators build when not told (`DEFAULT_METHODS`):
    each method with its default pool, or `top_k` members."""
    from automl.ensemble import DEFAULT_METHODS

    return [Recipe(method=method, top_k=top_k) for method in DEFAULT_METHODS]


def recipes_from(names: str | Sequence[str] | None) -> list[Recipe]:
    """Recipes named by a setting: "default" (the default recipes), a bundled recipe's name or
    a YAML path, a list of those, or None (none)."""
    if names is None:
        return []
    if isinstance(names, str):
        names = [names]
    recipes: list[Recipe] = []
    for name in names:
        recipes.extend(default_recipes() if name == DEFAULT else [load_recipe(name)])
    return recipes


def default_top_k(method: str) -> int:
    """Members in a method's pool when neither the recipe nor `--top-k` says."""
    return DEFAULT_TOP_K_BY_METHOD.get(method, DEFAULT_TOP_K)


def load_recipe(path: str | Path) -> Recipe:
    """A recipe from a YAML file, or from the name of a bundled one (`greedy`)."""
    from automl.resources import recipe_path

    path = recipe_path(path)
    source = str(path)
    if not Path(path).exists():
        raise UserInputError(f"{source}: recipe file not found")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserInputError(f"{source}: malformed YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{source}: expected a mapping with 'method', 'pool' and 'options'")
    method = data.get("method")
    if method not in METHODS:
        raise UserInputError(
            f"{source}: method must be one of {', '.join(METHODS)}; got {method!r}"
        )
    pool = data.get("pool") or {}
    top_k = pool.get("top_k", default_top_k(method))
    if not isinstance(top_k, int) or top_k < 1:
        raise UserInputError(f"{source}: pool.top_k must be a positive whole number; got {top_k!r}")
    name = data.get("name")
    if name is not None and not (isinstance(name, str) and SAFE_NAME.fullmatch(name)):
        raise UserInputError(
            f"{source}: name must be letters, digits, '.', '_' or '-' (not starting with '.'), "
            f"since it names a folder in the run directory; got {name!r}"
        )
    families = pool.get("families")
    if families is not None and not (
        isinstance(families, list) and all(isinstance(f, str) for f in families)
    ):
        raise UserInputError(f"{source}: pool.families must be a list of family names")
    options = data.get("options") or {}
    try:
        METHODS[method](METRICS["rmse"], **options)
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"{source}: options for {method}: {exc}") from None
    return Recipe(
        method=method,
        top_k=top_k,
        per_family=bool(pool.get("per_family", False)),
        options=options,
        name=name,
        families=families,
    )


def select_pool(
    records: list[TrialRecord], metric: Metric, top_k: int, per_family: bool
) -> list[TrialRecord]:
    done = [r for r in records if r.status == "complete" and r.val_score is not None]
    done.sort(key=lambda r: cast(float, r.val_score), reverse=metric.greater_is_better)
    if not per_family:
        return done[:top_k]
    pool: list[TrialRecord] = []
    for family in dict.fromkeys(r.family for r in done):
        pool.extend([r for r in done if r.family == family][:top_k])
    return pool


def _valid_members(run: RunDir, pool: list[TrialRecord], shape_val: tuple, shape_test: tuple):  # noqa: ANN202
    members, val_preds, test_preds = [], [], []
    for record in pool:
        try:
            val = load_predictions(run, record.number, "val")
            test = load_predictions(run, record.number, "test")
        except (UserInputError, OSError, ValueError) as exc:
            warnings.warn(f"{record.name}: left out of the ensemble ({exc})", stacklevel=2)
            continue
        if (
            val.shape[1:] != shape_val[1:]
            or val.shape[0] != shape_val[0]
            or test.shape[0] != shape_test[0]
        ):
            warnings.warn(
                f"{record.name}: left out of the ensemble (predictions of shape {val.shape})",
                stacklevel=2,
            )
            continue
        if not (np.all(np.isfinite(val)) and np.all(np.isfinite(test))):
            warnings.warn(
                f"{record.name}: left out of the ensemble (NaN in predictions)", stacklevel=2
            )
            continue
        members.append(record)
        val_preds.append(val)
        test_preds.append(test)
    return members, val_preds, test_preds


@dataclass
class FittedEnsemble:
    """An ensembler fit on members' validation predictions, with what says how good it is."""

    ensembler: Ensembler
    val_pred: np.ndarray  # stacking: its own out-of-fold predictions
    test_pred: np.ndarray
    val_score: float  # fit on the rows it is scored on: optimistic
    honest_val_score: float | None  # each row predicted by an ensemble fit without it
    test_score: float | None
    fit_seconds: float
    held_out: dict[str, Any]  # the gain over the best single member on held-out folds
    insight: dict[str, Any]


def fit_ensemble(
    recipe: Recipe,
    metric: Metric,
    names: list[str],
    val: tuple[list[np.ndarray], np.ndarray],
    test: tuple[list[np.ndarray], np.ndarray],
) -> FittedEnsemble:
    """Fit `recipe` on the members' validation predictions and assess it: the honest 5-fold
    score, the held-out gain on those folds, leave-one-out effects and error correlation.
    Everything `build_ensemble` computes, nothing it reads or writes (what the ensemble
    benchmark times)."""
    (listed, y_val), (test_preds, y_test) = val, test
    val_preds = cast(list[np.ndarray], stack(listed))  # one array, shared by every fit below

    def make() -> Ensembler:
        return METHODS[recipe.method](metric, **(recipe.options or {}))

    def fit_timed() -> tuple[Ensembler, float]:
        start = time.perf_counter()
        return make().fit(val_preds, y_val), time.perf_counter() - start

    parts = honest_folds(y_val, val_preds[0].ndim == 2)
    # The fit and the five honest folds' fits in threads (up to the machine's cores): their
    # sorts and matrix products release the GIL. One BLAS thread each, set here once for all of
    # them (a limit set and reset inside each thread would race).
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(ENSEMBLE_THREADS) as pool:
        main = pool.submit(fit_timed)
        stacking = recipe.method == "stacking"  # scores its own out-of-fold predictions
        honest, folds_fitted = (
            (None, [])
            if stacking
            else cross_validated_predictions(make, val_preds, y_val, parts, pool=pool)
        )
        ensembler, fit_seconds = main.result()
    # Stacking scores its own cross-validated predictions: an in-sample score would flatter it.
    val_pred = getattr(ensembler, "oof_", None)
    if val_pred is None:
        val_pred = ensembler.predict(val_preds)
    if stacking:
        honest = val_pred
    tested = len(y_test) > 0  # `--test-size 0`: no test part, no test score
    test_pred = ensembler.predict(test_preds) if tested else test_preds[0]
    return FittedEnsemble(
        ensembler=ensembler,
        val_pred=val_pred,
        test_pred=test_pred,
        val_score=metric(y_val, val_pred),
        honest_val_score=metric(y_val, honest) if honest is not None else None,
        test_score=metric(y_test, test_pred) if tested else None,
        fit_seconds=fit_seconds,
        held_out=held_out_check(honest, val_preds, y_val, metric, parts, folds_fitted),
        insight=describe(ensembler, names, val_preds, y_val, metric),
    )


def build_ensemble(run: RunDir, recipe: Recipe) -> dict[str, Any]:
    """Fit `recipe` on the run's validation predictions, score it on test, save it."""
    info = run.info()
    metric = METRICS[info["metric"]]
    cv = int(info.get("cv") or 0)
    y_val, y_test = load_targets(run)
    records = load_trials(run)
    if recipe.families:
        records = [r for r in records if r.family in recipe.families]
    pool = select_pool(records, metric, recipe.pool_size, recipe.per_family)
    n_classes = len(info["classes"])
    shape_val = (len(y_val), n_classes) if info["task"] != "regression" else (len(y_val),)
    shape_test = (len(y_test),)
    members, val_preds, test_preds = _valid_members(run, pool, shape_val, shape_test)
    if not members:
        raise UserInputError(f"{run.path}: no completed trial with usable predictions to ensemble")
    names = [r.name for r in members]
    fitted = fit_ensemble(recipe, metric, names, (val_preds, y_val), (test_preds, y_test))
    ensembler, val_pred, test_pred = fitted.ensembler, fitted.val_pred, fitted.test_pred
    val_score, test_score, insight = fitted.val_score, fitted.test_score, fitted.insight
    best_single = members[0]  # the pool is sorted by validation score
    refinement = getattr(ensembler, "nelder_mead_", None)
    keep = [
        i
        for i, w in enumerate(ensembler.weights_)
        if w > 0 or ensembler.combiner != "weighted"  # stacking needs every member it saw
    ]
    summary = {
        "method": recipe.method,
        "name": recipe.label,
        "metric": metric.name,
        "combiner": ensembler.combiner,
        "power": float(getattr(ensembler, "power_", 1.0)),
        # The optimized weights' last step: Nelder-Mead on the metric (evaluations, errors).
        "nelder_mead": refinement.as_dict() if refinement is not None else None,
        "val_score": val_score,
        # What `load("best")` ranks by: each row scored by an ensemble fit without it.
        "honest_val_score": fitted.honest_val_score,
        "test_score": test_score,
        "fit_seconds": fitted.fit_seconds,
        "best_single": {
            "name": best_single.name,
            "val_score": best_single.val_score,
            "test_score": best_single.test_score,
        },
        "gain": {
            "val": signed_gain(metric, val_score, best_single.val_score),
            "test": signed_gain(metric, test_score, best_single.test_score)
            if test_score is not None and best_single.test_score is not None
            else None,
        },
        "held_out": fitted.held_out,
        "members": [
            {
                "trial": members[i].number,
                "name": members[i].name,
                "family": members[i].family,
                "weight": float(ensembler.weights_[i]),
                "leave_one_out": insight["leave_one_out"][members[i].name],
            }
            for i in keep
        ],
        "error_correlation": insight["error_correlation"],
        "pool_size": len(members),
        "validation": "out-of-fold" if cv else "holdout",
        "note": (
            f"weights fit on out-of-fold predictions of {cv}-fold cross-fitting over the "
            "training rows; the test score is on rows no model or ensemble saw"
            if cv
            else "weights fit on the same validation split that chose the members, so the "
            "validation score and gain are optimistic; the held-out gain and the test "
            "score are not"
        ),
    }
    directory = run.ensemble_dir(recipe.label)
    write_npy_atomic(directory / "val_pred.npy", val_pred)
    write_npy_atomic(directory / "test_pred.npy", test_pred)
    files = ["val_pred.npy", "test_pred.npy", "weights.json"]
    if ensembler.combiner != "weighted":
        buffer = io.BytesIO()
        joblib.dump(ensembler, buffer)
        write_bytes_atomic(directory / COMBINER_FILE, buffer.getvalue())
        files.append(COMBINER_FILE)
    summary["keras_export"] = export_if_keras(run, summary, directory)
    if summary["keras_export"].get("file"):
        files.extend(summary["keras_export"]["files"])
    write_json_atomic(directory / "weights.json", summary)
    write_manifest(directory, files)
    return summary


def best_ensemble(ensembles: list[dict[str, Any]], metric: Metric) -> dict[str, Any] | None:
    """The ensemble with the best cross-validated score (the one `load("best")` may pick)."""
    scored = [e for e in ensembles if e.get("honest_val_score") is not None]
    sign = 1.0 if metric.greater_is_better else -1.0
    return max(scored, key=lambda e: sign * e["honest_val_score"], default=None)


def load_ensembles(run: RunDir) -> list[dict[str, Any]]:
    root = run.path / "ensembles"
    if not root.exists():
        return []
    out = []
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            from automl.io import read_json

            out.append(read_json(verify(directory, "weights.json")))
        except (UserInputError, OSError, ValueError) as exc:
            warnings.warn(f"{directory}: ensemble skipped ({exc})", stacklevel=2)
    return out
