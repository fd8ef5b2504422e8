"""Metrics as a registry: each knows its direction and whether it reads probabilities.

Predictions are always arrays the ensemble can average: class probabilities of shape
(n, n_classes) for classification, values of shape (n,) for regression.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn import metrics as skm

from automl.errors import UserInputError

EPS = 1e-15


@dataclass(frozen=True)
class Metric:
    name: str
    greater_is_better: bool
    tasks: tuple[str, ...]
    fn: Callable[[np.ndarray, np.ndarray], float]

    def __call__(self, y_true: np.ndarray, pred: np.ndarray) -> float:
        return float(self.fn(y_true, pred))

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "maximize" if self.greater_is_better else "minimize"

    def error(self, y_true: np.ndarray, pred: np.ndarray) -> float:
        """The metric as a loss to minimize (what ensembles optimize)."""
        value = self(y_true, pred)
        return -value if self.greater_is_better else value

    def better(self, a: float, b: float) -> bool:
        return a > b if self.greater_is_better else a < b


def _binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney form of ROC AUC (ties get average ranks): fast enough for inner loops
    (`_batched_auc_of_scores` for one row)."""
    scores = np.ascontiguousarray(np.asarray(score, dtype=np.float64)[None, :])
    return float(_batched_auc_of_scores(np.asarray(y), scores)[0])


def _roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    if proba.shape[1] == 2:
        return _binary_auc(np.asarray(y), proba[:, 1])
    return skm.roc_auc_score(y, _normalize(proba), multi_class="ovr", labels=range(proba.shape[1]))


def _normalize(proba: np.ndarray) -> np.ndarray:
    proba = np.clip(proba, EPS, 1.0)
    return proba / proba.sum(axis=1, keepdims=True)


def _log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    picked = _normalize(proba)[np.arange(len(y)), np.asarray(y, dtype=int)]
    return float(-np.mean(np.log(picked)))


# Named functions, not lambdas: a metric travels with the trial context to worker processes.
def _accuracy(y: np.ndarray, proba: np.ndarray) -> float:
    return float(np.mean(proba.argmax(1) == y))


def _balanced_accuracy(y: np.ndarray, proba: np.ndarray) -> float:
    return float(skm.balanced_accuracy_score(y, proba.argmax(1)))


def _rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - pred) ** 2)))


def _mae(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(y - pred)))


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("roc_auc", True, ("binary", "multiclass"), _roc_auc),
        Metric("log_loss", False, ("binary", "multiclass"), _log_loss),
        Metric("accuracy", True, ("binary", "multiclass"), _accuracy),
        Metric("balanced_accuracy", True, ("binary", "multiclass"), _balanced_accuracy),
        Metric("rmse", False, ("regression",), _rmse),
        Metric("mae", False, ("regression",), _mae),
        Metric("r2", True, ("regression",), skm.r2_score),
    )
}

# --------------------------------------------------------------------------------------------
# The same metrics over a batch of candidate predictions at once (greedy ensembling scores every
# member's addition at each step): exactly the values of the functions above, vectorized.


def _batched_binary_auc(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of each row of `proba[..., 1]`, ties at their average rank (as
    `_binary_auc`).

    Probabilities (0 to 1) take a sort of integers instead of an argsort: a non-negative
    float's bit pattern, read as an integer, orders as the float does, so with the label in the
    lowest bit one `np.sort` orders each row by score, negatives first among equal scores, and
    each positive's position counts the negatives at or below it (measured: 50 x 10,000, 11 ms
    instead of 26). Rows with tied scores then take the exact tie-averaging path."""
    return _batched_auc_of_scores(y, np.ascontiguousarray(proba[..., 1], dtype=np.float64))


def _batched_auc_of_scores(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """`_batched_binary_auc` of the positive class's scores, (candidates, rows)."""
    return auc_of_scores(y)(scores)


def auc_of_scores(y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """`_batched_auc_of_scores` for one truth, what it needs of `y` computed once: the form
    for inner loops that score many candidates against the same rows (Nelder-Mead, greedy)."""
    positive = np.asarray(y) == 1
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    label_bits = positive.astype(np.int64)
    positions = np.arange(len(positive), dtype=np.int64)
    offset = n_pos * (n_pos - 1) // 2

    def auc(scores: np.ndarray) -> np.ndarray:
        if n_pos == 0 or n_neg == 0:
            return np.full(len(scores), np.nan)
        if scores.size and scores.min() >= 0.0 and scores.max() <= 1.0:
            keys = (scores + 0.0).view(np.int64)  # + 0.0: a -0.0 becomes 0.0
            keys <<= 1
            keys |= label_bits
            keys.sort(axis=1)
            # Each positive's position = negatives at or below it + positives before it.
            out = ((keys & 1) @ positions - offset) / (n_pos * n_neg)
            # Equal neighbours but for the label bit are ties (their xor is 0 or 1).
            tied = np.flatnonzero(((keys[:, 1:] ^ keys[:, :-1]) < 2).any(axis=1))
            if len(tied):
                out[tied] = _ranked_binary_auc(scores[tied], positive, n_pos, n_neg)
            return out
        return _ranked_binary_auc(scores, positive, n_pos, n_neg)

    return auc


def _ranked_binary_auc(
    scores: np.ndarray, positive: np.ndarray, n_pos: int, n_neg: int
) -> np.ndarray:
    """The same by ranks: an argsort of each row, each tie group at its average rank."""
    n = scores.shape[1]
    order = np.argsort(scores, axis=1)
    ordered = np.take_along_axis(scores, order, axis=1)
    picked = positive[order]
    rank_sum = picked @ np.arange(1.0, n + 1.0)  # ranks without ties
    tied = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
    if len(tied):  # rows with ties: each tie group at its average rank
        ordered, picked = ordered[tied], picked[tied]
        position = np.arange(n)
        starts = np.ones(ordered.shape, dtype=bool)
        starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        ends = np.ones(ordered.shape, dtype=bool)
        ends[:, :-1] = starts[:, 1:]
        first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
        last = np.minimum.accumulate(np.where(ends, position, n - 1)[:, ::-1], axis=1)[:, ::-1]
        rank_sum[tied] = np.where(picked, (first + last) / 2.0 + 1.0, 0.0).sum(axis=1)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _batched_log_loss(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    rows = np.arange(proba.shape[1])
    picked = np.maximum(proba[:, rows, np.asarray(y, dtype=int)], EPS)
    # Clipping at EPS changes a row's sum only if some probability is below EPS (rare).
    ones = np.ones(proba.shape[2])  # a matrix product sums a short last axis 10x faster
    totals = proba @ ones if proba.min() >= EPS else np.clip(proba, EPS, 1.0) @ ones
    return -np.mean(np.log(np.minimum(picked, 1.0) / totals), axis=1)


def _batched_accuracy(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    return np.mean(proba.argmax(axis=2) == np.asarray(y), axis=1)


def _batched_rmse(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean((pred - np.asarray(y)) ** 2, axis=1))


def _batched_mae(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return np.mean(np.abs(pred - np.asarray(y)), axis=1)


_BATCHED = {
    "log_loss": _batched_log_loss,
    "accuracy": _batched_accuracy,
    "rmse": _batched_rmse,
    "mae": _batched_mae,
}


def row_errors(metric: Metric, y: np.ndarray, candidates: np.ndarray) -> np.ndarray | None:
    """Per-row errors (candidates, rows) whose sum over any rows ranks the candidates as
    `batched_errors` on those rows does (ties aside), for metrics that are means over rows or
    monotone in one (RMSE and R² in the squared error); None for the others (AUC, balanced
    accuracy). Choosing the best member on many subsets of rows then costs a sum each."""
    if metric.name == "log_loss" and candidates.ndim == 3:
        rows = np.arange(candidates.shape[1])
        picked = np.clip(candidates[:, rows, np.asarray(y, dtype=int)], EPS, 1.0)
        return -np.log(picked / np.clip(candidates, EPS, 1.0).sum(axis=2))
    if metric.name == "accuracy" and candidates.ndim == 3:
        return -(candidates.argmax(axis=2) == np.asarray(y)).astype(float)
    if metric.name in ("rmse", "r2") and candidates.ndim == 2:
        return (candidates - np.asarray(y)) ** 2
    if metric.name == "mae" and candidates.ndim == 2:
        return np.abs(candidates - np.asarray(y))
    return None


def batched_errors(metric: Metric, y: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """`metric.error(y, c)` for each candidate `c` along the first axis, vectorized where the
    metric allows (every default metric), one by one otherwise."""
    fn = _BATCHED.get(metric.name)
    if metric.name == "roc_auc" and candidates.ndim == 3 and candidates.shape[2] == 2:
        fn = _batched_binary_auc
    if fn is None:
        values = np.array([metric(y, c) for c in candidates])
    else:
        values = np.asarray(fn(y, candidates), dtype=float)
    return -values if metric.greater_is_better else values


def additive_form(
    metric: Metric, stacked: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The members' predictions in the smallest form whose averages still give the metric,
    and the batched error of such averages: what greedy selection scores at every step.

    Log-loss needs only each member's probability of the true class and its row sums (the
    metric renormalizes), binary AUC the positive class's scores: 2 or 1 numbers per row
    instead of one per class, gathered once instead of at every step. Otherwise the
    predictions themselves. Equal to `batched_errors` on the averages, up to probabilities
    below 1e-15 that the metric clips."""
    if stacked.ndim == 3 and metric.name == "log_loss":
        rows = np.arange(stacked.shape[1])
        picked = stacked[:, rows, np.asarray(y, dtype=int)]
        sums = stacked.sum(axis=2)
        if np.abs(sums - 1.0).max() < 1e-12:  # probabilities: every average sums to one too

            def normalized_log_loss_errors(mixed: np.ndarray) -> np.ndarray:
                return -np.mean(np.log(np.clip(mixed, EPS, 1.0)), axis=-1)

            return picked, normalized_log_loss_errors
        view = np.stack([picked, sums], axis=-1)

        def log_loss_errors(mixed: np.ndarray) -> np.ndarray:
            picked = np.minimum(np.maximum(mixed[..., 0], EPS), 1.0)
            return -np.mean(np.log(picked / np.maximum(mixed[..., 1], EPS)), axis=-1)

        return view, log_loss_errors
    if stacked.ndim == 3 and stacked.shape[2] == 2 and metric.name == "roc_auc":
        auc = auc_of_scores(y)

        def auc_errors(mixed: np.ndarray) -> np.ndarray:
            return -auc(mixed)

        return np.ascontiguousarray(stacked[..., 1]), auc_errors
    return stacked, lambda mixed: batched_errors(metric, y, mixed)


DEFAULT_METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}
# Reported beside the objective on the leaderboard.
EXTRA_METRICS = {"binary": ("accuracy",), "multiclass": ("accuracy",), "regression": ("r2",)}


def get_metric(name: str | None, task: str) -> Metric:
    name = name or DEFAULT_METRIC[task]
    if name not in METRICS:
        raise UserInputError(
            f"metric must be one of {', '.join(METRICS)}; got {name!r}", settings=("metric",)
        )
    metric = METRICS[name]
    if task not in metric.tasks:
        raise UserInputError(
            f"metric {name} does not apply to a {task} task; "
            f"use one of {', '.join(n for n, m in METRICS.items() if task in m.tasks)}",
            settings=("metric",),
        )
    return metric
