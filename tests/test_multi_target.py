"""Several targets: one head per target in the networks, one model per target elsewhere, a
score per target in the leaderboard, the first (or `--objective`) target optimized."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SPACES, Cli, shared, write_space

TARGETS = ["--target", "class", "--target", "credit_amount", "--target", "housing"]
MLP = """family: mlp
params:
  units: {type: fixed, value: 16}
  target_weight: {type: float, low: 0.1, high: 1.0, default: 0.4}
  epochs: {type: fixed, value: 3}
"""


@pytest.fixture
def credit(tmp_path: Path) -> Path:
    path = tmp_path / "credit.csv"
    pd.read_csv(shared("credit_g.csv.gz")).sample(300, random_state=0).to_csv(path, index=False)
    return path


@pytest.mark.keras
def test_a_network_grows_one_head_per_target_with_its_own_loss(credit: Path) -> None:
    from automl.data import load_dataset
    from automl.models import FAMILIES, BuildContext
    from automl.preprocess import fit_encoder, transform

    data = load_dataset(str(credit), "class", other_targets=["credit_amount", "housing"])
    assert [o.task for o in data.others] == ["regression", "multiclass"]
    encoder = fit_encoder("onehot", data.schema, data.x_fit)
    x = transform(encoder, data.x_fit)
    others = tuple((o.name, o.task, len(o.target.classes)) for o in data.others)
    ctx = BuildContext(task="binary", n_classes=2, others=others)
    network = FAMILIES["mlp"].build({"units": 8, "target_weight": 0.4, "epochs": 1}, ctx)
    model = network.build(x)
    assert list(model.output_names) == ["output", "target_0", "target_1"]
    config = model.get_compile_config()
    assert config["loss_weights"] == {"output": 1.0, "target_0": 0.4, "target_1": 0.4}
    assert config["loss"] == {
        "output": "binary_crossentropy",
        "target_0": "mse",
        "target_1": "sparse_categorical_crossentropy",
    }
    assert model.get_layer("target_1").units == 3  # housing: own, rent, for free


@pytest.mark.keras
def test_several_targets_end_to_end(tmp_path: Path, credit: Path, cli: Cli) -> None:
    run = tmp_path / "run"
    spaces = ["--space", SPACES / "linear.yaml", "--space", write_space(tmp_path, "m.yaml", MLP)]
    args = ["--data", credit, *TARGETS, "--out", run, "--trials", "3", "--threads", "1"]
    result = cli("search", *args, *spaces, "--pruner", "none")
    assert result.code == 0, result.err
    board = pd.read_csv(run / "leaderboard.csv")
    assert (board.status == "complete").all() and set(board.metric) == {"roc_auc"}
    for column in ("val_rmse[credit_amount]", "test_rmse[credit_amount]",
                   "val_log_loss[housing]", "test_log_loss[housing]"):  # fmt: skip
        assert board[column].notna().all(), column
    linear = board[board.family == "linear"].iloc[0]
    trial = run / "trials" / f"{int(linear['name'][1:5]):04d}"
    assert (trial / "target_0" / "manifest.json").exists()  # one model per further target
    assert json.loads((run / "run.json").read_text())["other_targets"] == [
        "credit_amount",
        "housing",
    ]
    ensembled = cli("ensemble", run)  # the objective's predictions, as ever
    assert ensembled.code == 0
    # The refit on every row is skipped, said in one line; the search-time models predict.
    said = [line for line in ensembled.out.splitlines() if line.startswith("refit:")]
    assert said == [
        "refit: skipped, the refit on every row takes one target (this run has several); "
        "the search-time models predict"
    ]
    assert not list(run.glob("trials/*/refit"))
    out = tmp_path / "p.csv"
    assert cli("predict", run, "--data", credit, "--out", out).code == 0
    assert set(pd.read_csv(out).prediction) <= {"good", "bad"}


def test_objective_chooses_the_target_and_must_be_one_of_them(
    tmp_path: Path,
    credit: Path,
    cli: Cli,
) -> None:
    space = ["--space", SPACES / "linear.yaml"]
    run = tmp_path / "run"
    args = ["--data", credit, *TARGETS, "--out", run, "--trials", "1", *space]
    assert cli("search", *args, "--objective", "housing").code == 0
    assert pd.read_csv(run / "leaderboard.csv").metric.iloc[0] == "log_loss"
    result = cli("search", *args[:-4], "--out", tmp_path / "r2", "--objective", "age")
    assert result.code == 2
    assert (
        "--objective 'age' is not one of the --target columns (class, credit_amount, housing)"
        in (result.err)
    )
