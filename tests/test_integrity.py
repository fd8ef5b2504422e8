"""Artifacts are checked before loading, and the report escapes what users wrote."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from automl.run import RunDir
from automl.search.loop import run_search
from tests.conftest import FAST_TREES, Cli, write_space


@pytest.fixture
def small_run(tmp_path: Path, credit_csv: Path) -> Path:
    frame = pd.read_csv(credit_csv).rename(columns={"age": "<script>alert(1)</script>"})
    frame.to_csv(credit_csv, index=False)
    out = tmp_path / "run"
    run_search(
        data=str(credit_csv),
        target="class",
        out=out,
        trials=2,
        threads=1,
        spaces=[write_space(tmp_path, "rf.yaml", FAST_TREES)],
        progress=lambda s: None,
    )
    return out


def test_a_flipped_byte_in_a_saved_model_is_refused(
    small_run: Path, credit_csv: Path, cli: Cli
) -> None:
    model = RunDir(small_run).trial_dir(0) / "fold0" / "model.joblib"  # cross-fitted: 5 folds
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    result = cli(
        "predict", small_run, "--data", credit_csv, "--out", small_run / "p.csv", "--model", "0"
    )
    assert result.code == 2
    assert "model.joblib: sha256 does not match" in result.err
    assert "refusing to load it" in result.err
    assert not (small_run / "p.csv").exists()


def test_report_escapes_column_names(small_run: Path, cli: Cli) -> None:
    assert cli("report", small_run).code == 0
    html = (small_run / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, as text
    assert 'src="data:image/svg+xml;base64,' in html  # plots inlined, no network needed


def test_a_recipe_name_cannot_escape_the_run_directory(tmp_path: Path) -> None:
    from automl.ensemble.build import load_recipe
    from automl.errors import UserInputError

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: ../../outside\nmethod: greedy\n")
    with pytest.raises(
        UserInputError, match=r"r\.yaml: name must be letters, digits.*'\.\./\.\./outside'"
    ):
        load_recipe(recipe)


@pytest.mark.keras
def test_keras_models_load_in_safe_mode(tmp_path: Path) -> None:
    """A .keras file with a Lambda layer (arbitrary code) is refused, even with a valid manifest."""
    from automl.io import write_json_atomic, write_manifest
    from automl.models.keras_base import META_FILE, MODEL_FILE, import_keras, load_network

    keras = import_keras(1)
    inputs = keras.Input(shape=(3,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / MODEL_FILE)
    write_json_atomic(
        tmp_path / META_FILE,
        {
            "params": {},
            "task": "regression",
            "n_classes": 0,
            "y_mean": 0.0,
            "y_std": 1.0,
            "seed": 0,
        },
    )
    write_manifest(tmp_path, [MODEL_FILE, META_FILE])
    with pytest.raises(ValueError, match="safe_mode"):
        load_network(tmp_path)
