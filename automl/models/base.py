"""What every model family shares: the build context, the model contract, the family record.

Kept out of the registry (`automl.models.__init__`), which imports every family: the families
import these types from here, so no family imports the package that imports it.
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
