"""Weighted average with weights fitted on a smooth surrogate of the metric, then checked on
the metric itself.

Fitting: L-BFGS over softmax logits (`surrogate.fit_weights`), with the exact gradient of the
log-loss (classification) or squared error (regression) of the average, starting from uniform
weights. These losses are convex in the weights for k = 1, so
one start finds their optimum; a few dozen matrix-vector products over precomputed
(members, rows) arrays replace the thousands of full metric evaluations Nelder-Mead needed
(50 members x 10,000 rows: 8-54 s before, well under a second now).

Choosing: the candidates are the starts (uniform weights, the greedy solution, the best single
member) and each power's optimum; the one with the lowest error on the true metric wins, so
the result is never worse on validation than the best start, whatever the metric. Members
below 0.1% weight are dropped when that costs nothing.

Refining: Nelder-Mead then moves the weights of the members that survived (at most ten)
directly on the true metric, for every metric (`nelder_mead.refine`), and its end point is kept
only where it is strictly better on the metric than the chosen candidate. Where the surrogate
is the metric (log-loss, RMSE) it rarely finds more; for AUC, accuracy and MAE it is the step
that optimizes what is reported. `nelder_mead_` records its evaluations and both errors.

Power averaging (classification): with `powers`, the mean of p**k renormalized; k = 1 is the
plain weighted mean. Each other k is screened on the metric at the k = 1 optimum, and the most
promising one gets a fit of its own (its surrogate is not convex; uniform weights start it).

`method: nelder-mead` (`NelderMeadEnsemble`) puts Nelder-Mead first: more evaluations, from
this fit's weights or from uniform weights over the whole pool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from automl.ensemble.base import WeightedEnsemble, normalized_mix, stack
from automl.ensemble.greedy import GreedyEnsemble
from automl.ensemble.nelder_mead import MAX_MEMBERS, refine
from automl.ensemble.surrogate import fit_weights, powered_probabilities, surrogate_for
from automl.metrics import Metric, additive_form, batched_errors

STARTS = ("uniform", "greedy", "best")
MIN_WEIGHT = 1e-3
# Metrics whose optimum the surrogate finds itself (log-loss; squared error for RMSE and R²);
# for the others (AUC, accuracy, MAE) a few steps on the metric follow.
SURROGATE_IS_THE_METRIC = ("log_loss", "rmse", "r2")
# Metrics for which the greedy start is not computed: those the surrogate optimizes itself,
# and AUC, where Nelder-Mead on the metric does what the greedy start did, at a third of the
# whole build's time (measured, honest 5-fold AUC without it against with it: 0.9944 against
# 0.9895 on breast cancer's eight models, 0.916986 against 0.916965 on 50 synthetic members x
# 10,000 rows, 0.98 s against 3.00 s). For accuracy it stays: there it was worth 0.010
# (0.9754 against 0.9649 on breast cancer).
NO_GREEDY_START = (*SURROGATE_IS_THE_METRIC, "roc_auc")
# Where the surrogate is not the metric, it is fitted to 1e-8 relative, not to the last digit:
# smaller gains do not show on the metric (measured, 50 members x 10,000 rows, AUC: 551 -> 253
# evaluations, 1.02 s -> 0.75 s, validation AUC 0.919012 -> 0.919015). So is a power average's
# log-loss (not convex: no optimum to reach exactly; measured, k = 2: 214 -> 118 evaluations,
# validation log-loss 0.3619736 -> 0.3619737).
SURROGATE_TOLERANCE = 1e-8
# Nelder-Mead's evaluations of the metric after the surrogate fit (`nelder_mead.refine`):
# enough for the few members the fit keeps to converge (measured: 50 members x 10,000 rows,
# AUC, ... evaluations), few enough that the whole build stays under a second.
NELDER_MEAD_EVALUATIONS = 120


class OptimizedWeightsEnsemble(WeightedEnsemble):
    def __init__(
        self,
        metric: Metric,
        starts: Sequence[str] = STARTS,
        powers: Sequence[float] = (1.0,),
        max_iterations: int = 200,
        nelder_mead_evaluations: int = NELDER_MEAD_EVALUATIONS,
    ) -> None:
        super().__init__(metric)
        unknown = [s for s in starts if s not in STARTS]
        if unknown or not starts:
            raise ValueError(
                f"OptimizedWeightsEnsemble starts must be among {STARTS}; got {starts}"
            )
        bad = [k for k in powers if not (isinstance(k, int | float) and 0 < k <= 16)]
        if bad or not powers:
            raise ValueError(
                f"OptimizedWeightsEnsemble powers must be numbers in (0, 16]; got {list(powers)}"
            )
        if not (isinstance(max_iterations, int) and max_iterations >= 1):
            raise ValueError(
                f"OptimizedWeightsEnsemble max_iterations must be a positive whole number; "
                f"got {max_iterations!r}"
            )
        self.starts = tuple(starts)
        self.powers = tuple(float(k) for k in powers)
        self.max_iterations = max_iterations
        if not (isinstance(nelder_mead_evaluations, int) and nelder_mead_evaluations >= 0):
            raise ValueError(
                f"{type(self).__name__} nelder_mead_evaluations must be a whole number >= 0; "
                f"got {nelder_mead_evaluations!r}"
            )
        self.nelder_mead_evaluations = nelder_mead_evaluations

    def _start_points(self, stacked: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        n = stacked.shape[0]
        points: dict[str, np.ndarray] = {"uniform": np.full(n, 1.0 / n)}
        # Where the surrogate is the metric, its optimum (convex for k = 1) beats any greedy
        # weighting: greedy would cost three quarters of the fit for a candidate never chosen
        # (measured: 50 members x 10,000 rows, log-loss, 0.36 s -> 0.08 s, same weights).
        # For accuracy and MAE, greedy is often the best candidate: it stays (`NO_GREEDY_START`).
        if "greedy" in self.starts and self.metric.name not in NO_GREEDY_START:
            greedy = GreedyEnsemble(self.metric).fit(list(stacked), y)
            self.single_errors_ = greedy.single_errors_
            points["greedy"] = greedy.weights_
        else:
            self.single_errors_ = batched_errors(self.metric, y, stacked)
        points["best"] = np.eye(n)[int(np.argmin(self.single_errors_))]  # first of any ties
        return {name: points[name] for name in self.starts if name in points}

    def fit(self, preds: Sequence[np.ndarray], y: np.ndarray) -> OptimizedWeightsEnsemble:
        stacked = stack(preds)
        powers = self.powers if stacked.ndim == 3 else (1.0,)  # powers are for probabilities
        starts = self._start_points(stacked, y)
        # The surrogate is fitted from the uniform weights: a start with exact zeros (greedy,
        # best) pins those members near a vanishing softmax gradient, and for k = 1 the
        # surrogate is convex, so its optimum does not depend on the start.
        uniform = np.full(stacked.shape[0], 1.0 / stacked.shape[0])
        # The plain average's smallest form, gathered once for the candidates' errors and for
        # Nelder-Mead when it refines a plain average.
        plain_form = additive_form(self.metric, stacked, y)
        plain = self._error_at(stacked, y, 1.0, form=plain_form)
        self.starts_ = {name: {"start_error": plain(w)} for name, w in starts.items()}
        candidates = [
            (e["start_error"], name, starts[name], 1.0) for name, e in self.starts_.items()
        ]
        self.powers_: dict[float, float] = {}
        self.evaluations_ = 0
        raised: dict[float, np.ndarray] = {1.0: stacked}
        exact = self.metric.name in SURROGATE_IS_THE_METRIC

        def fit_power(power: float, powered: np.ndarray | None) -> None:
            error_at = plain if powered is None else self._error_at(stacked, y, power, powered)
            weights, _, spent = fit_weights(
                surrogate_for(stacked, y, power, powered),
                uniform,
                self.max_iterations,
                1e-12 if exact and power == 1.0 else SURROGATE_TOLERANCE,
            )
            self.evaluations_ += spent
            weights, self.powers_[power] = self._prune(weights, error_at)
            candidates.append((self.powers_[power], "optimized", weights, power))

        # k = 1 first: its surrogate is convex, and its optimum screens the other powers.
        fit_power(1.0, None)
        plain_weights = candidates[-1][2]
        if 1.0 not in powers:
            candidates.pop()
            del self.powers_[1.0]
        # Each other power's true metric at the k = 1 weights; only the most promising power's
        # weights are fitted (one L-BFGS instead of one per power: at 50 members x 10,000 rows,
        # each took ~0.4 s, most of a build). The screen is recorded in `screened_powers_`.
        self.screened_powers_: dict[float, float] = {}
        for power in powers:
            if power != 1.0:
                raised[power] = powered_probabilities(stacked, power)
                at_plain = self._error_at(stacked, y, power, raised[power])(plain_weights)
                self.screened_powers_[power] = at_plain
        if self.screened_powers_:
            chosen = min(self.screened_powers_, key=lambda k: self.screened_powers_[k])
            fit_power(chosen, raised[chosen])
        _, self.best_start_, weights, self.power_ = min(candidates, key=lambda c: c[0])
        form = plain_form if self.power_ == 1.0 else None
        self.weights_ = self._refine(raised[self.power_], y, weights, form=form)
        if self.nelder_mead_.improved:
            self.best_start_ += " + nelder-mead"
        return self

    def _refine(
        self,
        raised: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray,
        max_members: int = MAX_MEMBERS,
        form: tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]] | None = None,
    ) -> np.ndarray:
        """Nelder-Mead on the true metric over the members the fit kept (`nelder_mead`);
        `raised`: the members' predictions, to the chosen power for probabilities; `form`:
        their `additive_form`, when the caller has it."""
        power = self.power_
        # The smallest form of the predictions whose averages give the metric (log-loss: the
        # true class's probability, and the row sums that renormalize a power average; binary
        # AUC: the positive class's scores): a fraction of the work per evaluation. A power
        # average's AUC needs every class to renormalize.
        renormalize = power != 1.0 and self.metric.name == "roc_auc"
        if renormalize:
            view, errors_of = raised, lambda mixed: batched_errors(self.metric, y, mixed)
        else:
            view, errors_of = form or additive_form(self.metric, raised, y)

        # The weighted members' predictions, copied once, as (members, values) for one matrix
        # product per evaluation.
        subsets: dict[bytes, np.ndarray] = {}

        def error_of(w: np.ndarray) -> float:
            weighted = np.flatnonzero(w)
            key = weighted.tobytes()
            if key not in subsets:
                subsets[key] = view[weighted].reshape(len(weighted), -1)
            mixed = (w[weighted] @ subsets[key]).reshape(view.shape[1:])
            if renormalize:
                mixed = mixed / mixed.sum(axis=-1, keepdims=True)
            return float(errors_of(mixed[None])[0])

        ranked = np.argsort(self.single_errors_, kind="stable")
        refined, self.nelder_mead_ = refine(
            error_of, weights, self.nelder_mead_evaluations, ranked, max_members
        )
        return refined

    def _error_at(
        self,
        stacked: np.ndarray,
        y: np.ndarray,
        power: float,
        powered: np.ndarray | None = None,
        form: tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]] | None = None,
    ) -> Callable[[np.ndarray], float]:
        """The true metric's error of the weighted (power-)average, as a function of weights
        (`form`: the plain average's `additive_form`, when the caller has it)."""
        if power != 1.0 and powered is None:
            powered = powered_probabilities(stacked, power)  # once, not per call
        if powered is None:  # the plain average: the smallest form that gives the metric
            view, errors_of = form or additive_form(self.metric, stacked, y)
            flat = view.reshape(len(view), -1)

            def plain(weights: np.ndarray) -> float:
                return float(errors_of((weights @ flat).reshape(view.shape[1:])[None])[0])

            return plain

        def error(weights: np.ndarray) -> float:
            return self.metric.error(y, normalized_mix(powered, weights))

        return error

    @staticmethod
    def _prune(
        weights: np.ndarray, error_at: Callable[[np.ndarray], float]
    ) -> tuple[np.ndarray, float]:
        """Drop members below MIN_WEIGHT when that costs nothing on validation (fewer to load);
        the weights kept and their error."""
        pruned = np.where(weights < MIN_WEIGHT, 0.0, weights)
        pruned = pruned / pruned.sum()
        kept, error = error_at(pruned), error_at(weights)
        return (pruned, kept) if kept <= error + 1e-9 else (weights, error)


NELDER_MEAD_STARTS = ("surrogate", "uniform")


class NelderMeadEnsemble(OptimizedWeightsEnsemble):
    """Weights by Nelder-Mead on the validation metric, with a larger budget of evaluations.

    `start: surrogate` (the default): the optimized fit above, then Nelder-Mead over the members
    it kept, up to `max_evaluations`. `start: uniform`: Nelder-Mead over every member of the
    pool from uniform weights, the method as first designed (slow on large pools: thousands of
    evaluations for 50 members). Either way the result is never worse on the metric than its
    start.
    """

    def __init__(
        self,
        metric: Metric,
        start: str = "surrogate",
        max_evaluations: int = 1000,
        powers: Sequence[float] = (1.0,),
    ) -> None:
        super().__init__(metric, powers=powers, nelder_mead_evaluations=max_evaluations)
        if start not in NELDER_MEAD_STARTS:
            raise ValueError(
                f"NelderMeadEnsemble start must be one of {NELDER_MEAD_STARTS}; got {start!r}"
            )
        self.start = start
        self.max_evaluations = max_evaluations

    def fit(self, preds: Sequence[np.ndarray], y: np.ndarray) -> NelderMeadEnsemble:
        if self.start == "surrogate":
            super().fit(preds, y)
            return self
        stacked = stack(preds)
        n = stacked.shape[0]
        self.single_errors_ = batched_errors(self.metric, y, stacked)
        uniform = np.full(n, 1.0 / n)
        powers = self.powers if stacked.ndim == 3 else (1.0,)
        best: tuple[float, np.ndarray, float, Any] | None = None
        self.powers_ = {}
        for power in powers:
            self.power_ = power
            raised = stacked if power == 1.0 else powered_probabilities(stacked, power)
            weights = self._refine(raised, y, uniform, max_members=n)
            self.powers_[power] = self.nelder_mead_.end_error
            error = min(self.nelder_mead_.end_error, self.nelder_mead_.start_error)
            if best is None or error < best[0] - 1e-12:
                best = (error, weights, power, self.nelder_mead_)
        assert best is not None
        _, self.weights_, self.power_, self.nelder_mead_ = best
        self.best_start_ = "uniform + nelder-mead" if self.nelder_mead_.improved else "uniform"
        return self
