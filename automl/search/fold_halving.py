"""Successive halving over folds: a costly cross-fitted trial earns its later folds.

Under cross-fitting a trial fits K models. A network or a slow forest that is already poor on
its first fold will be poor on the rest, and its remaining K-1 fits are time the search could
spend on new configurations. So the driver hands each trial a bar per checkpoint (after its
first and second fold): the median, over the study's completed trials, of their mean score on
the same folds (the folds are the same rows for every trial of a run). A costly trial below
the bar stops there (`TrialPruned`): it is recorded as pruned, its partial out-of-fold
predictions are never written, so no ensemble can use them, and TPE learns from its score.

The rule is the same for every family (Hyperband's and ASHA's halving, over folds instead of
epochs); only its cost makes a trial eligible: a network, or a first fold that took at least
`COSTLY_FOLD_SECONDS`. Cheap trials always finish, so small data loses nothing. A family's
first trial always finishes too, and the bar needs `MIN_PEERS` completed trials, so every
family reaches the ensembles at least once and the bar is not set by one lucky trial.
"""

from __future__ import annotations

import math
import statistics

FOLD_BAR_KEY = "budget.fold_bars"  # the trial's bars, one per checkpoint (driver -> evaluate)
FOLD_SCORES_ATTR = "fold_scores"  # a completed trial's score on each fold, in fold order
CHECKPOINTS = (1, 2)  # folds fitted before each look
MIN_PEERS = 4
COSTLY_FOLD_SECONDS = 1.0


def fold_bars(scored: list[list[float]], family_done: bool) -> list[float] | None:
    """The bar at each checkpoint, from the completed trials' fold scores (`scored`); None
    while the trial's family has no completed trial (`family_done`) or fewer than
    `MIN_PEERS` trials have finite scores on the checkpoint's folds."""
    if not family_done:
        return None
    bars = []
    for folds in CHECKPOINTS:
        means = [
            statistics.fmean(s[:folds])
            for s in scored
            if len(s) >= folds and all(math.isfinite(v) for v in s[:folds])
        ]
        if len(means) < MIN_PEERS:
            return None
        bars.append(statistics.median(means))
    return bars


def stop_reason(
    scores: list[float],
    bars: list[float] | None,
    costly: bool,
    greater_is_better: bool,
    metric: str,
    folds: int,
) -> str | None:
    """Why a trial with these first-fold `scores` stops now, or None: it goes on."""
    if not costly or not bars or len(scores) not in CHECKPOINTS:
        return None
    bar = bars[CHECKPOINTS.index(len(scores))]
    mean = statistics.fmean(scores)
    below = mean < bar if greater_is_better else mean > bar
    if not below:
        return None
    return (
        f"after fold {len(scores)} of {folds}: {metric} {mean:.4f}, "
        f"{'below' if greater_is_better else 'above'} the bar {bar:.4f} "
        "(the median of the completed trials on the same folds)"
    )
