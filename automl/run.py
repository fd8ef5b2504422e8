"""The run directory: the unit a user keeps, from which ensembles, reports and predictions
are rebuilt without retraining anything.

    RUN_DIR/run.json            what was run: data hash, target, task, metric, space, seeds
    RUN_DIR/study.db            the optuna study (unless --storage points elsewhere)
    RUN_DIR/trials/<NNNN>/      config.json, encoder, model, val_pred.npy, test_pred.npy,
                                result.json, manifest.json (sha256 of each file)
    RUN_DIR/trials/<NNNN>/refit/ the model refit on every row, its encoder, refit.json,
                                manifest.json (only for members of the chosen model)
    RUN_DIR/ensembles/<method>/ weights.json, val_pred.npy, test_pred.npy, manifest.json
    RUN_DIR/leaderboard.csv, leaderboard.md, report.html
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from automl.errors import UserInputError
from automl.io import MANIFEST, check_can_write, read_json, verify

RUN_FILE = "run.json"
SKIPPED_ATTR = "skipped"  # a trial attribute: a dropped family's proposal that never ran
# A study attribute: the seconds a timed job left its ensemble step (recipes and refit).
ENSEMBLE_ALLOWANCE_ATTR = "ensemble_allowance_seconds"
REFIT_INFO = "refit.json"  # written last into a refit folder: its presence means complete
STUDY_FILE = "study.db"  # the run's own study, found beside run.json wherever the run now is
STUDY_NAME = "automl"  # the study's name in the run's own study.db


def mask_url(url: str) -> str:
    """Hide the password of a storage URL before it is logged or written anywhere."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def with_password(url: str, what: str) -> str:
    """A storage URL whose password is masked (`***`, as run.json and manifests hold it) with
    the password from AUTOML_STORAGE_PASSWORD, which keeps it out of every file."""
    if "***@" not in url:
        return url
    password = os.environ.get("AUTOML_STORAGE_PASSWORD")
    if password is None:
        raise UserInputError(
            f"{what}'s password is not stored; set AUTOML_STORAGE_PASSWORD or give the URL",
            settings=("storage",),
        )
    return url.replace("***@", f"{password}@", 1)


def searching_storage(url: str) -> Any:
    """The storage the search process writes through: a URL as optuna takes it, except that a
    SQLite study runs in write-ahead-log mode with `synchronous=NORMAL`. A commit then reaches
    the operating system without an fsync of its own: it survives a killed process (SIGKILL,
    out of memory), which is what resume promises; a power cut can lose the last few trials,
    which a resume runs again. Measured (benchmarks/executors.md): the local executor's overhead
    per trial over a bare optuna loop fell from 0.024 s to 0.010 s."""
    if not url.startswith("sqlite:"):
        return url
    import optuna
    from sqlalchemy import event

    storage = optuna.storages.RDBStorage(url)

    def pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections opened while creating the tables had the defaults
    return storage


class RunDir:
    """A run directory on disk, or in object storage (`s3://...`) through a local cache that
    is brought up to date when the run is opened (`run_store`); `publish` sends what a
    command wrote back to the bucket (a no-op on disk)."""

    def __init__(self, path: str | Path, storage_url: str | None = None) -> None:
        from automl.run_store import local_run

        local, self.mirror = local_run(path)
        self.location = str(path) if self.mirror is not None else str(Path(path).resolve())
        self.path = local.resolve()  # absolute: Ray workers run in folders of their own
        self.storage_url = storage_url  # the full URL when the caller has it (run.json masks it)

    def publish(self, *paths: Path) -> None:
        """Send the run's files (or those under `paths`) to its object storage, if it has one."""
        if self.mirror is not None:
            self.mirror.publish(*paths)

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def trials_dir(self) -> Path:
        return self.path / "trials"

    def trial_dir(self, number: int) -> Path:
        return self.trials_dir / f"{number:04d}"

    def refit_dir(self, number: int) -> Path:
        """A trial's models refit on every row (`automl.refit`), beside the search's own."""
        return self.trial_dir(number) / "refit"

    def has_refit(self, number: int) -> bool:
        return (self.refit_dir(number) / REFIT_INFO).exists()

    def ensemble_dir(self, method: str) -> Path:
        return self.path / "ensembles" / method

    def default_storage(self) -> str:
        """The run's own SQLite study, `study.db` in the run directory as it is now."""
        return f"sqlite:///{self.path / STUDY_FILE}"

    def own_study(self) -> bool:
        """Whether the study is the run's own `study.db` (not a database elsewhere)."""
        if self.mirror is not None:  # a run in object storage keeps its study in a database
            return False
        url = self.info().get("storage")
        if url is None:
            return True
        # Runs from before the study was found relative to the run: an absolute path to a
        # study.db that is not there any more, when the run directory holds one.
        path = url.removeprefix("sqlite:///")
        return (
            url.startswith("sqlite:///")
            and path.endswith(f"/{STUDY_FILE}")
            and not Path(path).exists()
            and (self.path / STUDY_FILE).exists()
        )

    def study_name(self) -> str:
        """The study's name in its database: `automl` in the run's own study.db; a name of
        its own in a database that other runs may share (PostgreSQL)."""
        return str(self.info().get("study_name", STUDY_NAME)) if self.exists() else STUDY_NAME

    def exists(self) -> bool:
        return self.run_file.exists()

    def info(self) -> dict[str, Any]:
        if not self.exists():
            raise UserInputError(
                f"{self.path}: not a run directory (no {RUN_FILE}); run `automl search` first"
            )
        return read_json(self.run_file)

    def storage(self) -> str:
        """The study's storage URL; a password is read from AUTOML_STORAGE_PASSWORD if masked.
        The run's own study.db is found where the run directory is now, so a run can be moved,
        copied or downloaded; in a directory that cannot be written, it is opened read-only."""
        if self.storage_url:
            return self.storage_url
        if self.own_study():
            if os.access(self.path, os.W_OK):
                return self.default_storage()
            # SQLite writes -wal and -shm files beside the database even to read it; an
            # immutable database needs none (a finished search left nothing in its log).
            return f"sqlite:///file:{self.path / STUDY_FILE}?mode=ro&immutable=1&uri=true"
        return with_password(self.info()["storage"], f"{self.run_file}: the storage URL")

    def check_out_path(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise UserInputError(
                f"out {self.path}: is a file; expected a directory for the run", settings=("out",)
            )
        check_can_write(self.path, "out")


@dataclass
class TrialRecord:
    """What the leaderboard and the ensemble need of one trial."""

    number: int
    family: str
    status: str  # complete | failed | pruned | interrupted | running
    val_score: float | None
    test_score: float | None
    fit_seconds: float | None
    params: dict[str, Any]
    error: str = ""
    extra: dict[str, float] | None = None
    predict_seconds: float | None = None
    n_params: int | None = None
    started: float | None = None  # seconds since the epoch
    finished: float | None = None

    @property
    def name(self) -> str:
        return f"t{self.number:04d}-{self.family}"

    @property
    def score(self) -> float:
        """The validation score of a completed trial (the caller has filtered for one)."""
        if self.val_score is None:
            raise ValueError(f"trial {self.number} has no validation score ({self.status})")
        return self.val_score


def study_backend(study: Any) -> Any:
    """The storage behind the study, under optuna's cache layer: the RDBStorage of a database
    URL, whose engine and sessions optuna's public API does not expose."""
    storage = study._storage
    return getattr(storage, "_backend", storage)


def close_study(study: Any) -> None:
    """Close the study's database connections now, not at garbage collection: a notebook that
    runs many searches would otherwise hold a connection per study (a file handle, or a
    PostgreSQL slot), and a SQLite study keeps its -wal and -shm files beside study.db until
    its last connection closes."""
    engine = getattr(study_backend(study), "engine", None)
    if engine is not None:
        engine.dispose()


@contextmanager
def opened_study(run: RunDir) -> Iterator[Any]:
    """The run's optuna study, for reading; its connections close on leaving the block.
    Raises KeyError when the database holds no study of the run."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=run.study_name(), storage=run.storage())
    try:
        yield study
    finally:
        close_study(study)


def ensemble_allowance(run: RunDir) -> float | None:
    """The seconds a search with a time budget left the ensemble step (building the recipes
    and the refit), or None: no budget, or no study."""
    try:
        with opened_study(run) as study:
            value = study.user_attrs.get(ENSEMBLE_ALLOWANCE_ATTR)
    except KeyError:
        return None
    return float(value) if value is not None else None


def load_trials(run: RunDir) -> list[TrialRecord]:
    """Every trial of the run's study, as recorded in the database."""
    try:
        with opened_study(run) as study:
            trials = study.get_trials(deepcopy=False)
    except KeyError:
        return []
    records = []
    for trial in trials:
        attrs = trial.user_attrs
        state = trial.state.name
        if attrs.get(SKIPPED_ATTR):  # a dropped family's proposal, never run (`search.driver`)
            continue
        if attrs.get("interrupted"):
            status = "interrupted"
        elif state == "COMPLETE":
            status = "complete"
        elif state == "FAIL":
            status = "failed"
        elif state == "RUNNING":
            status = "running"
        elif state == "PRUNED":
            status = "pruned"
        else:
            continue
        params = {k.split(".", 1)[1]: v for k, v in trial.params.items() if "." in k}
        records.append(
            TrialRecord(
                number=trial.number,
                family=str(trial.params.get("family", attrs.get("family", "?"))),
                status=status,
                val_score=trial.value if state == "COMPLETE" else None,
                test_score=attrs.get("test_score"),
                fit_seconds=attrs.get("fit_seconds"),
                params=params,
                error=attrs.get("error", ""),
                extra=attrs.get("extra_scores"),
                predict_seconds=attrs.get("predict_seconds"),
                n_params=attrs.get("n_params"),
                started=trial.datetime_start.timestamp() if trial.datetime_start else None,
                finished=trial.datetime_complete.timestamp() if trial.datetime_complete else None,
            )
        )
    return records


def load_predictions(run: RunDir, number: int, part: str) -> np.ndarray:
    """A trial's saved validation or test predictions, checked against its manifest."""
    return np.load(verify(run.trial_dir(number), f"{part}_pred.npy"), allow_pickle=False)


class RunLock:
    """An exclusive lock on the run directory: a second search there is refused, not interleaved."""

    def __init__(self, run: RunDir) -> None:
        self.path = run.path / ".lock"
        self.handle: Any = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")  # held for the whole search, closed in __exit__
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise UserInputError(
                f"{self.path.parent}: another `automl search` is running on this run directory; "
                "wait for it or use another out",
                settings=("out",),
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


# --------------------------------------------------------------------------------------------
# A trial's model files: written by the search (`automl.search.evaluate`), read by predict,
# the report and the Keras export, which import them from here, never from the search.

ENCODER_FILE = "encoder.joblib"


def fold_name(k: int) -> str:
    return f"fold{k}"


class FoldAverage:
    """The K cross-fitted models of a trial, predicting as their mean."""

    def __init__(self, models: list[Any]) -> None:
        self.models = models

    def predict(self, x: np.ndarray) -> np.ndarray:
        return sum(m.predict(x) for m in self.models) / len(self.models)


def model_dirs(directory: Path) -> list[Path]:
    """The folders holding a trial's model files: the trial's own, or one per fold under cv
    (each fold's manifest is itself checked against the trial's)."""
    folds = read_json(verify(directory, "config.json")).get("folds")
    if not folds:
        return [directory]
    for k in range(folds):
        verify(directory, f"{fold_name(k)}/{MANIFEST}")
    return [directory / fold_name(k) for k in range(folds)]


def load_trial_model(directory: Path) -> Any:
    """A trial's model (the mean of its folds under cv), every file checked against a manifest."""
    from automl.models import FAMILIES

    family = FAMILIES[read_json(verify(directory, "config.json"))["family"]]
    dirs = model_dirs(directory)
    if dirs == [directory]:
        return family.load(directory)
    return FoldAverage([family.load(d) for d in dirs])
