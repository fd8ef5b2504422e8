"""What an ensemble is made of and whether its gain is real.

- Leave-one-out effect: the validation score without one member (the others' weights
  renormalized, nothing refit) against the full ensemble's; positive means the member helps.
- Error correlation: Pearson correlation of members' errors on validation (1 - p(true class)
  for classification, the residual for regression); low correlation is what makes averaging pay.
- Held-out check: the gain over the best single member on rows neither was chosen on. For
  each of the cross-validated score's five folds, the ensemble fit without the fold (the fit
  that predicted it) is scored on it against the member that was best on the other four
  fifths. Without `--cv` the ensemble is fit on the split that chose its members, so its full
  validation gain is optimistic; the held-out gain is not. It reuses the five fits the
  cross-validated score needs (a split in halves cost two more fits, a quarter of a build).
- Cross-validated score: the ensemble is fit on 4/5 of the validation (or out-of-fold) rows
  and predicts the other fifth, five times; the score of those predictions is what
  `automl.load("best")` compares with single models' validation scores, because an ensemble
  scored on the rows its weights were fit on always looks at least as good as its best member.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, cast

import numpy as np

from automl.ensemble.base import Ensembler, normalized_mix, stack, weighted_average
from automl.folds import fold_rows
from automl.metrics import Metric, batched_errors, row_errors

MAX_CORRELATED = 12
LEAVE_ONE_OUT_BATCH = 16  # members' absences scored at once (memory: 16 ensembles' predictions)


def member_errors(stacked: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(members, rows) errors: 1 - p(true class), or prediction minus truth."""
    if stacked.ndim == 2:
        return stacked - np.asarray(y, dtype=float)
    rows = np.arange(stacked.shape[1])
    return 1.0 - stacked[:, rows, np.asarray(y, dtype=int)]


def error_correlation(stacked: np.ndarray, y: np.ndarray) -> np.ndarray:
    errors = member_errors(stacked, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(errors)
    return np.nan_to_num(np.atleast_2d(corr), nan=0.0)


def leave_one_out(
    ensembler: Ensembler, stacked: np.ndarray, y: np.ndarray, metric: Metric
) -> list[float | None]:
    """Error without member i minus the full ensemble's error, for weighted members (else None)."""
    if ensembler.combiner != "weighted":
        return [None] * stacked.shape[0]
    weights = np.asarray(ensembler.weights_, dtype=np.float64)
    power = getattr(ensembler, "power_", 1.0)
    if power != 1.0 and stacked.ndim == 3:  # p**k once, not once per member left out
        raised = np.power(stacked, power)

        def mix(w: np.ndarray) -> np.ndarray:
            return normalized_mix(raised, w)
    else:

        def mix(w: np.ndarray) -> np.ndarray:
            return weighted_average(stacked, w)

    full = metric.error(y, mix(weights))
    effects: list[float | None] = [None] * len(weights)
    dropped = [i for i, w in enumerate(weights) if w > 0 and weights.sum() - w > 0]
    for start in range(0, len(dropped), LEAVE_ONE_OUT_BATCH):  # absences scored in batches
        batch = dropped[start : start + LEAVE_ONE_OUT_BATCH]
        rests = np.repeat(weights[None, :], len(batch), axis=0)
        rests[np.arange(len(batch)), batch] = 0.0
        rests /= rests.sum(axis=1, keepdims=True)
        mixes = np.stack([mix(rest) for rest in rests])
        for i, error in zip(batch, batched_errors(metric, y, mixes), strict=True):
            effects[i] = float(error) - full
    return effects


def signed_gain(metric: Metric, ensemble: float, single: float) -> float:
    """How much better the ensemble is than the single model, positive when better."""
    return ensemble - single if metric.greater_is_better else single - ensemble


def held_out_check(
    honest: np.ndarray | None,
    preds: Sequence[np.ndarray],
    y: np.ndarray,
    metric: Metric,
    parts: list[tuple[np.ndarray, np.ndarray]] | None,
    fitted: Sequence[Ensembler] = (),
) -> dict[str, Any]:
    """The ensemble's gain over the best single member on each held-out fold: `honest` holds
    each row's prediction by an ensemble fit without its fold (`parts`: fit rows, held rows),
    and the single member is the one best on the fold's fit rows: as the fold's ensemble
    (`fitted`) scored its members there, when it did (`single_errors_`)."""
    if honest is None or not parts:
        return {"gains": [], "mean_gain": None, "note": "validation too small to split"}
    stacked = stack(preds)
    per_row = None
    gains = []
    for i, (fit_rows, held_rows) in enumerate(parts):
        fit_errors = getattr(fitted[i], "single_errors_", None) if i < len(fitted) else None
        if fit_errors is None:
            if per_row is None:
                per_row = row_errors(metric, y, stacked)
            if per_row is not None:  # the sum over the fit rows: all rows less the held
                fit_errors = per_row.sum(axis=1) - per_row[:, held_rows].sum(axis=1)
            else:
                fit_errors = batched_errors(metric, y[fit_rows], stacked[:, fit_rows])
        best = int(np.argmin(fit_errors))
        try:
            ensemble_score = metric(y[held_rows], honest[held_rows])
            single_score = metric(y[held_rows], stacked[best, held_rows])
        except ValueError:  # e.g. one class only in a tiny fold: no AUC there
            continue
        gains.append(signed_gain(metric, ensemble_score, single_score))
    if not gains:
        return {"gains": [], "mean_gain": None, "note": "validation too small to split"}
    return {"gains": gains, "mean_gain": float(np.mean(gains))}


def describe(
    ensembler: Ensembler,
    names: Sequence[str],
    val_preds: Sequence[np.ndarray],
    y_val: np.ndarray,
    metric: Metric,
) -> dict[str, Any]:
    """Leave-one-out effects and the error correlation of the members that count most."""
    stacked = stack(val_preds)
    weights = np.asarray(ensembler.weights_, dtype=np.float64)
    shown = [i for i in np.argsort(-weights) if weights[i] > 0][:MAX_CORRELATED]
    corr = error_correlation(stacked[shown], y_val) if shown else np.zeros((0, 0))
    return {
        "leave_one_out": dict(
            zip(names, leave_one_out(ensembler, stacked, y_val, metric), strict=True)
        ),
        "error_correlation": {
            "members": [names[i] for i in shown],
            "matrix": np.round(corr, 4).tolist(),
        },
    }


ENSEMBLE_FOLDS = 5


def honest_folds(
    y: np.ndarray, classification: bool, folds: int = ENSEMBLE_FOLDS, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The cross-validated score's folds (fit rows, held rows), None when the rows are too few."""
    if len(y) < 2 * folds:
        return None
    return fold_rows(np.asarray(y), folds, classification, seed)


def cross_validated_predictions(
    make: Callable[[], Ensembler],
    preds: Sequence[np.ndarray],
    y: np.ndarray,
    parts: list[tuple[np.ndarray, np.ndarray]] | None,
    pool: Executor | None = None,
) -> tuple[np.ndarray | None, list[Ensembler]]:
    """Each row predicted by an ensemble fit without its part of `parts` (`honest_folds`),
    and those ensembles; None (and no ensembles) without parts, or when a part cannot be fit
    (a class missing from it)."""
    if not parts:
        return None, []
    stacked = stack(preds)
    y = np.asarray(y)
    out = np.zeros(stacked.shape[1:], dtype=np.float64)
    try:
        fitted = fit_each(make, [(members(stacked, rows), y[rows]) for rows, _ in parts], pool)
    except ValueError:  # e.g. a class missing from a small part
        return None, []
    for ensembler, (_, held_rows) in zip(fitted, parts, strict=True):
        out[held_rows] = ensembler.predict(members(stacked, held_rows))
    return out, fitted


def members(stacked: np.ndarray, rows: np.ndarray) -> Sequence[np.ndarray]:
    """The members' predictions on `rows`, as one array (which `stack` takes as it is)."""
    return cast(Sequence[np.ndarray], stacked[:, rows])


def fit_each(
    make: Callable[[], Ensembler],
    parts: list[tuple[Sequence[np.ndarray], np.ndarray]],
    pool: Executor | None = None,
) -> list[Ensembler]:
    """A new ensembler fit on each (members' predictions, truth) part; in `pool`'s threads
    when given (the fits' sorting and matrix products release the GIL)."""
    if pool is None:
        return [make().fit(preds, y) for preds, y in parts]
    futures = [pool.submit(lambda p, t: make().fit(p, t), preds, y) for preds, y in parts]
    return [future.result() for future in futures]
