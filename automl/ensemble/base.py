"""What every weighted-average ensemble shares: stacking predictions, averaging, predicting."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from automl.metrics import Metric


def stack(preds: Sequence[np.ndarray]) -> np.ndarray:
    """Members' predictions as one (members, rows[, classes]) array, shapes checked."""
    if not preds:
        raise ValueError("an ensemble needs at least one member's predictions")
    shapes = {p.shape for p in preds}
    if len(shapes) != 1:
        raise ValueError(f"members' predictions differ in shape: {sorted(shapes)}")
    return np.stack([np.asarray(p, dtype=float) for p in preds])


def weighted_average(stacked: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.tensordot(np.asarray(weights, dtype=float), stacked, axes=1)


class WeightedEnsemble(ABC):
    """Base: subclasses set `weights_` in `fit`; predicting is the weighted average."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    @abstractmethod
    def fit(self, preds: Sequence[np.ndarray], y: np.ndarray) -> WeightedEnsemble:
        """Learn `weights_` from members' validation predictions and the truth."""

    def predict(self, preds: Sequence[np.ndarray]) -> np.ndarray:
        if not hasattr(self, "weights_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit first")
        return weighted_average(stack(preds), self.weights_)

    def score(self, preds: Sequence[np.ndarray], y: np.ndarray) -> float:
        return self.metric(y, self.predict(preds))
