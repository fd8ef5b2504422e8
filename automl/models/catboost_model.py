"""CatBoost with its native categorical features: ordered target statistics per category,
learned without leaking a row's own label, and early stopping on the validation rows.

Category codes arrive as the "ordinal" encoding's floats and are given to CatBoost as whole
numbers (-1: unseen), so it treats them as categories, not as numbers.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from automl.models.base import BuildContext, Family
from automl.models.sklearn_models import SklearnModel, categorical_columns, load_sklearn

EARLY_STOPPING_ROUNDS = 50


class CatBoostModel(SklearnModel):
    """Our fit/predict/save contract over a CatBoost classifier or regressor."""

    def _frame(self, x: np.ndarray) -> pd.DataFrame:
        frame = pd.DataFrame(x)
        for column in self.categorical or []:
            frame[column] = frame[column].fillna(-1).astype(np.int64)
        return frame

    def fit(self, x, y, x_val, y_val, deadline=None):  # noqa: ANN001, ANN201
        """Stops when the validation loss stalls for 50 rounds, or at `deadline`; without
        validation rows (a refit) it boosts the `iterations` given."""
        options: dict[str, Any] = {"cat_features": self.categorical or None}
        if x_val is not None:
            options |= {
                "eval_set": (self._frame(x_val), y_val),
                "early_stopping_rounds": EARLY_STOPPING_ROUNDS,
                "use_best_model": True,
            }
        if deadline is not None:
            options["callbacks"] = [_Deadline(deadline)]
        self.estimator.fit(self._frame(x), y, **options)
        return self

    def stopped_at(self) -> dict[str, Any]:
        best = self.estimator.get_best_iteration()
        return {"iterations": int(best) + 1} if best is not None else {}

    def kept_share(self) -> float:
        best = self.estimator.get_best_iteration()
        curves = self.estimator.get_evals_result().get("validation") or {}
        run = max((len(values) for values in curves.values()), default=0)
        return min(1.0, (best + 1) / run) if best is not None and run else 1.0

    def predict(self, x: np.ndarray) -> np.ndarray:
        return super().predict(self._frame(x))  # type: ignore[arg-type]


class _Deadline:
    """A CatBoost callback: boosting stops at the search's wall-clock deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def after_iteration(self, info: Any) -> bool:
        return time.time() < self.deadline


def build_catboost(params: dict[str, Any], ctx: BuildContext) -> CatBoostModel:
    from catboost import CatBoostClassifier, CatBoostRegressor

    kwargs = dict(params)
    common = {
        "thread_count": ctx.threads,
        "random_seed": ctx.seed,
        "verbose": False,
        "allow_writing_files": False,
    }
    if ctx.task == "regression":
        kwargs.pop("auto_class_weights", None)
        estimator: Any = CatBoostRegressor(**kwargs, **common)
    else:
        loss = "Logloss" if ctx.task == "binary" else "MultiClass"
        estimator = CatBoostClassifier(**kwargs, loss_function=loss, **common)
    return CatBoostModel(estimator, ctx.task, ctx.n_classes, categorical=categorical_columns(ctx))


PARAMS = frozenset(
    {
        "iterations",
        "learning_rate",
        "depth",
        "l2_leaf_reg",
        "random_strength",
        "bagging_temperature",
        "border_count",
        "one_hot_max_size",
        "auto_class_weights",
    }
)

FAMILIES = [Family("catboost", PARAMS, "ordinal", build_catboost, load_sklearn)]
