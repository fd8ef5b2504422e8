"""The plain mean of all members: the baseline every learned ensemble must beat."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from automl.ensemble.base import WeightedEnsemble, stack


class MeanEnsemble(WeightedEnsemble):
    def fit(self, preds: Sequence[np.ndarray], y: np.ndarray) -> MeanEnsemble:
        n = stack(preds).shape[0]
        self.weights_ = np.full(n, 1.0 / n)
        return self
