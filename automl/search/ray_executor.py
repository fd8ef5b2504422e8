"""The Ray executor: trials run in parallel on Ray Tune, locally or on a Ray cluster.

Ray Tune runs the trials (placement, `--workers` at a time, retries when a worker dies, the
ASHA scheduler); our `StudySearcher` is its searcher. It asks the same `StudyDriver` as the
local executor for configurations (optuna TPE/random or hyperopt, from the same study) and
records every outcome there, so the optuna study stays the one source of truth whichever
executor ran a trial, and a killed search resumes the same way. This module and `ray_files`
(a trial's files on a cluster that shares no disk) are the only ones that import `ray`.

Why not Ray's `OptunaSearch`: it keeps its own map from Ray trials to optuna trials and tells
the study only the objective, so test scores, artifact lists, failures and the hyperopt
backend would need a second bookkeeping path. One driver for both executors avoids that.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from typing import TYPE_CHECKING, Any

from automl.errors import UserInputError, stopped_by
from automl.search.driver import SearchSettings, StudyDriver
from automl.search.evaluate import TrialContext, TrialResult, evaluate
from automl.search.outcome import TrialOutcome, failed, outcome_of

if TYPE_CHECKING:
    from automl.search.ray_files import Bucket

SCHEDULERS = ("fifo", "asha")
AUTO_WORKERS = "auto"  # `--workers auto`
# With `--workers auto` the searcher holds back what the cluster has no CPU for; Tune's own
# limit only needs to be above any cluster's size (without one, Tune keeps a single trial
# pending and never places a second one on a node that joined).
AUTO_LIMIT = 100_000
RETRIES = 1  # a trial whose worker dies runs once more, then counts as failed


# One context per search in each worker process: Tune hands every trial a fresh copy of the
# context, and the copy's cache of encoded matrices would be rebuilt for every trial.
_WORKER_CONTEXTS: dict[str, TrialContext] = {}


def _trainable(
    config: dict[str, Any],
    ctx: TrialContext,
    cpus: int,
    sink: Any,
    driver_node: str,
    bucket: Bucket | None = None,
) -> None:
    """Runs in a Ray worker: evaluate one configuration and report the outcome to Tune. On
    another node than the driver's, the trial's files travel to the run directory through Ray,
    or straight to the run's bucket (`ray_files`): no disk needs to be shared."""
    import ray
    from ray import tune

    from automl.search.ray_files import evaluate_away

    ctx = _WORKER_CONTEXTS.setdefault(f"{ctx.run.path}:{ctx.deadline}", ctx)
    os.environ.setdefault("OMP_NUM_THREADS", str(cpus))
    if not ray.get_gpu_ids():  # a trial that asked for no GPU takes none from those that did
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    ctx.threads = cpus
    node = ray.get_runtime_context().get_node_id()
    metric, y_val = ctx.metric, ctx.y_val

    def on_epoch(epoch: int, val_pred: Any) -> None:
        tune.report({"objective": metric.error(y_val, val_pred), "epoch": epoch, "node": node})

    ctx.on_epoch = None if ctx.cv else on_epoch
    # Reported, never raised: Tune must not retry a trial that failed on its own.
    if node == driver_node:
        outcome = outcome_of(evaluate, config["number"], config["flat"], ctx)
        where: dict[str, Any] = {"node": node}
    else:
        outcome, moved = evaluate_away(config["number"], config["flat"], ctx, sink, bucket)
        where = {"node": node, "transfer_seconds": moved.seconds, "transfer_bytes": moved.bytes,
                 "transfer_to": "bucket" if bucket is not None else "driver"}  # fmt: skip
    if outcome.result is None:
        report = {"objective": math.inf, "status": outcome.status, "error": outcome.error}
        tune.report(report | where)
        return
    result = outcome.result
    objective = -result.val_score if metric.greater_is_better else result.val_score
    tune.report(
        {
            "objective": objective,
            "status": "complete",
            "result_json": json.dumps(result.__dict__),  # Tune would flatten a nested dict
        }
        | where
    )


def _searcher_class() -> type:
    from ray.tune.search import Searcher

    class StudySearcher(Searcher):
        """Ray Tune's view of our study: suggest = driver.ask, complete = record."""

        def __init__(self, driver: StudyDriver, capacity: Any = None) -> None:
            super().__init__(metric="objective", mode="min")
            self.driver = driver
            self.capacity = capacity  # `--workers auto`: trials the cluster has CPUs for now
            self.live: dict[str, tuple[Any, dict[str, Any]]] = {}
            self.last: dict[str, dict[str, Any]] = {}
            self.stopped: str | None = None
            self.fatal: str | None = None  # a worker's disk or database failed: stop

        def __getstate__(self) -> dict[str, Any]:
            # Tune pickles its searcher for experiment checkpoints; the study is our checkpoint
            # (resume goes through it), so only the plain settings travel.
            return {"_metric": self._metric, "_mode": self._mode}

        def save_to_dir(self, *args: Any, **kwargs: Any) -> None:
            pass  # the study already holds every trial

        def suggest(self, trial_id: str) -> Any:  # a configuration, None, or Searcher.FINISHED
            reason = self.driver.stop_reason(in_flight=len(self.live))
            if self.fatal is not None:
                reason = "fatal"
            if reason is not None:
                if not self.live:
                    self.stopped = reason
                    return Searcher.FINISHED
                return None  # wait for the running trials before finishing
            if self.capacity is not None and len(self.live) >= self.capacity():
                return None  # a trial proposed now would only wait for a CPU
            trial, flat = self.driver.ask()
            self.live[trial_id] = (trial, flat)
            return {"number": trial.number, "flat": flat}

        def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
            self.last[trial_id] = result

        def on_trial_complete(
            self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
        ) -> None:
            if trial_id not in self.live:
                return
            trial, flat = self.live.pop(trial_id)
            last = self.last.pop(trial_id, None)
            result = result or last or {}
            node = result.get("node")
            attrs = {"node": node} if node else {}
            for key in ("transfer_seconds", "transfer_bytes", "transfer_to"):  # files moved
                if result.get(key) is not None:
                    attrs[key] = result[key]
            status = result.get("status")
            if status == "complete":
                outcome = TrialOutcome(
                    "complete", result=TrialResult(**json.loads(result["result_json"]))
                )
            elif status in ("failed", "fatal"):
                # A fatal one is recorded as failed, then stops the search once Tune returns
                # (raising inside Tune's callback would only be wrapped in Tune's own error).
                outcome = failed(result.get("error", "failed"))
                if status == "fatal":
                    self.fatal = outcome.error
            elif error:
                outcome = failed(f"the Ray worker running it died ({RETRIES + 1} attempts)")
            else:  # stopped early by the scheduler after reporting epochs
                epoch, value = int(result.get("epoch", 0)), result.get("objective")
                outcome = TrialOutcome("pruned", step=epoch, value=value)
            self.driver.record(trial, flat, outcome, **attrs)

    return StudySearcher


def connect(address: str | None, cpus: int | None) -> None:
    """Join a cluster at `address`, or start a quiet local Ray (no dashboard, no log flood)."""
    import logging

    import ray

    if ray.is_initialized():
        return
    logging.getLogger("ray").setLevel(logging.ERROR)  # our trial lines are the progress
    try:
        if address:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        else:
            ray.init(
                address="local",  # a new Ray of our own, never one started by someone else
                num_cpus=cpus,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
                configure_logging=True,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"ray_address {address}" if address else "local Ray"
        raise UserInputError(
            f"{where}: cannot start or join Ray ({exc})", settings=("ray_address",)
        ) from None


def _capacity(cpus_per_trial: int, every: float = 2.0) -> Any:
    """How many trials the cluster has CPUs for, asked of Ray at most every `every` seconds:
    a node that joins during the search is used from its next trial on."""
    import ray

    last = [0.0, 1]

    def capacity() -> int:
        if time.monotonic() - last[0] > every:
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            last[:] = [time.monotonic(), max(1, int(cpus // cpus_per_trial))]
        return int(last[1])

    return capacity


def run_on_ray(settings: SearchSettings, **options: Any) -> tuple[StudyDriver, str | None]:
    """Run the search on Ray Tune (options: `_tune`'s); returns the driver and why it stopped."""
    # In a Ray job the working_dir (our cwd) is extracted again whenever a worker sets up its
    # runtime env, which leaves this process in a deleted folder, and Tune needs a real cwd:
    # work from the run directory (absolute; it outlives the search) until the end.
    here = os.getcwd()
    os.chdir(settings.run.path)
    try:
        return _tune(settings, **options)
    finally:
        with contextlib.suppress(OSError):
            os.chdir(here)


def _tune(
    settings: SearchSettings,
    *,
    workers: int | str,
    cpus_per_trial: int,
    gpus_per_trial: float,
    address: str | None,
    scheduler: str,
) -> tuple[StudyDriver, str | None]:
    run, ctx = settings.run, settings.ctx
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # The study is the record of every trial and the checkpoint a search resumes from: Tune's
    # per-trial JSON/CSV/TensorBoard loggers and its periodic experiment snapshot only cost the
    # driver CPU that two workers on two cores need (see benchmarks/executors.md).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "3600")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    auto = workers == AUTO_WORKERS
    cpus = os.cpu_count() or 1
    connect(address, None if address else max(cpus, 0 if auto else int(workers) * cpus_per_trial))
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from automl.search.ray_files import Bucket, clear_staging, start_sink, storage_env

    where = f" at {address}" if address else " (local)"
    driver = StudyDriver(settings, executor=f"ray{where}", workers=workers)
    searcher = _searcher_class()(driver, _capacity(cpus_per_trial) if auto else None)
    resources = {"cpu": cpus_per_trial} | ({"gpu": gpus_per_trial} if gpus_per_trial else {})
    # A run in object storage: trials on other nodes write to the bucket themselves; else
    # they send their files to the sink on this node.
    bucket = Bucket(run.location, storage_env()) if run.mirror is not None else None
    sink = start_sink(run) if bucket is None else None
    here = ray.get_runtime_context().get_node_id()
    trainable = tune.with_resources(
        tune.with_parameters(
            _trainable, ctx=ctx, cpus=cpus_per_trial, sink=sink, driver_node=here, bucket=bucket
        ),  # fmt: skip
        resources,
    )
    chosen = (
        ASHAScheduler(time_attr="training_iteration", grace_period=2, reduction_factor=3,
                      max_t=10_000)
        if scheduler == "asha"
        else FIFOScheduler()
    )  # fmt: skip
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=chosen,
            metric="objective",
            mode="min",
            num_samples=-1,
            max_concurrent_trials=AUTO_LIMIT if auto else int(workers),
            reuse_actors=True,  # a worker keeps its imports (TensorFlow: ~7 s) across trials
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str((run.path / "ray").resolve()),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=RETRIES),
            log_to_file=True,
        ),
    )
    try:
        tuner.fit()
    finally:
        ray.shutdown()  # stops a local Ray; on a cluster, only disconnects this driver
        clear_staging(run)  # a node lost mid-transfer leaves its folder; nothing arrives now
    if searcher.fatal is not None:
        raise stopped_by(f"{searcher.fatal} (in a Ray worker)")
    return driver, searcher.stopped or driver.stop_reason()
