"""What one search is asked to do: `SearchConfig`, checked whole when it is made.

`run_search` takes one; the CLI maps its flags onto the fields, the estimators their
parameters. A bad value raises `UserInputError` naming the field (its `settings`), before
anything is read or written; the CLI prints the same message with its flag names instead
(`automl.cli.flag_names`), so the library never names a command-line flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from automl.data import DataSource
from automl.errors import UserInputError
from automl.search.proposers import BACKENDS
from automl.search.pruning import PRUNERS
from automl.search.ray_executor import AUTO_WORKERS, SCHEDULERS

DEFAULT_TRIALS = 50
DEFAULT_MAX_FAILURES_IN_A_ROW = 20
EXECUTORS = ("local", "ray")


def _installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (Ray takes seconds)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a stubbed-out module
        return False


def _bad(message: str, *settings: str) -> UserInputError:
    return UserInputError(message, settings=settings)


@dataclass(eq=False)
class SearchConfig:
    """One search. `out` is the run directory (created, or resumed when it holds this same
    search); `spaces` default to the bundled space the data choose. It stops after `trials`
    finished trials or `time_budget` seconds of the whole job (search, ensembles, refit and
    predicting), whichever comes first (50 trials when neither is given), or after
    `max_failures_in_a_row` failed trials in a row (None: never)."""

    data: DataSource
    target: str
    out: str | Path
    spaces: Sequence[str | Path] | None = None
    sampler: str | None = None  # None: the backend's model-based one
    backend: str = "optuna"
    trials: int | None = None
    time_budget: float | None = None
    seed: int = 0
    test_size: float = 0.2
    test_data: DataSource | None = None
    storage: str | None = None  # SQLAlchemy URL of the study; None: RUN_DIR/study.db
    task: str | None = None
    metric: str | None = None
    threads: int | None = None  # per trial; None: every core
    trial_timeout: float | None = None
    cv: int | str = "auto"
    # Cross-fitting repeated with other shuffles, the out-of-fold predictions averaged (as
    # AutoGluon's repeated bagging); "auto": `loop.choose_repeats`.
    cv_repeats: int | str = "auto"
    executor: str = "local"
    workers: int | str = 1  # trials at a time on Ray; "auto": as many as the cluster has CPUs for
    cpus_per_trial: int = 1
    gpus_per_trial: float = 0.0
    ray_address: str | None = None
    scheduler: str = "fifo"
    pruner: str = "median"
    text_columns: list[str] | None = None
    other_targets: list[str] | None = None
    max_failures_in_a_row: int | None = DEFAULT_MAX_FAILURES_IN_A_ROW
    # When the job's clock started (seconds since the epoch; None: when the search starts).
    # The CLI gives its process's start, so the budget covers Python's start and the imports.
    job_started: float | None = None
    # Processes the job starts after the search (the CLI: `automl ensemble` and `automl
    # predict`), each paying its start and imports, which the time budget's reserve keeps.
    later_processes: int = 0
    # Resident memory of the search and its trial processes together, MB (`search.memory`):
    # None: 75% of the machine's memory; 0: no limit. The local executor keeps it.
    memory_limit_mb: float | None = None

    def __post_init__(self) -> None:
        if self.sampler is None and self.backend in BACKENDS:
            self.sampler = BACKENDS[self.backend].samplers[0]
        self._check_search()
        self._check_executor()
        if self.trials is None and self.time_budget is None:
            self.trials = DEFAULT_TRIALS

    @property
    def chosen_sampler(self) -> str:
        assert self.sampler is not None  # set in __post_init__
        return self.sampler

    def _check_search(self) -> None:
        cv = self.cv
        valid = cv == "auto" or (isinstance(cv, int) and (cv == 0 or 2 <= cv <= 20))
        if isinstance(cv, bool) or not valid:
            raise _bad(
                "cv must be auto, 0 (one holdout split) or a number of folds from 2 to 20; "
                f"got {cv!r}",
                "cv",
            )
        repeats = self.cv_repeats
        if isinstance(repeats, bool) or not (
            repeats == "auto" or (isinstance(repeats, int) and 1 <= repeats <= 10)
        ):
            raise _bad(
                f"cv_repeats must be auto or a whole number from 1 to 10; got {repeats!r}",
                "cv_repeats",
            )
        if self.other_targets and cv not in ("auto", 0):
            raise _bad(
                "cv: cross-fitting takes one target; several targets keep one holdout split "
                "(cv 0 or auto)",
                "cv",
            )
        if self.backend not in BACKENDS:
            raise _bad(
                f"backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}", "backend"
            )
        samplers = BACKENDS[self.backend].samplers
        if self.sampler not in samplers:
            raise _bad(
                f"sampler must be one of {', '.join(samplers)} with backend {self.backend}; "
                f"got {self.sampler!r}",
                "sampler",
                "backend",
            )
        if self.trials is not None and self.trials < 1:
            raise _bad(f"trials must be a positive whole number; got {self.trials}", "trials")
        for name in ("time_budget", "trial_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise _bad(f"{name} must be a positive number of seconds; got {value}", name)
        if not 0 <= self.test_size < 1:
            raise _bad(
                f"test_size must be from 0 (no test part) to below 1; got {self.test_size}",
                "test_size",
            )
        if self.memory_limit_mb is not None and not self.memory_limit_mb >= 0:
            raise _bad(
                "memory_limit_mb must be a number of MB, or 0 for no limit; "
                f"got {self.memory_limit_mb!r}",
                "memory_limit_mb",
            )
        if self.later_processes < 0:
            raise _bad(
                f"later_processes must be 0 or more; got {self.later_processes}",
                "later_processes",
            )
        if self.max_failures_in_a_row is not None and self.max_failures_in_a_row < 1:
            raise _bad(
                "max_failures_in_a_row must be a positive whole number (None: never stop); "
                f"got {self.max_failures_in_a_row}",
                "max_failures_in_a_row",
            )
        if self.pruner not in PRUNERS:
            raise _bad(f"pruner must be one of {', '.join(PRUNERS)}; got {self.pruner!r}", "pruner")

    def _check_executor(self) -> None:
        if self.executor not in EXECUTORS:
            raise _bad(
                f"executor must be one of {', '.join(EXECUTORS)}; got {self.executor!r}",
                "executor",
            )
        for name in ("workers", "cpus_per_trial"):
            value = getattr(self, name)
            if value == AUTO_WORKERS and name == "workers":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                also = " or auto" if name == "workers" else ""
                raise _bad(f"{name} must be a positive whole number{also}; got {value!r}", name)
        if self.gpus_per_trial < 0:
            raise _bad(f"gpus_per_trial must be 0 or more; got {self.gpus_per_trial}",
                       "gpus_per_trial")  # fmt: skip
        if self.scheduler not in SCHEDULERS:
            raise _bad(
                f"scheduler must be one of {', '.join(SCHEDULERS)}; got {self.scheduler!r}",
                "scheduler",
            )
        if self.executor == "local":
            ray_only = {
                "workers": self.workers != 1,
                "ray_address": self.ray_address is not None,
                "scheduler": self.scheduler != "fifo",
                "gpus_per_trial": self.gpus_per_trial != 0,
            }
            given = [name for name, set_ in ray_only.items() if set_]
            if given:
                raise _bad(f"{', '.join(given)}: needs executor ray", *given, "executor")
        elif self.trial_timeout is not None:
            raise _bad(
                "trial_timeout is for the local executor; Ray runs each trial in its own "
                "worker already",
                "trial_timeout",
            )
        elif not _installed("ray"):
            raise _bad(
                "executor ray needs Ray, which is not installed: pip install 'automl[ray]'",
                "executor",
            )
