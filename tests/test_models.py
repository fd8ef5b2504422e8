"""Every family fits, predicts the right shapes, and loads back to the same predictions."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from automl.data import load_dataset
from automl.io import write_manifest
from automl.metrics import get_metric
from automl.models import FAMILIES, BuildContext
from automl.preprocess import fit_encoder, layout, transform
from automl.space import SearchSpace
from tests.conftest import SPACES

# Small overrides keep each fit well under a second; the rest are the shipped defaults.
SMALL = {
    "random_forest": {"n_estimators": 30},
    "extra_trees": {"n_estimators": 30},
    "lightgbm": {"n_estimators": 60},
    "catboost": {"iterations": 100},
    "hist_gb": {"max_iter": 60},
    "linear": {},
    "mlp": {"epochs": 20, "batch_size": 32},
    "wide_deep": {"epochs": 20, "batch_size": 32, "inputs": "groups", "aux_output": True},
}
DATASETS = {"binary": "breast_cancer", "multiclass": "wine", "regression": "diabetes"}
# What a fitted model must reach on test, far below what each gets, far above chance.
FLOOR = {"binary": 0.9, "multiclass": 0.9, "regression": 0.0}


def defaults(family: str) -> dict:
    space = SearchSpace.from_files([SPACES / f"{family}.yaml"])
    flat = next(f for f in space.defaults() if f["family"] == family)
    return space.config(flat).params | SMALL[family]


@pytest.mark.parametrize("task", list(DATASETS))
@pytest.mark.parametrize(
    "family",
    [
        pytest.param(name, marks=pytest.mark.keras) if FAMILIES[name].uses_keras else name
        for name in FAMILIES
        # The baseline is meant to sit at the floor (tested below); images and text have
        # their own tests (test_networks.py).
        if name != "dummy" and FAMILIES[name].needs is None
    ],
)
def test_family_fits_predicts_and_reloads(tmp_path: Path, family: str, task: str) -> None:
    data = load_dataset(f"builtin:{DATASETS[task]}", "target", seed=0)
    assert data.task == task
    spec = FAMILIES[family]
    encoder = fit_encoder(spec.encoding, data.schema, data.x_fit)
    x_fit, x_val, x_test = (transform(encoder, x) for x in (data.x_fit, data.x_val, data.x_test))
    ctx = BuildContext(
        task=task, n_classes=len(data.target.classes), seed=0, threads=1, layout=layout(encoder)
    )
    model = spec.build(defaults(family), ctx).fit(x_fit, data.y_fit, x_val, data.y_val)
    pred = model.predict(x_test)
    if task == "regression":
        assert pred.shape == (len(x_test),)
        r2 = get_metric("r2", task)(data.y_test, pred)
        assert r2 > FLOOR[task]
    else:
        assert pred.shape == (len(x_test), ctx.n_classes)
        np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-5)
        assert get_metric("accuracy", task)(data.y_test, pred) > FLOOR[task]
    names = model.save(tmp_path)
    write_manifest(tmp_path, names)
    again = spec.load(tmp_path)
    np.testing.assert_allclose(again.predict(x_test), pred, rtol=1e-5, atol=1e-6)


def _credit_g() -> tuple:
    from tests.conftest import shared

    data = load_dataset(str(shared("credit_g.csv.gz")), "class", seed=0)
    encoder = fit_encoder("ordinal", data.schema, data.x_fit)
    x_fit, x_val = transform(encoder, data.x_fit), transform(encoder, data.x_val)
    ctx = BuildContext(task="binary", n_classes=2, layout=layout(encoder))
    return data, x_fit, x_val, ctx


def test_lightgbm_splits_category_codes_natively_when_asked() -> None:
    """credit_g's 13 categorical columns: with `native_categories` LightGBM keeps each one's
    categories (feature_infos list their values), without it a numeric range (no values)."""
    data, x_fit, x_val, ctx = _credit_g()
    start, stop = ctx.layout["categorical"]
    assert stop - start == 13 == len(data.schema.categorical)
    for native, categorical_info in ((True, True), (False, False)):
        params = {"n_estimators": 30, "verbosity": -1, "native_categories": native}
        model = FAMILIES["lightgbm"].build(params, ctx).fit(x_fit, data.y_fit, x_val, data.y_val)
        infos = model.estimator.booster_.dump_model()["feature_infos"]
        used = [c for c in range(start, stop) if f"Column_{c}" in infos]  # none constant
        assert len(used) >= 10
        for column in used:
            assert bool(infos[f"Column_{column}"]["values"]) is categorical_info, (native, column)
        assert infos["Column_0"]["values"] == []  # numbers stay numbers


def test_catboost_takes_categories_natively_and_stops_early() -> None:
    data, x_fit, x_val, ctx = _credit_g()
    start, stop = ctx.layout["categorical"]
    params = {"iterations": 1000, "learning_rate": 0.3}
    model = FAMILIES["catboost"].build(params, ctx).fit(x_fit, data.y_fit, x_val, data.y_val)
    assert model.estimator.get_cat_feature_indices() == list(range(start, stop))
    stopped = model.stopped_at()["iterations"]
    assert 1 <= stopped < 1000 and model.estimator.tree_count_ == stopped  # the best model kept
    assert 0 < model.kept_share() < 1  # it ran 50 rounds past the best
    refit = FAMILIES["catboost"].build(params | model.stopped_at(), ctx)
    refit.fit(np.vstack([x_fit, x_val]), np.concatenate([data.y_fit, data.y_val]), None, None)
    assert refit.estimator.tree_count_ == stopped  # no validation: the count given
    late = FAMILIES["catboost"].build(params, ctx)
    late.fit(x_fit, data.y_fit, x_val, data.y_val, deadline=time.time() - 1)
    assert late.estimator.tree_count_ <= 2  # the deadline had passed: it stops at once


def test_lightgbm_stops_boosting_at_the_deadline() -> None:
    data = load_dataset("builtin:breast_cancer", "target", seed=0)
    encoder = fit_encoder("ordinal", data.schema, data.x_fit)
    x_fit, x_val = transform(encoder, data.x_fit), transform(encoder, data.x_val)
    ctx = BuildContext(task="binary", n_classes=2)
    model = FAMILIES["lightgbm"].build({"n_estimators": 500, "verbosity": -1}, ctx)
    model.fit(x_fit, data.y_fit, x_val, data.y_val, deadline=0.0)  # long past
    assert model.estimator.booster_.num_trees() == 1


@pytest.mark.parametrize("family", ["random_forest", "extra_trees"])
def test_a_forest_grows_until_its_deadline_and_its_refit_takes_what_it_grew(family: str) -> None:
    """A forest cannot stop within a fit: it grows a tenth of its trees at a time while the
    next tenth fits before the deadline. Given time, it is the same forest as one fit."""
    data = load_dataset("builtin:breast_cancer", "target", seed=0)
    encoder = fit_encoder("ordinal", data.schema, data.x_fit)
    x_fit, x_test = transform(encoder, data.x_fit), transform(encoder, data.x_test)
    ctx = BuildContext(task="binary", n_classes=2, threads=2)
    cut = FAMILIES[family].build({"n_estimators": 5000, "class_weight": "balanced"}, ctx)
    start = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cut.fit(x_fit, data.y_fit, None, None, deadline=start + 0.5)
    assert not [w for w in caught if "warm_start" in str(w.message)]  # same rows each time
    grown = len(cut.estimator.estimators_)
    assert 500 <= grown < 5000 and grown % 500 == 0
    assert time.time() - start < 0.5 + 3.0  # at most the tenth that passed the estimate
    assert cut.stopped_at() == {"n_estimators": grown}
    assert get_metric("roc_auc", "binary")(data.y_test, cut.predict(x_test)) > 0.95
    timed = FAMILIES[family].build({"n_estimators": 40}, ctx)
    timed.fit(x_fit, data.y_fit, None, None, deadline=time.time() + 60)
    whole = FAMILIES[family].build({"n_estimators": 40}, ctx)
    whole.fit(x_fit, data.y_fit, None, None)
    assert timed.stopped_at() == {} and not timed.estimator.warm_start
    np.testing.assert_array_equal(timed.predict(x_test), whole.predict(x_test))


def test_a_cross_fitted_trial_gives_each_fold_its_share_of_the_time_left() -> None:
    from automl.search.evaluate import fold_deadline

    now = time.time()
    assert fold_deadline(now + 50.0, 0, 5) == pytest.approx(now + 10.0, abs=0.5)
    assert fold_deadline(now + 50.0, 4, 5) == pytest.approx(now + 50.0, abs=0.5)
    assert fold_deadline(now - 1.0, 2, 5) == pytest.approx(now, abs=0.5)
    assert fold_deadline(None, 0, 5) is None


def test_dummy_baseline_predicts_the_class_prior_and_the_mean() -> None:
    from automl.models import BuildContext

    y = np.array([0, 0, 0, 1])
    x = np.zeros((4, 1))
    model = FAMILIES["dummy"].build({"strategy": "prior"}, BuildContext("binary", 2))
    model.fit(x, y, x, y)
    np.testing.assert_allclose(model.predict(x[:1]), [[0.75, 0.25]])
    values = FAMILIES["dummy"].build({"strategy": "prior"}, BuildContext("regression", 1))
    values.fit(x, np.array([1.0, 2.0, 3.0, 6.0]), x, y)
    np.testing.assert_allclose(values.predict(x[:2]), [3.0, 3.0])


@pytest.mark.keras
def test_a_network_refit_is_reserved_for_its_training_passes_only() -> None:
    """The reserve for a network's refit counts its set-up and the training passes up to the
    best epoch; the validation passes and per-epoch reports, which a refit does not make, are
    left out. A refit on every row is timed the same way, for the epochs given."""
    data = load_dataset("builtin:breast_cancer", "target", seed=0)
    encoder = fit_encoder("onehot", data.schema, data.x_fit)
    x_fit, x_val = transform(encoder, data.x_fit), transform(encoder, data.x_val)
    reports: list[int] = []
    ctx = BuildContext(task="binary", n_classes=2, seed=0, threads=1, layout=layout(encoder),
                       on_epoch=lambda epoch, _: reports.append(epoch))  # fmt: skip
    params = defaults("mlp") | {"epochs": 12, "patience": 20}
    model = FAMILIES["mlp"].build(params, ctx).fit(x_fit, data.y_fit, x_val, data.y_val)
    ran = len(model.history["loss"])
    assert ran == 12 == len(model.epoch_seconds) == len(reports)
    trained = model.setup_seconds + sum(model.epoch_seconds)
    assert 0 < trained < model.fit_seconds  # the validation passes took the rest
    best = model.stopped_at()["epochs"]
    kept = model.setup_seconds + sum(model.epoch_seconds[:best])
    assert model.kept_share() == pytest.approx(kept / model.fit_seconds)

    refit = FAMILIES["mlp"].build(params | {"epochs": 5}, ctx)
    refit.fit(np.vstack([x_fit, x_val]), np.concatenate([data.y_fit, data.y_val]), None, None)
    assert len(refit.epoch_seconds) == len(refit.history["loss"]) == 5


RARE_CLASS_FAMILIES = ["hist_gb", "lightgbm", "random_forest", "extra_trees", "linear"]


@pytest.mark.parametrize("family", RARE_CLASS_FAMILIES)
def test_a_class_with_one_training_row_fits(family: str) -> None:
    """A rare class (one row of wine's third class kept): histogram GB's own early-stopping
    split needs two rows of each class; it fits its configured rounds instead of failing."""
    data = load_dataset("builtin:wine", "target", seed=0)
    keep = np.r_[np.flatnonzero(data.y_fit != 2), np.flatnonzero(data.y_fit == 2)[:1]]
    x, y = data.x_fit.iloc[keep], data.y_fit[keep]
    assert (y == 2).sum() == 1
    encoder = fit_encoder(FAMILIES[family].encoding, data.schema, x)
    ctx = BuildContext(task="multiclass", n_classes=3, seed=0, threads=1, layout=layout(encoder))
    params = defaults(family) | ({"early_stopping": True} if family == "hist_gb" else {})
    model = FAMILIES[family].build(params, ctx)
    model.fit(transform(encoder, x), y, transform(encoder, data.x_val), data.y_val)
    pred = model.predict(transform(encoder, data.x_test))
    assert pred.shape == (len(data.y_test), 3)
    assert get_metric("accuracy", "multiclass")(data.y_test, pred) > 0.6
