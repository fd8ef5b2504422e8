"""The model families a search space can name: a registry that is a plain dict.

Each family says which parameters its YAML may set, how its features are encoded, how to build
an estimator from a configuration, and how to load a saved one. Nothing here imports
TensorFlow: the Keras family imports it only when a Keras model is built or loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class BuildContext:
    """What a builder needs besides the configuration."""

    task: str
    n_classes: int
    seed: int = 0
    threads: int = 1
    log_dir: Path | None = None  # where a network writes TensorBoard logs, if anywhere
    work_dir: Path | None = None  # where a network keeps its checkpoint and live history.csv
    # Which columns of the encoded matrix hold what (`automl.preprocess.layout`).
    layout: dict[str, Any] | None = None
    # Further targets, as (name, task, n_classes): networks grow a head for each.
    others: tuple[tuple[str, str, int], ...] = ()
    on_epoch: Callable[[int, np.ndarray], None] | None = None  # per-epoch validation predictions
    # A saved network of the same architecture to start from (a promoted trial's lower rung).
    warm_start: Path | None = None


class Model(Protocol):
    """Our estimator contract: fit with the validation part at hand, predict arrays, save files."""

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        x_val: np.ndarray | None,
        y_val: np.ndarray | None,
        deadline: float | None = None,
    ) -> Model:
        """Fit on `x`, `y`; validation rows stop early stopping. Without them (a refit on
        every row), the configuration is fitted as given: its counts are final."""
        ...

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n, n_classes) for classification, values (n,) for regression."""
        ...

    def save(self, directory: Path) -> list[str]:
        """Write the model's files into `directory`; return their names for the manifest."""
        ...


@dataclass(frozen=True)
class Family:
    name: str
    params: frozenset[str]
    encoding: str  # an `automl.preprocess` encoding: "onehot", "ordinal", "image" or "text"
    build: Callable[[dict[str, Any], BuildContext], Model]
    load: Callable[[Path], Model]
    uses_keras: bool = False
    needs: str | None = None  # "image" or "text": the data the family cannot work without


def _families() -> dict[str, Family]:
    from automl.models import catboost_model, cnn, keras_mlp, sklearn_models, text_net, wide_deep

    families = [
        *sklearn_models.FAMILIES,
        *catboost_model.FAMILIES,
        *keras_mlp.FAMILIES,
        *wide_deep.FAMILIES,
        *cnn.FAMILIES,
        *text_net.FAMILIES,
    ]
    return {family.name: family for family in families}


FAMILIES: dict[str, Family] = _families()
