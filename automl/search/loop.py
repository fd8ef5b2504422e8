"""The search loop: ask a sampler, evaluate, tell the study; resumable and budgeted.

The optuna study (SQLite in the run directory by default) is the one source of truth. Optuna's
samplers propose through define-by-run; hyperopt (`HyperoptProposer`) and keras-tuner's oracles
(`KerasTunerProposer`) propose points that are enqueued into the same study. Networks report
every epoch to the study's pruner. Each family's default configuration is enqueued
first. A trial left RUNNING by a killed process is marked interrupted and re-run; trials
that finished are never repeated. The time budget counts time spent by earlier attempts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from automl.data import Schema, data_fingerprint, load_dataset, source_name
from automl.ensemble.build import save_targets
from automl.errors import UserInputError, is_fatal, one_line, stopped_by
from automl.io import write_json_atomic
from automl.metrics import get_metric
from automl.models import FAMILIES
from automl.resources import space_path
from automl.run import (
    STUDY_NAME,
    RunDir,
    RunLock,
    close_study,
    mask_url,
    searching_storage,
    with_password,
)
from automl.run_store import is_remote
from automl.search.config import SearchConfig
from automl.search.driver import SearchSettings, StudyDriver
from automl.search.evaluate import TrialContext, evaluate
from automl.search.isolation import KerasWorker, evaluate_isolated
from automl.search.memory import MemoryGuard, default_limit_mb
from automl.search.outcome import failed, outcome_of
from automl.search.progress import Progress
from automl.search.pruning import make_pruner
from automl.space import SearchSpace


@dataclass
class SearchSummary:
    run_dir: Path
    finished: int
    failed: int
    best_value: float | None
    best_trial: int | None
    wall_seconds: float
    stop_reason: str | None = None  # trials | budget | failures | dropped (every family)
    dropped: dict[str, str] = field(default_factory=dict)  # family -> why it was dropped


def make_sampler(sampler: str, backend: str, seed: int) -> Any:
    import optuna

    if sampler == "tpe" and backend == "optuna":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # multivariate/group are marked experimental
            # constant_liar: trials still running count as the worst value seen, so parallel
            # workers are not all sent to the same promising region.
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, n_startup_trials=10, constant_liar=True
            )
    # Random, and the hyperopt backend (whose points are all enqueued, never sampled here).
    return optuna.samplers.RandomSampler(seed=seed)


def _open_study(
    storage: str,
    name: str,
    direction: Literal["maximize", "minimize"],
    sampler: Any,
    pruner: str = "none",
) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(
            storage=searching_storage(storage),
            study_name=name,
            direction=direction,
            sampler=sampler,
            pruner=make_pruner(pruner),
            load_if_exists=True,
        )
    # SQLAlchemy raises many kinds for a bad URL or an unreachable server.
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(
            f"storage {mask_url(storage)}: cannot open the study ({first})",
            settings=("storage",),
        ) from None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in (
        "automl",
        "optuna",
        "hyperopt",
        "scikit-learn",
        "lightgbm",
        "keras",
        "tensorflow",
        "numpy",
        "pandas",
    ):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def default_space(schema: Schema) -> tuple[str, str]:
    """The bundled space for data given no `spaces`, and why: images get the image bundle
    (CNNs), text columns the text bundle, anything else the tabular one."""
    if schema.image_shape:
        return "images", "the data are images"
    if schema.text:
        return "text", f"text column(s) {', '.join(schema.text)}"
    return "tabular", "tabular data"


CV_FOLDS = 5
CV_MAX_ROWS = 100_000


def choose_cv(schema: Schema, y_train: Any, task: str, several_targets: bool) -> tuple[int, str]:
    """Folds of cross-fitting for `cv="auto"` (0: one holdout split), and why.

    Tabular data up to 100,000 training rows are cross-fitted in 5 folds: every training row
    then validates once, so trials are ranked and ensembles fitted on all of them instead of
    one 20% part, and predictions average 5 models that each saw 80% of the rows (bagging).
    Measured on eleven unseen datasets at 120 s, this took the mean rank among six systems from
    3.27 (holdout) to 2.27, ahead of AutoGluon best_quality. Larger tables, images and text
    keep one holdout split: a trial there already costs minutes, and 5x fewer trials would
    cost more than the steadier ranking gains. Every fold must hold every class, so a class
    with fewer than 5 training rows lowers the folds (to 2 at least), or keeps one split."""
    train_rows = len(y_train)
    if several_targets:
        return 0, "several targets (cross-fitting supports one)"
    if schema.image_shape:
        return 0, "images: each network trial costs minutes; one holdout split"
    if schema.text:
        return 0, "text columns: each network trial is slow; one holdout split"
    if train_rows > CV_MAX_ROWS:
        return 0, f"{train_rows} training rows > {CV_MAX_ROWS}: one holdout split"
    why = f"{train_rows} training rows <= {CV_MAX_ROWS}: every row validates once"
    if task != "regression":
        rarest = int(np.bincount(np.asarray(y_train, dtype=int)).min())
        if rarest < 2:
            return 0, "a class has fewer than 2 training rows: one holdout split"
        if rarest < CV_FOLDS:
            return rarest, f"{why}; the rarest class has {rarest} rows"
    elif train_rows < 2 * CV_FOLDS:
        return 0, f"{train_rows} training rows: one holdout split"
    return CV_FOLDS, why


# Repeated cross-fitting (`cv_repeats`), as AutoGluon bags in repeats: measured on five small
# shared sets on a development split at 120 s (benchmarks/cv_repeats_dev.md), drawing the
# folds twice won on 2 and lost on 3: each trial costs twice the fits, so fewer configurations
# are tried. "auto" therefore draws them once; `cv_repeats` N asks for more.
REPEAT_MAX_ROWS = 2_000
AUTO_REPEATS = 1


def choose_repeats(cv: int, train_rows: int) -> tuple[int, str]:
    """How many times `cv="auto"`'s folds are drawn (each with another shuffle), and why."""
    if not cv or train_rows > REPEAT_MAX_ROWS or AUTO_REPEATS == 1:
        return 1, ""
    return AUTO_REPEATS, f"{train_rows} training rows <= {REPEAT_MAX_ROWS}: {AUTO_REPEATS} repeats"


def run_search(
    config: SearchConfig | None = None,
    /,
    *,
    progress: Callable[[str], None] | None = None,
    argv: Sequence[str] | None = None,
    **options: Any,
) -> SearchSummary:
    """Run the search `config` describes (or a `SearchConfig(**options)`): record every trial
    in the run directory `config.out`; running it again resumes.

    `progress` receives each line of the log (default: the terminal, with a live status
    line); `argv` is recorded in run.json. Raises `UserInputError` for bad input, before
    anything is written, and `SearchStopped` when the study's database or the disk fails
    (finished trials stay recorded)."""
    c = config if config is not None else SearchConfig(**options)
    started = c.job_started if c.job_started is not None else time.time()
    live = Progress() if progress is None else None
    say = progress or live.say  # type: ignore[union-attr]
    data, target, out, spaces, seed = c.data, c.target, c.out, c.spaces, c.seed
    test_data, test_size, other_targets, cv = c.test_data, c.test_size, c.other_targets, c.cv
    sampler, backend, storage = c.chosen_sampler, c.backend, c.storage
    if is_remote(out) and storage is None:
        raise UserInputError(
            f"out {out}: a run kept in a bucket keeps its study in a database that every "
            "machine reaches (SQLite needs a local disk with file locks); give storage a "
            "postgresql:// URL",
            settings=("out", "storage"),
        )
    run = RunDir(out)
    run.check_out_path()
    dataset = load_dataset(
        data,
        target,
        task=c.task,
        test_data=test_data,
        test_size=test_size,
        seed=seed,
        text_columns=c.text_columns,
        other_targets=other_targets,
    )
    space_choice = "given"
    if spaces:
        space_files = [str(space_path(s)) for s in spaces]
    else:
        bundle, why = default_space(dataset.schema)
        say(f"search space: the bundled {bundle!r} ({why}); pass a space to choose another")
        space_files = [str(space_path(bundle))]
        space_choice = f"the bundled {bundle!r}, chosen by the data ({why})"
    space = SearchSpace.from_files(space_files)
    data_name = source_name(data)
    check_families_fit_data(space, dataset.schema, data_name)
    chosen_metric = get_metric(c.metric, dataset.task)
    if storage is not None:  # a password given as *** comes from AUTOML_STORAGE_PASSWORD
        storage = with_password(storage, "storage")
    storage_url = storage or run.default_storage()
    resuming = run.exists()
    cv_choice = "given"
    if cv == "auto":
        y_train = np.concatenate([dataset.y_fit, dataset.y_val])
        cv, why = choose_cv(dataset.schema, y_train, dataset.task, bool(other_targets))
        cv_choice = f"auto: {why}"
        if resuming:  # the folds the run was started with
            cv = int(run.info().get("cv", cv))
        else:
            say(
                f"validation: {f'{cv}-fold cross-fitting' if cv else 'one holdout split'} "
                f"({why}); the cv setting chooses"
            )
    assert isinstance(cv, int)
    repeats = c.cv_repeats
    if not cv or (repeats == "auto" and cv_choice == "given"):  # folds given: those, once
        repeats = 1
    elif repeats == "auto":
        repeats, why = choose_repeats(cv, len(dataset.y_fit) + len(dataset.y_val))
        if resuming:
            repeats = int(run.info().get("cv_repeats") or 1)
        elif repeats > 1:
            say(f"cross-fitting repeated {repeats} times ({why}); the cv_repeats setting chooses")
    assert isinstance(repeats, int)

    identity = {
        "data": data_name,
        "data_sha256": data_fingerprint(data),
        "test_data": source_name(test_data) if test_data is not None else None,
        "test_data_sha256": data_fingerprint(test_data) if test_data is not None else None,
        "target": target,
        "task": dataset.task,
        "metric": chosen_metric.name,
        "seed": seed,
        "test_size": test_size,
        "cv": cv,
        "cv_repeats": repeats,
        "other_targets": list(other_targets) if other_targets else None,
    }
    if resuming:
        previous = run.info()
        # Paths may differ between machines or working folders; the bytes may not.
        changed = [
            k
            for k, v in identity.items()
            if k not in ("data", "test_data") and previous.get(k) != v
        ]
        if changed:
            raise UserInputError(
                f"{run.path}: holds a search with different {', '.join(changed)}; "
                "use another out to start a new search",
                settings=("out",),
            )
        if storage is None:
            storage_url = run.storage()  # the run's own study.db, wherever the run now is
        study_name = run.study_name()
    else:
        # A database other runs may share (PostgreSQL) holds each run's study by a name of
        # its own; the run's own study.db keeps the plain name.
        study_name = STUDY_NAME if storage is None else f"{STUDY_NAME}-{uuid.uuid4().hex[:12]}"

    run.storage_url = storage_url  # with its password, for this process only
    created = not run.path.exists()
    study = None
    try:
        with RunLock(run):
            study = _open_study(
                storage_url,
                study_name,
                chosen_metric.direction,
                make_sampler(sampler, backend, seed),
                c.pruner,
            )
            if resuming:
                # The same seed would replay the first process's random draws, and the resumed
                # search would propose configurations the study already holds: the draws go on
                # from where the study stands, reproducibly.
                asked = len(study.get_trials(deepcopy=False))
                study.sampler = make_sampler(sampler, backend, seed + asked)
            ctx = TrialContext(
                dataset=dataset,
                space=space,
                metric=chosen_metric,
                run=run,
                seed=seed,
                threads=c.threads or max(1, os.cpu_count() or 1),
                cv=cv,
                repeats=repeats,
            )
            if not resuming:
                save_targets(run, ctx.y_val, dataset.y_test)  # before run.json marks the run
                write_json_atomic(
                    run.run_file,
                    identity
                    | _run_facts(dataset, space, space_files, sampler, backend, storage, argv)
                    | {"study_name": study_name}
                    | {"space_choice": space_choice, "cv_choice": cv_choice}
                    | (
                        {
                            "rows": {
                                "train_cross_fitted": len(ctx.y_val),
                                "val": len(ctx.y_val),
                                "test": len(dataset.y_test),
                            }
                        }
                        if cv
                        else {}
                    ),
                )
                run.publish()  # a run in object storage is a run from its first trial on
            settings = SearchSettings(
                run=run, space=space, ctx=ctx, study=study, sampler=sampler, backend=backend,
                trials=c.trials, time_budget=c.time_budget, say=say, started=started, live=live,
                pruner=c.pruner, max_failures_in_a_row=c.max_failures_in_a_row,
                later_processes=c.later_processes,
                memory_limit_mb=(
                    default_limit_mb() if c.memory_limit_mb is None else c.memory_limit_mb
                ),
            )  # fmt: skip
            if c.executor == "ray":
                from automl.search.ray_executor import run_on_ray

                try:
                    driver, reason = run_on_ray(
                        settings, workers=c.workers, cpus_per_trial=c.cpus_per_trial,
                        gpus_per_trial=c.gpus_per_trial, address=c.ray_address,
                        scheduler=c.scheduler,
                    )  # fmt: skip
                except Exception as exc:
                    if is_fatal(exc):
                        raise stopped_by(one_line(exc)) from exc
                    raise
                return summarize(run, driver, reason, started)
            return _loop(settings, c.trial_timeout)
    except UserInputError:
        if created and not run.exists():  # leave nothing that looks like a run behind
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    finally:
        if study is not None:
            close_study(study)
        if live is not None:
            live.close()


def _run_facts(
    dataset: Any,
    space: SearchSpace,
    space_files: list[str],
    sampler: str,
    backend: str,
    storage: str | None,
    argv: Sequence[str] | None,
) -> dict[str, Any]:
    return {
        "classes": dataset.target.classes,
        "schema": dataset.schema.to_dict(),
        "space_files": space_files,
        "space": space.to_dict(),
        "sampler": sampler,
        "backend": backend,
        # None: the run's own study.db, found beside run.json wherever the run directory is.
        "storage": mask_url(storage) if storage is not None else None,
        "command": [mask_url(a) for a in argv] if argv is not None else None,
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": {
            "fit": len(dataset.y_fit),
            "val": len(dataset.y_val),
            "test": len(dataset.y_test),
        },
    }


def _loop(settings: SearchSettings, trial_timeout: float | None) -> SearchSummary:
    """The local executor: one trial at a time, trees in this process, networks in a recycled
    worker process (or every trial in a process of its own, with a timeout)."""
    driver, ctx = StudyDriver(settings), settings.ctx
    prune = settings.pruner != "none" and trial_timeout is None and not ctx.cv
    networks = any(FAMILIES[name].uses_keras for name in settings.space.family_names)
    worker = KerasWorker(ctx) if networks and trial_timeout is None else None
    guard = MemoryGuard(settings.memory_limit_mb) if settings.memory_limit_mb else None
    try:
        while (reason := driver.stop_reason()) is None:
            trial, flat = driver.ask()
            family = flat["family"]
            refused = guard.refusal(family) if guard is not None else None
            if refused is not None:
                driver.record(trial, flat, failed(refused))
                continue
            keras = worker is not None and FAMILIES[family].uses_keras
            if guard is not None:
                guard.begin(in_child=trial_timeout is not None or keras)
            try:
                if trial_timeout is not None:
                    outcome = evaluate_isolated(trial.number, flat, ctx, trial_timeout)
                elif worker is not None and keras:
                    pruning = (
                        {
                            "study": settings.run.study_name(),
                            "storage": settings.run.storage(),
                            "pruner": settings.pruner,
                            "trial_id": trial._trial_id,
                        }
                        if prune
                        else None
                    )
                    outcome = worker.evaluate(trial.number, flat, pruning)
                else:
                    outcome = outcome_of(evaluate, trial.number, flat, ctx)
            except KeyboardInterrupt:
                driver.interrupted(trial, flat)
                raise
            stopped = guard.end(family) if guard is not None else None
            if stopped is not None and outcome.status != "complete":
                outcome = failed(stopped)
            driver.record(trial, flat, outcome)
    except Exception as exc:
        if is_fatal(exc):
            raise stopped_by(one_line(exc)) from exc
        raise
    finally:
        if worker is not None:
            worker.close()
        if guard is not None:
            guard.close()
    return summarize(settings.run, driver, reason, settings.started)


def check_families_fit_data(space: SearchSpace, schema: Any, data: str) -> None:
    """A family that needs images or text is refused up front on data without them."""
    has = {"image": bool(schema.image_shape), "text": bool(schema.text)}
    what = {
        "image": "image data (an .npz with x of shape (N, H, W) or (N, H, W, C))",
        "text": "text columns (detected, or named in text_columns)",
    }
    for name in space.family_names:
        needs = FAMILIES[name].needs
        if needs and not has[needs]:
            raise UserInputError(
                f"{data}: family {name!r} needs {what[needs]}; found none",
                settings=("text_columns",) if needs == "text" else (),
            )


def summarize(
    run: RunDir, driver: StudyDriver, reason: str | None, started: float
) -> SearchSummary:
    from automl.report import write_leaderboard

    finished, failed, best = driver.finish(reason)
    write_leaderboard(run)
    run.publish()
    return SearchSummary(
        run_dir=run.path,
        finished=finished,
        failed=failed,
        best_value=best.value if best else None,
        best_trial=best.number if best else None,
        wall_seconds=time.time() - started,
        stop_reason=reason,
        dropped=dict(driver.families.dropped),
    )
