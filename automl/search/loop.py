"""The search loop: ask a sampler, evaluate, tell the study; resumable and budgeted.

The optuna study (SQLite in the run directory by default) is the one source of truth. Optuna's
samplers propose through define-by-run; hyperopt proposes through `HyperoptProposer`, whose
points are enqueued into the same study. Each family's default configuration is enqueued
first. A trial left RUNNING by a killed process is marked interrupted and re-run; trials
that finished are never repeated. The time budget counts time spent by earlier attempts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automl.data import data_fingerprint, load_dataset
from automl.ensemble.build import save_targets
from automl.errors import UserInputError
from automl.io import write_json_atomic
from automl.metrics import get_metric
from automl.run import STUDY_NAME, RunDir, RunLock, mask_url
from automl.search.evaluate import TrialContext, evaluate
from automl.search.isolation import evaluate_isolated
from automl.search.progress import Progress, status_line
from automl.space import SearchSpace

SAMPLERS = ("tpe", "random")
BACKENDS = ("optuna", "hyperopt")
DEFAULT_SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "tabular.yaml"
DEFAULT_TRIALS = 50
SPENT_ATTR = "spent_seconds"


@dataclass
class SearchSummary:
    run_dir: Path
    finished: int
    failed: int
    best_value: float | None
    best_trial: int | None
    wall_seconds: float


def _check_args(
    sampler: str,
    backend: str,
    trials: int | None,
    time_budget: float | None,
    trial_timeout: float | None = None,
    cv: int | None = None,
) -> None:
    if cv is not None and not (isinstance(cv, int) and 2 <= cv <= 20):
        raise UserInputError(f"--cv must be a whole number of folds from 2 to 20; got {cv}")
    if sampler not in SAMPLERS:
        raise UserInputError(f"--sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
    if backend not in BACKENDS:
        raise UserInputError(f"--backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if trials is not None and trials < 1:
        raise UserInputError(f"--trials must be a positive whole number; got {trials}")
    if time_budget is not None and time_budget <= 0:
        raise UserInputError(
            f"--time-budget must be a positive number of seconds; got {time_budget}"
        )
    if trial_timeout is not None and trial_timeout <= 0:
        raise UserInputError(
            f"--trial-timeout must be a positive number of seconds; got {trial_timeout}"
        )


def make_sampler(sampler: str, backend: str, seed: int) -> Any:
    import optuna

    if sampler == "tpe" and backend == "optuna":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # multivariate/group are marked experimental
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, n_startup_trials=10
            )
    # Random, and the hyperopt backend (whose points are all enqueued, never sampled here).
    return optuna.samplers.RandomSampler(seed=seed)


def _open_study(storage: str, direction: str, sampler: Any) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(
            storage=storage,
            study_name=STUDY_NAME,
            direction=direction,
            sampler=sampler,
            load_if_exists=True,
        )
    except Exception as exc:  # SQLAlchemy raises many kinds for a bad URL or an unreachable server
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(
            f"--storage {mask_url(storage)}: cannot open the study ({first})"
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
        "tensorflow-cpu",
        "numpy",
        "pandas",
    ):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def run_search(
    *,
    data: str,
    target: str,
    out: str | Path,
    spaces: Sequence[str | Path] | None = None,
    sampler: str = "tpe",
    backend: str = "optuna",
    trials: int | None = None,
    time_budget: float | None = None,
    seed: int = 0,
    test_size: float = 0.2,
    test_data: str | None = None,
    storage: str | None = None,
    task: str | None = None,
    metric: str | None = None,
    threads: int | None = None,
    trial_timeout: float | None = None,
    cv: int | None = None,
    progress: Callable[[str], None] | None = None,
    argv: Sequence[str] | None = None,
) -> SearchSummary:
    """Search `spaces` on `data` and record every trial in `out`; re-running resumes."""
    started = time.time()
    live = Progress() if progress is None else None
    say = progress or live.say  # type: ignore[union-attr]
    _check_args(sampler, backend, trials, time_budget, trial_timeout, cv)
    if trials is None and time_budget is None:
        trials = DEFAULT_TRIALS
    run = RunDir(out)
    run.check_out_path()
    space_files = [str(Path(s)) for s in (spaces or [DEFAULT_SPACE])]
    space = SearchSpace.from_files(space_files)
    dataset = load_dataset(
        data, target, task=task, test_data=test_data, test_size=test_size, seed=seed
    )
    chosen_metric = get_metric(metric, dataset.task)
    storage_url = storage or run.default_storage()

    identity = {
        "data": data,
        "data_sha256": data_fingerprint(data),
        "test_data": test_data,
        "test_data_sha256": data_fingerprint(test_data) if test_data else None,
        "target": target,
        "task": dataset.task,
        "metric": chosen_metric.name,
        "seed": seed,
        "test_size": test_size,
        "cv": cv or 0,
    }
    resuming = run.exists()
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
                "use another --out to start a new search"
            )
        if storage is None:
            storage_url = (
                previous["storage"] if "***@" not in previous["storage"] else run.storage()
            )

    created = not run.path.exists()
    try:
        with RunLock(run):
            study = _open_study(
                storage_url, chosen_metric.direction, make_sampler(sampler, backend, seed)
            )
            ctx = TrialContext(
                dataset=dataset,
                space=space,
                metric=chosen_metric,
                run=run,
                seed=seed,
                threads=threads or max(1, os.cpu_count() or 1),
                cv=cv or 0,
            )
            if not resuming:
                save_targets(run, ctx.y_val, dataset.y_test)  # before run.json marks the run
                write_json_atomic(
                    run.run_file,
                    identity
                    | _run_facts(dataset, space, space_files, sampler, backend, storage_url, argv)
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
            return _loop(
                run=run,
                space=space,
                ctx=ctx,
                study=study,
                sampler=sampler,
                backend=backend,
                trials=trials,
                time_budget=time_budget,
                trial_timeout=trial_timeout,
                say=say,
                started=started,
                live=live,
            )
    except UserInputError:
        if created and not run.exists():  # leave nothing that looks like a run behind
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    finally:
        if live is not None:
            live.close()


def _run_facts(
    dataset: Any,
    space: SearchSpace,
    space_files: list[str],
    sampler: str,
    backend: str,
    storage_url: str,
    argv: Sequence[str] | None,
) -> dict[str, Any]:
    return {
        "classes": dataset.target.classes,
        "schema": dataset.schema.to_dict(),
        "space_files": space_files,
        "space": space.to_dict(),
        "sampler": sampler,
        "backend": backend,
        "storage": mask_url(storage_url),
        "command": [mask_url(a) for a in argv] if argv is not None else None,
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": {
            "fit": len(dataset.y_fit),
            "val": len(dataset.y_val),
            "test": len(dataset.y_test),
        },
    }


def _recover_interrupted(study: Any, say: Callable[[str], None]) -> None:
    """Trials a killed process left RUNNING: mark them interrupted and queue them again."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        say(f"trial {trial.number} was interrupted by the last run; it will run again")


def _counts(study: Any) -> tuple[int, int]:
    from optuna.trial import TrialState

    finished = failed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if trial.user_attrs.get("interrupted"):
            continue
        finished += 1
        failed += trial.state == TrialState.FAIL
    return finished, failed


def _loop(
    *,
    run: RunDir,
    space: SearchSpace,
    ctx: TrialContext,
    study: Any,
    sampler: str,
    backend: str,
    trials: int | None,
    time_budget: float | None,
    trial_timeout: float | None,
    say: Callable[[str], None],
    started: float,
    live: Progress | None = None,
) -> SearchSummary:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not study.get_trials(deepcopy=False):
        for flat in space.defaults():
            study.enqueue_trial(flat)
    _recover_interrupted(study, say)
    proposer = None
    if backend == "hyperopt":
        from automl.search.hyperopt_adapter import HyperoptProposer

        proposer = HyperoptProposer(
            space, sampler, ctx.seed, minimize=not ctx.metric.greater_is_better
        )

    spent_before = float(study.user_attrs.get(SPENT_ATTR, 0.0))
    session_start = started

    def spent() -> float:
        return spent_before + time.time() - session_start

    if time_budget is not None:
        ctx.deadline = session_start + time_budget - spent_before
    study.set_user_attr("time_budget", time_budget)
    study.set_user_attr("executor", "local")
    study.set_user_attr("workers", 1)
    metric = ctx.metric
    say(
        f"search {run.path}: {ctx.dataset.task}, metric {metric.name} ({metric.direction}), "
        f"{backend}/{sampler}, families {', '.join(space.family_names)}, "
        + (
            f"{len(ctx.y_val)} train rows cross-fitted in {ctx.cv} folds / "
            if ctx.cv
            else f"{len(ctx.dataset.y_fit)} fit / {len(ctx.dataset.y_val)} val / "
        )
        + f"{len(ctx.dataset.y_test)} test rows"
    )
    # What the live status line shows; the loop updates it, the ticker thread only reads it.
    now: dict[str, Any] = {"running": None, "since": None, "done": 0, "failed": 0}

    def render() -> str:
        return status_line(
            now["done"],
            now["failed"],
            now.get("pruned", 0),
            now.get("best", "-"),
            now["running"],
            now["since"],
            time_budget - spent() if time_budget is not None else None,
        )

    while True:
        finished, failed = _counts(study)
        now.update(
            done=finished,
            failed=failed,
            pruned=len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))),
        )
        if live is not None:
            live.status(render)
        if trials is not None and finished >= trials:
            break
        if time_budget is not None and spent() >= time_budget:
            say(f"time budget of {time_budget:.0f}s reached")
            break
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if proposer is not None and not waiting:
            history = [
                (t.params, t.value if t.state == TrialState.COMPLETE else None)
                for t in study.get_trials(
                    deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)
                )
                if not t.user_attrs.get("interrupted")
            ]
            study.enqueue_trial(proposer.propose(history))
        trial = study.ask()
        flat = space.suggest(trial)
        label = f"trial {trial.number:>3} {flat['family']:<13}"
        now.update(running=f"#{trial.number} {flat['family']}", since=time.time())
        trial.set_user_attr("family", flat["family"])
        trial.set_user_attr("trial_dir", str(run.trial_dir(trial.number)))
        try:
            if trial_timeout is not None:
                result = evaluate_isolated(trial.number, flat, ctx, trial_timeout)
            else:
                result = evaluate(trial.number, flat, ctx)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(flat, user_attrs={"retry_of": trial.number})
            study.set_user_attr(SPENT_ATTR, spent())
            say(f"{label} interrupted; run the same command again (or --resume) to continue")
            raise
        except Exception as exc:  # any failure inside a trial is that trial's, not the search's
            message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]
            trial.set_user_attr("error", message)
            study.tell(trial, state=TrialState.FAIL)
            say(f"{label} FAILED: {message}")
        else:
            trial.set_user_attr("test_score", result.test_score)
            trial.set_user_attr("fit_seconds", result.fit_seconds)
            trial.set_user_attr("predict_seconds", result.predict_seconds)
            trial.set_user_attr("extra_scores", result.extra_scores)
            if result.n_params is not None:
                trial.set_user_attr("n_params", result.n_params)
            trial.set_user_attr("artifacts", result.files)
            study.tell(trial, result.val_score)
            best = study.best_trial
            now["best"] = f"{best.value:.4f} (#{best.number} {best.params.get('family')})"
            say(
                f"{label} val {metric.name} {result.val_score:.4f} ({result.fit_seconds:5.1f}s) | "
                f"best {best.value:.4f} (#{best.number} {best.params.get('family')}) | "
                + _progress_tail(study, trials, time_budget, spent())
            )
        study.set_user_attr(SPENT_ATTR, spent())
        now.update(running=None, since=None)

    finished, failed = _counts(study)
    completed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    best = study.best_trial if completed else None
    say(
        f"done: {finished} trials ({failed} failed) in {spent():.0f}s of search time"
        + (f"; best val {metric.name} {best.value:.4f} (trial {best.number})" if best else "")
    )
    from automl.report import write_leaderboard

    write_leaderboard(run)
    return SearchSummary(
        run_dir=run.path,
        finished=finished,
        failed=failed,
        best_value=best.value if best else None,
        best_trial=best.number if best else None,
        wall_seconds=time.time() - started,
    )


def _progress_tail(study: Any, trials: int | None, budget: float | None, spent: float) -> str:
    finished, failed = _counts(study)
    parts = [f"{finished}{'/' + str(trials) if trials else ''} done"]
    if failed:
        parts.append(f"{failed} failed")
    if budget is not None:
        parts.append(f"{max(0.0, budget - spent):.0f}s left")
    else:
        parts.append(f"{spent:.0f}s")
    return ", ".join(parts)
