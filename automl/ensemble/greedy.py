"""Greedy forward selection with replacement (Caruana et al., 2004), as AutoGluon does it.

At each step the member whose addition gives the lowest error joins (again, if already in);
ties go to a member already chosen, then to the earlier one. The trajectory is cut back to its
best point, and weights are pick counts over the ensemble size. Each step scores every
member's addition at once (`batched_errors`): 50 members on 10,000 rows in a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from automl.ensemble.base import WeightedEnsemble, stack
from automl.metrics import Metric, additive_form


class GreedyEnsemble(WeightedEnsemble):
    def __init__(self, metric: Metric, size: int = 25) -> None:
        super().__init__(metric)
        if size < 1:
            raise ValueError(f"GreedyEnsemble size must be >= 1; got {size}")
        self.size = size

    def fit(self, preds: Sequence[np.ndarray], y: np.ndarray) -> GreedyEnsemble:
        stacked = stack(preds)
        n_members = stacked.shape[0]
        view, errors_of = additive_form(self.metric, stacked, y)
        total = np.zeros_like(view[0])
        chosen: list[int] = []
        trajectory: list[float] = []
        for step in range(1, self.size + 1):
            errors = errors_of((total + view) / step)
            if step == 1:
                self.single_errors_ = errors  # each member alone
            best_error = errors.min()
            ties = np.flatnonzero(np.isclose(errors, best_error, rtol=0, atol=1e-12))
            already = [i for i in ties if i in chosen]
            pick = int(already[0] if already else ties[0])
            chosen.append(pick)
            total += view[pick]
            trajectory.append(float(best_error))
        best_len = int(np.argmin(trajectory)) + 1  # first occurrence: the smallest best ensemble
        counts = np.bincount(chosen[:best_len], minlength=n_members)
        self.chosen_ = chosen  # every pick, the first being the best single member
        self.indices_ = chosen[:best_len]
        self.trajectory_ = trajectory
        self.weights_ = counts / best_len
        return self
