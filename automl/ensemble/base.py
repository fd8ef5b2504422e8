"""What every weighted-average ensemble shares: stacking predictions, averaging, predicting."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from automl.metrics import Metric


def stack(preds: Sequence[np.ndarray]) -> np.ndarray:
    """Members' predictions as one (members, rows[, classes]) array, shapes checked; an array
    that already is one is used as it is (no copy)."""
    if isinstance(preds, np.ndarray) and preds.dtype == np.float64 and preds.ndim >= 2:
        if len(preds) == 0:
            raise ValueError("an ensemble needs at least one member's predictions")
        return preds
    if len(preds) == 0:
        raise ValueError("an ensemble needs at least one member's predictions")
    shapes = {p.shape for p in preds}
    if len(shapes) != 1:
        raise ValueError(f"members' predictions differ in shape: {sorted(shapes)}")
    return np.stack([np.asarray(p, dtype=float) for p in preds])


def weighted_average(stacked: np.ndarray, weights: np.ndarray, power: float = 1.0) -> np.ndarray:
    """The weighted mean of members; with `power` k != 1 (probabilities only), the weighted mean
    of p**k renormalized to sum to one per row, which sharpens (k > 1) or softens (k < 1)."""
    weights = np.asarray(weights, dtype=float)
    if power == 1.0 or stacked.ndim < 3:
        return np.tensordot(weights, stacked, axes=1)
    return normalized_mix(np.power(stacked, power), weights)


def normalized_mix(powered: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted mean of members' p**k (already raised), renormalized per row."""
    mixed = np.tensordot(weights, powered, axes=1)
    return mixed / mixed.sum(axis=-1, keepdims=True)


class Ensembler(ABC):
    """What every ensembler offers: fit on members' validation predictions, then predict.

    `weights_` says how much each member counts (for stacking: the share of the meta-learner's
    coefficients, a measure of reliance rather than averaging weights).
    """

    combiner = "weighted"  # how predict combines members: "weighted" average or "stacking"
    weights_: np.ndarray  # set by fit: how much each member counts

    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def __getstate__(self) -> dict:
        # A saved ensembler is its learned state; the metric (used only to fit) stays behind.
        return {k: v for k, v in self.__dict__.items() if k != "metric"}

    @abstractmethod
    def fit(self, preds: Sequence[np.ndarray], y: np.ndarray) -> Ensembler:
        """Learn from members' validation predictions and the truth."""

    @abstractmethod
    def predict(self, preds: Sequence[np.ndarray]) -> np.ndarray:
        """Combine members' predictions (same members, same order as in fit)."""

    def score(self, preds: Sequence[np.ndarray], y: np.ndarray) -> float:
        return self.metric(y, self.predict(preds))


class WeightedEnsemble(Ensembler):
    """Base: subclasses set `weights_` (and maybe `power_`) in `fit`; predicting averages."""

    power_ = 1.0

    @abstractmethod
    def fit(self, preds: Sequence[np.ndarray], y: np.ndarray) -> WeightedEnsemble:
        """Learn `weights_` from members' validation predictions and the truth."""

    def predict(self, preds: Sequence[np.ndarray]) -> np.ndarray:
        if not hasattr(self, "weights_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit first")
        return weighted_average(stack(preds), self.weights_, self.power_)
