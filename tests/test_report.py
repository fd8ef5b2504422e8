"""The HTML report in a real browser (Debian's Chromium through playwright), the comparison page,
the live progress line, TensorBoard HParams logs and optuna-dashboard on the run's study."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest

from automl.ensemble import METHODS
from automl.ensemble.build import Recipe, build_ensemble
from automl.report import write_report
from automl.run import RunDir
from automl.search.loop import run_search
from automl.search.progress import Progress, status_line
from tests.conftest import (
    FAST_LINEAR,
    FAST_MLP,
    FAST_TREES,
    ROOT,
    BloodSearch,
    Cli,
    shared,
    write_space,
)

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def rich_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """Blood-transfusion searched over linear, forest and MLP spaces, ensembled, reported."""
    tmp = tmp_path_factory.mktemp("rich")
    frame = pd.read_csv(shared("blood_transfusion.csv.gz"))
    data = tmp / "blood.csv"
    frame.to_csv(data, index=False)
    spaces = [
        write_space(tmp, n, t)
        for n, t in (("lin.yaml", FAST_LINEAR), ("rf.yaml", FAST_TREES), ("mlp.yaml", FAST_MLP))
    ]
    run_search(
        data=str(data), target="Class", out=tmp / "run", spaces=spaces, trials=18,
        threads=1, pruner="none", cv=0, progress=lambda line: None,
    )  # fmt: skip
    run = RunDir(tmp / "run")
    for method in METHODS:
        build_ensemble(run, Recipe(method=method))
    write_report(run)
    return run


def _browser():  # noqa: ANN202
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def _open(playwright, path: Path):  # noqa: ANN001, ANN202
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    start = time.perf_counter()
    page.goto(path.resolve().as_uri(), wait_until="load")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    return browser, page, problems, time.perf_counter() - start


def _column(page, name: str) -> list[str]:  # noqa: ANN001
    index = page.eval_on_selector_all(
        "#leaderboard thead th", f"hs => hs.findIndex(h => h.dataset.col === {name!r})"
    )
    return page.eval_on_selector_all(
        "#leaderboard tbody tr", f"rs => rs.map(r => r.cells[{index}].textContent.trim())"
    )


@pytest.mark.slow
@pytest.mark.keras
def test_report_renders_in_chromium_sorts_and_is_screenshotted(rich_run: RunDir) -> None:
    with _browser() as playwright:
        browser, page, problems, _ = _open(playwright, rich_run.path / "report.html")
        try:
            assert problems == []
            plots = page.eval_on_selector_all(
                "figure.plot",
                "fs => fs.map(f => [f.dataset.plot, f.querySelector('img').naturalWidth,"
                " f.querySelector('img').getBoundingClientRect().height])",
            )
            names = {p[0] for p in plots}
            expected = {"confusion", "roc", "history", "families", "importance",
                        "score-vs-params", "learning-curves", "gains", "weights",
                        "correlation", "network"}  # fmt: skip
            assert expected <= names, expected - names
            assert all(width > 100 and height > 50 for _, width, height in plots), plots

            page.click('#leaderboard th[data-col="test_score"]')
            ascending = [float(v) for v in _column(page, "test_score") if v]
            assert ascending == sorted(ascending) and len(ascending) >= 18
            page.click('#leaderboard th[data-col="test_score"]')
            descending = [float(v) for v in _column(page, "test_score") if v]
            assert descending == sorted(ascending, reverse=True)
            sorted_by = page.get_attribute('#leaderboard th[data-col="test_score"]', "aria-sort")
            assert sorted_by == "descending"

            ARTIFACTS.mkdir(exist_ok=True)
            page.click('#leaderboard th[data-col="rank"]')
            page.screenshot(path=str(ARTIFACTS / "report.png"))
            page.screenshot(path=str(ARTIFACTS / "report-full.png"), full_page=True)
            assert (ARTIFACTS / "report.png").stat().st_size > 20_000
        finally:
            browser.close()


def test_report_shows_what_a_reader_needs_first(rich_run: RunDir) -> None:
    text = (rich_run.path / "report.html").read_text()
    cards = text[text.index('<div class="cards">') : text.index("<nav>")]
    for label in ("Best by validation", "Best single model", "Best ensemble", "Trials"):
        assert label in cards
    assert "http://" not in text and "https://" not in text  # nothing fetched from a network
    for fact in ("data sha256", "budget", "versions", "executor", "18 completed, 0 failed"):
        assert fact in text


def test_column_named_script_is_text_not_code(tmp_path: Path) -> None:
    frame = pd.read_csv(shared("blood_transfusion.csv.gz")).rename(columns={"Recency": XSS})
    data = tmp_path / "xss.csv"
    frame.to_csv(data, index=False)
    space = write_space(tmp_path, "lin.yaml", FAST_LINEAR)
    run_search(data=str(data), target="Class", out=tmp_path / "run", spaces=[space], trials=2,
               threads=1, progress=lambda line: None)  # fmt: skip
    path = Path(write_report(RunDir(tmp_path / "run")))
    html = path.read_text()
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    with _browser() as playwright:
        browser, page, problems, _ = _open(playwright, path)
        try:
            assert problems == []  # no alert dialog, no error
            assert XSS in page.inner_text("#facts")  # shown to the reader as the text it is
        finally:
            browser.close()


@pytest.mark.slow
def test_report_of_100_trials_is_small_and_fast_in_chromium(
    blood_search: BloodSearch, tmp_path: Path
) -> None:
    run = RunDir(blood_search(FAST_LINEAR, FAST_TREES, trials=100).run_dir)
    build_ensemble(run, Recipe(method="greedy"))
    start = time.perf_counter()
    path = Path(write_report(run))
    write_seconds = time.perf_counter() - start
    size = path.stat().st_size
    assert size < 5_000_000, size
    with _browser() as playwright:
        browser, page, problems, seconds = _open(playwright, path)
        try:
            assert problems == []
            assert page.eval_on_selector_all("#leaderboard tbody tr", "rs => rs.length") == 101
            assert seconds < 3.0, seconds
        finally:
            browser.close()
    print(f"100-trial report: {size / 1e6:.2f} MB, written in {write_seconds:.1f} s, "
          f"rendered in {seconds:.2f} s")  # fmt: skip


def test_compare_puts_runs_side_by_side_and_refuses_other_data(
    blood_search: BloodSearch,
    tmp_path: Path,
    cli: Cli,
) -> None:
    blood_search(FAST_LINEAR, FAST_TREES, trials=3, out="tpe")
    blood_search(FAST_LINEAR, FAST_TREES, trials=3, out="random", sampler="random")
    out = tmp_path / "cmp.html"
    result = cli("report", "--compare", tmp_path / "tpe", tmp_path / "random", "--out", out)
    assert result.code == 0, result.err
    html = out.read_text()
    assert "optuna/tpe" in html and "optuna/random" in html and 'data-plot="curves"' in html

    other = tmp_path / "iris"
    space = write_space(tmp_path, "l.yaml", FAST_LINEAR)
    run_search(data="builtin:iris", target="target", out=other, spaces=[space], trials=1,
               progress=lambda line: None)  # fmt: skip
    result = cli("report", "--compare", tmp_path / "tpe", other, "--out", out)
    assert result.code == 2
    assert re.search(r"--compare: .*iris searched different data_sha256, target, task", result.err)
    assert cli("report", "--compare", tmp_path / "tpe").err.strip() == (
        "error: --compare needs at least two run directories"
    )


def test_live_progress_redraws_on_a_tty_and_stays_plain_elsewhere() -> None:
    tty = StringIO()
    live = Progress(tty, live=True, interval=0.05)
    live.status(lambda: status_line(3, 1, 0, "0.8123 (#2 lightgbm)", "#4 mlp", time.time(), 42))
    live.say("trial   3 lightgbm      val roc_auc 0.8123")
    time.sleep(0.2)  # the ticker redraws the status line on its own
    live.close()
    text = tty.getvalue()
    assert text.count("\r\x1b[2K[3 done | 1 failed | 0 pruned | best 0.8123 (#2 lightgbm) | "
                      "running #4 mlp 0s | 42s left]") >= 3  # fmt: skip
    assert "\x1b[2Ktrial   3 lightgbm      val roc_auc 0.8123\n" in text
    assert text.endswith("\r\x1b[2K")  # the status line is cleared when the search ends

    plain = StringIO()
    quiet = Progress(plain, live=False)
    quiet.status(lambda: "never shown")
    quiet.say("trial   0 linear")
    quiet.close()
    assert plain.getvalue() == "trial   0 linear\n"


@pytest.mark.keras
def test_tensorboard_hparams_and_keras_logs(rich_run: RunDir) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    runs = sorted(rich_run.path.glob("trials/*/tensorboard/hparams"))
    assert len(runs) == 18  # every completed trial is listed in the HParams view
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    config = json.loads((runs[0].parents[1] / "config.json").read_text())
    assert info.hparams["family"].string_value == config["family"]
    assert set(events.Tags()["scalars"]) == {"val_score", "test_score"}
    keras_trials = [
        p.parents[1] for p in runs if json.loads((p.parents[1] / "config.json").read_text())
        ["family"] == "mlp"
    ]  # fmt: skip
    assert keras_trials and all((t / "tensorboard" / "validation").is_dir() for t in keras_trials)


@pytest.mark.slow
def test_optuna_dashboard_serves_the_study_with_readable_attributes(rich_run: RunDir) -> None:
    dashboard = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    assert dashboard, "optuna-dashboard is installed with the dev extra"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [dashboard, f"sqlite:///{rich_run.path / 'study.db'}", "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}/api/studies"
        for _ in range(100):
            try:
                studies = json.load(urllib.request.urlopen(base, timeout=2))["study_summaries"]
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("optuna-dashboard did not answer within 20 s")
        assert [s["study_name"] for s in studies] == ["automl"]
        detail = json.load(urllib.request.urlopen(f"{base}/{studies[0]['study_id']}", timeout=5))
        attrs = {a["key"]: a["value"] for a in detail["trials"][0]["user_attrs"]}
        assert attrs["family"] in {"linear", "random_forest", "mlp"}  # strings shown as they are
        assert attrs["trial_dir"].endswith("trials/0000")
        assert "val_pred.npy" in json.loads(attrs["artifacts"]) and "test_score" in attrs
    finally:
        server.terminate()
        server.wait(timeout=10)
