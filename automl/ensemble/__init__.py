"""Ensembles learned on saved validation predictions: a registry of methods (a dict).

Every ensembler follows the scikit-learn contract over prediction arrays: `fit(preds, y)` learns
`weights_` (non-negative, summing to one) and returns self; `predict(preds)` averages.
Predictions are class probabilities (n, n_classes) or values (n,).
"""

from automl.ensemble.base import WeightedEnsemble, weighted_average
from automl.ensemble.greedy import GreedyEnsemble
from automl.ensemble.mean import MeanEnsemble
from automl.ensemble.nelder_mead import NelderMeadEnsemble

METHODS = {
    "nelder-mead": NelderMeadEnsemble,
    "greedy": GreedyEnsemble,
    "mean": MeanEnsemble,
}

__all__ = [
    "METHODS",
    "GreedyEnsemble",
    "MeanEnsemble",
    "NelderMeadEnsemble",
    "WeightedEnsemble",
    "weighted_average",
]
