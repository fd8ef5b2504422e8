"""Tree and linear families: random forest, extra trees, LightGBM, histogram GB, logistic/ridge,
and a dummy baseline.

Each builder maps a searched configuration onto the library's own estimator; `SklearnModel`
gives them all our fit/predict/save contract.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np

from automl.io import verify, write_bytes_atomic
from automl.models.base import BuildContext, Family

MODEL_FILE = "model.joblib"


def _single_row_class(y: np.ndarray) -> bool:
    """Whether some class present in `y` has a single row."""
    counts = np.unique(np.asarray(y), return_counts=True)[1]
    return bool((counts < 2).any())


class SklearnModel:
    """Wraps a scikit-learn-compatible estimator; `predict` returns probabilities or values."""

    def __init__(
        self,
        estimator: Any,
        task: str,
        n_classes: int,
        uses_validation: bool = False,
        categorical: list[int] | None = None,
        forest: bool = False,
    ) -> None:
        self.estimator = estimator
        self.task = task
        self.n_classes = n_classes
        self.uses_validation = uses_validation
        # Columns of integer category codes LightGBM splits on natively (None: as numbers).
        self.categorical = categorical
        # A forest grows to a deadline a tenth of its trees at a time (`_grow_forest`).
        self.forest = forest
        self.grown: int | None = None  # the trees it grew, when a deadline cut it

    def fit(self, x, y, x_val, y_val, deadline=None):  # noqa: ANN001, ANN201
        """`x_val` None (a refit on every row): fit the configuration as given, no stopping."""
        native = {"categorical_feature": self.categorical} if self.categorical else {}
        if self.uses_validation and x_val is not None:  # LightGBM stops when val loss stalls
            import lightgbm

            self.estimator.fit(
                x,
                y,
                eval_X=(x_val,),
                eval_y=(y_val,),
                callbacks=[lightgbm.early_stopping(50, verbose=False), _deadline(deadline)],
                **native,
            )
        else:
            # Histogram GB's early stopping splits off its own validation rows, stratified,
            # which a class with one row cannot be: it fits its configured rounds instead.
            stopping = getattr(self.estimator, "early_stopping", False) in (True, "auto")
            if stopping and self.task != "regression" and _single_row_class(y):
                self.estimator.set_params(early_stopping=False)
            if deadline is not None and self.forest:
                self.grown = _grow_forest(self.estimator, x, y, deadline)
            else:
                self.estimator.fit(x, y, **native)
        return self

    def stopped_at(self) -> dict[str, Any]:
        """The iteration count early stopping chose, as parameters a refit without validation
        rows trains with: LightGBM's best iteration, histogram GB's iterations run, the trees
        a forest grew before its deadline."""
        if getattr(self, "grown", None) is not None:  # a model saved before `grown` has none
            return {"n_estimators": self.grown}
        best = getattr(self.estimator, "best_iteration_", None)
        if self.uses_validation and best:
            return {"n_estimators": int(best)}
        if getattr(self.estimator, "do_early_stopping_", False):
            return {"max_iter": int(self.estimator.n_iter_), "early_stopping": False}
        return {}

    def kept_share(self) -> float:
        """The share of the boosting rounds run that early stopping kept: what a refit with
        `stopped_at` costs, relative to this fit."""
        best = getattr(self.estimator, "best_iteration_", None)
        curves = getattr(self.estimator, "evals_result_", None) or {}
        run = max((len(v) for metric in curves.values() for v in metric.values()), default=0)
        if self.uses_validation and best and run:
            return min(1.0, best / run)
        return 1.0

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.task == "regression":
            return np.asarray(self.estimator.predict(x), dtype=float)
        proba = np.asarray(self.estimator.predict_proba(x), dtype=float)
        full = np.zeros((proba.shape[0], self.n_classes))
        full[:, np.asarray(self.estimator.classes_, dtype=int)] = proba
        return full

    def save(self, directory: Path) -> list[str]:
        import io

        buffer = io.BytesIO()
        joblib.dump(self, buffer)
        write_bytes_atomic(Path(directory) / MODEL_FILE, buffer.getvalue())
        return [MODEL_FILE]


def _deadline(deadline: float | None):  # noqa: ANN202
    """A LightGBM callback that stops boosting at the search's wall-clock deadline."""
    import time

    import lightgbm

    def callback(env) -> None:  # noqa: ANN001
        if deadline is not None and time.time() >= deadline:
            raise lightgbm.callback.EarlyStopException(env.iteration, env.evaluation_result_list)

    callback.order = 40  # type: ignore[attr-defined]  # after early stopping has looked
    return callback


def _grow_forest(estimator: Any, x: np.ndarray, y: np.ndarray, deadline: float) -> int | None:
    """Grow a forest a tenth of its trees at a time while the next tenth fits before
    `deadline`: a forest cannot stop within a fit, and one fit of all its trees ran past a
    trial's deadline (extra trees on adult's 31k rows x 5 folds, 60-s job: the trial failed
    after 3 folds, 6 s past its time). Returns the trees grown when the deadline cut it, None
    when it grew them all (the same forest as one fit: `warm_start` draws the same seeds)."""
    import time
    import warnings

    total = int(estimator.n_estimators)
    step = max(2 * max(1, int(estimator.n_jobs or 1)), -(-total // 10))
    estimator.set_params(warm_start=True)
    start, grown = time.time(), 0
    try:
        with warnings.catch_warnings():
            # Balanced class weights warn under `warm_start` in case the data changes between
            # fits; here every fit sees the same rows.
            warnings.filterwarnings("ignore", message="class_weight presets", category=UserWarning)
            while grown < total:
                if grown and time.time() + (time.time() - start) / grown * step > deadline:
                    break
                grown = min(total, grown + step)
                estimator.set_params(n_estimators=grown)
                estimator.fit(x, y)
    finally:
        estimator.set_params(warm_start=False)
    return grown if grown < total else None


def load_sklearn(directory: Path) -> SklearnModel:
    """Unpickle only after the file's sha256 matches the trial's manifest."""
    return joblib.load(verify(directory, MODEL_FILE))


def _forest(cls_name: str):  # noqa: ANN202
    def build(params: dict[str, Any], ctx: BuildContext) -> SklearnModel:
        from sklearn import ensemble

        kind = "Classifier" if ctx.task != "regression" else "Regressor"
        estimator_cls = getattr(ensemble, f"{cls_name}{kind}")
        kwargs = dict(params)
        if ctx.task == "regression":
            kwargs.pop("class_weight", None)
        estimator = estimator_cls(**kwargs, n_jobs=ctx.threads, random_state=ctx.seed)
        return SklearnModel(estimator, ctx.task, ctx.n_classes, forest=True)

    return build


FOREST_PARAMS = frozenset(
    {
        "n_estimators",
        "max_depth",
        "max_features",
        "min_samples_leaf",
        "min_samples_split",
        "bootstrap",
        "class_weight",
        "criterion",
        "max_samples",
    }
)


def categorical_columns(ctx: BuildContext) -> list[int]:
    """The encoded matrix's columns of category codes (the "ordinal" encoding's)."""
    where = (ctx.layout or {}).get("categorical")
    return list(range(where[0], where[1])) if where else []


def build_lightgbm(params: dict[str, Any], ctx: BuildContext) -> SklearnModel:
    """`native_categories` (default false): LightGBM splits category codes into groups of
    categories, instead of thresholds on the codes' arbitrary order."""
    import lightgbm

    kwargs = dict(params)
    native = bool(kwargs.pop("native_categories", False))
    if ctx.task == "regression":
        estimator = lightgbm.LGBMRegressor(**kwargs, n_jobs=ctx.threads, random_state=ctx.seed)
    else:
        estimator = lightgbm.LGBMClassifier(**kwargs, n_jobs=ctx.threads, random_state=ctx.seed)
    categorical = categorical_columns(ctx) if native else None
    return SklearnModel(estimator, ctx.task, ctx.n_classes, True, categorical or None)


LIGHTGBM_PARAMS = frozenset(
    {
        "n_estimators",
        "learning_rate",
        "num_leaves",
        "max_depth",
        "min_child_samples",
        "subsample",
        "subsample_freq",
        "colsample_bytree",
        "reg_alpha",
        "reg_lambda",
        "min_split_gain",
        "boosting_type",
        "verbosity",
        "class_weight",
        "native_categories",
    }
)


def build_hist_gb(params: dict[str, Any], ctx: BuildContext) -> SklearnModel:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    kwargs = dict(params)
    if ctx.task == "regression":
        kwargs.pop("class_weight", None)
        estimator = HistGradientBoostingRegressor(**kwargs, random_state=ctx.seed)
    else:
        estimator = HistGradientBoostingClassifier(**kwargs, random_state=ctx.seed)
    return SklearnModel(estimator, ctx.task, ctx.n_classes)


HIST_GB_PARAMS = frozenset(
    {
        "learning_rate",
        "max_iter",
        "max_leaf_nodes",
        "max_depth",
        "min_samples_leaf",
        "l2_regularization",
        "max_features",
        "early_stopping",
        "class_weight",
    }
)


def build_linear(params: dict[str, Any], ctx: BuildContext) -> SklearnModel:
    """Logistic regression for classes, ridge for values; `C` is the inverse strength for both."""
    from sklearn.linear_model import LogisticRegression, Ridge

    c = float(params.get("C", 1.0))
    if ctx.task == "regression":
        return SklearnModel(Ridge(alpha=1.0 / c), ctx.task, ctx.n_classes)
    estimator = LogisticRegression(
        C=c,
        class_weight=params.get("class_weight"),
        max_iter=int(params.get("max_iter", 1000)),
    )
    return SklearnModel(estimator, ctx.task, ctx.n_classes)


def build_dummy(params: dict[str, Any], ctx: BuildContext) -> SklearnModel:
    """The class prior or the mean: the floor every model must beat, and the cheapest trial
    there is (what the executor-overhead benchmark runs)."""
    from sklearn.dummy import DummyClassifier, DummyRegressor

    if ctx.task == "regression":  # the class strategies have no meaning for values
        strategy = "median" if params.get("strategy") == "median" else "mean"
        return SklearnModel(DummyRegressor(strategy=strategy), ctx.task, 1)
    strategy = params.get("strategy", "prior")
    return SklearnModel(DummyClassifier(strategy=strategy), ctx.task, ctx.n_classes)


FAMILIES = [
    Family("random_forest", FOREST_PARAMS, "ordinal", _forest("RandomForest"), load_sklearn),
    Family("extra_trees", FOREST_PARAMS, "ordinal", _forest("ExtraTrees"), load_sklearn),
    Family("lightgbm", LIGHTGBM_PARAMS, "ordinal", build_lightgbm, load_sklearn),
    Family("hist_gb", HIST_GB_PARAMS, "ordinal", build_hist_gb, load_sklearn),
    Family(
        "linear", frozenset({"C", "class_weight", "max_iter"}), "onehot", build_linear, load_sklearn
    ),
    Family("dummy", frozenset({"strategy"}), "ordinal", build_dummy, load_sklearn),
]
