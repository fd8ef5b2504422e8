"""K-fold row splits, one rule for every cross-fitting: a trial's folds over the training
rows and an ensemble's cross-validated score over its validation rows."""

from __future__ import annotations

from typing import Any

import numpy as np


def fold_rows(
    y: np.ndarray, k: int, classification: bool, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, held-out rows) per fold, shuffled; stratified for classes where every
    class has at least `k` rows, so each fold holds each class."""
    from sklearn.model_selection import KFold, StratifiedKFold

    y = np.asarray(y)
    splitter: Any = KFold(k, shuffle=True, random_state=seed)
    if classification and np.bincount(y.astype(int)).min() >= k:
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))
