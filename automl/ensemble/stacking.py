"""Stacking: a regularized linear meta-learner over the members' predictions.

Classification: multinomial logistic regression on the members' log-probabilities (for binary,
one logit per member), so a member that is confidently wrong in a consistent way (even
inverted) is used with a negative coefficient, which no weighted average can do. Regression:
ridge on the members' values, with an intercept. The regularization strength is chosen by
internal cross-validation on the rows given, which are out-of-fold predictions under `--cv`
and the validation split otherwise. `oof_` holds the meta-learner's own cross-validated
predictions on those rows, so its validation score is not an in-sample one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from automl.ensemble.base import Ensembler, stack
from automl.metrics import Metric

CLIP = 1e-6
STRENGTHS = np.logspace(-3, 3, 13)
SELECTION_ROWS = 4000
MAX_ITER = 500
# A meta-learner's strength and weights need no more precision than this: at scikit-learn's
# 1e-4, lbfgs took 311 iterations on a ten-class image run's meta-features, at 1e-3 64 (the
# recipe, a split-half check included: 43.5 s -> 10.7 s; test log-loss 0.3907 -> 0.3926).
TOLERANCE = 1e-3


def _sample_rows(y: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Row indices, all of them up to `limit`, else a stratified sample of `limit`."""
    if len(y) <= limit:
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    _, counts = np.unique(y, return_counts=True)
    _, sample = train_test_split(
        np.arange(len(y)),
        test_size=limit,
        random_state=seed,
        stratify=y if counts.min() >= 2 else None,
    )
    return np.sort(sample)


def features(stacked: np.ndarray) -> np.ndarray:
    """Members' predictions as meta-features: (rows, members x classes) log-odds or values."""
    if stacked.ndim == 2:  # regression: (members, rows)
        return stacked.T
    p = np.clip(stacked, CLIP, 1 - CLIP)
    if p.shape[2] == 2:
        return np.log(p[:, :, 1] / p[:, :, 0]).T
    logs = np.log(p)
    return np.concatenate(list(logs), axis=1)


class StackingEnsemble(Ensembler):
    combiner = "stacking"

    def __init__(self, metric: Metric, folds: int = 5, seed: int = 0) -> None:
        super().__init__(metric)
        if folds < 2:
            raise ValueError(f"StackingEnsemble folds must be >= 2; got {folds}")
        self.folds = folds
        self.seed = seed

    def fit(self, preds: Sequence[np.ndarray], y: np.ndarray) -> StackingEnsemble:
        # One thread for BLAS and OpenMP alike: the meta-learner's matrices are small, and
        # idle threads spinning between products (OpenBLAS's, and the OpenMP runtimes that
        # LightGBM and TensorFlow bring into the process) made a 10-class fit take minutes.
        with threadpool_limits(1):
            return self._fit(stack(preds), y)

    def _fit(self, stacked: np.ndarray, y: np.ndarray) -> StackingEnsemble:
        from sklearn.base import clone
        from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV
        from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

        x = features(stacked)
        if stacked.ndim == 2:
            self.meta_ = RidgeCV(alphas=STRENGTHS).fit(x, y)
            coef = np.abs(self.meta_.coef_).reshape(1, -1)
            splitter = KFold(self.folds, shuffle=True, random_state=self.seed)
            final = Ridge(alpha=self.meta_.alpha_)
            self.oof_ = cross_val_predict(clone(final), x, y, cv=splitter)
        else:
            # Standardized log-probabilities: a clipped log(1e-6) is -13.8 beside values near
            # 0, and lbfgs on the raw features ran out of iterations on ten classes.
            self.center_, self.scale_ = x.mean(axis=0), x.std(axis=0) + 1e-12
            x = (x - self.center_) / self.scale_
            n_classes = stacked.shape[2]
            counts = np.bincount(np.asarray(y, dtype=int), minlength=n_classes)
            folds = int(max(2, min(self.folds, counts[counts > 0].min())))
            # The strength is chosen on at most SELECTION_ROWS rows (stratified): with ten
            # classes x 20 members = 200 features on 20,000 rows, the full 13-strength search
            # took over ten minutes; one strength per decade on a sample takes seconds.
            pick = _sample_rows(y, SELECTION_ROWS, self.seed)
            search = LogisticRegressionCV(
                Cs=1 / STRENGTHS[::2],
                l1_ratios=(0.0,),
                cv=folds,
                scoring="neg_log_loss",
                max_iter=MAX_ITER,
                tol=TOLERANCE,
                use_legacy_attributes=False,
            ).fit(x[pick], np.asarray(y)[pick])
            final = LogisticRegression(
                C=float(np.ravel(search.C_)[0]), max_iter=MAX_ITER, tol=TOLERANCE
            )
            self.meta_ = clone(final).fit(x, y)
            self.n_classes_ = n_classes
            coef = np.abs(self.meta_.coef_)
            splitter = StratifiedKFold(folds, shuffle=True, random_state=self.seed)
            oof = cross_val_predict(final, x, y, cv=splitter, method="predict_proba")
            self.oof_ = np.zeros((len(y), n_classes))
            self.oof_[:, np.unique(y).astype(int)] = oof
        per_member = coef.reshape(coef.shape[0], stacked.shape[0], -1).sum(axis=(0, 2))
        total = per_member.sum()
        n_members = len(per_member)
        self.weights_ = per_member / total if total > 0 else np.full(n_members, 1 / n_members)
        return self

    def predict(self, preds: Sequence[np.ndarray]) -> np.ndarray:
        if not hasattr(self, "meta_"):
            raise RuntimeError("StackingEnsemble is not fitted yet; call fit first")
        stacked = stack(preds)
        x = features(stacked)
        if stacked.ndim == 2:
            return self.meta_.predict(x)
        if hasattr(self, "center_"):  # combiners saved before features were standardized lack it
            x = (x - self.center_) / self.scale_
        proba = np.zeros((x.shape[0], self.n_classes_))
        proba[:, self.meta_.classes_.astype(int)] = self.meta_.predict_proba(x)
        return proba
