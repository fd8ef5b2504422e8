"""Metrics as a registry: each knows its direction and whether it reads probabilities.

Predictions are always arrays the ensemble can average: class probabilities of shape
(n, n_classes) for classification, values of shape (n,) for regression.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
    def direction(self) -> str:
        return "maximize" if self.greater_is_better else "minimize"

    def error(self, y_true: np.ndarray, pred: np.ndarray) -> float:
        """The metric as a loss to minimize (what ensembles optimize)."""
        value = self(y_true, pred)
        return -value if self.greater_is_better else value

    def better(self, a: float, b: float) -> bool:
        return a > b if self.greater_is_better else a < b


def _binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney form of ROC AUC (ties get average ranks): fast enough for inner loops."""
    from scipy.stats import rankdata

    positive = y == 1
    n_pos = int(positive.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


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

DEFAULT_METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}
# Reported beside the objective on the leaderboard.
EXTRA_METRICS = {"binary": ("accuracy",), "multiclass": ("accuracy",), "regression": ("r2",)}


def get_metric(name: str | None, task: str) -> Metric:
    name = name or DEFAULT_METRIC[task]
    if name not in METRICS:
        raise UserInputError(f"--metric must be one of {', '.join(METRICS)}; got {name!r}")
    metric = METRICS[name]
    if task not in metric.tasks:
        raise UserInputError(
            f"--metric {name} does not apply to a {task} task; "
            f"use one of {', '.join(n for n, m in METRICS.items() if task in m.tasks)}"
        )
    return metric
