"""Faults: timeouts, out of memory, a second search, crashes while writing, long runs, seeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from automl import io as automl_io
from automl.errors import UserInputError
from automl.io import MANIFEST, read_json, sha256_file, write_text_atomic
from automl.run import RunDir, RunLock, load_trials, mask_url
from automl.search.loop import run_search
from tests.conftest import (
    FAST_LINEAR,
    FAST_MLP,
    FAST_TREES,
    ROOT,
    BloodSearch,
    Cli,
    queue_trials,
    shared,
    write_space,
)

QUIET = {"progress": lambda line: None}


def test_trial_past_its_timeout_fails_and_the_search_goes_on(tmp_path: Path) -> None:
    data = tmp_path / "phoneme.csv"
    pd.read_csv(shared("phoneme.csv.gz")).to_csv(data, index=False)
    slow = write_space(
        tmp_path,
        "slow.yaml",
        "family: random_forest\nparams:\n  n_estimators: {type: fixed, value: 5000}\n",
    )
    start = time.time()
    summary = run_search(
        data=str(data),
        target="Class",
        out=tmp_path / "run",
        trials=2,
        spaces=[slow, write_space(tmp_path, "lin.yaml", FAST_LINEAR)],
        trial_timeout=2.0,
        threads=1,
        **QUIET,
    )
    assert time.time() - start < 30
    records = load_trials(RunDir(tmp_path / "run"))
    assert records[0].status == "failed"
    assert records[0].error == "TrialFailed: exceeded the trial timeout of 2s and was stopped"
    assert records[1].status == "complete" and summary.finished == 2


@pytest.mark.keras
@pytest.mark.slow
def test_a_family_that_keeps_failing_is_dropped_and_the_search_goes_on(tmp_path: Path) -> None:
    """LightGBM cannot fit with one leaf: after its third failure it is dropped, its later
    proposals are recorded as skipped (never run) and replaced, and the trials asked for all
    finish with the other family."""
    import optuna

    from automl.run import STUDY_NAME

    lines: list[str] = []
    summary = run_search(
        data="builtin:breast_cancer",
        target="target",
        out=tmp_path / "run",
        trials=12,
        spaces=[
            write_space(tmp_path, "lin.yaml", FAST_LINEAR),
            write_space(tmp_path, "bad.yaml", ALWAYS_FAILS),
        ],
        threads=1,
        cv=0,
        seed=3,
        progress=lines.append,
    )
    storage = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    trials = optuna.load_study(study_name=STUDY_NAME, storage=storage).trials
    ran = [t for t in trials if "skipped" not in t.user_attrs]
    failed = [t for t in ran if t.state.name == "FAIL"]
    assert [t.params["family"] for t in failed] == ["lightgbm"] * 3
    assert all(t.state.name == "COMPLETE" and t.params["family"] == "linear"
               for t in ran if t not in failed)  # fmt: skip
    assert len(ran) == 12 and summary.finished == 12 and summary.failed == 3
    # Every lightgbm proposal after the third failure was skipped, never run.
    third = failed[-1].number
    later = [t for t in trials if t.number > third and t.params["family"] == "lightgbm"]
    assert later and all(t.user_attrs.get("skipped") and t.state.name == "PRUNED" for t in later)
    why = "its last 3 trials failed (the last: LightGBMError: Check failed: (num_leaves) > (1)"
    assert summary.dropped["lightgbm"].startswith(why), summary.dropped
    assert any(line.startswith("dropping family lightgbm: " + why) for line in lines)
    assert [r.status for r in load_trials(RunDir(tmp_path / "run"))].count("pruned") == 0


FAST_WIDE_DEEP = """family: wide_deep
params:
  units: {type: fixed, value: 16}
  epochs: {type: fixed, value: 3}
"""


@pytest.mark.keras
def test_a_class_of_two_rows_still_ends_with_a_model(tmp_path: Path, cli: Cli) -> None:
    """car with two rows of the class "good", both in training: every tabular family (the
    bundled spaces, the networks with 3 epochs to keep the test short) completes on it (or is
    dropped, saying why), and search, ensemble and predict end with a model."""
    car = pd.read_csv(shared("car.csv.gz"))
    parts = [
        car[car["class"] == c].sample(n, random_state=0)
        for c, n in [("unacc", 90), ("acc", 30), ("vgood", 30)]
    ]
    train = pd.concat([*parts, car[car["class"] == "good"].head(2)]).sample(frac=1, random_state=0)
    test = car[car["class"] != "good"].drop(train.index, errors="ignore").sample(60, random_state=1)
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    out = tmp_path / "run"
    families = ["linear", "lightgbm", "extra_trees", "random_forest", "hist_gb", "catboost",
                "mlp", "wide_deep"]  # fmt: skip
    spaces = [ROOT / "search_spaces" / f"{family}.yaml" for family in families[:6]]
    spaces.append(write_space(tmp_path, "mlp.yaml", FAST_MLP))
    spaces.append(write_space(tmp_path, "wide_deep.yaml", FAST_WIDE_DEEP))
    searched = cli("search", "--data", tmp_path / "train.csv", "--test-data",
                   tmp_path / "test.csv", "--target", "class", "--out", out,
                   "--trials", len(families), "--threads", "2",
                   *[arg for space in spaces for arg in ("--space", space)])  # fmt: skip
    assert searched.code == 0, searched.err
    assert "the rarest class has 2 rows" in searched.out
    records = load_trials(RunDir(out))
    dropped = {
        line.split()[2].rstrip(":") for line in searched.out.splitlines()
        if line.startswith("dropped family ")
    }  # fmt: skip
    done = {r.family for r in records if r.status == "complete"}
    assert done | dropped == set(families), [(r.family, r.status, r.error) for r in records]
    assert cli("ensemble", out).code == 0
    predicted = cli("predict", out, "--data", tmp_path / "test.csv", "--out", tmp_path / "p.csv")
    assert predicted.code == 0, predicted.err
    frame = pd.read_csv(tmp_path / "p.csv")
    assert set(frame.prediction) <= {"unacc", "acc", "vgood", "good"}
    assert (frame.prediction == test["class"].to_numpy()).mean() > 0.75


def test_out_of_memory_fails_the_trial(tmp_path: Path) -> None:
    huge = write_space(
        tmp_path,
        "huge.yaml",
        "family: mlp\nparams:\n"
        "  units: {type: fixed, value: 4000000}\n  n_layers: {type: fixed, value: 2}\n"
        "  epochs: {type: fixed, value: 1}\n",
    )
    run_search(
        data="builtin:breast_cancer",
        target="target",
        out=tmp_path / "run",
        trials=2,
        spaces=[huge, write_space(tmp_path, "lin.yaml", FAST_LINEAR)],
        threads=1,
        **QUIET,
    )
    records = load_trials(RunDir(tmp_path / "run"))
    assert records[0].status == "failed"
    assert records[0].error.startswith("ResourceExhaustedError")
    assert "OOM when allocating tensor with shape[4000000,4000000]" in records[0].error
    assert records[1].status == "complete"


def test_a_trial_that_would_pass_the_memory_limit_is_not_started() -> None:
    """A family whose trials rose by 400 MB is not started with 100 MB left under the limit;
    one that rose by 10 MB is."""
    from automl.search.memory import MemoryGuard, tree_mb

    guard = MemoryGuard(limit_mb=tree_mb() + 100)
    try:
        guard.rise = {"random_forest": 400.0, "linear": 10.0}
        refusal = guard.refusal("random_forest")
        assert refusal is not None
        assert refusal.startswith("TrialFailed: not started: a random_forest trial took up to 400")
        assert refusal.endswith(f"passes the memory limit of {guard.limit_mb:.0f} MB")
        assert guard.refusal("linear") is None
        assert guard.refusal("lightgbm") is None  # not measured yet: it runs, and is measured
    finally:
        guard.close()


@pytest.mark.keras
def test_a_network_trial_that_passes_the_memory_limit_is_stopped_and_the_search_goes_on(
    tmp_path: Path,
) -> None:
    """A 12,000-unit MLP (its weights and Adam's slots: several GB) passes a 2,500 MB limit:
    its worker process is killed, the trial is recorded as failed for memory, and the next
    network trial runs in a new worker and completes."""

    space = write_space(
        tmp_path,
        "mlp.yaml",
        "family: mlp\nparams:\n  units: {type: int, low: 8, high: 12000}\n"
        "  n_layers: {type: fixed, value: 3}\n  epochs: {type: fixed, value: 2}\n",
    )
    queue_trials(tmp_path / "run", [{"family": "mlp", "mlp.units": units} for units in (12000, 8)])
    run_search(
        data="builtin:breast_cancer",
        target="target",
        out=tmp_path / "run",
        trials=2,
        spaces=[space],
        threads=1,
        cv=0,
        memory_limit_mb=2500,
        **QUIET,
    )
    records = load_trials(RunDir(tmp_path / "run"))
    assert [r.status for r in records] == ["failed", "complete"], [r.error for r in records]
    assert records[0].error.startswith(
        "TrialFailed: stopped: the search and its trial processes passed the memory limit of "
        "2500 MB ("
    )


def test_a_second_search_on_the_same_run_directory_is_refused(tmp_path: Path, cli: Cli) -> None:
    run = RunDir(tmp_path / "run")
    with RunLock(run):  # stands for a search that is running
        result = cli("search", "--data", "builtin:iris", "--out", run.path, "--trials", "1")
    assert result.code == 2
    assert "another `automl search` is running on this run directory" in result.err


def test_same_seed_same_trials(tmp_path: Path, blood_search: BloodSearch) -> None:
    runs = []
    for name in ("a", "b"):
        blood_search(FAST_TREES, FAST_LINEAR, out=name, trials=8, seed=7)
        runs.append(
            [
                (r.family, r.params, r.val_score, r.test_score)
                for r in load_trials(RunDir(tmp_path / name))
            ]
        )
    assert runs[0] == runs[1]


def test_atomic_write_keeps_the_old_file_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "weights.json"
    write_text_atomic(path, '{"old": true}')

    def crash(*args: object) -> None:
        raise KeyboardInterrupt  # as if the process were stopped between write and rename

    monkeypatch.setattr(automl_io.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(path, '{"new": true}' * 1000)
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["weights.json"]  # no temporary file left


@pytest.fixture
def finished_run(tmp_path: Path, blood_search: BloodSearch) -> Path:
    blood_search(FAST_TREES, FAST_LINEAR, trials=12)
    return tmp_path / "run"


def _consistent(directory: Path) -> None:
    """Every file a manifest lists matches it; no temporary file is left visible as real."""
    manifest = directory / MANIFEST
    if manifest.exists():
        for name, digest in read_json(manifest).items():
            assert sha256_file(directory / name) == digest, f"{directory / name} is torn"


@pytest.mark.slow
def test_sigkill_during_ensemble_and_report_leaves_no_torn_file(finished_run: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for delay in (1.0, 2.0, 3.0):
        for command in (["ensemble", str(finished_run)], ["report", str(finished_run)]):
            process = subprocess.Popen(
                [sys.executable, "-m", "automl", *command],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.wait()
            for directory in (finished_run / "ensembles").glob("*"):
                _consistent(directory)
            report = finished_run / "report.html"
            if report.exists():
                assert report.read_text().endswith("</html>\n")
            board = finished_run / "leaderboard.csv"
            if board.exists():
                pd.read_csv(board)  # parses: never half a table
    result = subprocess.run(
        [sys.executable, "-m", "automl", "report", str(finished_run)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    board = pd.read_csv(finished_run / "leaderboard.csv")
    assert (board.status == "complete").sum() >= 12


@pytest.mark.slow
def test_soak_200_trials_memory_and_descriptors_stay_flat(
    tmp_path: Path, blood_search: BloodSearch
) -> None:
    process = psutil.Process()
    samples: dict[int, tuple[float, int]] = {}

    def sample(line: str) -> None:
        if line.startswith("trial"):
            number = int(line.split()[1])
            samples[number] = (process.memory_info().rss, process.num_fds())

    summary = blood_search(FAST_LINEAR, trials=200, sampler="random", progress=sample)
    assert summary.finished == 200
    rss_early, fds_early = samples[20]
    rss_late, fds_late = samples[199]
    assert rss_late < rss_early * 1.15, (rss_early, rss_late)
    assert fds_late <= fds_early + 2, (fds_early, fds_late)
    records = load_trials(RunDir(tmp_path / "run"))
    assert len(records) == 200 and {r.status for r in records} == {"complete"}
    dirs = sorted((tmp_path / "run" / "trials").iterdir())
    assert len(dirs) == 200 and all((d / MANIFEST).exists() for d in dirs)


def test_out_with_dotdot_is_resolved_and_shown(tmp_path: Path, blood_search: BloodSearch) -> None:
    lines: list[str] = []
    blood_search(FAST_LINEAR, out=Path("a") / ".." / "b", trials=1, progress=lines.append)
    assert (tmp_path / "b" / "run.json").exists() and not (tmp_path / "a").exists()
    assert any(line.startswith(f"search {tmp_path / 'b'}: ") for line in lines)


def test_passwords_in_storage_urls_are_masked() -> None:
    assert mask_url("postgresql://me:s3cr3t@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert mask_url("sqlite:////tmp/study.db") == "sqlite:////tmp/study.db"


def test_resume_refuses_other_data(
    tmp_path: Path, blood_search: BloodSearch, credit_csv: Path
) -> None:
    blood_search(FAST_LINEAR, trials=1)
    spaces = [write_space(tmp_path, "lin.yaml", FAST_LINEAR)]
    with pytest.raises(
        UserInputError,
        match=r"holds a search with different data_sha256, "
        r"target; use another out",
    ):
        run_search(
            data=str(credit_csv),
            target="class",
            out=tmp_path / "run",
            trials=1,
            spaces=spaces,
            threads=1,
            **QUIET,
        )
    # blood's first search is untouched: its targets are all 598 cross-fitted training rows
    assert np.load(tmp_path / "run" / "targets" / "y_val.npy").shape == (598,)


def test_a_failed_trial_records_the_first_non_empty_line_of_its_error() -> None:
    from automl.errors import one_line

    bootstrapping = RuntimeError("\n        An attempt has been made to start a new process\n...")
    assert (
        one_line(bootstrapping) == "RuntimeError: An attempt has been made to start a new process"
    )
    assert one_line(ValueError()) == "ValueError:"


ALWAYS_FAILS = "family: lightgbm\nparams:\n  num_leaves: {type: fixed, value: 1}\n"


def test_failures_in_a_row_stop_the_search_with_one_line(
    tmp_path: Path, blood_csv: Path, cli: Cli
) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text(ALWAYS_FAILS)
    out = tmp_path / "run"
    args = ["search", "--data", blood_csv, "--target", "Class", "--out", out, "--space", space]
    result = cli(*args, "--trials", "20", "--max-failures-in-a-row", "3", "--threads", "1")
    assert result.code == 1
    assert result.err == (
        "error: the search stopped after 3 failed trials in a row; "
        "their errors are in the leaderboard above\n"
    )
    assert "stopped: 3 trials failed in a row (the last: " in result.out
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board.status) == ["failed"] * 3  # not 20: the budget was not spent on them
    assert board.error.str.contains("num_leaves").all()

    # With a completed trial, the streak stops the search, not the job: exit 0, one warning.
    good, broken = tmp_path / "good.yaml", tmp_path / "broken.yaml"
    good.write_text("family: random_forest\nparams:\n  n_estimators: {type: fixed, value: 10}\n")
    broken.write_text("family: random_forest\nparams:\n  n_estimators: {type: fixed, value: 0}\n")
    out = tmp_path / "kept"
    first = cli("search", "--data", blood_csv, "--target", "Class", "--out", out, "--space",
                good, "--trials", "1", "--threads", "1", "--cv", "0")  # fmt: skip
    assert first.code == 0, first.err
    again = cli("search", "--data", blood_csv, "--target", "Class", "--out", out, "--space",
                broken, "--trials", "20", "--max-failures-in-a-row", "3",
                "--threads", "1")  # fmt: skip
    assert again.code == 0
    assert again.err == (
        "warning: the search stopped after 3 failed trials in a row (their errors are in the "
        "leaderboard above); the completed trial is kept, and `automl ensemble` and "
        "`automl predict` work on them\n"
    )
    assert sorted(pd.read_csv(out / "leaderboard.csv").status) == ["complete"] + ["failed"] * 3


def test_a_full_disk_stops_the_search_and_resume_reruns_the_interrupted_trial(
    tmp_path: Path, blood_search: BloodSearch, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import automl.search.evaluate as evaluate_module
    from automl.errors import SearchStopped

    real = evaluate_module.write_npy_atomic
    calls = {"n": 0}

    def fills_up(path: Path, array: object) -> None:
        calls["n"] += 1
        if calls["n"] > 4:  # two trials' predictions fit, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, array)

    monkeypatch.setattr(evaluate_module, "write_npy_atomic", fills_up)
    with pytest.raises(SearchStopped, match=r"^the search stopped: OSError: \[Errno 28\] No space"):
        blood_search(FAST_TREES, trials=6)
    records = load_trials(RunDir(tmp_path / "run"))
    assert [r.status for r in records] == ["complete", "complete", "running"]
    monkeypatch.setattr(evaluate_module, "write_npy_atomic", real)
    summary = blood_search(FAST_TREES, trials=6)  # disk fixed: the same command resumes
    records = load_trials(RunDir(tmp_path / "run"))
    assert summary.finished == 6 and summary.failed == 0
    assert [r.status for r in records].count("interrupted") == 1
