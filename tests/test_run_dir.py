"""A run directory travels: moved, copied, archived or opened read-only, every command works
on it, a copy never writes into its original, and reading never needs write access."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from automl.run import RunDir, load_trials
from tests.conftest import FAST_LINEAR, FAST_TREES, Cli, missing, write_space

pytestmark = pytest.mark.slow


def _search(cli: Cli, tmp_path: Path, blood_csv: Path, out: Path, trials: int) -> None:
    spaces = [
        write_space(tmp_path, "rf.yaml", FAST_TREES),
        write_space(tmp_path, "l.yaml", FAST_LINEAR),
    ]
    args = ["--data", blood_csv, "--target", "Class", "--out", out, "--trials", trials]
    result = cli("search", *args, "--space", spaces[0], "--space", spaces[1], "--threads", 1)
    assert result.code == 0, result.err


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_moved_run_directory_ensembles_reports_and_predicts(
    tmp_path: Path, blood_csv: Path, cli: Cli
) -> None:
    first = tmp_path / "runs" / "a"
    _search(cli, tmp_path, blood_csv, first, trials=3)
    assert RunDir(first).info()["storage"] is None  # the run's own study.db, found beside it
    moved = tmp_path / "elsewhere" / "b"
    moved.parent.mkdir()
    shutil.move(first, moved)
    assert not first.exists()
    for args in (("ensemble", moved), ("report", moved)):
        result = cli(*args)
        assert result.code == 0, result.err
    assert len(pd.read_csv(moved / "leaderboard.csv")) >= 3 + 4  # trials and four ensembles
    out = tmp_path / "p.csv"
    result = cli("predict", moved, "--data", blood_csv, "--out", out)
    assert result.code == 0, result.err
    assert len(pd.read_csv(out)) == 748
    # And it resumes where it now is.
    _search(cli, tmp_path, blood_csv, moved, trials=4)
    assert len([r for r in load_trials(RunDir(moved)) if r.status == "complete"]) == 4
    assert not first.exists()


def test_a_copied_run_resumes_into_the_copy_and_leaves_its_original_unchanged(
    tmp_path: Path, blood_csv: Path, cli: Cli
) -> None:
    original = tmp_path / "a"
    _search(cli, tmp_path, blood_csv, original, trials=2)
    before = {p.relative_to(original): _sha256(p) for p in original.rglob("*") if p.is_file()}
    copy = tmp_path / "c"
    shutil.copytree(original, copy)
    _search(cli, tmp_path, blood_csv, copy, trials=4)
    assert cli("ensemble", copy, "--no-refit").code == 0
    assert len([r for r in load_trials(RunDir(copy)) if r.status == "complete"]) == 4
    assert sorted(p.name for p in (copy / "trials").iterdir()) == ["0000", "0001", "0002", "0003"]
    after = {p.relative_to(original): _sha256(p) for p in original.rglob("*") if p.is_file()}
    assert after == before  # not a byte of the original changed
    assert len(load_trials(RunDir(original))) == 2


def test_a_read_only_run_directory_predicts_and_reports_elsewhere(
    tmp_path: Path, blood_csv: Path, cli: Cli
) -> None:
    """Read-only as a mount, in a mount namespace of its own: permission bits say nothing to
    root, which the tests run as."""
    if shutil.which("unshare") is None:
        missing("unshare (util-linux) is needed to mount a run directory read-only")
    run = tmp_path / "run"
    _search(cli, tmp_path, blood_csv, run, trials=2)
    assert cli("ensemble", run).code == 0
    automl = str(Path(sys.executable).with_name("automl"))
    script = (
        f"mount --bind {run} {run} && mount -o remount,bind,ro {run} && "
        f"{automl} predict {run} --data {blood_csv} --out {tmp_path / 'p.csv'} && "
        f"{automl} report {run} --out {tmp_path / 'report'}; "
        f"{automl} report {run}"
    )
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=300
    )
    if "unshare failed" in done.stderr or "mount:" in done.stderr:
        missing(f"a read-only mount could not be made here: {done.stderr.strip()}")
    lines = done.stdout.splitlines()
    assert lines[0].startswith("748 predictions from "), done.stdout + done.stderr
    assert lines[-1] == f"report: {tmp_path / 'report' / 'report.html'}", done.stderr
    assert (tmp_path / "report" / "leaderboard.csv").exists()
    # Without --out, the report says in one line why it cannot, and what to do; exit 2.
    assert done.returncode == 2
    assert done.stderr == (
        f"error: report {run / 'report.html'}: cannot write in {run} (Read-only file system); "
        "--out FOLDER writes the report elsewhere\n"
    )
    assert not (run / "report.html").exists()


def test_predict_on_a_file_with_a_header_and_no_rows_is_one_line(
    tmp_path: Path, blood_csv: Path, cli: Cli
) -> None:
    run = tmp_path / "run"
    _search(cli, tmp_path, blood_csv, run, trials=1)
    empty = tmp_path / "empty.csv"
    empty.write_text("Recency,Frequency,Monetary,Time\n")
    out = tmp_path / "p.csv"
    result = cli("predict", run, "--data", empty, "--out", out)
    assert (result.code, result.err) == (2, f"error: {empty}: has a header but no data rows\n")
    assert not out.exists()
