"""Nelder-Mead on the validation metric itself, over the weights of a few members.

The surrogate fit (`surrogate.fit_weights`) is fast because its loss is smooth, but for AUC,
accuracy and MAE the surrogate is not the metric: its optimum ranks or classifies well, not
best. Those metrics are step functions of the weights, with no gradient to follow, which is
what Nelder-Mead is for: it needs only the metric's values. Over all 20-50 members of a pool it
needs thousands of evaluations (8-54 s for 50 members x 10,000 rows, measured before the
surrogate); over the handful of members the surrogate kept, a few dozen to a few hundred.

Weights are parametrized as w = |z| / sum(|z|), so every point Nelder-Mead visits is a valid
weighting (non-negative, summing to one) and a member can be switched off exactly. The start
is a vertex of the initial simplex, so the end point is never worse on the metric than the
start; the caller keeps it only where it is strictly better.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

# Members whose weights are refined: the largest weights of the start, at most this many (each
# one more dimension costs Nelder-Mead roughly a dozen more evaluations to converge).
MAX_MEMBERS = 10
# The initial simplex's step along each member's weight: large enough to cross the metric's
# flat steps, small enough to stay near the start.
STEP = 0.05


@dataclass(frozen=True)
class Refinement:
    """What Nelder-Mead did: recorded in the ensemble's `weights.json`."""

    members: int  # how many members' weights were refined
    evaluations: int  # metric evaluations spent
    start_error: float  # the metric as an error (lower is better) at the start
    end_error: float  # and where Nelder-Mead ended
    improved: bool  # the end is strictly better than the start, and was kept

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def to_weights(z: np.ndarray) -> np.ndarray:
    """Weights from Nelder-Mead's free coordinates: |z| normalized (uniform if all zero)."""
    a = np.abs(np.asarray(z, dtype=float))
    total = a.sum()
    return a / total if total > 0 else np.full(len(a), 1.0 / len(a))


def refine(
    error_of: Callable[[np.ndarray], float],
    weights: np.ndarray,
    max_evaluations: int,
    extra: np.ndarray | None = None,
    max_members: int = MAX_MEMBERS,
) -> tuple[np.ndarray, Refinement]:
    """Nelder-Mead on `error_of(weights)` (the metric as an error) from `weights`, moving only
    the members with the largest weights (and the members in `extra`, ranked best first, when
    fewer than two are weighted). Returns the better of the start and the end point."""
    from scipy.optimize import minimize

    weights = np.asarray(weights, dtype=float)
    chosen = [int(i) for i in np.argsort(-weights, kind="stable") if weights[i] > 0]
    chosen = chosen[:max_members]
    for i in extra if extra is not None else ():
        if len(chosen) >= 2:
            break
        if int(i) not in chosen:
            chosen.append(int(i))
    start_error = error_of(weights)
    if len(chosen) < 2 or max_evaluations < 1:
        return weights, Refinement(len(chosen), 1, start_error, start_error, False)
    support = np.array(sorted(chosen))
    rest = weights.copy()
    rest[support] = 0.0
    share = weights[support].sum()  # members left out keep theirs; the refined share the rest

    def full(z: np.ndarray) -> np.ndarray:
        w = rest.copy()
        w[support] = share * to_weights(z)
        return w

    def objective(z: np.ndarray) -> float:
        return error_of(full(z))

    start = weights[support] / share  # one chosen member at least is weighted
    simplex = np.vstack([start, start + STEP * np.eye(len(support))])
    result = minimize(
        objective,
        start,
        method="Nelder-Mead",
        options={
            "initial_simplex": simplex,
            "maxfev": max_evaluations,
            "xatol": 1e-4,
            "fatol": 1e-7,
        },
    )
    end_error = float(result.fun)
    improved = end_error < start_error - 1e-12
    refined = full(result.x) if improved else weights
    return refined, Refinement(len(support), int(result.nfev) + 1, start_error, end_error, improved)
