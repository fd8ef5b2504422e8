"""Ensembles built from real searches: cross-fitting, stacking, the Keras export, loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import automl
from automl.data import load_dataset
from automl.ensemble.build import Recipe, build_ensemble, load_recipe
from automl.errors import UserInputError
from automl.run import RunDir, load_predictions
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
        assert len(result["split_half"]["gains"]) == 2
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
    run = RunDir(blood_search(FAST_LINEAR, FAST_TREES, trials=4).run_dir)
    summary = build_ensemble(run, Recipe(method="stacking"))
    assert summary["combiner"] == "stacking" and summary["validation"] == "holdout"
    assert len(summary["members"]) == summary["pool_size"]  # stacking uses every member
    assert "split-half gain" in summary["note"]
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

    run = RunDir(blood_search(FAST_MLP, trials=3).run_dir)
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
