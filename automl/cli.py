"""The `automl` command: search, ensemble, report, predict.

`main(argv) -> int` is the contract scripts and tests use. Bad input prints one line,
`error: ...`, and returns 2; nothing heavy (TensorFlow, Ray) is imported at start-up.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from automl.errors import SearchStopped, UserInputError

EXIT_USER_ERROR = 2
EXIT_STOPPED = 1  # the search stopped early: a failing disk or database, or failing trials


def _auto_or_int(expected: str) -> Callable[[str], int | str]:
    """An argparse type: `auto` or a whole number (checked further by the search); else
    "must be EXPECTED; got ..."."""

    def parse(value: str) -> int | str:
        if value == "auto":
            return value
        try:
            return int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}; got {value!r}") from None

    return parse


_folds = _auto_or_int("auto, 0 (one holdout split) or a number of folds from 2 to 20")
_repeats = _auto_or_int("auto or a whole number from 1 to 10")
_workers = _auto_or_int("a whole number or auto")


def _parser() -> argparse.ArgumentParser:
    from automl import __version__

    parser = argparse.ArgumentParser(prog="automl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"automl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    search = sub.add_parser("search", help="search models and hyperparameters on a dataset")
    search.add_argument(
        "--data",
        required=True,
        help="CSV (.csv, .csv.gz), Parquet, .npz images (x, y) or builtin:NAME",
    )
    search.add_argument(
        "--target",
        action="append",
        help="target column (default 'target' for builtin: data); repeat it to train one head "
        "per target",
    )
    search.add_argument(
        "--objective", help="with several --target: the one the search optimizes (default first)"
    )
    search.add_argument("--out", required=True, help="run directory to create or resume")
    search.add_argument("--space", action="append", help="search-space YAML (repeatable)")
    search.add_argument(
        "--sampler",
        help="tpe or random (optuna, hyperopt; default tpe); random, bayesian or hyperband "
        "(keras-tuner; default bayesian)",
    )
    search.add_argument(
        "--backend", default="optuna", help="optuna, hyperopt or keras-tuner (default optuna)"
    )
    search.add_argument("--trials", type=int, help="number of finished trials to reach")
    search.add_argument("--time-budget", type=float, help="seconds of search, across resumes")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument(
        "--test-size",
        type=float,
        default=0.2,
        help="share of rows held out to score the result (default 0.2); 0: none, every row "
        "trains and scores are out-of-fold",
    )
    search.add_argument("--test-data", help="held-out test file instead of a --test-size split")
    search.add_argument("--storage", help="SQLAlchemy URL of the study (default RUN_DIR/study.db)")
    search.add_argument("--resume", action="store_true", help="continue the search in --out")
    search.add_argument("--task", help="binary, multiclass or regression (default: inferred)")
    search.add_argument("--metric", help="objective metric (default by task)")
    search.add_argument("--threads", type=int, help="threads per trial (default: all cores)")
    search.add_argument(
        "--trial-timeout",
        type=float,
        help="seconds one trial may take; each trial then runs in its own process",
    )
    search.add_argument(
        "--cv",
        type=_folds,
        default="auto",
        help="cross-fit each trial in K folds (out-of-fold predictions rank trials and feed the "
        "ensemble; predictions average the K models); 0: one holdout split; auto (default): 5 "
        "folds for tabular data up to 100,000 rows, else 0",
    )
    search.add_argument(
        "--cv-repeats",
        type=_repeats,
        default="auto",
        help="draw the folds this many times, each with another shuffle, and average the "
        "out-of-fold predictions; auto (default): 1 (measured: 2 cost more trials than they "
        "gained at 120 s)",
    )
    search.add_argument(
        "--memory-limit",
        type=float,
        dest="memory_limit_mb",
        metavar="MB",
        help="resident memory of the search and its trial processes together: a trial that "
        "would pass it is not started, a network trial that passes it is stopped (local "
        "executor); default: 75%% of the machine's memory; 0: no limit",
    )
    search.add_argument("--executor", default="local", help="local (default) or ray")
    search.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="trials at a time (ray); auto: as many as the cluster has CPUs for, asked again "
        "during the search (a node that joins gets trials longer than its first worker's start)",
    )
    search.add_argument("--cpus-per-trial", type=int, default=1, help="CPUs per trial (ray)")
    search.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial (ray)")
    search.add_argument("--ray-address", help="join this Ray cluster (default: a local Ray)")
    search.add_argument(
        "--scheduler", default="fifo", help="fifo or asha (ray: stops poor networks early)"
    )
    search.add_argument(
        "--pruner",
        default="median",
        help="median (default), hyperband or none: stops poor networks early (local executor)",
    )
    search.add_argument(
        "--max-failures-in-a-row",
        type=int,
        default=20,
        help="stop the search after this many failed trials in a row (default 20; 0: never)",
    )
    search.add_argument(
        "--text-columns",
        help="comma-separated columns holding free text (default: detected)",
    )

    ensemble = sub.add_parser("ensemble", help="fit ensembles on a run's saved predictions")
    ensemble.add_argument("run_dir")
    ensemble.add_argument(
        "--method",
        action="append",
        help="optimized, greedy, stacking, mean or nelder-mead (repeatable; default the "
        "first four)",
    )
    ensemble.add_argument("--recipe", action="append", help="ensembles/*.yaml recipe (repeatable)")
    ensemble.add_argument(
        "--top-k",
        type=int,
        help="members in the pool (default 20; stacking 5, the trials the "
        "search keeps refit time for)",
    )
    ensemble.add_argument(
        "--no-refit",
        action="store_true",
        help="keep the search-time models; by default the chosen model's members are refit "
        "on every row of the search's data",
    )
    ensemble.add_argument(
        "--data", help="the search's data, for the refit, if it has moved (checked by sha256)"
    )

    report = sub.add_parser("report", help="write leaderboard.csv/.md and report.html")
    report.add_argument("run_dir", nargs="?")
    report.add_argument(
        "--compare", nargs="+", metavar="RUN_DIR", help="compare runs on the same dataset"
    )
    report.add_argument(
        "--out",
        help="with --compare: the page to write (default comparison.html); else the folder for "
        "the leaderboard and report.html (default the run directory, which may be read-only)",
    )

    predict = sub.add_parser("predict", help="predict new data with the best ensemble or model")
    predict.add_argument("run_dir")
    predict.add_argument("--data", required=True)
    predict.add_argument(
        "--out", required=True, help="file to write: CSV, or Parquet for a .parquet name"
    )
    predict.add_argument("--model", default="best", help="best, best_single or a trial number")
    predict.add_argument(
        "--before-refit",
        action="store_true",
        help="predict with the search-time models, not those refit on every row",
    )
    return parser


def _search(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from automl.data import BUILTIN_PREFIX, BUILTIN_TARGET
    from automl.report import format_table, leaderboard_rows
    from automl.run import RunDir
    from automl.run_store import is_remote
    from automl.search.config import SearchConfig
    from automl.search.loop import run_search

    targets = args.target or []
    if not targets:
        if not args.data.startswith(BUILTIN_PREFIX):
            raise UserInputError("--target is required (the column to predict)")
        targets = [BUILTIN_TARGET]
    target = args.objective or targets[0]
    if target not in targets:
        raise UserInputError(
            f"--objective {target!r} is not one of the --target columns ({', '.join(targets)})"
        )
    others = [t for t in targets if t != target]
    if args.resume and not is_remote(args.out) and not RunDir(args.out).exists():
        raise UserInputError(f"--resume: {args.out} holds no search to resume (no run.json)")
    if args.max_failures_in_a_row < 0:
        raise UserInputError(
            "--max-failures-in-a-row must be 0 (never stop) or a positive whole number; "
            f"got {args.max_failures_in_a_row}"
        )
    config = SearchConfig(
        data=args.data,
        target=target,
        out=args.out,
        spaces=args.space,
        sampler=args.sampler,
        backend=args.backend,
        trials=args.trials,
        time_budget=args.time_budget,
        seed=args.seed,
        test_size=args.test_size,
        test_data=args.test_data,
        storage=args.storage,
        task=args.task,
        metric=args.metric,
        threads=args.threads,
        trial_timeout=args.trial_timeout,
        cv=args.cv,
        cv_repeats=args.cv_repeats,
        memory_limit_mb=args.memory_limit_mb,
        executor=args.executor,
        workers=args.workers,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        ray_address=args.ray_address,
        scheduler=args.scheduler,
        pruner=args.pruner,
        text_columns=[c.strip() for c in args.text_columns.split(",")]
        if args.text_columns
        else None,
        other_targets=others or None,
        max_failures_in_a_row=args.max_failures_in_a_row or None,
        job_started=args.job_started,
        later_processes=2,  # `automl ensemble` and `automl predict`
    )
    summary = run_search(config, argv=["automl", *argv])
    print(format_table(leaderboard_rows(RunDir(summary.run_dir, storage_url=args.storage))))
    where = args.out if is_remote(args.out) else summary.run_dir
    print(f"run directory: {where}")
    if summary.stop_reason in ("failures", "dropped"):
        stopped = (
            f"the search stopped after {args.max_failures_in_a_row} failed trials in a row"
            if summary.stop_reason == "failures"
            else "the search stopped: every family failed and was dropped"
        )
        completed = summary.finished - summary.failed
        if completed == 0:
            raise SearchStopped(f"{stopped}; their errors are in the leaderboard above")
        # The search stopped, not the job: ensembles, the refit and predict use what finished.
        kept = (
            "the completed trial is kept"
            if completed == 1
            else f"the {completed} completed trials are kept"
        )
        print(
            f"warning: {stopped} (their errors are in the leaderboard above); {kept}, and "
            "`automl ensemble` and `automl predict` work on them",
            file=sys.stderr,
        )
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    from automl.ensemble import METHODS
    from automl.ensemble.build import Recipe, build_ensemble, default_recipes, load_recipe
    from automl.report import format_table, write_leaderboard
    from automl.run import RunDir

    run = RunDir(args.run_dir)
    run.info()
    if args.top_k is not None and args.top_k < 1:
        raise UserInputError(f"--top-k must be a positive whole number; got {args.top_k}")
    recipes = [load_recipe(path) for path in args.recipe or []]
    for method in args.method or []:
        if method not in METHODS:
            raise UserInputError(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
        recipes.append(Recipe(method=method, top_k=args.top_k))
    recipes = recipes or default_recipes(args.top_k)
    for recipe in recipes:
        summary = build_ensemble(run, recipe)
        weights = ", ".join(f"{m['name']} {m['weight']:.2f}" for m in summary["members"][:6])
        more = f" +{len(summary['members']) - 6} more" if len(summary["members"]) > 6 else ""
        print(
            f"ensemble {summary['name']}: val {summary['metric']} {summary['val_score']:.4f} "
            f"(cross-validated {_fmt(summary['honest_val_score'])}), "
            f"test {_fmt(summary['test_score'])} "
            f"(best single: val {summary['best_single']['val_score']:.4f}, "
            f"test {_fmt(summary['best_single']['test_score'])}) | {weights}{more}"
        )
    if not args.no_refit:
        from automl.refit import refit_best
        from automl.run import ensemble_allowance

        # A timed job's refit fits in what the search left this step, counted from this
        # process's start; members whose refit would pass it keep their search-time models.
        allowance = ensemble_allowance(run)
        started = args.job_started if args.job_started is not None else time.time()
        deadline = started + allowance if allowance is not None else None
        refit_best(run.path, data=args.data, deadline=deadline, say=print)
    print(format_table(write_leaderboard(run)))
    run.publish()  # to the run's object storage, if it lives there
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from automl.io import check_can_write
    from automl.report import write_report
    from automl.run import RunDir

    if args.compare:
        from automl.report.compare import write_comparison

        runs = ([args.run_dir] if args.run_dir else []) + args.compare
        if len(runs) < 2:
            raise UserInputError("--compare needs at least two run directories")
        out = Path(args.out or "comparison.html")
        check_can_write(out, "--out")
        print(f"comparison: {write_comparison(runs, out)}")
        return 0
    if not args.run_dir:
        raise UserInputError("report needs a RUN_DIR (or --compare RUN_A RUN_B ...)")
    run = RunDir(args.run_dir)
    run.info()  # a run directory, before anything is written into it
    folder = Path(args.out) if args.out else run.path
    if args.out and folder.exists() and not folder.is_dir():
        raise UserInputError(f"--out {folder}: is a file; expected a folder for the report")
    try:
        check_can_write(folder / "report.html", "--out" if args.out else "report")
    except UserInputError as exc:
        hint = "" if args.out else "; --out FOLDER writes the report elsewhere"
        raise UserInputError(f"{exc}{hint}") from None
    folder.mkdir(parents=True, exist_ok=True)
    path = write_report(run, folder)
    if not args.out and run.mirror is not None:  # the report and leaderboard, to the bucket
        run.publish()
        path = f"{run.location}/{Path(path).name} (cached at {path})"
    print(f"report: {path}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from automl.io import check_can_write
    from automl.predict import load_predictor, predict_to_file

    out = Path(args.out)
    if out.is_dir():
        raise UserInputError(f"--out {out}: is a directory; expected a CSV or Parquet file path")
    check_can_write(out, "--out")
    predictor = load_predictor(args.run_dir, which=args.model, refit=not args.before_refit)
    rows = predict_to_file(predictor, args.data, out)
    print(f"{rows} predictions from {predictor.name} written to {out}")
    return 0


# The library's settings (`SearchConfig` fields and the like) that a flag of another name sets.
FLAGS = {"spaces": "--space", "other_targets": "--target", "memory_limit_mb": "--memory-limit"}


def flag_names(exc: UserInputError) -> str:
    """The error's message with each setting it names written as the flag that sets it."""
    import re
    from dataclasses import fields

    from automl.search.config import SearchConfig

    message = str(exc)
    known = {f.name for f in fields(SearchConfig)}
    for setting in (s for s in exc.settings if s in known):
        flag = FLAGS.get(setting, "--" + setting.replace("_", "-"))
        # A setting as a word of the message, never a part of a path or of another word.
        message = re.sub(rf"(?:^|(?<=[\s,(])){re.escape(setting)}(?=[\s:;,)]|$)", flag, message)
    return message


def process_started() -> float:
    """When this process started (seconds since the epoch): a job's clock starts there."""
    import psutil

    return float(psutil.Process().create_time())


def main(argv: Sequence[str] | None = None, job_started: float | None = None) -> int:
    """The `automl` command. `job_started`: when the job's clock started (the entry point
    gives its process's start; in-process callers leave it to the search's start)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.job_started = job_started
    handlers = {
        "search": lambda: _search(args, argv),
        "ensemble": lambda: _ensemble(args),
        "report": lambda: _report(args),
        "predict": lambda: _predict(args),
    }
    try:
        return handlers[args.command]()
    except UserInputError as exc:
        print(f"error: {flag_names(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except SearchStopped as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry_point() -> None:
    sys.exit(main(job_started=process_started()))
