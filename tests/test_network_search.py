"""Networks inside real searches: images and text end to end through the CLI, pruning by the
local executor, and memory that stays flat over many Keras trials in one process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import FAST_MLP, SPACES, Cli, queue_trials, shared, write_space

pytestmark = pytest.mark.keras

TINY_CNN = """family: cnn
params:
  block: {type: categorical, choices: [residual, inception, separable], default: residual}
  stem_filters: {type: fixed, value: 8}
  n_stages: {type: fixed, value: 2}
  blocks_per_stage: {type: fixed, value: 1}
  subsample: {type: categorical, choices: [0.5, 1.0], default: 1.0}
  epochs: {type: fixed, value: 2}
"""

TINY_TEXT = """family: text_net
params:
  encoder: {type: categorical, choices: [conv, lstm], default: conv}
  max_tokens: {type: fixed, value: 2000}
  sequence_length: {type: fixed, value: 32}
  embed_dim: {type: fixed, value: 16}
  epochs: {type: fixed, value: 3}
"""

SMALL_TREES = """family: extra_trees
params:
  n_estimators: {type: fixed, value: 50}
"""


def trial_dir(run: Path, family: str) -> Path:
    """The folder of the first completed trial of `family`."""
    for config in sorted(run.glob("trials/*/config.json")):
        if json.loads(config.read_text())["family"] == family:
            return config.parent
    raise AssertionError(f"no {family} trial in {run}")


def test_images_end_to_end_cnn_beside_trees_on_pixels(tmp_path: Path, cli: Cli) -> None:
    with np.load(shared("fashion_mnist_train.npz")) as archive:
        np.savez(tmp_path / "fashion.npz", x=archive["x"][:400], y=archive["y"][:400])
    spaces = [
        write_space(tmp_path, "cnn.yaml", TINY_CNN),
        write_space(tmp_path, "trees.yaml", SMALL_TREES),
    ]
    run = tmp_path / "run"
    args = ["--data", tmp_path / "fashion.npz", "--target", "y", "--out", run, "--threads", "2"]
    result = cli("search", *args, "--trials", "2", *[a for s in spaces for a in ("--space", s)])
    assert result.code == 0, result.err
    board = pd.read_csv(run / "leaderboard.csv")
    assert set(board.family) == {"cnn", "extra_trees"}
    assert (board.status == "complete").all()
    cnn = board[board.family == "cnn"].iloc[0]
    assert cnn.n_params > 1000
    trial = trial_dir(run, "cnn")
    assert {"model.keras", "history.csv", "keras_meta.json"} <= {p.name for p in trial.iterdir()}
    assert json.loads((run / "run.json").read_text())["schema"]["image_shape"] == [28, 28, 1]

    assert cli("ensemble", run).code == 0
    predicted = cli("predict", run, "--data", tmp_path / "fashion.npz", "--out", tmp_path / "p.csv")
    assert predicted.code == 0, predicted.err
    predictions = pd.read_csv(tmp_path / "p.csv")
    assert len(predictions) == 400 and predictions.shape[1] == 11  # label + 10 probabilities


def test_text_end_to_end_text_network_beside_tf_idf_models(tmp_path: Path, cli: Cli) -> None:
    sms = pd.read_csv(shared("sms_spam.csv.gz")).sample(500, random_state=0)
    sms["length"] = sms["text"].str.len()  # a tabular column beside the text: two inputs
    sms.to_csv(tmp_path / "sms.csv", index=False)
    run = tmp_path / "run"
    result = cli(
        "search",
        *["--data", tmp_path / "sms.csv", "--target", "label", "--out", run, "--threads", "2"],
        *["--text-columns", "text", "--trials", "3"],
        *[
            "--space",
            write_space(tmp_path, "text.yaml", TINY_TEXT),
            "--space",
            SPACES / "linear.yaml",
        ],
    )
    assert result.code == 0, result.err
    board = pd.read_csv(run / "leaderboard.csv")
    assert set(board.family) == {"text_net", "linear"} and (board.status == "complete").all()
    assert board.test_score.max() > 0.9  # ROC AUC; spam is easy to spot
    meta = json.loads((trial_dir(run, "text_net") / "keras_meta.json").read_text())
    assert meta["layout"]["text"] == [0, 1] and meta["layout"]["tabular"] == [1, 2]

    assert cli("ensemble", run, "--method", "optimized").code == 0
    result = cli("predict", run, "--data", tmp_path / "sms.csv", "--out", tmp_path / "p.csv")
    assert result.code == 0, result.err
    assert set(pd.read_csv(tmp_path / "p.csv").prediction) <= {"ham", "spam"}


def test_local_pruner_stops_hopeless_networks_after_a_few_epochs(tmp_path: Path) -> None:
    """Four good trials, then two with a learning rate that cannot learn: the median pruner
    stops those after its warm-up epochs, and they are recorded as pruned."""
    import optuna

    from automl.run import STUDY_NAME
    from automl.search.loop import run_search

    space = write_space(
        tmp_path,
        "mlp.yaml",
        """family: mlp
params:
  learning_rate: {type: float, low: 1.0e-7, high: 0.1, log: true}
  optimizer: {type: fixed, value: sgd}
  units: {type: fixed, value: 16}
  epochs: {type: fixed, value: 12}
  patience: {type: fixed, value: 12}
""",
    )
    lrs = [0.05, 0.05, 0.05, 0.05, 1e-7, 1e-7]
    storage = queue_trials(
        tmp_path / "run", [{"family": "mlp", "mlp.learning_rate": lr} for lr in lrs]
    )
    summary = run_search(
        data="builtin:breast_cancer",
        target="target",
        out=tmp_path / "run",
        spaces=[space],
        trials=6,
        threads=2,
        cv=0,  # epochs are reported to the pruner from one holdout split
        progress=lambda line: None,
    )
    trials = optuna.load_study(study_name=STUDY_NAME, storage=storage).trials
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE"] * 4 + ["PRUNED"] * 2, states
    assert all(len(t.intermediate_values) < 12 for t in trials[4:])  # stopped early
    assert all(len(t.intermediate_values) == 12 for t in trials[:4])
    for t in trials[4:]:  # a pruned trial keeps its history, not its best-weights checkpoint
        kept = {p.name for p in (tmp_path / "run" / "trials" / f"{t.number:04d}").iterdir()}
        assert "history.csv" in kept and not any(name.endswith(".h5") for name in kept), kept
    assert summary.finished == 4


@pytest.mark.slow
def test_memory_stays_flat_because_keras_trials_run_in_a_recycled_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TensorFlow keeps ~4 MB per model it trained, whatever the session clearing; the worker
    that runs Keras trials is replaced every few trials, so the search's memory stays flat.
    (scripts/benchmark.py --memory measures 50 trials with the shipped setting.)"""
    import psutil

    from automl.search import isolation
    from automl.search.loop import run_search

    monkeypatch.setattr(isolation, "KERAS_TRIALS_PER_WORKER", 4)
    me = psutil.Process()
    rss: list[int] = []
    workers: set[int] = set()

    def sample(line: str) -> None:
        if " mlp " in line and "val " in line:
            total = me.memory_info().rss
            for child in me.children(recursive=True):
                try:  # a worker being replaced may be gone between listing and reading
                    total += child.memory_info().rss
                    workers.add(child.pid)
                except psutil.NoSuchProcess:
                    continue
            rss.append(total)

    run_search(
        data="builtin:breast_cancer",
        target="target",
        out=tmp_path / "run",
        spaces=[write_space(tmp_path, "mlp.yaml", FAST_MLP)],
        trials=8,
        threads=2,
        pruner="none",
        cv=0,  # one network per trial: the worker's memory, not the folds', is measured
        progress=sample,
    )
    assert len(rss) == 8
    # Peaks, not single samples: a sample may catch a worker being replaced.
    first, later = max(rss[:4]), max(rss[4:])
    growth = later / first - 1
    print(f"peak RSS over trials 1-4: {first / 2**20:.0f} MiB; 5-8: {later / 2**20:.0f} MiB")
    assert growth < 0.15, [round(r / 2**20) for r in rss]
    assert len(workers) >= 3  # a second worker after 4 trials (plus the fork server)


def test_keras_tuner_hyperband_sets_each_network_s_epochs(tmp_path: Path, cli: Cli) -> None:
    """Hyperband's rungs (1 and 3 epochs for a 3-epoch space) reach the networks, and every
    trial lands in the same study and leaderboard."""
    import optuna

    from automl.run import STUDY_NAME

    run = tmp_path / "run"
    space = write_space(tmp_path, "mlp.yaml", FAST_MLP)
    args = ["--data", "builtin:iris", "--out", run, "--space", space, "--threads", "2"]
    result = cli(
        "search", *args, "--backend", "keras-tuner", "--sampler", "hyperband", "--trials", "6",
        "--pruner", "none",  # Hyperband's rungs are the early stopping here; every trial completes
        "--cv", "0",
    )  # fmt: skip
    assert result.code == 0, result.err
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{run / 'study.db'}")
    proposed = [t for t in study.trials if "keras_tuner_trial" in t.user_attrs]
    assert len(proposed) == 5  # all but the family's defaults, tried first
    epochs = []
    for t in proposed:
        config = json.loads((run / "trials" / f"{t.number:04d}" / "config.json").read_text())
        epochs.append(config["params"]["epochs"])
        assert config["params"]["epochs"] == t.user_attrs["epochs"]
        history = (run / "trials" / f"{t.number:04d}" / "history.csv").read_text()
        assert len(history.strip().splitlines()) - 1 <= t.user_attrs["epochs"]
    assert set(epochs) <= {1, 3} and 1 in epochs
    assert len(pd.read_csv(run / "leaderboard.csv")) == 6
    assert (run / "keras_tuner" / "oracle" / "oracle.json").exists()


def test_keras_tuner_bayesian_resumes_with_its_oracle(tmp_path: Path, cli: Cli) -> None:
    import optuna

    from automl.run import STUDY_NAME

    run = tmp_path / "run"
    args = ["--data", "builtin:wine", "--out", run, "--space", SPACES / "linear.yaml"]
    args += ["--backend", "keras-tuner", "--sampler", "bayesian", "--threads", "1"]
    assert cli("search", *args, "--trials", "4").code == 0
    assert cli("search", *args, "--trials", "7").code == 0
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{run / 'study.db'}")
    ids = [t.user_attrs.get("keras_tuner_trial") for t in study.trials][1:]
    assert len(study.trials) == 7 and len(set(ids)) == 6  # the oracle went on, no repeats
    assert all(t.state.name == "COMPLETE" for t in study.trials)


def test_the_median_rule_compares_a_trial_with_its_own_family_and_fidelity() -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState, create_trial

    from automl.search.pruning import FamilyMedianPruner

    family = CategoricalDistribution(["cnn", "mlp"])
    share = FloatDistribution(0.1, 1.0)

    def trial(name: str, curve: list[float], state: TrialState = TrialState.COMPLETE) -> Any:
        params = {"family": name} | ({"cnn.subsample": 0.5} if name == "cnn" else {})
        dists = {"family": family} | ({"cnn.subsample": share} if name == "cnn" else {})
        return create_trial(
            state=state,
            value=curve[-1] if state == TrialState.COMPLETE else None,
            params=params,
            distributions=dists,
            intermediate_values=dict(enumerate(curve, start=1)),
        )

    study = optuna.create_study(direction="minimize")
    for _ in range(3):  # fast learners: at epoch 3 they are at 0.3
        study.add_trial(trial("mlp", [0.5, 0.4, 0.3, 0.3]))
    pruner = FamilyMedianPruner()
    slow_cnn = trial("cnn", [2.0, 1.5, 1.0], TrialState.RUNNING)
    assert not pruner.prune(study, slow_cnn)  # no CNN peers yet: MLP curves do not count
    for _ in range(3):
        study.add_trial(trial("cnn", [1.2, 0.8, 0.5, 0.25]))
    assert pruner.prune(study, slow_cnn)  # worse than the CNNs' median at epoch 3
    assert not pruner.prune(study, trial("cnn", [2.0, 1.5], TrialState.RUNNING))  # warm-up
    assert not pruner.prune(study, trial("cnn", [1.0, 0.7, 0.45], TrialState.RUNNING))


RUNG_CNN = """family: cnn
params:
  block: {type: categorical, choices: [residual, inception, separable], default: residual}
  stem_filters: {type: fixed, value: 8}
  n_stages: {type: fixed, value: 2}
  blocks_per_stage: {type: fixed, value: 1}
  subsample: {type: categorical, choices: [0.5, 1.0], default: 0.5}
  batch_norm: {type: fixed, value: false}
  learning_rate: {type: fixed, value: 0.005}
  epochs: {type: fixed, value: 4}
  batch_size: {type: fixed, value: 32}
  patience: {type: fixed, value: 5}
"""

# Three architectures on half the rows first: the fourth trial is the best one's promotion.
RUNG_BUNDLE = """bundle: rungs
include: [rung_cnn.yaml]
portfolio:
  - {family: cnn, block: residual}
  - {family: cnn, block: inception}
  - {family: cnn, block: separable}
"""


def test_asha_promotes_the_top_third_of_a_rung_once_highest_rung_first() -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from automl.search.promotion import PROMOTED_FROM_ATTR, next_promotion
    from automl.space import SearchSpace

    space = SearchSpace.from_dict(
        {"family": "cnn", "params": {"subsample": {"type": "categorical",
                                                   "choices": [0.25, 0.5, 1.0]}}}
    )  # fmt: skip
    share = CategoricalDistribution([0.25, 0.5, 1.0])

    def trial(value: float | None, subsample: float, **attrs: Any) -> Any:
        return create_trial(
            state=TrialState.COMPLETE if value is not None else TrialState.RUNNING,
            value=value,
            params={"family": "cnn", "cnn.subsample": subsample},
            distributions={"family": CategoricalDistribution(["cnn"]), "cnn.subsample": share},
            user_attrs=attrs,
        )

    study = optuna.create_study(direction="minimize")
    for value in (0.9, 0.5, 0.7):
        study.add_trial(trial(value, 0.25))
    assert next_promotion(study.get_trials(), space, minimize=True) == (
        {"family": "cnn", "cnn.subsample": 0.5},
        {PROMOTED_FROM_ATTR: 1},  # 0.5 is the best of three: the top third
    )
    study.add_trial(trial(None, 0.5, **{PROMOTED_FROM_ATTR: 1}))  # promoted, still running
    assert next_promotion(study.get_trials(), space, minimize=True) is None  # once only
    for value in (0.4, 0.45, 0.5):
        study.add_trial(trial(value, 0.5))
    for value in (0.6, 0.8, 0.3):  # six at 0.25: its top two are #9 and #1 (taken)
        study.add_trial(trial(value, 0.25))
    # Three done at 0.5 (#3 is running): #4 goes to every row before #9 goes to half.
    assert next_promotion(study.get_trials(), space, minimize=True) == (
        {"family": "cnn", "cnn.subsample": 1.0},
        {PROMOTED_FROM_ATTR: 4},
    )
    assert next_promotion(study.get_trials(), space, minimize=False)[1] == {PROMOTED_FROM_ATTR: 6}
    study.add_trial(trial(None, 1.0, **{PROMOTED_FROM_ATTR: 4}))
    assert next_promotion(study.get_trials(), space, minimize=True)[1] == {PROMOTED_FROM_ATTR: 9}


def test_a_promoted_trial_continues_from_its_rung_and_its_refit_saw_every_row(
    tmp_path: Path,
) -> None:
    import joblib

    from automl.data import load_dataset
    from automl.io import read_json
    from automl.models import FAMILIES, BuildContext
    from automl.models.keras_base import load_network
    from automl.preprocess import transform
    from automl.refit import refit_members, refit_rows
    from automl.run import ENCODER_FILE, RunDir
    from automl.search.loop import run_search

    with np.load(shared("fashion_mnist_train.npz")) as archive:
        np.savez(tmp_path / "fashion.npz", x=archive["x"][:500], y=archive["y"][:500])
    write_space(tmp_path, "rung_cnn.yaml", RUNG_CNN)
    bundle = write_space(tmp_path, "rungs.yaml", RUNG_BUNDLE)
    lines: list[str] = []
    summary = run_search(
        data=str(tmp_path / "fashion.npz"), target="y", out=tmp_path / "run",
        spaces=[str(bundle)], trials=4, threads=2, pruner="none", progress=lines.append,
    )  # fmt: skip
    run = RunDir(summary.run_dir)
    board = pd.read_csv(run.path / "leaderboard.csv")
    assert len(board) == 4 and (board.status == "complete").all()
    board["number"] = board.name.str[1:5].astype(int)
    rung = board[board.number < 3]
    best = int(rung.sort_values("val_score").number.iloc[0])  # log-loss: lower is better
    promoted = read_json(run.trial_dir(3) / "config.json")
    parent = read_json(run.trial_dir(best) / "config.json")
    assert promoted["continued_from"] == best
    assert promoted["params"] == parent["params"] | {"subsample": 1.0}
    assert promoted["inherited_epochs"] == parent["stopped_at"][0]["epochs"]
    assert any(f"promoting trial {best} (cnn)" in line for line in lines)
    # It starts ahead of where its rung started, and ends better than its rung ended.
    curves = [pd.read_csv(run.trial_dir(n) / "history.csv").val_loss for n in (best, 3)]
    assert curves[1].iloc[0] < curves[0].iloc[0]
    assert board.set_index("number").val_score[3] < rung.val_score.min()

    # Continuing means starting where the rung ended: before any training, the promoted
    # network predicts exactly what the rung's saved network predicts.
    data = load_dataset(str(tmp_path / "fashion.npz"), "y", seed=0)
    x = transform(joblib.load(run.trial_dir(best) / ENCODER_FILE), data.x_val)
    layout = read_json(run.trial_dir(best) / "keras_meta.json")["layout"]
    ctx = BuildContext(task="multiclass", n_classes=10, layout=layout,
                       warm_start=run.trial_dir(best))  # fmt: skip
    network = FAMILIES["cnn"].build(promoted["params"], ctx)
    network.build(x)
    assert network.start_from(run.trial_dir(best)) > 5  # stem, blocks, batch norms, head
    rung_network = load_network(run.trial_dir(best))
    np.testing.assert_allclose(network.predict(x), rung_network.predict(x), atol=1e-5)
    fresh = FAMILIES["cnn"].build(promoted["params"], BuildContext(task="multiclass",
                                  n_classes=10, layout=layout))  # fmt: skip
    fresh.build(x)
    assert not np.allclose(fresh.predict(x), rung_network.predict(x), atol=1e-3)

    # The refit trains from scratch on every row (the rung's half included) for the epochs
    # its weights had in all: the rung's and its own.
    assert refit_members(run, [3]) == {3: "refit"}
    refit = read_json(run.refit_dir(3) / "refit.json")
    assert refit["rows"] == len(refit_rows(run).y) == 500
    own = promoted["stopped_at"][0]["epochs"]
    assert refit["params"]["epochs"] == own + promoted["inherited_epochs"]
    assert refit["params"]["subsample"] == 1.0
    history = pd.read_csv(run.refit_dir(3) / "history.csv")
    assert len(history) == refit["params"]["epochs"]

    # The refit joins the search-time network: the trial predicts the mean of the two.
    from automl.predict import load_predictor

    joined = load_predictor(run.path, "3")
    assert joined.name == "trial 3 (refit on every row)" and joined.refit
    search_time = load_predictor(run.path, "3", refit=False).predict_proba(data.x_val)
    x_refit = transform(joblib.load(run.refit_dir(3) / ENCODER_FILE), data.x_val)
    refit_alone = load_network(run.refit_dir(3)).predict(x_refit)
    assert np.abs(search_time - refit_alone).max() > 1e-3
    np.testing.assert_allclose(
        joined.predict_proba(data.x_val), (search_time + refit_alone) / 2, atol=1e-6
    )


def test_an_image_search_given_no_space_tries_the_default_cnn_first(tmp_path: Path) -> None:
    """No space: the data choose the image bundle, and its first trial is `cnn.yaml`'s
    documented default network (every row, a cosine schedule, flips)."""
    from automl.run import RunDir
    from automl.search.loop import run_search
    from automl.space import SearchSpace

    with np.load(shared("fashion_mnist_train.npz")) as archive:
        np.savez(tmp_path / "fashion.npz", x=archive["x"][:300], y=archive["y"][:300])
    lines: list[str] = []
    run_search(data=str(tmp_path / "fashion.npz"), target="y", out=tmp_path / "run", trials=1,
               threads=2, progress=lines.append)  # fmt: skip
    assert any("search space: the bundled 'images' (the data are images)" in s for s in lines)
    run = RunDir(tmp_path / "run")
    assert "images" in run.info()["space_choice"]
    config = json.loads((run.trial_dir(0) / "config.json").read_text())
    defaults = SearchSpace.from_files([SPACES / "cnn.yaml"]).families["cnn"].default_params()
    assert config["family"] == "cnn" and config["params"] == defaults
    assert defaults["subsample"] == 1.0 and defaults["lr_schedule"] == "cosine"
    assert len(pd.read_csv(run.trial_dir(0) / "history.csv")) >= 6  # patience 5 after the best


def test_an_interrupted_promoted_trial_reruns_from_its_rung() -> None:
    """A killed search reruns a promoted trial as a promotion again (from the same rung's
    weights), not as a fresh network on every row."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from automl.search.driver import recover_interrupted
    from automl.search.promotion import PROMOTED_FROM_ATTR

    study = optuna.create_study(direction="minimize")
    study.add_trial(
        create_trial(
            state=TrialState.RUNNING,
            params={"family": "cnn", "cnn.subsample": 1.0},
            distributions={"family": CategoricalDistribution(["cnn"]),
                           "cnn.subsample": CategoricalDistribution([0.5, 1.0])},
            user_attrs={PROMOTED_FROM_ATTR: 7},
        )
    )  # fmt: skip
    lines: list[str] = []
    recover_interrupted(study, lines.append)
    rerun = study.ask()
    assert rerun.user_attrs == {"retry_of": 0, PROMOTED_FROM_ATTR: 7}
    assert lines == ["trial 0 was interrupted by the last run; it will run again"]
