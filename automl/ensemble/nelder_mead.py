"""Weighted average with weights optimized by Nelder-Mead on the validation metric.

Weights are parametrized as w = |z| / sum(|z|), so any point Nelder-Mead visits is a valid
weighting (non-negative, summing to one) and a member can be switched off exactly. The search
starts from the uniform weights, the greedy solution and the best single member; the best end
point wins, and since each start is a vertex of its simplex, the result is never worse on
validation than the best start.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize

from automl.ensemble.base import WeightedEnsemble, stack, weighted_average
from automl.ensemble.greedy import GreedyEnsemble
from automl.metrics import Metric

STARTS = ("uniform", "greedy", "best")
MIN_WEIGHT = 1e-3


def to_weights(z: np.ndarray) -> np.ndarray:
    a = np.abs(np.asarray(z, dtype=float))
    total = a.sum()
    return a / total if total > 0 else np.full(len(a), 1.0 / len(a))


class NelderMeadEnsemble(WeightedEnsemble):
    def __init__(
        self, metric: Metric, starts: Sequence[str] = STARTS, max_evaluations: int = 3000
    ) -> None:
        super().__init__(metric)
        unknown = [s for s in starts if s not in STARTS]
        if unknown:
            raise ValueError(f"NelderMeadEnsemble starts must be among {STARTS}; got {unknown}")
        self.starts = tuple(starts)
        self.max_evaluations = max_evaluations

    def _start_points(self, stacked: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        n = stacked.shape[0]
        points: dict[str, np.ndarray] = {}
        if "uniform" in self.starts:
            points["uniform"] = np.full(n, 1.0 / n)
        if "greedy" in self.starts:
            points["greedy"] = GreedyEnsemble(self.metric).fit(list(stacked), y).weights_
        if "best" in self.starts:
            errors = [self.metric.error(y, stacked[i]) for i in range(n)]
            points["best"] = np.eye(n)[int(np.argmin(errors))]
        return points

    def fit(self, preds: Sequence[np.ndarray], y: np.ndarray) -> NelderMeadEnsemble:
        stacked = stack(preds)
        n = stacked.shape[0]

        def objective(z: np.ndarray) -> float:
            return self.metric.error(y, weighted_average(stacked, to_weights(z)))

        self.starts_ = {}
        best_name, best_weights, best_error = "", np.full(n, 1.0 / n), np.inf
        for name, start in self._start_points(stacked, y).items():
            start_error = objective(start)
            if n == 1:
                weights, error = start, start_error
            else:
                step = max(1.0 / n, 0.05)
                simplex = np.vstack([start] + [start + step * np.eye(n)[i] for i in range(n)])
                result = minimize(
                    objective,
                    start,
                    method="Nelder-Mead",
                    options={
                        "initial_simplex": simplex,
                        "maxfev": self.max_evaluations,
                        "xatol": 1e-4,
                        "fatol": 1e-7,
                    },
                )
                weights, error = to_weights(result.x), float(result.fun)
                if error > start_error:  # cannot happen with start in the simplex; be explicit
                    weights, error = start, start_error
            self.starts_[name] = {"start_error": start_error, "end_error": error}
            if error < best_error:
                best_name, best_weights, best_error = name, weights, error
        self.best_start_ = best_name
        self.weights_ = self._prune(best_weights, objective)
        return self

    @staticmethod
    def _prune(weights: np.ndarray, objective) -> np.ndarray:  # noqa: ANN001
        """Drop members below MIN_WEIGHT when that costs nothing on validation (fewer to load)."""
        pruned = np.where(weights < MIN_WEIGHT, 0.0, weights)
        pruned = pruned / pruned.sum()
        return pruned if objective(pruned) <= objective(weights) + 1e-9 else weights
