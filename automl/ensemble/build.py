"""Fit an ensemble from a run directory's saved predictions; nothing is retrained.

The pool is the top-K completed trials by validation score (optionally top-K per family so a
weaker but different model gets its chance); members whose saved predictions are missing,
tampered with, of the wrong shape or not finite are left out with a warning.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from automl.ensemble import METHODS, WeightedEnsemble
from automl.errors import UserInputError
from automl.io import verify, write_bytes_atomic, write_json_atomic, write_manifest
from automl.metrics import METRICS, Metric
from automl.run import RunDir, TrialRecord, load_predictions, load_trials

DEFAULT_TOP_K = 20
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
TARGETS_DIR = "targets"


def save_targets(run: RunDir, y_val: np.ndarray, y_test: np.ndarray) -> None:
    directory = run.path / TARGETS_DIR
    for name, y in (("y_val.npy", y_val), ("y_test.npy", y_test)):
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(y), allow_pickle=False)
        write_bytes_atomic(directory / name, buffer.getvalue())
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
    top_k: int = DEFAULT_TOP_K
    per_family: bool = False
    options: dict[str, Any] | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.method


def load_recipe(path: str | Path) -> Recipe:
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
    top_k = pool.get("top_k", DEFAULT_TOP_K)
    if not isinstance(top_k, int) or top_k < 1:
        raise UserInputError(f"{source}: pool.top_k must be a positive whole number; got {top_k!r}")
    name = data.get("name")
    if name is not None and not (isinstance(name, str) and SAFE_NAME.fullmatch(name)):
        raise UserInputError(
            f"{source}: name must be letters, digits, '.', '_' or '-' (not starting with '.'), "
            f"since it names a folder in the run directory; got {name!r}"
        )
    return Recipe(
        method=method,
        top_k=top_k,
        per_family=bool(pool.get("per_family", False)),
        options=data.get("options") or {},
        name=name,
    )


def select_pool(
    records: list[TrialRecord], metric: Metric, top_k: int, per_family: bool
) -> list[TrialRecord]:
    done = [r for r in records if r.status == "complete" and r.val_score is not None]
    done.sort(key=lambda r: r.val_score, reverse=metric.greater_is_better)
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


def build_ensemble(run: RunDir, recipe: Recipe) -> dict[str, Any]:
    """Fit `recipe` on the run's validation predictions, score it on test, save it."""
    info = run.info()
    metric = METRICS[info["metric"]]
    y_val, y_test = load_targets(run)
    pool = select_pool(load_trials(run), metric, recipe.top_k, recipe.per_family)
    n_classes = len(info["classes"])
    shape_val = (len(y_val), n_classes) if info["task"] != "regression" else (len(y_val),)
    shape_test = (len(y_test),)
    members, val_preds, test_preds = _valid_members(run, pool, shape_val, shape_test)
    if not members:
        raise UserInputError(f"{run.path}: no completed trial with usable predictions to ensemble")
    ensembler: WeightedEnsemble = METHODS[recipe.method](metric, **(recipe.options or {}))
    ensembler.fit(val_preds, y_val)
    val_pred, test_pred = ensembler.predict(val_preds), ensembler.predict(test_preds)
    best_single = members[0]
    summary = {
        "method": recipe.method,
        "name": recipe.label,
        "metric": metric.name,
        "val_score": metric(y_val, val_pred),
        "test_score": metric(y_test, test_pred),
        "best_single": {
            "name": best_single.name,
            "val_score": best_single.val_score,
            "test_score": best_single.test_score,
        },
        "members": [
            {"trial": r.number, "name": r.name, "family": r.family, "weight": float(w)}
            for r, w in zip(members, ensembler.weights_, strict=True)
            if w > 0
        ],
        "pool_size": len(members),
        "note": "weights fit on the same validation split that chose the members; "
        "its validation score is optimistic, the test score is not",
    }
    directory = run.ensemble_dir(recipe.label)
    for part, pred in (("val", val_pred), ("test", test_pred)):
        buffer = io.BytesIO()
        np.save(buffer, pred, allow_pickle=False)
        write_bytes_atomic(directory / f"{part}_pred.npy", buffer.getvalue())
    write_json_atomic(directory / "weights.json", summary)
    write_manifest(directory, ["val_pred.npy", "test_pred.npy", "weights.json"])
    return summary


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
