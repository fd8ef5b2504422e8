"""Evaluate one configuration: encode, fit, predict, score, and save everything the ensemble,
the report and `predict` need into the trial's folder.

`evaluate` is the one function every executor calls; whatever goes wrong inside it is raised
and becomes a failed trial in the loop.
"""

from __future__ import annotations

import io
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from automl.data import Dataset
from automl.errors import TrialFailed, TrialPruned
from automl.folds import fold_rows
from automl.io import (
    MANIFEST,
    read_json,
    verify,
    write_bytes_atomic,
    write_json_atomic,
    write_manifest,
    write_npy_atomic,
)
from automl.metrics import EXTRA_METRICS, METRICS, Metric, get_metric
from automl.models import FAMILIES, BuildContext, Family
from automl.models.per_target import PerTarget
from automl.preprocess import fit_encoder, layout, transform
from automl.refit import refit_scale
from automl.run import ENCODER_FILE, RunDir, fold_name
from automl.search.fold_halving import COSTLY_FOLD_SECONDS, FOLD_BAR_KEY, stop_reason
from automl.search.promotion import WARM_START_KEY
from automl.space import EPOCHS_KEY, SearchSpace
from automl.tensorboard import TENSORBOARD_DIR, write_hparams

# The wall-clock time a trial must end by, set by the driver when it starts the trial (its
# reserve, and a first network's own costs, move it); it travels with the configuration, so a
# trial on a Ray worker keeps the same deadline as one in the driver's process.
DEADLINE_KEY = "budget.deadline"


@dataclass
class TrialContext:
    """Everything a trial needs that does not change between trials.

    With `cv` K >= 2, a trial is cross-fitted: K models, each trained on K-1 folds of the whole
    training part (fit plus validation rows), give out-of-fold predictions for every training
    row; test predictions are the mean of the K models. The encoder is fitted once on all
    training rows: it learns no labels (category lists and scaling), so the folds stay honest.
    """

    dataset: Dataset
    space: SearchSpace
    metric: Metric
    run: RunDir
    seed: int = 0
    threads: int = 1
    deadline: float | None = None
    cv: int = 0
    repeats: int = 1  # cross-fitting drawn this many times, each with another shuffle
    # Called by networks after each epoch with their validation predictions (Ray's ASHA).
    on_epoch: Callable[[int, np.ndarray], None] | None = None
    _encoded: dict[str, tuple[Any, np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False
    )

    @property
    def y_val(self) -> np.ndarray:
        """The truth that validation predictions are scored on (all training rows under cv)."""
        d = self.dataset
        return np.concatenate([d.y_fit, d.y_val]) if self.cv else d.y_val

    def encoded(self, encoding: str) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
        """The fitted encoder and encoded fit/val/test matrices, computed once per encoding.

        Under cv, `fit` and `val` are both all training rows (fit rows first)."""
        if encoding not in self._encoded:
            d = self.dataset
            if self.cv:
                x_train = pd.concat([d.x_fit, d.x_val], ignore_index=True)
                encoder = fit_encoder(encoding, d.schema, x_train)
                x_enc = transform(encoder, x_train)
                self._encoded[encoding] = (encoder, x_enc, x_enc, transform(encoder, d.x_test))
            else:
                encoder = fit_encoder(encoding, d.schema, d.x_fit)
                self._encoded[encoding] = (
                    encoder,
                    transform(encoder, d.x_fit),
                    transform(encoder, d.x_val),
                    transform(encoder, d.x_test),
                )
        return self._encoded[encoding]

    @property
    def n_models(self) -> int:
        """Models one cross-fitted trial fits: every fold of every repeat."""
        return self.cv * self.repeats

    def folds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(train rows, held-out rows) per fold, stratified for classification where possible;
        under repeats, each repeat's folds in turn, shuffled by its own seed."""
        classes = self.dataset.task != "regression"
        return [
            fold
            for r in range(self.repeats)
            for fold in fold_rows(self.y_val, self.cv, classes, self.seed + 1_000 * r)
        ]


@dataclass
class TrialResult:
    val_score: float
    test_score: float | None  # None without a test part
    fit_seconds: float
    predict_seconds: float
    extra_scores: dict[str, float]
    n_params: int | None = None  # trainable and other weights of a network
    files: list[str] = field(default_factory=list)  # the trial folder's files, for dashboards
    # What one refit of it would take on the rows one of its models saw (`search.budget`).
    refit_seconds: float | None = None
    fold_scores: list[float] = field(default_factory=list)  # cross-fitted: each fold's score


@dataclass
class Fitted:
    """What fitting a configuration produced, once or across folds."""

    val_pred: np.ndarray
    test_pred: np.ndarray
    files: list[str]
    fit_seconds: float
    predict_seconds: float
    n_params: int | None
    # Further targets: (validation, test) predictions of each, in `Dataset.others` order.
    others: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    # Per fitted model, the iteration/epoch counts its early stopping chose (for the refit).
    stopped_at: list[dict[str, Any]] = field(default_factory=list)
    refit_seconds: float | None = None  # one model: fit up to those counts, save, load
    fold_scores: list[float] = field(default_factory=list)  # cross-fitted: each fold's score


def _kept_share(model: Any) -> float:
    share = getattr(model, "kept_share", None)
    return float(share()) if callable(share) else 1.0


def refit_cost(fit_seconds: float, model: Any, save_seconds: float) -> float:
    """What refitting this model would take, on its rows: the fit up to the rounds or epochs
    its early stopping kept, saving it, and loading it again to predict (about as long as the
    save; a forest of deep trees on 20,000 rows is a gigabyte to write and read)."""
    return fit_seconds * _kept_share(model) + 2 * save_seconds


def _stopped_at(model: Any) -> dict[str, Any]:
    stopped = getattr(model, "stopped_at", None)
    return dict(stopped()) if callable(stopped) else {}


def _n_params(model: Any) -> int | None:
    count = getattr(model, "count_params", None)
    value = count() if callable(count) else None
    return int(value) if value is not None else None


def fold_score(metric: Metric, y: np.ndarray, pred: np.ndarray) -> float:
    """A fold's score, NaN where the metric is undefined on it (a class missing from the
    fold's rows): the fold-halving bar then ignores this trial's fold."""
    try:
        return float(metric(y, pred))
    except ValueError:
        return float("nan")


def predict_test(model: Any, x_test: np.ndarray, ctx: BuildContext) -> np.ndarray:
    """The test part's predictions; with no test part (`--test-size 0`), none, shaped."""
    if len(x_test):
        return model.predict(x_test)
    return np.zeros((0, ctx.n_classes) if ctx.task != "regression" else (0,))


def check_predictions(pred: np.ndarray, n_rows: int, task: str, n_classes: int) -> None:
    expected = (n_rows, n_classes) if task != "regression" else (n_rows,)
    if pred.shape != expected:
        raise TrialFailed(f"predictions have shape {pred.shape}; expected {expected}")
    if not np.all(np.isfinite(pred)):
        raise TrialFailed("predictions contain NaN or infinite values")


def _fit_once(
    family: Family,
    params: dict[str, Any],
    build_ctx: BuildContext,
    ctx: TrialContext,
    encoded: tuple[Any, np.ndarray, np.ndarray, np.ndarray],
    trial_dir: Path,
) -> Fitted:
    """Fit on the fit rows (validation rows for early stopping); predict validation and test."""
    _, x_fit, x_val, x_test = encoded
    data = ctx.dataset
    build_ctx = replace(build_ctx, log_dir=trial_dir / TENSORBOARD_DIR, work_dir=trial_dir)
    y_fit, y_val = data.y_fit, data.y_val
    if data.others:  # one column per target, the objective first
        y_fit = np.column_stack([y_fit, *(o.y_fit for o in data.others)])
        y_val = np.column_stack([y_val, *(o.y_val for o in data.others)])
    if data.others and not family.uses_keras:
        model: Any = PerTarget(family, params, build_ctx)
    else:
        model = family.build(params, build_ctx)
    start = time.perf_counter()
    model.fit(x_fit, y_fit, x_val, y_val, deadline=ctx.deadline)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    val_pred, test_pred = model.predict(x_val), predict_test(model, x_test, build_ctx)
    predict_seconds = time.perf_counter() - start
    others = []
    if data.others:
        test_others = (
            model.predict_others(x_test)
            if len(x_test)
            else [np.zeros((0, o[2]) if o[1] != "regression" else (0,)) for o in build_ctx.others]
        )
        others = list(zip(model.predict_others(x_val), test_others, strict=True))
    start = time.perf_counter()
    files = model.save(trial_dir)
    save_seconds = time.perf_counter() - start
    return Fitted(
        val_pred,
        test_pred,
        files,
        fit_seconds,
        predict_seconds,
        _n_params(model),
        others,
        [_stopped_at(model)],
        refit_cost(fit_seconds, model, save_seconds),
    )


def _cross_fit(
    family: Family,
    params: dict[str, Any],
    build_ctx: BuildContext,
    ctx: TrialContext,
    encoded: tuple[Any, np.ndarray, np.ndarray, np.ndarray],
    trial_dir: Path,
    bars: list[float] | None = None,
) -> Fitted:
    """K models on K-1 folds each (the held-out fold for early stopping): out-of-fold
    predictions for every training row, test predictions averaged; each fold saved apart.

    With `bars` (`search.fold_halving`), a costly trial below the bar after its first or
    second fold stops there (`TrialPruned`) and leaves nothing behind."""
    _, x_train, _, x_test = encoded
    y = ctx.y_val
    oof: np.ndarray | None = None
    test_sum: np.ndarray | None = None
    fit_seconds = predict_seconds = 0.0
    files: list[str] = []
    stopped: list[dict[str, Any]] = []
    refit_seconds = 0.0
    scores: list[float] = []
    if family.uses_keras:  # a process's first import (~10 s) is no fold's share of the time
        from automl.models.keras_base import import_keras

        import_keras(build_ctx.threads)
    for k, (train_rows, held_rows) in enumerate(ctx.folds()):
        if k and ctx.deadline is not None and time.time() >= ctx.deadline:
            raise TrialFailed(f"the time budget ran out after {k} of {ctx.n_models} folds")
        fold_dir = trial_dir / fold_name(k)
        fold_dir.mkdir()
        model = family.build(
            params, replace(build_ctx, log_dir=fold_dir / TENSORBOARD_DIR, work_dir=fold_dir)
        )
        start = time.perf_counter()
        model.fit(
            x_train[train_rows],
            y[train_rows],
            x_train[held_rows],
            y[held_rows],
            deadline=fold_deadline(ctx.deadline, k, ctx.n_models),
        )
        fold_seconds = time.perf_counter() - start
        fit_seconds += fold_seconds
        start = time.perf_counter()
        held_pred = model.predict(x_train[held_rows])
        test_pred = predict_test(model, x_test, build_ctx)
        predict_seconds += time.perf_counter() - start
        if oof is None:
            oof = np.zeros((len(y), *held_pred.shape[1:]))
            test_sum = np.zeros_like(test_pred, dtype=float)
        oof[held_rows] += held_pred / ctx.repeats  # each row is held out once per repeat
        test_sum += test_pred
        start = time.perf_counter()
        write_manifest(fold_dir, model.save(fold_dir))
        save_seconds = time.perf_counter() - start
        refit_seconds += refit_cost(fold_seconds, model, save_seconds) / ctx.n_models
        files.append(f"{fold_name(k)}/{MANIFEST}")
        n_params = _n_params(model)
        stopped.append(_stopped_at(model))
        scores.append(fold_score(ctx.metric, y[held_rows], held_pred))
        costly = family.uses_keras or fit_seconds / len(scores) >= COSTLY_FOLD_SECONDS
        reason = stop_reason(scores, bars, costly, ctx.metric.greater_is_better,
                             ctx.metric.name, ctx.n_models)  # fmt: skip
        if reason is not None:
            shutil.rmtree(trial_dir, ignore_errors=True)
            raise TrialPruned(len(scores), reason, statistics.fmean(scores))
    assert oof is not None and test_sum is not None
    return Fitted(
        oof,
        test_sum / ctx.n_models,
        files,
        fit_seconds,
        predict_seconds,
        n_params,
        [],
        stopped,
        refit_seconds,
        scores,
    )


def fold_deadline(deadline: float | None, k: int, folds: int) -> float | None:
    """Fold `k`'s share of the time left to the trial's deadline. A trial that would run out
    of time then trains every fold for less (networks and boosting stop at their deadline with
    their best state) and completes; with the whole deadline on each fold, its first folds
    took it all and the trial failed with nothing to show (boston_housing's first MLP: "ran
    out after 3 of 5 folds")."""
    if deadline is None:
        return None
    now = time.time()
    return now + max(0.0, deadline - now) / max(1, folds - k)


def _continued_from(flat: dict[str, Any], family: Family, ctx: TrialContext) -> dict[str, Any]:
    """For a network promoted from a lower rung: the trial it continues from and the epochs
    its weights had already trained (the lower rungs' own and inherited ones), which a refit
    from scratch adds to its own."""
    if WARM_START_KEY not in flat or not family.uses_keras or ctx.cv:
        return {}
    number = int(flat[WARM_START_KEY])
    parent = read_json(verify(ctx.run.trial_dir(number), "config.json"))
    epochs = sum(int(s.get("epochs", 0)) for s in parent.get("stopped_at") or [])
    inherited = epochs + int(parent.get("inherited_epochs", 0))
    return {"continued_from": number, "inherited_epochs": inherited}


def evaluate(number: int, flat: dict[str, Any], ctx: TrialContext) -> TrialResult:
    if DEADLINE_KEY in flat:  # this trial's own, from the driver as it started
        ctx.deadline = float(flat[DEADLINE_KEY])
    config = ctx.space.config(flat)
    family = FAMILIES[config.family]
    if EPOCHS_KEY in flat and family.uses_keras:  # the searcher's epoch budget for this trial
        config.params["epochs"] = int(flat[EPOCHS_KEY])
    data = ctx.dataset
    n_classes = len(data.target.classes)
    trial_dir = ctx.run.trial_dir(number)
    if trial_dir.exists():  # left by an interrupted attempt of this same trial
        shutil.rmtree(trial_dir)
    trial_dir.mkdir(parents=True)

    encoded = ctx.encoded(family.encoding)
    build_ctx = BuildContext(
        task=data.task,
        n_classes=n_classes,
        seed=ctx.seed,
        threads=ctx.threads,
        on_epoch=None if ctx.cv else ctx.on_epoch,
        layout=layout(encoded[0]),
        others=tuple((o.name, o.task, len(o.target.classes)) for o in data.others),
    )
    continued = _continued_from(flat, family, ctx)
    if continued:
        build_ctx = replace(build_ctx, warm_start=ctx.run.trial_dir(continued["continued_from"]))
    if ctx.cv:
        bars = flat.get(FOLD_BAR_KEY)
        fitted = _cross_fit(family, config.params, build_ctx, ctx, encoded, trial_dir, bars)
    else:
        fitted = _fit_once(family, config.params, build_ctx, ctx, encoded, trial_dir)
    if family.uses_keras and fitted.refit_seconds is not None:  # every row, inherited epochs
        fitted.refit_seconds *= refit_scale(
            config.params, fitted.stopped_at, continued.get("inherited_epochs", 0)
        )
    val_pred, test_pred = fitted.val_pred, fitted.test_pred
    y_val = ctx.y_val
    check_predictions(val_pred, len(y_val), data.task, n_classes)
    check_predictions(test_pred, len(data.y_test), data.task, n_classes)

    val_score = ctx.metric(y_val, val_pred)
    if not np.isfinite(val_score):
        raise TrialFailed(f"validation {ctx.metric.name} is {val_score}")
    tested = len(data.y_test) > 0  # `--test-size 0`: no test part, no test scores
    test_score = ctx.metric(data.y_test, test_pred) if tested else None
    extra = {
        f"test_{m}": METRICS[m](data.y_test, test_pred) for m in EXTRA_METRICS[data.task] if tested
    }
    other_files = []
    for i, (other, (val_other, test_other)) in enumerate(
        zip(data.others, fitted.others, strict=True)
    ):
        check_predictions(val_other, len(y_val), other.task, len(other.target.classes))
        check_predictions(test_other, len(data.y_test), other.task, len(other.target.classes))
        metric = get_metric(None, other.task)  # each target scored by its task's metric
        extra[f"val_{metric.name}[{other.name}]"] = metric(other.y_val, val_other)
        if tested:
            extra[f"test_{metric.name}[{other.name}]"] = metric(other.y_test, test_other)
        write_npy_atomic(trial_dir / f"val_pred_target_{i}.npy", val_other)
        write_npy_atomic(trial_dir / f"test_pred_target_{i}.npy", test_other)
        other_files += [f"val_pred_target_{i}.npy", f"test_pred_target_{i}.npy"]

    buffer = io.BytesIO()
    joblib.dump(encoded[0], buffer)
    write_bytes_atomic(trial_dir / ENCODER_FILE, buffer.getvalue())
    write_npy_atomic(trial_dir / "val_pred.npy", val_pred)
    write_npy_atomic(trial_dir / "test_pred.npy", test_pred)
    write_json_atomic(
        trial_dir / "config.json",
        {
            "family": config.family,
            "params": config.params,
            "folds": ctx.n_models or None,
            "stopped_at": fitted.stopped_at,
        }
        | continued,
    )
    names = [*fitted.files, ENCODER_FILE, "val_pred.npy", "test_pred.npy", "config.json"]
    names += other_files
    result = TrialResult(
        val_score,
        test_score,
        fitted.fit_seconds,
        fitted.predict_seconds,
        extra,
        fitted.n_params,
        [*names, "result.json"],
        fitted.refit_seconds,
        fitted.fold_scores,
    )
    write_json_atomic(trial_dir / "result.json", result.__dict__ | {"metric": ctx.metric.name})
    write_manifest(trial_dir, [*names, "result.json"])
    write_hparams(
        trial_dir / TENSORBOARD_DIR / "hparams",
        trial_id=f"t{number:04d}-{config.family}",
        hparams={"family": config.family, **config.params},
        metrics={"val_score": val_score}
        | ({"test_score": test_score} if test_score is not None else {}),
    )
    return result
