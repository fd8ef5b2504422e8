"""Ensembles on hand-checkable cases: the numbers here can be worked out on paper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from automl.ensemble import GreedyEnsemble, MeanEnsemble, OptimizedWeightsEnsemble, StackingEnsemble
from automl.ensemble.insight import (
    cross_validated_predictions,
    describe,
    held_out_check,
    honest_folds,
    signed_gain,
)
from automl.ensemble.surrogate import logits_for, softmax_weights
from automl.metrics import METRICS

RMSE = METRICS["rmse"]
LOG_LOSS = METRICS["log_loss"]


def test_greedy_reproduces_the_worked_example() -> None:
    # y = [0, 2]; a = [0, 0], b = [0, 4], c = [0, 2.5]. By hand (RMSE of the running mean):
    # pick c (0.354), c (0.354), a (0.236: mean 1.667), c (0.088: 1.875), c (0.0: 2.0); the
    # trajectory is cut at its best point, step 5, so weights are a 1/5, c 4/5.
    y = np.array([0.0, 2.0])
    members = [np.array([0.0, 0.0]), np.array([0.0, 4.0]), np.array([0.0, 2.5])]
    ensemble = GreedyEnsemble(RMSE, size=8).fit(members, y)
    assert ensemble.indices_ == [2, 2, 0, 2, 2]
    np.testing.assert_allclose(
        ensemble.trajectory_[:5], [0.35355, 0.35355, 0.23570, 0.08839, 0.0], atol=1e-5
    )
    np.testing.assert_allclose(ensemble.weights_, [0.2, 0.0, 0.8])
    np.testing.assert_allclose(ensemble.predict(members), y)


def test_greedy_ties_go_to_the_member_already_chosen() -> None:
    y = np.array([0.0, 1.0, 2.0])
    twin = np.array([0.1, 1.1, 2.1])
    ensemble = GreedyEnsemble(RMSE, size=5).fit([twin, twin.copy()], y)
    np.testing.assert_allclose(ensemble.weights_, [1.0, 0.0])


def test_member_identical_to_the_truth_gets_almost_all_weight() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=400)
    members = [y + rng.normal(scale=1.0, size=400), y.copy(), rng.normal(size=400)]
    ensemble = OptimizedWeightsEnsemble(RMSE).fit(members, y)
    assert ensemble.weights_[1] > 0.99
    assert ensemble.score(members, y) < 0.01


def test_perfectly_correlated_members_split_weight_without_changing_the_score() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=300)
    a = y + rng.normal(scale=0.5, size=300)
    b = y + rng.normal(scale=0.7, size=300)
    alone = OptimizedWeightsEnsemble(RMSE).fit([a, b], y)
    twins = OptimizedWeightsEnsemble(RMSE).fit([a, a.copy(), b], y)
    assert twins.score([a, a, b], y) == pytest.approx(alone.score([a, b], y), abs=1e-4)
    assert twins.weights_[0] + twins.weights_[1] == pytest.approx(alone.weights_[0], abs=1e-2)


def test_optimized_weights_never_end_worse_than_its_best_start() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, size=200)
    members = []
    for noise in (0.5, 1.0, 2.0, 3.0, 5.0):
        logits = np.eye(3)[y] * 2 + rng.normal(scale=noise, size=(200, 3))
        members.append(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    ensemble = OptimizedWeightsEnsemble(LOG_LOSS).fit(members, y)
    best_start = min(s["start_error"] for s in ensemble.starts_.values())
    assert LOG_LOSS(y, ensemble.predict(members)) <= best_start + 1e-12
    # Log-loss is its own surrogate: greedy, which its convex optimum beats, is not run.
    assert set(ensemble.starts_) == {"uniform", "best"}
    accuracy = OptimizedWeightsEnsemble(METRICS["accuracy"]).fit(members, y)
    assert set(accuracy.starts_) == {"uniform", "greedy", "best"}
    assert ensemble.weights_.min() >= 0
    assert ensemble.weights_.sum() == pytest.approx(1.0)


def test_weights_parametrization_is_always_valid_and_has_no_flat_direction() -> None:
    w = softmax_weights(np.array([np.log(2.0), 0.0, np.log(5.0)]))
    np.testing.assert_allclose(w, [1 / 9, 2 / 9, 1 / 9, 5 / 9])
    np.testing.assert_allclose(softmax_weights(logits_for(w)), w)
    # n-1 free logits for n weights: a shifted point is another weighting, not the same one.
    assert not np.allclose(softmax_weights(np.array([1.0, 1.0, 1.0])), w)
    assert softmax_weights(np.array([800.0, -800.0, 0.0])).sum() == pytest.approx(1.0)


def test_mean_is_uniform_and_unfitted_predict_is_refused() -> None:
    members = [np.array([0.0, 2.0]), np.array([2.0, 4.0])]
    with pytest.raises(RuntimeError, match="MeanEnsemble is not fitted yet; call fit first"):
        MeanEnsemble(RMSE).predict(members)
    ensemble = MeanEnsemble(RMSE).fit(members, np.zeros(2))
    np.testing.assert_allclose(ensemble.predict(members), [1.0, 3.0])


def test_members_of_different_shapes_are_refused() -> None:
    with pytest.raises(
        ValueError, match=r"members' predictions differ in shape: \[\(2,\), \(3,\)\]"
    ):
        MeanEnsemble(RMSE).fit([np.zeros(2), np.zeros(3)], np.zeros(2))


def _probabilities(y: np.ndarray, strength: float, noise: float, seed: int) -> np.ndarray:
    """Binary probabilities informative about y with the given strength and noise."""
    rng = np.random.default_rng(seed)
    logits = (2 * y - 1) * strength + rng.normal(scale=noise, size=len(y))
    p1 = 1 / (1 + np.exp(-logits))
    return np.column_stack([1 - p1, p1])


def test_stacking_beats_the_mean_when_one_member_is_inverted() -> None:
    y = np.random.default_rng(3).integers(0, 2, size=600)
    good = _probabilities(y, 1.0, 1.0, seed=4)
    inverted = _probabilities(y, 1.0, 1.0, seed=5)[:, ::-1]  # confidently, consistently wrong
    members = [good, inverted]
    mean = MeanEnsemble(LOG_LOSS).fit(members, y).score(members, y)
    stacking = StackingEnsemble(LOG_LOSS).fit(members, y)
    assert stacking.meta_.coef_[0, 0] > 0 > stacking.meta_.coef_[0, 1]  # inverted is used, negated
    assert LOG_LOSS(y, stacking.oof_) < mean - 0.2  # and on its own cross-validated predictions
    assert stacking.weights_.sum() == pytest.approx(1.0)


def test_stacking_regression_and_multiclass_shapes() -> None:
    rng = np.random.default_rng(6)
    y = rng.normal(size=200)
    members = [y + rng.normal(scale=0.3, size=200), 2 * y + 1]
    ridge = StackingEnsemble(RMSE).fit(members, y)
    assert ridge.predict(members).shape == (200,)
    assert RMSE(y, ridge.oof_) < 0.05  # 2y+1 is an exact linear map of the truth
    classes = rng.integers(0, 3, size=300)
    probs = [np.eye(3)[classes] * 0.6 + rng.dirichlet(np.ones(3), 300) * 0.4 for _ in range(2)]
    multi = StackingEnsemble(LOG_LOSS).fit(probs, classes)
    proba = multi.predict(probs)
    assert proba.shape == (300, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_power_averaging_is_chosen_when_it_sharpens_underconfident_members() -> None:
    y = np.random.default_rng(7).integers(0, 2, size=500)
    # Members whose probabilities are squashed toward 0.5: p**k with k > 1 restores confidence.
    members = [0.5 + 0.3 * (_probabilities(y, 3.0, 1.0, seed=s) - 0.5) for s in (8, 9)]
    plain = OptimizedWeightsEnsemble(LOG_LOSS).fit(members, y)
    powered = OptimizedWeightsEnsemble(LOG_LOSS, powers=[1, 2, 3, 4]).fit(members, y)
    assert plain.power_ == 1.0
    assert powered.power_ > 1.0
    assert powered.score(members, y) < plain.score(members, y) - 0.05
    # Every other power is screened at the k = 1 weights; the most promising one is fitted.
    assert set(powered.screened_powers_) == {2.0, 3.0, 4.0}
    screened_best = min(powered.screened_powers_, key=powered.screened_powers_.__getitem__)
    assert set(powered.powers_) == {1.0, screened_best} and powered.power_ == screened_best
    np.testing.assert_allclose(powered.predict(members).sum(axis=1), 1.0)
    with pytest.raises(ValueError, match=r"powers must be numbers in \(0, 16\]; got \[0\]"):
        OptimizedWeightsEnsemble(LOG_LOSS, powers=[0])


def test_insight_leave_one_out_correlation_and_held_out_gain() -> None:
    rng = np.random.default_rng(10)
    y = rng.normal(size=400)
    a = y + rng.normal(scale=0.5, size=400)
    b = y + rng.normal(scale=0.5, size=400)  # independent errors: averaging halves the variance
    junk = a + 2.0  # a with a bias: whatever it adds, a adds better
    members = [a, b, a.copy(), junk]
    ensemble = OptimizedWeightsEnsemble(RMSE).fit(members, y)
    info = describe(ensemble, ["a", "b", "a2", "junk"], members, y, RMSE)
    assert info["leave_one_out"]["b"] > 0.05  # b helps: leaving it out costs RMSE
    assert (info["leave_one_out"]["junk"] or 0.0) < 0.005  # junk adds (next to) nothing
    shown = info["error_correlation"]["members"]
    corr = dict(zip(shown, info["error_correlation"]["matrix"], strict=True))
    assert abs(corr["b"][shown.index("a" if "a" in shown else "a2")]) < 0.2
    parts = honest_folds(y, classification=False)
    assert parts is not None and len(parts) == 5
    honest, fitted = cross_validated_predictions(
        lambda: OptimizedWeightsEnsemble(RMSE), members, y, parts
    )
    assert honest is not None and len(fitted) == 5
    check = held_out_check(honest, members, y, RMSE, parts)
    assert len(check["gains"]) == 5 and check["mean_gain"] > 0.05  # a real gain, held out
    # The folds' own scores of their members choose the same best single members.
    assert held_out_check(honest, members, y, RMSE, parts, fitted) == check
    # By hand on the first fold: the ensemble fit without it against the member best elsewhere.
    fit_rows, held = parts[0]
    best = int(np.argmin([RMSE.error(y[fit_rows], m[fit_rows]) for m in members]))
    assert check["gains"][0] == pytest.approx(
        RMSE(y[held], members[best][held]) - RMSE(y[held], honest[held])
    )
    assert held_out_check(None, members, y, RMSE, None)["mean_gain"] is None  # too few rows
    assert honest_folds(y[:9], classification=False) is None
    assert signed_gain(RMSE, 0.4, 0.5) == pytest.approx(0.1)
    assert signed_gain(METRICS["roc_auc"], 0.8, 0.85) == pytest.approx(-0.05)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_batched_errors_are_the_metric_exactly(name: str) -> None:
    from automl.metrics import batched_errors

    metric = METRICS[name]
    rng = np.random.default_rng(11)
    if "regression" in metric.tasks:
        y = rng.normal(size=300)
        candidates = y + rng.normal(size=(6, 300))
    else:
        y = rng.integers(0, 3 if name != "roc_auc" else 2, size=300)
        k = 3 if name != "roc_auc" else 2
        candidates = rng.dirichlet(np.ones(k), size=(8, 300))
        candidates[:4] = candidates[:4].round(1)  # many ties in half of them
        candidates[2] = candidates[1]  # and two identical candidates
        candidates[5, :10] = [0.0, 1.0] if k == 2 else [0.0, 0.0, 1.0]  # exact 0 and 1
        candidates /= candidates.sum(axis=2, keepdims=True)
    expected = [metric.error(y, c) for c in candidates]
    np.testing.assert_array_equal(batched_errors(metric, y, candidates), expected)
    # Per-row errors, where the metric has them, rank candidates on any rows as the metric
    # does: the held-out check picks each fold's best member from their sums.
    from automl.metrics import row_errors

    per_row = row_errors(metric, y, candidates)
    assert (per_row is None) == (name in ("roc_auc", "balanced_accuracy"))
    for rows in (
        [rng.choice(300, size=120, replace=False) for _ in range(5)] if per_row is not None else []
    ):
        sums = per_row[:, rows].sum(axis=1)
        errors = batched_errors(metric, y[rows], candidates[:, rows])
        assert errors[np.argmin(sums)] == pytest.approx(errors.min(), abs=1e-12)


def test_fitted_weights_reach_the_log_loss_optimum_on_the_simplex() -> None:
    from scipy.optimize import minimize

    rng = np.random.default_rng(12)
    y = rng.integers(0, 2, size=2000)
    members = [_probabilities(y, s, n, seed) for seed, (s, n) in
               enumerate([(1.0, 1.0), (0.5, 2.0), (2.0, 2.5), (1.5, 1.0), (0.2, 0.5)])]  # fmt: skip
    stacked = np.stack(members)
    ensemble = OptimizedWeightsEnsemble(LOG_LOSS).fit(members, y)

    def loss(w: np.ndarray) -> float:
        return LOG_LOSS(y, np.tensordot(np.maximum(w, 0) / np.maximum(w, 0).sum(), stacked, 1))

    reference = minimize(
        loss, np.full(5, 0.2), method="SLSQP", bounds=[(0, 1)] * 5,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}], options={"ftol": 1e-12},
    )  # fmt: skip
    assert ensemble.score(members, y) <= reference.fun + 1e-7
    assert ensemble.best_start_ == "optimized"


def _real_members(metric_task: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Validation predictions of eight real models on breast cancer (binary) or diabetes
    (regression): members that differ as a search's trials do."""
    from sklearn.datasets import load_breast_cancer, load_diabetes
    from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    classify = metric_task == "binary"
    x, y = (load_breast_cancer if classify else load_diabetes)(return_X_y=True)
    x_fit, x_val, y_fit, y_val = train_test_split(x, y, test_size=0.5, random_state=0)
    trees = ((5, 2), (10, 3), (20, None))
    models = (
        [LogisticRegression(C=c, max_iter=5000) for c in (1e-4, 1e-2)]
        + [KNeighborsClassifier(k) for k in (3, 15, 40)]
        + [ExtraTreesClassifier(n, max_depth=d, random_state=0) for n, d in trees]
        if classify
        else [Ridge(alpha=a) for a in (1e-3, 10.0)]
        + [KNeighborsRegressor(k) for k in (3, 15, 40)]
        + [ExtraTreesRegressor(n, max_depth=d, random_state=0) for n, d in trees]
    )
    fitted = [m.fit(x_fit, y_fit) for m in models]
    preds = [m.predict_proba(x_val) if classify else m.predict(x_val) for m in fitted]
    return preds, y_val


@pytest.mark.parametrize("name", ["roc_auc", "accuracy", "log_loss", "mae", "rmse"])
def test_nelder_mead_refines_on_the_metric_and_never_ends_below_its_start(name: str) -> None:
    metric = METRICS[name]
    members, y = _real_members("regression" if "regression" in metric.tasks else "binary")
    ensemble = OptimizedWeightsEnsemble(metric).fit(members, y)
    refined = ensemble.nelder_mead_
    assert refined.evaluations > 1 and refined.members >= 2
    assert refined.end_error <= refined.start_error  # its start is a vertex of its simplex
    final = metric.error(y, ensemble.predict(members))
    # Kept only where strictly better on the metric; otherwise the fit's own weights stand.
    assert final == pytest.approx(min(refined.start_error, refined.end_error), abs=1e-12)
    assert final <= min(s["start_error"] for s in ensemble.starts_.values()) + 1e-12
    assert ensemble.best_start_.endswith(" + nelder-mead") == refined.improved
    assert ensemble.weights_.min() >= 0 and ensemble.weights_.sum() == pytest.approx(1.0)


def test_nelder_mead_finds_more_auc_than_the_surrogate_on_real_members() -> None:
    # AUC is a step function of the weights: the log-loss surrogate's optimum is not its own.
    members, y = _real_members("binary")
    auc = METRICS["roc_auc"]
    without = OptimizedWeightsEnsemble(auc, nelder_mead_evaluations=0).fit(members, y)
    with_it = OptimizedWeightsEnsemble(auc).fit(members, y)
    assert without.nelder_mead_.evaluations == 1 and not without.nelder_mead_.improved
    assert with_it.nelder_mead_.improved
    assert with_it.score(members, y) > without.score(members, y)


def test_nelder_mead_method_from_uniform_weights_and_from_the_surrogate() -> None:
    from automl.ensemble import METHODS, NelderMeadEnsemble

    assert METHODS["nelder-mead"] is NelderMeadEnsemble
    members, y = _real_members("binary")
    auc = METRICS["roc_auc"]
    uniform = NelderMeadEnsemble(auc, start="uniform", max_evaluations=400).fit(members, y)
    mean = MeanEnsemble(auc).fit(members, y).score(members, y)
    assert uniform.nelder_mead_.members == len(members)  # every member of the pool moves
    assert 1 < uniform.nelder_mead_.evaluations <= 401
    assert uniform.score(members, y) >= mean  # never below its start, the uniform weights
    surrogate = NelderMeadEnsemble(auc).fit(members, y)
    assert (
        surrogate.score(members, y)
        >= OptimizedWeightsEnsemble(auc).fit(members, y).score(members, y) - 1e-12
    )  # more evaluations from the same start
    with pytest.raises(
        ValueError, match=r"start must be one of \('surrogate', 'uniform'\); got 'x'"
    ):
        NelderMeadEnsemble(auc, start="x")


def test_a_recipe_naming_nelder_mead_loads(tmp_path: Path) -> None:
    from automl.ensemble.build import load_recipe
    from automl.errors import UserInputError

    bundled = load_recipe("nelder_mead")
    assert (bundled.method, bundled.label, bundled.options) == (
        "nelder-mead", "nelder-mead", {"start": "surrogate", "max_evaluations": 1000}
    )  # fmt: skip
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: nelder-mead\noptions: {start: best}\n")
    with pytest.raises(UserInputError, match=r"bad\.yaml: options for nelder-mead: .*start must"):
        load_recipe(bad)


@pytest.mark.parametrize("name", ["roc_auc", "log_loss", "accuracy", "rmse"])
def test_greedy_scores_its_candidates_in_a_smaller_form_with_the_same_values(name: str) -> None:
    from automl.metrics import additive_form, batched_errors

    metric = METRICS[name]
    members, y = _real_members("regression" if "regression" in metric.tasks else "binary")
    stacked = np.stack(members)
    view, errors_of = additive_form(metric, stacked, y)
    assert view.nbytes <= stacked.nbytes
    weights = np.random.default_rng(0).dirichlet(np.ones(len(members)), size=5)
    averages = np.tensordot(weights, stacked, axes=1)
    np.testing.assert_allclose(
        errors_of(np.tensordot(weights, view, axes=1)),
        batched_errors(metric, y, averages),
        rtol=1e-12,
    )


def test_roc_auc_is_scikit_learns_with_and_without_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(13)
    y = rng.integers(0, 2, size=2000)
    for scores in (
        rng.random(2000),
        rng.random(2000).round(2),
        np.r_[np.zeros(1000), rng.random(1000)],
    ):
        proba = np.column_stack([1 - scores, scores])
        assert METRICS["roc_auc"](y, proba) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
