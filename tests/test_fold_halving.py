"""Successive halving over folds: a costly cross-fitted trial below the bar after its first
fold stops there, a promising one fits every fold, and a stopped trial leaves nothing an
ensemble could use."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from automl.data import load_dataset
from automl.errors import TrialPruned
from automl.metrics import get_metric
from automl.run import RunDir, fold_name
from automl.search.evaluate import TrialContext, evaluate
from automl.search.fold_halving import FOLD_BAR_KEY, fold_bars, stop_reason
from automl.space import SearchSpace
from tests.conftest import queue_trials, write_space

TREES = """family: random_forest
params:
  n_estimators: {type: fixed, value: 30}
"""

MLP = """family: mlp
params:
  learning_rate: {type: float, low: 1.0e-7, high: 0.1, log: true}
  optimizer: {type: fixed, value: sgd}
  units: {type: fixed, value: 16}
  epochs: {type: fixed, value: 3}
  patience: {type: fixed, value: 3}
"""


def test_the_bar_is_the_median_of_the_completed_trials_on_the_same_folds() -> None:
    scored = [[0.90, 0.80, 0.7], [0.80, 0.60, 0.7], [0.70, 0.70], [0.60, 0.80], [0.99]]
    # After one fold: median of 0.90, 0.80, 0.70, 0.60, 0.99; after two: of 0.85, 0.70, 0.70,
    # 0.70 (the one-fold trial has no second fold).
    assert fold_bars(scored, family_done=True) == pytest.approx([0.80, 0.70])
    assert fold_bars(scored, family_done=False) is None  # a family's first trial finishes
    assert fold_bars(scored[:3], family_done=True) is None  # too few peers for a bar
    assert fold_bars([[float("nan"), 0.5]] * 4 + scored[:3], True) is None  # NaN folds ignored


def test_only_a_costly_trial_below_the_bar_stops_and_only_at_a_checkpoint() -> None:
    bars = [0.80, 0.70]
    says = stop_reason([0.75], bars, True, True, "roc_auc", 5)
    assert says == (
        "after fold 1 of 5: roc_auc 0.7500, below the bar 0.8000 "
        "(the median of the completed trials on the same folds)"
    )
    assert stop_reason([0.75], bars, False, True, "roc_auc", 5) is None  # cheap: finishes
    assert stop_reason([0.85, 0.50], bars, True, True, "roc_auc", 5) is not None  # mean 0.675
    assert stop_reason([0.85, 0.60], bars, True, True, "roc_auc", 5) is None  # mean 0.725
    assert stop_reason([0.1, 0.1, 0.1], bars, True, True, "roc_auc", 5) is None  # past them
    assert stop_reason([0.9], bars, True, False, "rmse", 5) is not None  # lower is better
    assert stop_reason([0.75], None, True, True, "roc_auc", 5) is None  # no bar yet


@pytest.mark.keras
def test_a_network_below_the_bar_stops_after_one_fold_and_one_above_fits_all(
    tmp_path: Path,
) -> None:
    space = SearchSpace.from_files([write_space(tmp_path, "mlp.yaml", MLP)])
    run = RunDir(tmp_path / "run")
    (tmp_path / "run").mkdir()
    data = load_dataset("builtin:breast_cancer", "target", seed=0)
    ctx = TrialContext(data, space, get_metric(None, data.task), run, threads=2, cv=5)
    flat = {"family": "mlp", "mlp.learning_rate": 0.05}

    with pytest.raises(TrialPruned, match=r"^pruned after fold 1 of 5: roc_auc 0\.\d{4}, below"):
        evaluate(0, flat | {FOLD_BAR_KEY: [1.01, 1.01]}, ctx)  # no network reaches it
    assert not run.trial_dir(0).exists()  # nothing left that an ensemble could read

    result = evaluate(1, flat | {FOLD_BAR_KEY: [0.0, 0.0]}, ctx)
    assert len(result.fold_scores) == 5
    assert sorted(p.name for p in run.trial_dir(1).glob("fold*")) == [
        fold_name(k) for k in range(5)
    ]


@pytest.mark.keras
def test_in_a_search_a_hopeless_network_is_stopped_and_never_reaches_an_ensemble(
    tmp_path: Path,
) -> None:
    """Four networks that learn set the bar; one that cannot learn (a learning rate of 1e-7)
    stops after its first fold, with its score there as its last report; the ensembles are
    built from the completed trials only."""
    import optuna

    from automl.ensemble.build import Recipe, build_ensemble
    from automl.run import STUDY_NAME
    from automl.search.loop import run_search

    space = write_space(tmp_path, "mlp.yaml", MLP)
    lrs = [0.05, 0.05, 0.05, 0.05, 1e-7]
    storage = queue_trials(
        tmp_path / "run", [{"family": "mlp", "mlp.learning_rate": lr} for lr in lrs]
    )
    summary = run_search(
        data="builtin:breast_cancer",
        target="target",
        out=tmp_path / "run",
        spaces=[space],
        trials=5,
        threads=2,
        cv=5,
        progress=lambda line: None,
    )
    trials = optuna.load_study(study_name=STUDY_NAME, storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4 + ["PRUNED"], trials
    bar = statistics.median(t.user_attrs["fold_scores"][0] for t in trials[:4])
    stopped = trials[4]
    assert list(stopped.intermediate_values) == [1]
    assert stopped.intermediate_values[1] < bar
    assert summary.finished == 4

    run = RunDir(tmp_path / "run")
    assert not run.trial_dir(4).exists()
    ensemble = build_ensemble(run, Recipe("greedy"))
    assert {m["trial"] for m in ensemble["members"]} <= {0, 1, 2, 3}, ensemble["members"]
    saved = json.loads((run.ensemble_dir("greedy") / "weights.json").read_text())
    assert np.isclose(sum(m["weight"] for m in saved["members"]), 1.0)
