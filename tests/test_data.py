"""Data loading: formats, task inference, splits that keep the test part apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from automl.data import infer_task, load_dataset
from automl.models import FAMILIES, Family
from automl.run import RunDir, load_trials
from tests.conftest import FAST_LINEAR, ROOT, BloodSearch


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["a", "b", "a"], "binary"),
        ([0, 1, 2, 1], "multiclass"),
        (["x", "y", "z"], "multiclass"),
        (list(np.linspace(0, 1, 50)), "regression"),
        (list(range(40)), "regression"),
    ],
)
def test_task_inference(values: list, task: str) -> None:
    assert infer_task(pd.Series(values)) == task


def test_parquet_and_separate_test_file(tmp_path: Path, credit_csv: Path) -> None:
    frame = pd.read_csv(credit_csv)
    frame.iloc[:240].to_parquet(tmp_path / "train.parquet")
    frame.iloc[240:].to_csv(tmp_path / "test.csv", index=False)
    data = load_dataset(
        str(tmp_path / "train.parquet"), "class", test_data=str(tmp_path / "test.csv")
    )
    assert len(data.y_test) == 60 and len(data.y_fit) + len(data.y_val) == 240
    assert data.target.classes == ["bad", "good"]
    assert "purpose" in data.schema.categorical and "age" in data.schema.numeric


def test_splits_are_disjoint_and_seeded() -> None:
    a = load_dataset("builtin:breast_cancer", "target", seed=0)
    b = load_dataset("builtin:breast_cancer", "target", seed=0)
    pd.testing.assert_frame_equal(a.x_test, b.x_test)
    rows = {tuple(r) for r in a.x_test.round(6).to_numpy()}
    assert not rows & {tuple(r) for r in a.x_fit.round(6).to_numpy()}
    assert not rows & {tuple(r) for r in a.x_val.round(6).to_numpy()}


def test_cli_start_up_does_not_import_tensorflow() -> None:
    code = (
        "import sys, automl.cli, automl.search.loop, automl.space, automl.report, automl.predict;"
        "import automl.models; assert 'tensorflow' not in sys.modules, 'tensorflow imported';"
        "assert 'keras' not in sys.modules, 'keras imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


class _NaNModel:
    def __init__(self, params: dict, ctx: Any) -> None:
        self.ctx = ctx

    def fit(self, *data: Any, deadline: float | None = None) -> _NaNModel:
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full((len(x), self.ctx.n_classes), np.nan)

    def save(self, directory: Path) -> list[str]:
        return []


def test_nan_predictions_fail_the_trial_not_the_search(
    tmp_path: Path,
    blood_search: BloodSearch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    family = Family("nan_model", frozenset({"x"}), "onehot", _NaNModel, lambda d: None)
    monkeypatch.setitem(FAMILIES, "nan_model", family)
    nan_space = "family: nan_model\nparams:\n  x: {type: int, low: 1, high: 3}\n"
    summary = blood_search(nan_space, FAST_LINEAR, trials=4)
    records = load_trials(RunDir(tmp_path / "run"))
    failed = [r for r in records if r.status == "failed"]
    assert summary.finished == 4 and len(failed) >= 1
    assert all(r.family == "nan_model" for r in failed)
    assert failed[0].error == "TrialFailed: predictions contain NaN or infinite values"
    assert all(r.status == "complete" for r in records if r.family == "linear")


@pytest.mark.parametrize(
    ("shape", "image_shape"), [((40, 6, 5), [6, 5, 1]), ((40, 6, 5, 3), [6, 5, 3])]
)
def test_npz_images_keep_their_shape(tmp_path: Path, shape: tuple, image_shape: list) -> None:
    path = tmp_path / "images.npz"
    np.savez(path, x=np.random.default_rng(0).integers(0, 255, shape), y=np.arange(40) % 2)
    data = load_dataset(str(path), "y")
    assert data.schema.image_shape == image_shape
    assert len(data.schema.numeric) == int(np.prod(shape[1:]))  # pixels, row-major


def test_text_columns_are_detected_and_can_be_named(tmp_path: Path, credit_csv: Path) -> None:
    from tests.conftest import shared

    sms = load_dataset(str(shared("sms_spam.csv.gz")), "label")
    assert sms.schema.text == ["text"] and sms.schema.categorical == []
    credit = load_dataset(str(credit_csv), "class")  # short category values stay categories
    assert credit.schema.text == [] and "purpose" in credit.schema.categorical
    named = load_dataset(str(credit_csv), "class", text_columns=["purpose"])
    assert named.schema.text == ["purpose"] and "purpose" not in named.schema.categorical


def test_trees_see_text_as_tf_idf_and_networks_as_raw_strings() -> None:
    from automl.preprocess import fit_encoder, layout, transform
    from tests.conftest import shared

    sms = load_dataset(str(shared("sms_spam.csv.gz")), "label")
    ordinal = fit_encoder("ordinal", sms.schema, sms.x_fit)
    x = transform(ordinal, sms.x_val)
    start, stop = layout(ordinal)["text"]
    assert x.dtype == np.float64 and stop - start > 500  # TF-IDF terms
    raw = transform(fit_encoder("text", sms.schema, sms.x_fit), sms.x_val)
    assert raw.shape == (len(sms.x_val), 1) and raw[0, 0] == sms.x_val["text"].iloc[0]
