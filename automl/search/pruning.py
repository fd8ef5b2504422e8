"""The median rule, applied within a family and a fidelity.

Optuna's `MedianPruner` compares a trial with every earlier trial at the same epoch. In a
study that mixes families and fidelities that is unfair: a CNN training on a quarter of the
images is judged, at its second epoch, against MLPs on all of them, and is stopped before it
has learned anything (we measured every CNN after the first pruned at epoch 2 on
Fashion-MNIST). Here a trial is compared only with completed trials of its own family and
`subsample`, after a warm-up of a third of its epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import TrialState

from automl.errors import TrialPruned
from automl.space import FAMILY_KEY

if TYPE_CHECKING:
    from automl.search.evaluate import TrialContext


class FamilyMedianPruner(BasePruner):
    """Prune when the latest value is worse than the median of the family's peers at that
    epoch; needs `n_startup_trials` completed peers and a warm-up of `warmup_share` of the
    trial's epochs (at least `min_warmup_steps`)."""

    def __init__(
        self, n_startup_trials: int = 3, min_warmup_steps: int = 2, warmup_share: float = 1 / 3
    ) -> None:
        self.n_startup_trials = n_startup_trials
        self.min_warmup_steps = min_warmup_steps
        self.warmup_share = warmup_share

    @staticmethod
    def _fidelity(params: dict[str, Any]) -> tuple[Any, Any]:
        family = params.get(FAMILY_KEY)
        return family, params.get(f"{family}.subsample")

    def prune(self, study: Any, trial: Any) -> bool:
        step = trial.last_step
        if step is None:
            return False
        value = trial.intermediate_values[step]
        if isinstance(value, float) and math.isnan(value):
            return True
        family, _ = self._fidelity(trial.params)
        epochs = trial.params.get(f"{family}.epochs")
        warmup = max(self.min_warmup_steps, int((epochs or 0) * self.warmup_share))
        if step <= warmup:
            return False
        peers = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if self._fidelity(t.params) == self._fidelity(trial.params)
        ]
        if len(peers) < self.n_startup_trials:
            return False
        values = [t.intermediate_values[step] for t in peers if step in t.intermediate_values]
        if not values:
            return False
        median = float(np.median(values))
        if study.direction == StudyDirection.MINIMIZE:
            return value > median
        return value < median


PRUNERS = ("median", "hyperband", "none")


def make_pruner(pruner: str) -> Any:
    """Optuna's pruner for per-epoch reports of the local executor's networks."""
    import optuna

    if pruner == "median":  # worse than the median of the family's peers at the same epoch
        return FamilyMedianPruner()
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def pruning_reporter(trial: Any, ctx: TrialContext) -> Callable[[int, Any], None]:
    """Reports a network's validation score after each epoch to the study's pruner, and stops
    the trial (`TrialPruned`) when the pruner says so."""

    def report(epoch: int, val_pred: Any) -> None:
        trial.report(ctx.metric(ctx.y_val, val_pred), epoch)
        if trial.should_prune():
            raise TrialPruned(epoch)

    return report
