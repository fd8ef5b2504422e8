"""AutoML: hyperparameter and ensemble search over Keras, tree and linear models.

The public surface is small on purpose: the CLI (`automl.cli`); `AutoMLClassifier` and
`AutoMLRegressor`, scikit-learn estimators for notebooks and pipelines; `run_search` (with a
`SearchConfig`) to drive a search into a run directory from Python; and `load` to get a
fitted estimator back from one.
Heavy modules are imported on first use, so `import automl` and the CLI start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from automl.errors import UserInputError

__version__ = "0.2.0"

if TYPE_CHECKING:
    from automl.estimator import AutoMLClassifier, AutoMLRegressor
    from automl.search.config import SearchConfig
    from automl.search.loop import SearchSummary, run_search

_LAZY = {
    "AutoMLClassifier": "automl.estimator",
    "AutoMLRegressor": "automl.estimator",
    "run_search": "automl.search.loop",
    "SearchConfig": "automl.search.config",
    "SearchSummary": "automl.search.loop",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'automl' has no attribute {name!r}")


def load(run_dir: str | Path, which: str = "best") -> AutoMLClassifier | AutoMLRegressor:
    """A fitted estimator from a run directory: the best ensemble or model by validation score
    (`which="best"`), the best single model (`"best_single"`) or a trial number (`"12"`)."""
    from automl.estimator import from_run

    return from_run(run_dir, which=which)  # type: ignore[return-value]


__all__ = [
    "AutoMLClassifier",
    "AutoMLRegressor",
    "SearchConfig",
    "SearchSummary",
    "UserInputError",
    "__version__",
    "load",
    "run_search",
]
