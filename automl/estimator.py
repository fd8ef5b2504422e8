"""scikit-learn estimators over the whole platform: `AutoMLClassifier().fit(X, y)` searches,
ensembles and keeps the best model, for a notebook, a `Pipeline` or `cross_val_score`.

The scikit-learn contract holds: `__init__` only stores its arguments (so `clone` and
`get_params` work), `fit` validates, runs a search into a run directory and sets attributes
ending in `_`, and `predict` first checks the estimator is fitted. Every fit is an ordinary
run directory (`run_dir_`), so `automl report`, `automl predict` and `automl.load` work on it
too. Bad input raises `ValueError` with the same one-line message the CLI prints.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d

from automl.data import MIN_ROWS
from automl.errors import UserInputError
from automl.run_store import is_remote

if TYPE_CHECKING:
    from automl.ensemble.build import Recipe
    from automl.run import RunDir

DEFAULT_RECIPES = "default"  # the recipes `automl ensemble` builds (`build.default_recipes`)


def _as_frame(x: Any, n_features: int | None = None) -> tuple[pd.DataFrame, bool]:
    """X as a DataFrame, and whether it came with string column names (sklearn's
    `feature_names_in_` rule). Arrays get columns x0, x1, ..."""
    if isinstance(x, pd.DataFrame):
        named = all(isinstance(c, str) for c in x.columns)
        frame = x if named else x.set_axis([f"x{i}" for i in range(x.shape[1])], axis=1)
        return frame.reset_index(drop=True), named
    if hasattr(x, "toarray"):
        raise ValueError("sparse input is not supported; pass a dense array or a DataFrame")
    array = np.asarray(x)
    if array.ndim != 2:
        raise ValueError(
            f"Expected a 2D array or a DataFrame for X, got an array of shape {array.shape}. "
            "Reshape your data with array.reshape(-1, 1) if it has a single feature."
        )
    if n_features is not None and array.shape[1] != n_features:
        raise ValueError(f"X has {array.shape[1]} features, but the estimator is expecting "
                         f"{n_features} features as input.")  # fmt: skip
    if array.dtype.kind in "OUS":
        frame = pd.DataFrame(array, columns=[f"x{i}" for i in range(array.shape[1])])
        return frame.infer_objects(), False
    if array.dtype.kind == "c":
        raise ValueError("Complex data not supported")
    return pd.DataFrame(array, columns=[f"x{i}" for i in range(array.shape[1])]), False


def _free_name(columns: Sequence[str], wanted: str = "target") -> str:
    name = wanted
    while name in columns:
        name = f"_{name}"
    return name


class _AutoMLEstimator(BaseEstimator):
    """What the classifier and the regressor share; `_task` says which they are."""

    _task = "regression"
    run_dir_: Path | str  # set by `fit`: a folder, or a URL in object storage

    def __init__(
        self,
        time_budget: float | None = 60.0,
        trials: int | None = None,
        space: str | Sequence[str] | None = None,
        cv: int | str = "auto",
        cv_repeats: int | str = "auto",
        metric: str | None = None,
        ensemble: str | Sequence[str] | None = DEFAULT_RECIPES,
        refit: bool = True,
        backend: str = "optuna",
        sampler: str | None = None,
        executor: str = "local",
        workers: int | str = 1,
        ray_address: str | None = None,
        storage: str | None = None,
        n_jobs: int | None = None,
        test_size: float = 0.2,
        seed: int = 0,
        run_dir: str | Path | None = None,
        verbose: bool = False,
    ) -> None:
        self.time_budget = time_budget
        self.trials = trials
        self.space = space
        self.cv = cv
        self.cv_repeats = cv_repeats
        self.metric = metric
        self.ensemble = ensemble
        self.refit = refit
        self.backend = backend
        self.sampler = sampler
        self.executor = executor
        self.workers = workers
        self.ray_address = ray_address
        self.storage = storage
        self.n_jobs = n_jobs
        self.test_size = test_size
        self.seed = seed
        self.run_dir = run_dir
        self.verbose = verbose

    # ---------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> _AutoMLEstimator:  # noqa: N803 (scikit-learn's names)
        """Search, ensemble and keep the best model by validation score; returns self."""
        from automl.ensemble.build import recipes_from
        from automl.refit import refit_best
        from automl.run import RunDir
        from automl.search.loop import run_search

        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        frame, named = _as_frame(X)
        if frame.shape[1] == 0:
            raise ValueError(
                f"0 feature(s) (shape={frame.shape}) while a minimum of 1 is required."
            )
        labels = column_or_1d(y, warn=True)
        if len(labels) != len(frame):
            raise ValueError(
                f"X and y have inconsistent numbers of samples: {len(frame)} and {len(labels)}"
            )
        target = self._check_target(labels)
        if frame.shape[0] < MIN_ROWS:
            raise ValueError(
                f"Found {frame.shape[0]} sample(s) (shape={frame.shape}) while a minimum of "
                f"{MIN_ROWS} is required (to split fit, validation and test parts)."
            )
        started = time.time()
        try:
            recipes = recipes_from(self.ensemble)  # a bad recipe is refused before the search
        except UserInputError as exc:
            raise ValueError(str(exc)) from None
        column = _free_name(list(frame.columns))
        data = frame.assign(**{column: target})
        out = self._new_run_dir()
        try:
            run_search(
                data=data,
                target=column,
                out=out,
                spaces=[self.space] if isinstance(self.space, str) else self.space,
                trials=self.trials,
                # The whole fit's: the search keeps what ensembles and the refit will need.
                time_budget=self.time_budget,
                seed=self.seed,
                test_size=self.test_size,
                task=self._task_of(target),
                metric=self.metric,
                cv=self.cv,
                cv_repeats=self.cv_repeats,
                backend=self.backend,
                sampler=self.sampler,
                executor=self.executor,
                workers=self.workers,
                ray_address=self.ray_address,
                storage=self.storage,
                threads=self.n_jobs,
                progress=print if self.verbose else (lambda line: None),
            )
            # A run in object storage: its local cache, brought up to date, and sent back.
            run = RunDir(out, storage_url=self.storage)
            self._build_ensembles(run, recipes)
            if self.refit:
                deadline = started + self.time_budget if self.time_budget is not None else None
                refit_best(run, data=data, deadline=deadline, threads=self.n_jobs)
            run.publish()
            self._attach(run)
        except UserInputError as exc:
            raise ValueError(str(exc)) from None
        self.n_features_in_ = frame.shape[1]
        if named:
            self.feature_names_in_ = np.asarray(frame.columns, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return self

    def _check_target(self, labels: np.ndarray) -> np.ndarray:
        if self._task == "regression":
            try:
                values = labels.astype(float)
            except (TypeError, ValueError):
                raise ValueError("y must be numeric for a regressor") from None
            if not np.isfinite(values).all():
                raise ValueError("y holds NaN or infinity; a regressor needs finite targets")
            return values
        if len(labels) and pd.isna(labels).any():
            raise ValueError("y holds missing values; every row needs a class label")
        kind = type_of_target(labels)
        if kind not in ("binary", "multiclass"):
            raise ValueError(
                f"Unknown label type: {kind}; a classifier needs class labels "
                "(use AutoMLRegressor for a continuous target)"
            )
        if len(np.unique(labels)) == 1:
            raise ValueError(f"y has one class ({labels[0]!r}); the classifier needs at least two")
        return labels

    def _task_of(self, target: np.ndarray) -> str:
        if self._task == "regression":
            return "regression"
        return "binary" if len(np.unique(target)) == 2 else "multiclass"

    def _new_run_dir(self) -> Path | str:
        """A fresh run directory: inside `run_dir` (kept; in object storage, a URL), or a
        temporary one that goes when this estimator does."""
        if self.run_dir is None:
            path = Path(tempfile.mkdtemp(prefix="automl-fit-"))
            weakref.finalize(self, shutil.rmtree, path, ignore_errors=True)
            return path / "run"
        if is_remote(self.run_dir):  # listing a bucket to number the fits costs a request
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            return f"{str(self.run_dir).rstrip('/')}/fit-{stamp}-{uuid.uuid4().hex[:6]}"
        parent = Path(self.run_dir)
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"run_dir {parent}: cannot create it ({exc.strerror})") from None
        number = 1 + max((int(p.name[4:]) for p in parent.glob("fit-[0-9]*")), default=0)
        return parent / f"fit-{number:03d}"

    def _build_ensembles(self, run: RunDir, recipes: list[Recipe]) -> None:
        """The recipes `ensemble` names, each scored honestly; `_attach` then takes the best
        of them and of the single trials, as `automl ensemble` and `automl.load` do."""
        from automl.ensemble.build import build_ensemble
        from automl.report import write_leaderboard

        for recipe in recipes:
            build_ensemble(run, recipe)
        write_leaderboard(run)

    def _attach(self, run: RunDir, which: str = "best") -> None:
        from automl.predict import load_predictor

        self.predictor_ = load_predictor(run, which=which)
        # Where `automl.load` and the CLI find the run again: its URL in object storage.
        self.run_dir_ = run.location if run.mirror is not None else run.path
        self.best_model_ = self.predictor_.name
        if self._task != "regression":
            self.classes_ = np.asarray(self.predictor_.classes)

    # ---------------------------------------------------------------------------------------
    def _frame(self, X: Any) -> pd.DataFrame:  # noqa: N803
        check_is_fitted(self, "predictor_")
        named = hasattr(self, "feature_names_in_")
        if isinstance(X, pd.DataFrame) and named:
            return X
        frame, _ = _as_frame(X, None if isinstance(X, pd.DataFrame) else self.n_features_in_)
        if named:  # an array for an estimator fitted on a DataFrame: columns in fit's order
            frame.columns = list(self.feature_names_in_)
        return frame

    def _raw(self, X: Any) -> np.ndarray:  # noqa: N803
        check_is_fitted(self, "predictor_")
        try:
            return self.predictor_._raw(self._frame(X), source="X")
        except UserInputError as exc:
            raise ValueError(str(exc)) from None

    def predict_frame(self, X: Any) -> pd.DataFrame:  # noqa: N803
        """`prediction` and, for classification, one `proba_<label>` column per class."""
        try:
            return self.predictor_.predict_frame(self._frame(X), source="X")
        except UserInputError as exc:
            raise ValueError(str(exc)) from None

    @property
    def name(self) -> str:
        """Which ensemble or trial predicts (`ensemble-greedy`, `t0003-lightgbm`)."""
        check_is_fitted(self, "predictor_")
        return str(self.predictor_.name)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.non_deterministic = False
        return tags


class AutoMLClassifier(ClassifierMixin, _AutoMLEstimator):
    """Searches classifiers (trees, linear, networks) and ensembles them.

    Parameters: `time_budget` seconds of the whole fit (search, ensembles and refit) and `trials`
    (whichever ends first), `space`
    (a bundled name such as "tabular" or "lightgbm", a YAML path, or a list; default: chosen
    by the data), `cv` folds of cross-fitting ("auto": 5 for tabular data up to 100,000 rows,
    else one holdout split) drawn `cv_repeats` times ("auto": once), `metric`
    (default roc_auc / log_loss),
    `ensemble` recipes fitted after the search ("default": the four `automl ensemble` builds;
    a recipe's name or path, or a list; None for none), `refit` (the chosen model's members
    refit on every row, the default; False keeps the search-time models), `backend`
    ("optuna", "hyperopt" or "keras-tuner") and `sampler` ("tpe" or "random"; keras-tuner:
    "random", "bayesian" or "hyperband"), `executor` ("local" or "ray"), `workers` (trials at
    a time on Ray; "auto": as many as the cluster has CPUs for), `ray_address` (a Ray cluster
    to join; default a local Ray), `storage` (a
    SQLAlchemy URL for the study, such as PostgreSQL; default the run directory's SQLite),
    `n_jobs` (threads per trial; default all cores), `test_size` (rows held out to score the
    result honestly), `seed`, `run_dir` (a folder that keeps each fit's run directory, or
    object storage such as "s3://bucket/fits" with the study in PostgreSQL as `storage`;
    default a temporary one). The model kept is the best ensemble or trial by honest
    validation score (`automl.load`'s rule).
    """

    _task = "classification"

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        """Class probabilities, columns in the order of `classes_`."""
        return self._raw(X)

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        raw = self._raw(X)
        return self.classes_[raw.argmax(axis=1)]


class AutoMLRegressor(RegressorMixin, _AutoMLEstimator):
    """Searches regressors (trees, linear, networks) and ensembles them; parameters as for
    `AutoMLClassifier` (default metric rmse)."""

    _task = "regression"

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        return np.asarray(self._raw(X), dtype=float)


def from_run(run_dir: str | Path, which: str = "best") -> _AutoMLEstimator:
    """A fitted estimator over an existing run directory (what `automl.load` returns):
    `which` is "best" (by validation score), "best_single" or a trial number."""
    from automl.data import Schema
    from automl.run import RunDir

    run = RunDir(run_dir)  # a run in object storage: its local cache, brought up to date
    info = run.info()
    estimator: _AutoMLEstimator = (
        AutoMLRegressor() if info["task"] == "regression" else AutoMLClassifier()
    )
    estimator._attach(run, which)
    columns = Schema.from_dict(info["schema"]).input_columns
    estimator.feature_names_in_ = np.asarray(columns, dtype=object)
    estimator.n_features_in_ = len(columns)
    return estimator
