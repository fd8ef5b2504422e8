"""Ensembles built from real searches: cross-fitting, stacking, the Keras export, loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import automl
from automl.data import load_dataset
from automl.ensemble.build import Recipe, build_ensemble, load_recipe
from automl.errors import UserInputError
from automl.run import RunDir, load_predictions
from automl.search.budget import REFIT_MEMBERS
from tests.conftest import FAST_LINEAR, FAST_MLP, FAST_TREES, BloodSearch, shared


def _blood_test_part() -> tuple:
    data = load_dataset(str(shared("blood_transfusion.csv.gz")), "Class", seed=0)
    return data.x_test, data.y_test


def test_cross_fitting_feeds_out_of_fold_predictions_to_ensembles(
    blood_search: BloodSearch,
) -> None:
    summary = blood_search(FAST_LINEAR, FAST_TREES, trials=3, cv=3)
    run = RunDir(summary.run_dir)
    info = run.info()
    assert info["cv"] == 3 and info["rows"]["val"] == info["rows"]["train_cross_fitted"]
    first = run.trial_dir(0)
    assert sorted(p.name for p in first.glob("fold*")) == ["fold0", "fold1", "fold2"]
    oof = load_predictions(run, 0, "val")
    assert oof.shape == (info["rows"]["val"], 2)  # a prediction for every training row

    stacked = build_ensemble(run, Recipe(method="stacking"))
    weighted = build_ensemble(run, Recipe(method="optimized"))
    for result in (stacked, weighted):
        assert result["validation"] == "out-of-fold"
        assert "out-of-fold predictions of 3-fold cross-fitting" in result["note"]
        assert len(result["held_out"]["gains"]) == 5
    assert stacked["keras_export"] == {"skipped": "stacking is not a fixed weighted average"}
    assert "not all members are Keras models" in weighted["keras_export"]["skipped"]

    # The loaded predictor (fold models averaged, then combined) reproduces the saved test
    # predictions of whichever ensemble or trial it picked.
    predictor = automl.load(run.path)
    x_test, _ = _blood_test_part()
    name = predictor.name.removeprefix("ensemble-")
    if predictor.name.startswith("ensemble-"):
        saved = np.load(run.ensemble_dir(name) / "test_pred.npy")
    else:
        saved = load_predictions(run, int(name[1:5]), "test")
    np.testing.assert_allclose(predictor.predict_proba(x_test), saved, atol=1e-9)


def test_stacking_predictor_round_trip(blood_search: BloodSearch) -> None:
    run = RunDir(blood_search(FAST_LINEAR, FAST_TREES, trials=7, cv=0).run_dir)
    summary = build_ensemble(run, Recipe(method="stacking"))
    assert summary["combiner"] == "stacking" and summary["validation"] == "holdout"
    # Stacking uses every member it saw, so its pool is the 5 trials the search keeps refit
    # time for (the weighted recipes choose from 20), the bundled recipe's too.
    assert len(summary["members"]) == summary["pool_size"] == REFIT_MEMBERS == 5
    assert load_recipe("stacking").pool_size == 5 and Recipe(method="greedy").pool_size == 20
    assert build_ensemble(run, Recipe(method="stacking", top_k=6, name="s6"))["pool_size"] == 6
    assert "held-out gain" in summary["note"]
    from automl.predict import Predictor

    members = [(m["trial"], m["family"], m["weight"]) for m in summary["members"]]
    import joblib

    combiner = joblib.load(run.ensemble_dir("stacking") / "combiner.joblib")
    predictor = Predictor(run, members, "stacking", combiner=combiner)
    x_test, _ = _blood_test_part()
    np.testing.assert_allclose(
        predictor.predict_proba(x_test),
        np.load(run.ensemble_dir("stacking") / "test_pred.npy"),
        atol=1e-9,
    )


def test_recipe_pool_can_be_limited_to_families(blood_search: BloodSearch, tmp_path: Path) -> None:
    run = RunDir(blood_search(FAST_LINEAR, FAST_TREES, trials=4).run_dir)
    recipe = tmp_path / "linear_only.yaml"
    recipe.write_text("name: lin\nmethod: mean\npool: {top_k: 5, families: [linear]}\n")
    summary = build_ensemble(run, load_recipe(recipe))
    assert {m["family"] for m in summary["members"]} == {"linear"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: optimized\noptions: {powers: [-1]}\n")
    with pytest.raises(UserInputError, match=r"bad\.yaml: options for optimized: .*powers"):
        load_recipe(bad)


@pytest.mark.keras
def test_keras_ensemble_export_gives_the_python_ensembles_predictions(
    blood_search: BloodSearch,
) -> None:
    import joblib
    import keras

    from automl.preprocess import transform

    run = RunDir(blood_search(FAST_MLP, trials=3, cv=0).run_dir)  # one network per member
    summary = build_ensemble(run, Recipe(method="mean"))
    assert summary["keras_export"]["file"] == "model.keras"
    directory = run.ensemble_dir("mean")
    assert "model.keras" in json.loads((directory / "manifest.json").read_text())
    model = keras.saving.load_model(directory / "model.keras", safe_mode=True)
    assert len(model.inputs) == 1
    assert sum(layer.name.startswith("member_") for layer in model.layers) == 3
    encoder = joblib.load(directory / "encoder.joblib")
    x_test, _ = _blood_test_part()
    exported = model.predict(np.asarray(transform(encoder, x_test), np.float32), verbose=0)
    np.testing.assert_allclose(exported, np.load(directory / "test_pred.npy"), atol=1e-5)


@pytest.mark.keras
def test_keras_export_of_a_regression_ensemble_undoes_each_members_target_scaling(
    tmp_path: Path,
) -> None:
    import joblib
    import keras

    from automl.preprocess import transform
    from automl.report import write_report
    from automl.search.loop import run_search
    from tests.conftest import write_space

    space = write_space(tmp_path, "mlp.yaml", FAST_MLP)
    run_search(data="builtin:diabetes", target="target", out=tmp_path / "run", spaces=[space],
               trials=2, threads=1, progress=lambda line: None)  # fmt: skip
    run = RunDir(tmp_path / "run")
    summary = build_ensemble(run, Recipe(method="mean"))
    directory = run.ensemble_dir("mean")
    model = keras.saving.load_model(directory / summary["keras_export"]["file"], safe_mode=True)
    x_test = load_dataset("builtin:diabetes", "target", seed=0).x_test
    encoder = joblib.load(directory / "encoder.joblib")
    exported = model.predict(np.asarray(transform(encoder, x_test), np.float32), verbose=0)
    np.testing.assert_allclose(exported[:, 0], np.load(directory / "test_pred.npy"), atol=1e-4)
    stacked = build_ensemble(run, Recipe(method="stacking"))  # its combiner is saved and loaded
    from automl.predict import Predictor

    members = [(m["trial"], m["family"], m["weight"]) for m in stacked["members"]]
    combiner = joblib.load(run.ensemble_dir("stacking") / "combiner.joblib")
    predictor = Predictor(run, members, "stacking", combiner=combiner)
    np.testing.assert_allclose(
        predictor.predict(x_test), np.load(run.ensemble_dir("stacking") / "test_pred.npy"),
        atol=1e-6,
    )  # fmt: skip
    assert 'data-plot="residuals"' in Path(write_report(run)).read_text()


def test_each_training_row_is_held_out_once_per_repeat_and_gets_their_mean(
    blood_search: BloodSearch,
) -> None:
    """cv="auto" (the default) cross-fits blood's 598 training rows in 5 folds, here drawn
    twice (cv_repeats 2, each its own shuffle); each row is held out by exactly one fold of
    each repeat, and its out-of-fold prediction is the mean of those two fold models'."""
    import joblib

    from automl.preprocess import transform

    run = RunDir(blood_search(FAST_LINEAR, trials=1, cv_repeats=2).run_dir)
    info = run.info()
    assert info["cv"] == 5 and info["cv_choice"].startswith("auto: 598 training rows")
    assert info["cv_repeats"] == 2
    data = load_dataset(str(shared("blood_transfusion.csv.gz")), "Class", seed=0)
    from automl.search.evaluate import TrialContext

    ctx = TrialContext(dataset=data, space=None, metric=None, run=run, cv=5, repeats=2)  # type: ignore[arg-type]
    folds = ctx.folds()
    assert len(folds) == 10
    for repeat in (folds[:5], folds[5:]):
        held = np.concatenate([rows for _, rows in repeat])
        assert sorted(held.tolist()) == list(range(598))  # every row once, none twice
    assert not np.array_equal(folds[0][1], folds[5][1])  # another shuffle
    oof = load_predictions(run, 0, "val")
    assert oof.shape == (598, 2)
    x_train = transform(
        joblib.load(run.trial_dir(0) / "encoder.joblib"),
        pd.concat([data.x_fit, data.x_val], ignore_index=True),
    )
    expected = np.zeros_like(oof)
    for k, (_, rows) in enumerate(folds):
        model = joblib.load(run.trial_dir(0) / f"fold{k}" / "model.joblib")
        expected[rows] += model.predict(x_train[rows]) / 2
    np.testing.assert_allclose(expected, oof, atol=1e-12)


def test_shuffled_test_labels_change_nothing_but_test_scores(tmp_path: Path) -> None:
    """Test labels score the result and nothing else: members, weights, the chosen model and
    every validation score are identical when the test part's labels are shuffled."""
    from automl.predict import load_predictor
    from automl.report import leaderboard_rows
    from automl.search.loop import run_search
    from tests.conftest import write_space

    frame = pd.read_csv(shared("blood_transfusion.csv.gz"))
    train, test = frame.iloc[:600], frame.iloc[600:]
    shuffled = test.assign(Class=np.random.default_rng(0).permutation(test.Class.to_numpy()))
    spaces = [
        write_space(tmp_path, "a.yaml", FAST_LINEAR),
        write_space(tmp_path, "b.yaml", FAST_TREES),
    ]
    runs = []
    for name, part in (("true", test), ("shuffled", shuffled)):
        train.to_csv(tmp_path / "train.csv", index=False)
        part.to_csv(tmp_path / f"test_{name}.csv", index=False)
        summary = run_search(
            data=str(tmp_path / "train.csv"), test_data=str(tmp_path / f"test_{name}.csv"),
            target="Class", out=tmp_path / name, spaces=spaces, trials=5, threads=1,
            progress=lambda line: None,
        )  # fmt: skip
        run = RunDir(summary.run_dir)
        ensembles = {m: build_ensemble(run, Recipe(method=m)) for m in ("greedy", "stacking")}
        runs.append((run, ensembles))
    (a, ens_a), (b, ens_b) = runs
    trials_a = {r["name"]: r["val_score"] for r in leaderboard_rows(a) if "t0" in r["name"]}
    trials_b = {r["name"]: r["val_score"] for r in leaderboard_rows(b) if "t0" in r["name"]}
    assert trials_a == trials_b and len(trials_a) == 5
    for method in ens_a:
        x, y = ens_a[method], ens_b[method]
        assert [(m["name"], m["weight"]) for m in x["members"]] == [
            (m["name"], m["weight"]) for m in y["members"]
        ]
        assert (x["val_score"], x["honest_val_score"]) == (y["val_score"], y["honest_val_score"])
        assert x["test_score"] != y["test_score"]  # the shuffle did reach the test part
    assert load_predictor(a.path).name == load_predictor(b.path).name


def test_load_best_ranks_ensembles_by_their_cross_validated_score(
    blood_search: BloodSearch,
) -> None:
    """An ensemble is chosen over the best single model only if its cross-validated score
    beats it; its in-sample score (fit on the same rows) does not count."""
    from automl.io import MANIFEST, read_json, write_json_atomic, write_manifest
    from automl.predict import load_predictor
    from automl.run import load_trials

    run = RunDir(blood_search(FAST_LINEAR, FAST_TREES, trials=4).run_dir)
    assert build_ensemble(run, Recipe(method="greedy"))["honest_val_score"] is not None
    best_single = max(r.val_score for r in load_trials(run) if r.val_score is not None)
    directory = run.ensemble_dir("greedy")
    names = list(read_json(directory / MANIFEST))
    for honest, chosen in ((best_single - 0.01, "t0"), (best_single + 0.01, "ensemble-greedy")):
        weights = read_json(directory / "weights.json")
        weights |= {"val_score": best_single + 0.05, "honest_val_score": honest}
        write_json_atomic(directory / "weights.json", weights)
        write_manifest(directory, names)
        assert load_predictor(run.path).name.startswith(chosen)
