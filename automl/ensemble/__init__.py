"""Ensembles learned on saved validation predictions: a registry of methods (a dict).

Every ensembler follows the scikit-learn contract over prediction arrays: `fit(preds, y)` learns
and returns self; `predict(preds)` combines. Weighted ensembles learn `weights_` (non-negative,
summing to one); stacking learns a linear meta-learner. Predictions are class probabilities
(n, n_classes) or values (n,).
"""

from automl.ensemble.base import Ensembler, WeightedEnsemble, weighted_average
from automl.ensemble.greedy import GreedyEnsemble
from automl.ensemble.mean import MeanEnsemble
from automl.ensemble.optimized import OptimizedWeightsEnsemble
from automl.ensemble.stacking import StackingEnsemble

METHODS = {
    "optimized": OptimizedWeightsEnsemble,
    "greedy": GreedyEnsemble,
    "stacking": StackingEnsemble,
    "mean": MeanEnsemble,
}

__all__ = [
    "METHODS",
    "Ensembler",
    "GreedyEnsemble",
    "MeanEnsemble",
    "OptimizedWeightsEnsemble",
    "StackingEnsemble",
    "WeightedEnsemble",
    "weighted_average",
]
