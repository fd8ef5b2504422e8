"""AutoML: hyperparameter and ensemble search over Keras, tree and linear models.

The public surface is small on purpose: the CLI (`automl.cli`), `run_search` to drive a search
from Python, and `load` to get a fitted predictor back from a run directory.
"""

from pathlib import Path
from typing import Any

from automl.errors import UserInputError

__version__ = "0.1.0"


def run_search(**kwargs: Any) -> Any:
    """Run a search; see `automl.search.loop.run_search` for the arguments."""
    from automl.search.loop import run_search as _run_search

    return _run_search(**kwargs)


def load(run_dir: str | Path, which: str = "best") -> Any:
    """Load a fitted predictor from a run directory; see `automl.predict.load_predictor`."""
    from automl.predict import load_predictor

    return load_predictor(run_dir, which=which)


__all__ = ["UserInputError", "load", "run_search", "__version__"]
