"""The Ray executor against real Ray: a local Ray, a 2-node cluster started here on 127.0.0.1
(token auth on, as Ray 2.60's `ray start` does), a job through `ray job submit`, and a worker
killed in the middle of a trial. Every search runs in its own process, as users run it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pandas as pd
import psutil
import pytest

from automl.io import verify
from automl.run import STUDY_NAME, RunDir, load_trials
from tests.conftest import ROOT, missing, shared, write_space

pytestmark = pytest.mark.slow

SECOND_TREES = """family: random_forest
params:
  n_estimators: {type: int, low: 300, high: 400, default: 300}
"""  # about a second each: long enough that two run at once, one on each node

EIGHT_SECOND_TREES = """family: random_forest
params:
  n_estimators: {type: int, low: 3000, high: 3200, default: 3000}
"""  # about eight seconds each on one core: longer than a new node's first worker takes to start

TWO_SECOND_TREES = """family: random_forest
params:
  n_estimators: {type: int, low: 800, high: 1000, default: 800}
"""  # about two seconds each on one core: a worker can be killed while it runs a trial

# The same trees with a float that costs nothing (each tree's bootstrap sample, 98-100% of the
# rows): two draws of it never coincide, so a repeated configuration means a replayed draw, where
# an int of 201 values would repeat by chance (about 7% of six-trial searches).
TWO_SECOND_TREES_DISTINCT = (
    TWO_SECOND_TREES
    + """  max_samples: {type: float, low: 0.98, high: 1.0, default: 1.0}
"""
)

SLOW_MLP = """family: mlp
params:
  units: {type: int, low: 8, high: 32, default: 16}
  epochs: {type: fixed, value: 20}
  patience: {type: fixed, value: 20}
  batch_size: {type: fixed, value: 32}
"""


@pytest.fixture
def blood(tmp_path: Path) -> Path:
    path = tmp_path / "blood.csv"
    pd.read_csv(shared("blood_transfusion.csv.gz")).to_csv(path, index=False)
    return path


def _search(data: Path, out: Path, spaces: list[Path], *extra: str, env=None, timeout=300):  # noqa: ANN001, ANN202
    command = [sys.executable, "-m", "automl", "search", "--data", str(data), "--target",
               "Class", "--out", str(out), "--executor", "ray", *extra]  # fmt: skip
    for space in spaces:
        command += ["--space", str(space)]
    return subprocess.run(
        command, cwd=ROOT, env=env or dict(os.environ), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def _consistent(out: Path) -> list:
    """The leaderboard, the study and the trial folders tell the same story."""
    run = RunDir(out)
    study = optuna.load_study(study_name=STUDY_NAME, storage=run.storage())
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    records = load_trials(run)
    complete = [r for r in records if r.status == "complete"]
    for record in complete:
        verify(run.trial_dir(record.number), "val_pred.npy")  # every file matches its manifest
    board = pd.read_csv(out / "leaderboard.csv")
    assert sorted(board.name[board.status == "complete"]) == sorted(r.name for r in complete)
    return [t for t in study.trials if t.state.name == "COMPLETE"]


def test_local_ray_runs_trials_in_parallel_survives_a_killed_worker_and_resumes(
    tmp_path: Path, blood: Path
) -> None:
    """Two workers at once into one study; a Ray worker SIGKILLed mid-trial has its trial run
    again (nothing lost); a second run resumes from the same study, as with the local executor."""
    spaces = [write_space(tmp_path, "t.yaml", TWO_SECOND_TREES)]
    out = tmp_path / "run"
    killed: list[int] = []

    def kill_a_worker_during_a_trial() -> None:
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            time.sleep(0.2)
            if not list((out / "trials").glob("*")):  # wait until a trial has started
                continue
            for process in psutil.process_iter(["pid", "cmdline"]):
                cmdline = " ".join(process.info["cmdline"] or [])
                if cmdline.startswith("ray::ImplicitFunc"):
                    os.kill(process.info["pid"], signal.SIGKILL)
                    killed.append(process.info["pid"])
                    return

    killer = threading.Thread(target=kill_a_worker_during_a_trial, daemon=True)
    killer.start()
    # --cv 0: one two-second forest per trial, so the kill lands inside a trial
    result = _search(blood, out, spaces, "--workers", "2", "--trials", "5", "--cv", "0")
    killer.join(timeout=5)
    assert killed, "no Ray worker was found to kill"
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ray (local) executor with 2 workers" in result.stdout
    complete = _consistent(out)
    assert len(complete) == 5  # the killed trial ran again and finished; nothing was lost
    assert all(t.user_attrs.get("node") for t in complete)
    study = optuna.load_study(study_name=STUDY_NAME, storage=RunDir(out).storage())
    assert study.user_attrs["workers"] == 2

    again = _search(blood, out, spaces, "--workers", "2", "--trials", "7", "--cv", "0")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(_consistent(out)) == 7


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_a_killed_driver_resumes_without_losing_or_repeating_a_trial(
    tmp_path: Path, blood: Path
) -> None:
    """SIGKILL the search process while Ray runs two trials: its local Ray goes with it (Ray's
    reaper), and the re-run keeps every finished trial and runs the interrupted ones once."""
    spaces = [write_space(tmp_path, "t.yaml", TWO_SECOND_TREES)]
    out = tmp_path / "run"
    command = [sys.executable, "-m", "automl", "search", "--data", str(blood), "--target",
               "Class", "--out", str(out), "--space", str(spaces[0]), "--executor", "ray",
               "--workers", "2", "--trials", "6", "--cv", "0"]  # fmt: skip
    driver = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    killed = False
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not killed:
            time.sleep(0.2)
            if not (out / "study.db").exists():
                continue
            try:
                trials = optuna.load_study(
                    study_name=STUDY_NAME, storage=RunDir(out).storage()
                ).trials
            except Exception:  # noqa: BLE001 - the study may not exist yet
                continue
            done = [t for t in trials if t.state.name == "COMPLETE"]
            if len(done) >= 2 and any(t.state.name == "RUNNING" for t in trials):
                driver.send_signal(signal.SIGKILL)
                killed = True
    finally:
        driver.kill()
        driver.wait()
    # The state the killed driver left, read once it is dead: between the poll above and the
    # signal, the driver may have finished a trial or started another.
    trials = optuna.load_study(study_name=STUDY_NAME, storage=RunDir(out).storage()).trials
    before = {t.number: t.value for t in trials if t.state.name == "COMPLETE"}
    running = [t.number for t in trials if t.state.name == "RUNNING"]
    assert running, "the search finished before it could be killed"
    deadline = time.time() + 30  # Ray's reaper stops the killed driver's local Ray
    while (left := [p.pid for p in psutil.process_iter() if _group(p.pid) == driver.pid]) and (
        time.time() < deadline
    ):
        time.sleep(0.5)
    assert not left, f"the killed driver's Ray processes are still running: {left}"

    again = _search(blood, out, spaces, "--workers", "2", "--trials", "6", "--cv", "0")
    assert again.returncode == 0, again.stderr[-3000:]
    for number in running:
        assert f"trial {number} was interrupted by the last run" in again.stdout
    complete = _consistent(out)
    assert len(complete) == 6  # exactly as many as asked for: nothing lost, nothing extra
    for trial in complete:
        if trial.number in before:
            assert trial.value == before[trial.number]  # finished trials kept, unchanged
    retried = [t.user_attrs["retry_of"] for t in complete if "retry_of" in t.user_attrs]
    assert sorted(retried) == sorted(running)  # each interrupted configuration ran once more


@pytest.fixture(scope="module")
def hidden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder the cluster's worker node cannot see: the tests below keep their data and run
    directories in it."""
    return tmp_path_factory.mktemp("hidden")


@pytest.fixture(scope="module")
def cluster_without_shared_disk(hidden: Path):  # noqa: ANN201
    """A 2-node Ray cluster on 127.0.0.1 (head + one worker, one CPU each, token auth on)
    whose worker node cannot see `hidden` (the run directories' parent, the data): its `ray
    start` runs in a mount namespace of its own with an empty tmpfs over the folder, as a
    machine without a shared filesystem would. One cluster for the module's cluster tests (a
    cluster costs ~20 s); the last of them takes the worker node away."""
    if shutil.which("unshare") is None:
        missing("unshare (util-linux) is needed to hide the run directory from a Ray node")
    sys.path.insert(0, str(ROOT / "scripts"))
    from loopback_cluster import loopback_cluster

    with loopback_cluster(workers=1, hide=hidden) as cluster:
        yield {"env": cluster.env, "address": cluster.address, "jobs": cluster.jobs,
               "worker_raylet": cluster.worker_raylets[0], "join": cluster.add_worker}  # fmt: skip


@pytest.fixture
def here(hidden: Path, request: pytest.FixtureRequest) -> Path:
    """This test's own folder inside `hidden`, with the blood-transfusion data in it."""
    folder = hidden / request.node.name
    folder.mkdir()
    pd.read_csv(shared("blood_transfusion.csv.gz")).to_csv(folder / "blood.csv", index=False)
    return folder


def _nodes(out: Path) -> set[str]:
    study = optuna.load_study(study_name=STUDY_NAME, storage=RunDir(out).storage())
    return {t.user_attrs["node"] for t in study.trials if t.state.name == "COMPLETE"}


def test_asha_stops_poor_networks_from_their_epoch_reports(tmp_path: Path, blood: Path) -> None:
    space = write_space(tmp_path, "mlp.yaml", SLOW_MLP)
    result = _search(
        blood,
        tmp_path / "run",
        [space],
        "--workers",
        "2",
        "--trials",
        "8",
        "--scheduler",
        "asha",
        "--sampler",
        "random",
        "--threads",
        "1",
        "--cv",
        "0",
    )  # fmt: skip (ASHA stops from one holdout split's epochs)
    assert result.returncode == 0, result.stderr[-3000:]
    records = load_trials(RunDir(tmp_path / "run"))
    pruned = [r for r in records if r.status == "pruned"]
    assert pruned and "pruned after epoch" in result.stdout
    assert len(records) == 8  # pruned trials count toward --trials, as in optuna
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv")
    assert (board.status == "pruned").sum() == len(pruned)


def test_job_submission_waits_for_a_job_agent_that_is_still_starting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Right after `ray start`, the job server answers 500 until the head's job agent has
    registered (seen in CI); the submission script tries again instead of failing."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import ray_job

    monkeypatch.setattr(ray_job.time, "sleep", lambda seconds: None)

    class StartingCluster:
        calls = 0

        def submit_job(self, **job: object) -> str:
            self.calls += 1
            if self.calls < 3:
                raise RuntimeError(
                    "Request failed with status code 500: No available agent to submit job, "
                    "please try again later.."
                )
            return "raysubmit_1"

    class Refusing:
        def submit_job(self, **job: object) -> str:
            raise RuntimeError("Request failed with status code 400: bad runtime_env")

    cluster = StartingCluster()
    assert ray_job.submit(cluster, entrypoint="automl search") == "raysubmit_1"
    assert cluster.calls == 3
    with pytest.raises(RuntimeError, match="status code 400: bad runtime_env"):
        ray_job.submit(Refusing(), entrypoint="automl search")  # other errors are not retried


PIPELINE_ON_RAY = """\
import json, sys
import numpy as np, pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from automl import AutoMLClassifier
frame = pd.read_csv(sys.argv[1])
x, y = frame.drop(columns=["Class"]), frame["Class"]
x_fit, x_new, y_fit, y_new = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
clf = AutoMLClassifier(time_budget=None, trials=4, space=sys.argv[2], executor="ray", workers=2,
                       n_jobs=1, run_dir=sys.argv[3])
pipe = make_pipeline(StandardScaler(), clf).fit(x_fit, y_fit)
print(json.dumps({"score": pipe.score(x_new, y_new), "run_dir": str(clf.run_dir_)}))
"""


def test_an_estimator_on_ray_with_two_workers_inside_a_pipeline(
    tmp_path: Path, blood: Path
) -> None:
    space = write_space(tmp_path, "t.yaml", SECOND_TREES)
    script = tmp_path / "pipeline.py"
    script.write_text(PIPELINE_ON_RAY)  # no main guard: the trials run on Ray's workers
    done = subprocess.run(
        [sys.executable, str(script), str(blood), str(space), str(tmp_path / "fits")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    majority = 1 - pd.read_csv(blood)["Class"].mean()
    assert result["score"] > majority - 0.02  # accuracy on rows the search never saw
    run = RunDir(result["run_dir"])
    study = optuna.load_study(study_name=STUDY_NAME, storage=run.storage())
    assert (study.user_attrs["executor"], study.user_attrs["workers"]) == ("ray (local)", 2)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4 and all(t.user_attrs.get("node") for t in complete)


def test_job_arguments_make_local_paths_absolute_and_pass_names_through(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import ray_job

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    args = ray_job.search_arguments(
        ["--data", "data.csv", "--space", "tabular", "--space", "builtin:x", "--out", "runs/a",
         "--test-data", "s3://bucket/test.csv"]
    )  # fmt: skip
    assert args == [
        "--data", str(tmp_path / "data.csv"), "--space", "tabular", "--space", "builtin:x",
        "--out", str(tmp_path / "runs" / "a"), "--test-data", "s3://bucket/test.csv",
        "--executor", "ray", "--ray-address", "auto",
    ]  # fmt: skip


def test_executor_ray_without_ray_installed_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"  # as if the ray extra were not installed
        "from automl.cli import main\n"
        f"sys.exit(main(['search', '--data', 'builtin:iris', '--out', {str(tmp_path / 'run')!r},"
        " '--executor', 'ray']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr == (
        "error: --executor ray needs Ray, which is not installed: pip install 'automl[ray]'\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_trial_files_stream_through_the_sink_whole_verified_or_not_at_all(
    tmp_path: Path, blood: Path
) -> None:
    """The transfer itself, with a local Ray: a promoted network's parent fetched to a node's
    own folder byte for byte; a trial shipped in several chunks appears whole and verified; a
    file that does not match its manifest is refused and leaves nothing behind."""
    import ray

    from automl.io import write_manifest
    from automl.search import ray_files
    from automl.search.loop import run_search

    spaces = [write_space(tmp_path, "t.yaml", SECOND_TREES)]
    summary = run_search(data=str(blood), target="Class", out=tmp_path / "run", spaces=spaces,
                         trials=1, cv=0, threads=1, progress=lambda line: None)  # fmt: skip
    run = RunDir(summary.run_dir)
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)  # fmt: skip
    try:
        sink = ray_files.start_sink(run)
        away = tmp_path / "node" / "0000"
        fetched = ray_files.fetch(sink, 0, away)
        home = {p.relative_to(run.trial_dir(0)): p.read_bytes()
                for p in run.trial_dir(0).rglob("*") if p.is_file()}  # fmt: skip
        assert {p.relative_to(away): p.read_bytes() for p in away.rglob("*") if p.is_file()} == home
        assert fetched.bytes == sum(len(b) for b in home.values()) > 100_000

        big = away / "big.bin"
        big.write_bytes(os.urandom(2 * ray_files.CHUNK + 123))  # three chunks
        write_manifest(away, [*json.loads((away / "manifest.json").read_text()), "big.bin"])
        shipped = ray_files.ship(sink, 5, away)
        assert shipped.bytes == fetched.bytes + len(big.read_bytes()) + (
            (away / "manifest.json").stat().st_size - len(home[Path("manifest.json")])
        )
        assert (run.trial_dir(5) / "big.bin").read_bytes() == big.read_bytes()
        verify(run.trial_dir(5), "val_pred.npy")
        assert not (run.path / ray_files.STAGING).exists()

        (away / "val_pred.npy").write_bytes(b"tampered")
        with pytest.raises(ray.exceptions.RayTaskError, match="sha256 does not match"):
            ray_files.ship(sink, 6, away)
        assert not run.trial_dir(6).exists() and not (run.path / ray_files.STAGING).exists()

        ray.get(sink.begin.remote(7))  # a node lost mid-transfer never commits nor aborts
        assert (run.path / ray_files.STAGING).is_dir()
        ray_files.clear_staging(run)  # what the executor does once the search has ended
        assert not (run.path / ray_files.STAGING).exists() and not run.trial_dir(7).exists()
    finally:
        ray.shutdown()


SEES_FOLDER = """\
import json, os, sys
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=0)
def sees(path):
    return os.path.exists(path)

answers = {}
for node in [n["NodeID"] for n in ray.nodes() if n["Alive"]]:
    try:  # a node killed a moment ago can still be listed alive
        answers[node] = ray.get(sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node, soft=False)).remote(sys.argv[2]), timeout=60)
    except (ray.exceptions.TaskUnschedulableError, ray.exceptions.GetTimeoutError):
        pass
print(json.dumps(answers))
"""


def _sees(probe_dir: Path, cluster: dict, path: Path) -> dict[str, bool]:
    """Each live node of the cluster: whether it sees `path`."""
    probe = probe_dir / "sees.py"
    probe.write_text(SEES_FOLDER)
    sees = subprocess.run(
        [sys.executable, str(probe), cluster["address"], str(path)],
        env=cluster["env"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert sees.returncode == 0, sees.stderr[-2000:]
    return dict(json.loads(sees.stdout.strip().splitlines()[-1]))


def test_a_cluster_without_shared_disk_brings_every_trial_home_and_takes_jobs(
    here: Path, cluster_without_shared_disk: dict
) -> None:
    """The worker node cannot see the run directory (asserted from a task on it). A search
    with `--workers auto` runs two trials at a time on both nodes; the worker's trials' files
    travel to the driver through Ray, so the ensembles use every completed trial, predict
    works and the report lists them all. A job through `ray job submit` does the same."""
    cluster, tmp_path, blood = cluster_without_shared_disk, here, here / "blood.csv"
    assert sorted(_sees(tmp_path, cluster, blood).values()) == [False, True]

    spaces = [write_space(tmp_path, "t.yaml", SECOND_TREES)]
    out = tmp_path / "run"
    result = _search(blood, out, spaces, "--workers", "auto", "--trials", "6", "--cv", "3",
                     "--ray-address", cluster["address"], env=cluster["env"])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "auto workers" in result.stdout
    study = optuna.load_study(study_name=STUDY_NAME, storage=RunDir(out).storage())
    assert study.user_attrs["workers"] == "auto"
    complete = _consistent(out)  # every trial's files are in the run directory, verified
    assert len(complete) == 6
    assert len(_nodes(out)) == 2  # the head and the worker node both ran trials
    moved = [t for t in complete if "transfer_bytes" in t.user_attrs]
    assert moved and all(t.user_attrs["transfer_bytes"] > 10_000 for t in moved)
    assert len(moved) < 6  # the driver's own node writes in place
    assert not (out / ".incoming").exists()

    ensembled = subprocess.run(
        [sys.executable, "-m", "automl", "ensemble", str(out), "--no-refit"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ensembled.returncode == 0, ensembled.stderr[-3000:]
    assert "left out" not in ensembled.stderr
    greedy = json.loads((out / "ensembles" / "greedy" / "weights.json").read_text())
    assert greedy["pool_size"] == 6  # every completed trial, from both nodes
    predicted = subprocess.run(
        [sys.executable, "-m", "automl", "predict", str(out), "--data", str(blood),
         "--out", str(tmp_path / "p.csv")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "p.csv")) == 748
    reported = subprocess.run(
        [sys.executable, "-m", "automl", "report", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert reported.returncode == 0, reported.stderr[-3000:]
    board = pd.read_csv(out / "leaderboard.csv")
    trials = sorted(n for n in board.name[board.status == "complete"] if n.startswith("t"))
    assert trials == sorted(f"t{t.number:04d}-random_forest" for t in complete)
    page = (out / "report.html").read_text()
    assert all(name in page for name in trials)

    job_out = tmp_path / "job-run"
    submit = [sys.executable, str(ROOT / "scripts" / "ray_job.py"), "--address", cluster["jobs"],
              "--python", sys.executable, "--", "--data", str(blood), "--target", "Class",
              "--out", str(job_out), "--space", str(spaces[0]), "--trials", "4",
              "--workers", "2"]  # fmt: skip
    job = subprocess.run(submit, cwd=ROOT, env=cluster["env"], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    assert "SUCCEEDED" in job.stdout and "done: 4 trials (0 failed)" in job.stdout
    assert len(_consistent(job_out)) == 4 and len(_nodes(job_out)) == 2
    assert json.loads((job_out / "run.json").read_text())["command"][:2] == ["automl", "search"]


OBJECT_STORAGE_TEST = "test_a_run_in_object_storage_searched_on_two_nodes_survives_its_driver"


def test_a_run_in_object_storage_searched_on_two_nodes_survives_its_driver(
    here: Path, cluster_without_shared_disk: dict, postgres_url: str, s3_bucket: dict
) -> None:
    """`--out s3://...` with the study in PostgreSQL, on the cluster without a shared disk: the
    driver is SIGKILLed mid-search and a fresh process with an empty cache (another machine,
    as far as the run is concerned) resumes it; then the ensembles with the refit, `predict`
    and `automl.load`, each from a cache of its own, read everything from the bucket. The
    driver's disk holds nothing of the run but caches."""
    cluster = cluster_without_shared_disk
    url = f"{s3_bucket['url']}/blood-run"
    env = dict(cluster["env"], **s3_bucket["env"], AUTOML_CACHE=str(here / "cache-first"))
    spaces = [write_space(here, "slow.yaml", TWO_SECOND_TREES_DISTINCT)]
    command = [sys.executable, "-m", "automl", "search", "--data", str(here / "blood.csv"),
               "--target", "Class", "--out", url, "--storage", postgres_url,
               "--space", str(spaces[0]), "--executor", "ray", "--workers", "2",
               "--ray-address", cluster["address"], "--trials", "6", "--cv", "0"]  # fmt: skip
    driver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    study_name = None
    # One storage (one connection pool) for every poll: a storage per poll opened connections
    # faster than they were collected, and PostgreSQL ran out of them in CI.
    storage = optuna.storages.RDBStorage(postgres_url)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and driver.poll() is None:
            time.sleep(0.3)
            names = optuna.get_all_study_names(storage=storage)
            if not names:
                continue
            study_name = names[0]
            trials = optuna.load_study(study_name=study_name, storage=storage).trials
            if sum(t.state.name == "COMPLETE" for t in trials) >= 2:
                driver.send_signal(signal.SIGKILL)
                break
    finally:
        driver.kill()
        _, stderr = driver.communicate()
    assert driver.returncode == -signal.SIGKILL, f"the search ended before the kill: {stderr}"
    before = optuna.load_study(study_name=study_name, storage=storage).trials
    kept = {t.number: t.value for t in before if t.state.name == "COMPLETE"}

    env["AUTOML_CACHE"] = str(here / "cache-resumed")  # nothing of the first process's
    resumed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"run directory: {url}" in resumed.stdout
    study = optuna.load_study(study_name=study_name, storage=storage)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 6  # as many as asked: none lost, none extra
    assert all(t.value == kept[t.number] for t in complete if t.number in kept)
    configurations = [json.dumps(t.params, sort_keys=True) for t in complete]
    assert len(set(configurations)) == 6  # the resumed sampler repeats none of the first's
    interrupted = {t.number: t.params for t in study.trials if t.user_attrs.get("interrupted")}
    retries = [t for t in complete if "retry_of" in t.user_attrs]
    assert sorted(t.user_attrs["retry_of"] for t in retries) == sorted(interrupted)
    for t in retries:  # the driver killed between asking a trial and drawing all of its
        # parameters left only those it had drawn: the retry repeats them and draws the rest
        assert interrupted[t.user_attrs["retry_of"]].items() <= t.params.items(), (
            interrupted, t.params)  # fmt: skip
    assert len({t.user_attrs["node"] for t in complete}) == 2
    # A trial on the worker's node wrote its files to the bucket itself: the driver that ran
    # it never held them (the resumed one pulled the first one's trials when it opened the run).
    away = [t for t in complete if "transfer_to" in t.user_attrs]
    assert away and all(t.user_attrs["transfer_to"] == "bucket" for t in away)
    assert all(t.user_attrs["transfer_bytes"] > 10_000 for t in away)
    for t in away:
        cache = here / ("cache-first" if t.number in kept else "cache-resumed")
        assert not list(cache.rglob(f"trials/{t.number:04d}/*")), (cache, t.number)

    # run.json keeps the URL without its password, which a reader gives the standard way.
    from urllib.parse import urlsplit

    env["AUTOML_STORAGE_PASSWORD"] = str(urlsplit(postgres_url).password)
    for step, args in (
        ("ensemble", ["ensemble", url, "--data", str(here / "blood.csv")]),
        ("predict", ["predict", url, "--data", str(here / "blood.csv"),
                     "--out", str(here / "p.csv")]),
    ):  # fmt: skip
        env["AUTOML_CACHE"] = str(here / f"cache-{step}")
        done = subprocess.run([sys.executable, "-m", "automl", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert "left out" not in done.stderr
    assert "refit on every row" in done.stdout  # predict used the refit models, from the bucket
    assert len(pd.read_csv(here / "p.csv")) == 748
    load = (
        "import automl, sys; m = automl.load(sys.argv[1]); "
        "print(m.best_model_, len(m.predict(__import__('pandas').read_csv(sys.argv[2]))))"
    )
    env["AUTOML_CACHE"] = str(here / "cache-load")
    loaded = subprocess.run(
        [sys.executable, "-c", load, url, str(here / "blood.csv")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split()[-1] == "748"

    import boto3

    bucket = boto3.client("s3", **s3_bucket["client"])
    keys = [o["Key"] for o in bucket.list_objects_v2(Bucket=s3_bucket["bucket"],
                                                      Prefix="blood-run/")["Contents"]]  # fmt: skip
    assert {k.split("/")[1] for k in keys} >= {"run.json", "trials", "ensembles", "targets"}
    assert not any("/.incoming" in k or k.endswith(".lock") for k in keys)
    # Nothing of the run outside the caches on the driver's disk; no study file anywhere.
    local = {p.relative_to(here).parts[0] for p in here.rglob("*") if p.is_file()}
    assert local <= {"blood.csv", "slow.yaml", "p.csv"} | {f"cache-{s}" for s in
                     ("first", "resumed", "ensemble", "predict", "load")}  # fmt: skip
    assert not list(here.rglob("study.db"))
    storage.engine.dispose()


def _once_a_trial_runs(act: Callable[[], object], on_node: int | None = None) -> threading.Event:
    """Call `act` once, from a thread, as soon as a Ray worker runs a trial (on the node whose
    raylet is `on_node`, if given: a worker's parent is its node's raylet); the event is set
    when it has (waited for within 240 s)."""
    done = threading.Event()

    def watch() -> None:
        deadline = time.time() + 240
        while time.time() < deadline:
            time.sleep(0.2)
            for process in psutil.process_iter(["ppid", "cmdline"]):
                running = " ".join(process.info["cmdline"] or []).startswith("ray::ImplicitFunc")
                if running and on_node in (None, process.info["ppid"]):
                    act()
                    done.set()
                    return

    threading.Thread(target=watch, daemon=True).start()
    return done


def test_losing_the_worker_node_mid_trial_runs_the_trial_again_on_the_head(
    here: Path, cluster_without_shared_disk: dict
) -> None:
    """SIGKILL the worker node's raylet while a trial runs in one of its workers (a worker's
    parent is its node's raylet): Tune runs that trial again, on the head, and nothing
    half-written is left. After it, the cluster has only the head, until the next test adds a
    node."""
    cluster, tmp_path, blood = cluster_without_shared_disk, here, here / "blood.csv"
    spaces = [write_space(tmp_path, "slow.yaml", TWO_SECOND_TREES)]
    out = tmp_path / "lost-node"
    raylet = cluster["worker_raylet"]

    def kill_the_raylet() -> None:
        time.sleep(0.5)  # inside the trial's two-second fit
        os.kill(raylet, signal.SIGKILL)

    killer = _once_a_trial_runs(kill_the_raylet, on_node=raylet)
    result = _search(blood, out, spaces, "--workers", "2", "--trials", "4", "--cv", "0",
                     "--ray-address", cluster["address"], env=cluster["env"])  # fmt: skip
    killed = killer.wait(timeout=5)
    assert killed, "no trial started on the worker node"
    assert result.returncode == 0, result.stderr[-3000:]
    complete = _consistent(out)  # nothing half-written: every trial's files verified
    assert len(complete) == 4  # the interrupted trial ran again and finished
    assert not (out / ".incoming").exists()
    head = {t.user_attrs["node"] for t in complete if "transfer_bytes" not in t.user_attrs}
    assert len(head) == 1  # trials that finished after the loss all ran on the head
    numbers = sorted(t.number for t in complete)
    assert numbers == list(range(4))  # no trial recorded twice, none lost


def test_a_node_that_joins_mid_search_takes_trials_with_workers_auto(
    here: Path, cluster_without_shared_disk: dict
) -> None:
    """`--workers auto` asks Ray for the cluster's CPUs during the search: a worker node that
    joins once the first trial runs gets trials from then on, beside the nodes already there,
    and its trials' files travel home (it cannot see the run directory). Trials of about 8 s:
    a shorter trial goes to an idle warm worker before a new node's first worker has started
    (README, "Parallel and distributed: Ray")."""
    cluster, tmp_path, blood = cluster_without_shared_disk, here, here / "blood.csv"
    spaces = [write_space(tmp_path, "slow.yaml", EIGHT_SECOND_TREES)]
    out = tmp_path / "joined"
    before = _sees(tmp_path, cluster, blood)
    joiner = _once_a_trial_runs(cluster["join"])
    result = _search(blood, out, spaces, "--workers", "auto", "--trials", "8", "--cv", "0",
                     "--ray-address", cluster["address"], env=cluster["env"])  # fmt: skip
    joined = joiner.wait(timeout=60)
    assert joined, "no trial started, so no node joined"
    assert result.returncode == 0, result.stderr[-3000:]
    after = _sees(tmp_path, cluster, blood)
    new = set(after) - set(before)
    assert len(new) == 1 and not after[next(iter(new))]  # the new node cannot see the run
    complete = _consistent(out)
    assert len(complete) == 8
    on_new = [t for t in complete if t.user_attrs["node"] in new]
    assert len(on_new) >= 2, [t.user_attrs["node"][:8] for t in complete]
    assert all(t.user_attrs["transfer_bytes"] > 10_000 for t in on_new)  # shipped home
    assert not (out / ".incoming").exists()
