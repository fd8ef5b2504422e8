"""Weighted average with weights optimized by Nelder-Mead on the validation metric.

Weights are parametrized as w = |z| / sum(|z|), so any point Nelder-Mead visits is a valid
weighting (non-negative, summing to one) and a member can be switched off exactly. The search
starts from the uniform weights, the greedy solution and the best single member; the best end
point wins, and since each start is a vertex of its simplex, the result is never worse on
validation than the best start.

Power averaging (classification): with `powers`, each k is tried (mean of p**k, renormalized)
and the k with the lowest validation error is kept; k = 1 is the plain weighted mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize

from automl.ensemble.base import WeightedEnsemble, normalized_mix, stack, weighted_average
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
        self,
        metric: Metric,
        starts: Sequence[str] = STARTS,
        max_evaluations: int = 3000,
        powers: Sequence[float] = (1.0,),
    ) -> None:
        super().__init__(metric)
        unknown = [s for s in starts if s not in STARTS]
        if unknown:
            raise ValueError(f"NelderMeadEnsemble starts must be among {STARTS}; got {unknown}")
        bad = [k for k in powers if not (isinstance(k, int | float) and 0 < k <= 16)]
        if bad or not powers:
            raise ValueError(f"NelderMeadEnsemble powers must be numbers in (0, 16]; got {powers}")
        self.starts = tuple(starts)
        self.max_evaluations = max_evaluations
        self.powers = tuple(float(k) for k in powers)

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
        powers = self.powers if stacked.ndim == 3 else (1.0,)  # powers are for probabilities
        starts = self._start_points(stacked, y)
        self.powers_ = {}
        best = None
        for power in powers:
            weights, error, start_name, trace = self._fit_power(stacked, y, starts, power)
            self.powers_[power] = error
            if best is None or error < best[1] - 1e-12:
                best = (weights, error, start_name, trace, power)
        weights, _, self.best_start_, self.starts_, self.power_ = best

        def objective(w: np.ndarray) -> float:
            return self.metric.error(y, weighted_average(stacked, w, self.power_))

        self.weights_ = self._prune(weights, objective)
        return self

    def _fit_power(
        self, stacked: np.ndarray, y: np.ndarray, starts: dict[str, np.ndarray], power: float
    ) -> tuple[np.ndarray, float, str, dict[str, dict[str, float]]]:
        """Nelder-Mead from every start at one power; the best end point and its start."""
        n = stacked.shape[0]
        powered = np.power(stacked, power) if power != 1.0 else stacked  # once, not per step

        def objective(z: np.ndarray) -> float:
            w = to_weights(z)
            if power == 1.0:
                return self.metric.error(y, weighted_average(stacked, w))
            return self.metric.error(y, normalized_mix(powered, w))

        trace: dict[str, dict[str, float]] = {}
        best_name, best_weights, best_error = "", np.full(n, 1.0 / n), np.inf
        for name, start in starts.items():
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
            trace[name] = {"start_error": start_error, "end_error": error}
            if error < best_error:
                best_name, best_weights, best_error = name, weights, error
        return best_weights, best_error, best_name, trace

    @staticmethod
    def _prune(weights: np.ndarray, objective) -> np.ndarray:  # noqa: ANN001
        """Drop members below MIN_WEIGHT when that costs nothing on validation (fewer to load)."""
        pruned = np.where(weights < MIN_WEIGHT, 0.0, weights)
        pruned = pruned / pruned.sum()
        return pruned if objective(pruned) <= objective(weights) + 1e-9 else weights
