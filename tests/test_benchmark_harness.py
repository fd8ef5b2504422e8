"""The benchmark harness's own checks (scripts/benchmark.py): a system that does no better
than the class shares or the mean on test stops the run, unless it is shown to be the
system's own answer."""

from __future__ import annotations

import numpy as np
import pytest

from automl.metrics import METRICS
from tests.conftest import ROOT


@pytest.fixture
def benchmark(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import benchmark

    return benchmark


def test_the_trivial_prediction_is_the_class_shares_or_the_mean(benchmark) -> None:  # noqa: ANN001
    shares = benchmark.trivial_prediction("multiclass", np.array([0, 0, 1, 2]), 2, 3)
    np.testing.assert_allclose(shares, [[0.5, 0.25, 0.25]] * 2)
    mean = benchmark.trivial_prediction("regression", np.array([1.0, 2.0, 6.0]), 3, 0)
    np.testing.assert_allclose(mean, [3.0, 3.0, 3.0])
    y_test = np.array([0, 1, 1, 0])
    constant = benchmark.trivial_prediction("binary", np.array([0, 1, 1]), 4, 2)
    assert METRICS["roc_auc"](y_test, constant) == 0.5


def test_a_system_no_better_than_trivial_stops_the_run(benchmark) -> None:  # noqa: ANN001
    rows = [
        {"system": "ours_ensemble", "metric": "log_loss", "test_score": 0.31},
        {"system": "flaml", "metric": "log_loss", "test_score": 15.2},  # below the shares
    ]
    with pytest.raises(
        SystemExit,
        match=r"^car: flaml scored log_loss 15\.2000 on test, no better than the class shares "
        r"or the mean \(0\.8200\): a harness bug until shown otherwise$",
    ):
        benchmark.check_beats_trivial("car", rows, 0.82, greater_is_better=False)
    benchmark.check_beats_trivial("car", rows[:1], 0.82, greater_is_better=False)  # passes
    own_answer = {"system": "flaml", "metric": "log_loss", "test_score": 13.3, "detail": "lgbm",
                  "own_predict_agreement": 0.995}  # fmt: skip
    benchmark.check_beats_trivial("car", [own_answer], 0.82, greater_is_better=False)
    assert own_answer["detail"] == (
        "lgbm; below the trivial 0.8200, its own answer: its predict() agrees with these "
        "probabilities on 99.5% of test rows"
    )
    mixed_up = own_answer | {"own_predict_agreement": 0.25}  # the saved order is not its own
    with pytest.raises(SystemExit, match="car: flaml scored log_loss 13.3000"):
        benchmark.check_beats_trivial("car", [mixed_up], 0.82, greater_is_better=False)
    auc = [{"system": "lightgbm_default", "metric": "roc_auc", "test_score": 0.5}]
    with pytest.raises(SystemExit, match="lightgbm_default scored roc_auc 0.5000"):
        benchmark.check_beats_trivial("blood", auc, 0.5, greater_is_better=True)


def test_appending_a_system_measured_again_replaces_its_row_and_names_its_commit(
    benchmark,  # noqa: ANN001
) -> None:
    """`--append` keeps the peers measured once and replaces ours, measured on a newer commit;
    the table says which commit measured which rows."""
    import pandas as pd

    old = [
        {"dataset": "car", "system": "ours_ensemble", "test_score": 0.1, "commit": "aaa"},
        {"dataset": "car", "system": "autogluon", "test_score": 0.2, "commit": "aaa"},
        {"dataset": "adult", "system": "ours_ensemble", "test_score": 0.9, "commit": "aaa"},
    ]
    new = [{"dataset": "car", "system": "ours_ensemble", "test_score": 0.05, "commit": "bbb"}]
    rows = benchmark.replaced(old, new)
    assert [(r["dataset"], r["system"], r["test_score"]) for r in rows] == [
        ("car", "autogluon", 0.2),
        ("adult", "ours_ensemble", 0.9),
        ("car", "ours_ensemble", 0.05),
    ]
    line = benchmark.commits_line(pd.DataFrame(rows))[1]
    assert line == (
        "Measured on: `aaa`: autogluon, ours_ensemble on car, adult; `bbb`: ours_ensemble on car."
    )
