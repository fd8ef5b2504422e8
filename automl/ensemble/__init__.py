"""Ensembles learned on saved validation predictions: a registry of methods (a dict).

Every ensembler follows the scikit-learn contract over prediction arrays: `fit(preds, y)` learns
and returns self; `predict(preds)` combines. Weighted ensembles learn `weights_` (non-negative,
summing to one); stacking learns a linear meta-learner. Predictions are class probabilities
(n, n_classes) or values (n,).
"""

from automl.ensemble.base import Ensembler, WeightedEnsemble, weighted_average
from automl.ensemble.greedy import GreedyEnsemble
from automl.ensemble.mean import MeanEnsemble
from automl.ensemble.optimized import NelderMeadEnsemble, OptimizedWeightsEnsemble
from automl.ensemble.stacking import StackingEnsemble

METHODS = {
    "optimized": OptimizedWeightsEnsemble,
    "greedy": GreedyEnsemble,
    "stacking": StackingEnsemble,
    "mean": MeanEnsemble,
    "nelder-mead": NelderMeadEnsemble,
}
# What `automl ensemble` and the estimators build when not told: each is scored honestly and the
# best one (or a single trial) is what `automl.load` and `predict` use. Nelder-Mead is inside
# `optimized` (it refines the surrogate's weights on the metric); `nelder-mead` gives it more
# evaluations, on request.
DEFAULT_METHODS = ("optimized", "greedy", "stacking", "mean")

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "Ensembler",
    "GreedyEnsemble",
    "MeanEnsemble",
    "NelderMeadEnsemble",
    "OptimizedWeightsEnsemble",
    "StackingEnsemble",
    "WeightedEnsemble",
    "weighted_average",
]
