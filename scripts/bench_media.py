"""The image and text parts of ../shared/BENCHMARK.md, run by `scripts/benchmark.py`.

Images: Fashion-MNIST's train file, the last 10,000 images held out as the test part. Each
job is the whole timed job a user runs (`run_ours`: a search given no space, so the data choose
the image bundle, with the job's time budget; the ensembles; the refit of the chosen members on
every training image; predicting), on the first N training images. Beside the job's answer:
the test accuracy "after T minutes" of the best trial by validation among those finished by
then, the trials per family, the promotions and the best architecture; then an MLP (our `mlp`
family's defaults) and LightGBM with default parameters on the pixels.

Text: sms_spam, split 80/20 (stratified, seed 0). A search with `search_spaces/text.yaml`;
ROC AUC on test of the best text network, the best single model and the ensemble, beside
TF-IDF + logistic regression (scikit-learn defaults, word 1-2-grams).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _completed(run_dir: Path) -> pd.DataFrame:
    """Every completed trial with its validation score, test scores and finish time."""
    import optuna

    from automl.run import STUDY_NAME

    storage = f"sqlite:///{run_dir / 'study.db'}"
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    rows = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        extra = t.user_attrs.get("extra_scores", {})
        rows.append(
            {
                "number": t.number,
                "family": t.params.get("family"),
                "val_score": t.value,
                "test_score": t.user_attrs.get("test_score"),
                **extra,
                "finished": t.datetime_complete.timestamp(),
                "params": {k: v for k, v in t.params.items() if k != "family"},
                "fit_seconds": t.user_attrs.get("fit_seconds"),
                "n_params": t.user_attrs.get("n_params"),
            }
        )
    return pd.DataFrame(rows)


def _pick(trials: pd.DataFrame, before: float, greater_is_better: bool) -> pd.Series | None:
    done = trials[trials.finished <= before]
    if done.empty:
        return None
    order = done.sort_values("val_score", ascending=not greater_is_better)
    return order.iloc[0]


def _search_and_ensemble(
    train: str,
    test: str,
    target: str,
    space: str,
    budget: float,
    out: Path,
    threads: int,
    recipes: tuple[str, ...] = ("greedy", "optimized", "stacking"),
) -> dict[str, Any]:
    from automl.ensemble.build import build_ensemble, load_recipe
    from automl.run import RunDir
    from automl.search.loop import run_search

    started = time.time()
    summary = run_search(
        data=train,
        target=target,
        out=out,
        test_data=test,
        spaces=[space],
        time_budget=budget,
        threads=threads,
        progress=lambda line: print("   ", line, flush=True),
    )
    ensembles = {}
    for recipe in recipes:
        result = build_ensemble(RunDir(out), load_recipe(ROOT / "ensembles" / f"{recipe}.yaml"))
        directory = RunDir(out).ensemble_dir(result["name"])
        ensembles[recipe] = {
            "test_pred": np.load(directory / "test_pred.npy"),
            "val_score": result["val_score"],
            "test_score": result["test_score"],
            "weights": {m["name"]: round(m["weight"], 3) for m in result.get("members", [])},
        }
    return {
        "started": started,
        "search_seconds": time.time() - started,
        "trials": summary.finished,
        "failed": summary.failed,
        "ensembles": ensembles,
    }


def _keras_mlp_baseline(
    x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, threads: int
) -> Any:
    from automl.models import FAMILIES, BuildContext
    from automl.space import SearchSpace

    space = SearchSpace.from_files([ROOT / "search_spaces" / "mlp.yaml"])
    params = space.config(next(iter(space.defaults()))).params
    ctx = BuildContext(task="multiclass", n_classes=10, threads=threads)
    return FAMILIES["mlp"].build(params, ctx).fit(x_fit, y_fit, x_val, y_val)


def image_ensembles(npz: str, minutes: float, rows: int, threads: int, workdir: Path) -> str:
    """Seconds each default recipe (ensembles/*.yaml, stacking included) takes to fit on a
    10-class image run: a `minutes` search of the image bundle on the first `rows` images,
    tested on the last 10,000."""
    from automl.ensemble.build import build_ensemble, load_recipe
    from automl.run import RunDir
    from automl.search.loop import run_search

    with np.load(npz) as archive:
        x, y = archive["x"], archive["y"]
    train, test = workdir / "train.npz", workdir / "test.npz"
    np.savez(train, x=x[:rows], y=y[:rows])
    np.savez(test, x=x[-10000:], y=y[-10000:])
    out = workdir / "image_run"
    summary = run_search(
        data=str(train), target="y", out=out, test_data=str(test),
        spaces=[str(ROOT / "search_spaces" / "images.yaml")], time_budget=60 * minutes,
        threads=threads, progress=lambda line: print("   ", line, flush=True),
    )  # fmt: skip
    lines = [
        f"# Ensemble fit time on a 10-class image run ({rows:,} Fashion-MNIST images)",
        "",
        f"A {minutes:g}-minute search of `images.yaml` ({summary.finished} trials; "
        f"{int(rows * 0.8):,} fit / {int(rows * 0.2):,} validation rows, 10 classes), then every "
        f"recipe in `ensembles/`. Command: `python scripts/benchmark.py --image-ensembles {npz}`.",
        "",
        "| recipe | members | fit seconds | validation log-loss | test log-loss |",
        "|---|---|---|---|---|",
    ]
    for path in sorted((ROOT / "ensembles").glob("*.yaml")):
        start = time.time()
        result = build_ensemble(RunDir(out), load_recipe(path))
        seconds = time.time() - start
        lines.append(
            f"| {result['name']} | {result['pool_size']} | {seconds:.2f} | "
            f"{result['val_score']:.4f} | {result['test_score']:.4f} |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def _refit_replacing(run_dir: Path, test: Path) -> tuple[np.ndarray, str]:
    """`best`'s test probabilities if each refit network replaced its search-time network
    rather than joined it (what `automl.predict` did before the join): the join's measure."""
    from automl.data import read_table
    from automl.predict import load_predictor

    predictor = load_predictor(run_dir)
    for model, _ in predictor.members:
        model.parts = model.parts[-1:]  # the refit alone, where there is one
    return predictor.predict_proba(read_table(str(test))), predictor.name


def _image_job(npz: str, minutes: float, rows: int, threads: int, workdir: Path) -> list[str]:
    """One timed job (search, ensembles, refit on every training image, predict) of `minutes`
    on the first `rows` training images, tested on the last 10,000: its report section."""
    from benchmark import run_ours
    from sklearn.metrics import accuracy_score, log_loss

    from automl.io import read_json
    from automl.run import RunDir

    with np.load(npz) as archive:
        x, y = archive["x"], archive["y"]
    x_train, y_train, x_test, y_test = x[:-10000][:rows], y[:-10000][:rows], x[-10000:], y[-10000:]
    job = workdir / f"job-{minutes:g}min-{rows}"
    job.mkdir()
    train, test = job / "train.npz", job / "test.npz"
    np.savez(train, x=x_train, y=y_train)
    np.savez(test, x=x_test, y=y_test)
    budget = 60 * minutes
    print(f"[fashion-mnist] {len(y_train)} train / {len(y_test)} test, {budget:.0f}s", flush=True)
    run_dir = job / "run"
    ours = run_ours(str(train), str(test), "y", None, budget, str(run_dir), threads)
    trials = _completed(run_dir)
    run = RunDir(run_dir)
    started = min(trials.finished - trials.fit_seconds) if len(trials) else time.time()
    lines = [
        f"## {minutes:g} minutes, {len(y_train):,} training images",
        "",
        f"The whole job in {minutes:g} minutes: `automl search` with no space given (the data "
        "choose the image bundle) and the job's time budget, `automl ensemble` (the ensembles, "
        "the refit of the chosen members on every training image), then `automl predict` on "
        "the 10,000 test images. "
        f"It took {ours['seconds']:.0f} s ({ours['parts']}).",
        "",
        "| model | test accuracy | test log-loss |",
        "|---|---|---|",
    ]
    ours["best_replaced"], ours["best_replaced_name"] = _refit_replacing(run_dir, test)
    for key, label in (
        ("best", "ours: `best`, refit on every training image (the job's answer)"),
        ("best_replaced", "ours: `best`, each refit network replacing its search-time one"),
        ("best_before_refit", "ours: `best` with its search-time models"),
        ("best_single", "ours: best single trial by validation (search-time model)"),
    ):
        proba = ours[key]
        lines.append(
            f"| {label} ({ours[key + '_name']}) | {accuracy_score(y_test, proba.argmax(1)):.4f} | "
            f"{log_loss(y_test, proba, labels=list(range(10))):.4f} |"
        )
    lines += ["", "Accuracy against minutes (best trial by validation among those finished "
              "by then; search-time models, no ensemble):", "",
              "| after | test accuracy | trial |", "|---|---|---|"]  # fmt: skip
    for limit in sorted({m for m in (1, 2, 5, 10, 15, 20, 30) if m <= minutes} | {minutes}):
        best = _pick(trials, started + 60 * limit, greater_is_better=False)
        lines.append(
            f"| {limit:g} min | {best.test_accuracy:.4f} | #{best.number} {best.family} |"
            if best is not None
            else f"| {limit:g} min | - | none finished |"
        )
    promoted = [
        (n, read_json(run.trial_dir(n) / "config.json").get("continued_from"))
        for n in trials.number
    ]
    climbs = [f"#{n} from #{p}" for n, p in promoted if p is not None]
    lines += [
        "",
        f"Trials: {ours['trials']} completed, {ours['failed']} failed. By family: "
        + ", ".join(f"{k} {v}" for k, v in trials.family.value_counts().items())
        + ". Promoted to a higher rung (continuing from its weights): "
        + (", ".join(climbs) or "none")
        + ".",
    ]
    best_cnn = _pick(trials[trials.family == "cnn"], float("inf"), greater_is_better=False)
    if best_cnn is not None:
        lines.append(
            f"Best architecture (CNN): #{best_cnn.number}, val log-loss {best_cnn.val_score:.4f}, "
            f"test accuracy {best_cnn.test_accuracy:.4f} (search-time), {best_cnn.n_params} "
            f"weights, {best_cnn.fit_seconds:.0f} s to train: `{json.dumps(best_cnn.params)}`"
        )
    refits = sorted(run.path.glob("trials/*/refit/refit.json"))
    for path in refits:
        info = read_json(path)
        lines.append(
            f"Refit {path.parent.parent.name}: {info['family']} on {info['rows']:,} rows, "
            f"{info['params'].get('epochs', '-')} epochs, {info['seconds']:.0f} s."
        )
    lines += ["", "Every completed trial:", "", _trial_table(trials), ""]
    return lines


def _image_baselines(npz: str, threads: int) -> list[str]:
    """An MLP (our `mlp` family's defaults) and LightGBM's defaults on the pixels, on the same
    50,000 / 10,000 split, as a user would run them by hand."""
    import lightgbm
    from sklearn.metrics import accuracy_score, log_loss

    with np.load(npz) as archive:
        x, y = archive["x"], archive["y"]
    x_train, y_train, x_test, y_test = x[:-10000], y[:-10000], x[-10000:], y[-10000:]
    n_val = len(y_train) // 5  # the share our search holds out for validation
    x_fit = x_train[:-n_val].reshape(len(y_train) - n_val, -1) / 255.0
    x_val = x_train[-n_val:].reshape(n_val, -1) / 255.0
    x_flat_test = x_test.reshape(len(y_test), -1) / 255.0
    lines = ["## Baselines on the 50,000 / 10,000 split", ""]
    lines += ["| system | minutes | test accuracy | test log-loss |", "|---|---|---|---|"]
    start = time.time()
    mlp = _keras_mlp_baseline(x_fit, y_train[:-n_val], x_val, y_train[-n_val:], threads)
    proba = mlp.predict(x_flat_test)
    lines.append(
        f"| MLP (2x128, Adam, early stopping) | {(time.time() - start) / 60:.1f} | "
        f"{accuracy_score(y_test, proba.argmax(1)):.4f} | {log_loss(y_test, proba):.4f} |"
    )
    start = time.time()
    gbm = lightgbm.LGBMClassifier(n_jobs=threads, verbosity=-1, random_state=0)
    gbm.fit(x_train.reshape(len(y_train), -1), y_train)
    proba = gbm.predict_proba(x_test.reshape(len(y_test), -1))
    lines.append(
        f"| LightGBM defaults on pixels | {(time.time() - start) / 60:.1f} | "
        f"{accuracy_score(y_test, proba.argmax(1)):.4f} | {log_loss(y_test, proba):.4f} |"
    )
    return [*lines, ""]


def images(
    npz: str, jobs: list[tuple[float, int]], threads: int, workdir: Path, baselines: bool = True
) -> str:
    """Fashion-MNIST: for each (minutes, training images) job, the test accuracy of what the
    whole timed job hands over, accuracy against minutes, trials per family, the best
    architecture; then an MLP and LightGBM on the same split."""
    spec = " ".join(f"{m:g}:{r}" for m, r in jobs)
    lines = [
        "# Fashion-MNIST (images)",
        "",
        f"Train: the first N of the first 50,000 images of `{Path(npz).name}` (the search holds "
        "20% of them out for validation; the refit learns from all N); test: the last 10,000, "
        f"never fitted on. {threads} CPU threads, no GPU. Command: `python scripts/benchmark.py "
        f"--images {npz} --image-jobs {spec}`.",
        "",
    ]
    for minutes, rows in jobs:
        lines += _image_job(npz, minutes, rows, threads, workdir)
    if baselines:
        lines += _image_baselines(npz, threads)
    return "\n".join(lines) + "\n"


def _trial_table(trials: pd.DataFrame) -> str:
    rows = ["| # | family | val | test | fit s | finished at s |", "|---|---|---|---|---|---|"]
    start = trials.finished.min() - trials.fit_seconds.iloc[0] if len(trials) else 0
    for t in trials.itertuples():
        rows.append(
            f"| {t.number} | {t.family} | {t.val_score:.4f} | {t.test_score:.4f} | "
            f"{t.fit_seconds:.0f} | {t.finished - start:.0f} |"
        )
    return "\n".join(rows)


def text(spec: str, budget: float, threads: int, workdir: Path) -> str:
    """sms_spam: ROC AUC of the text network, the best single model and the ensemble, beside
    TF-IDF + logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    path, target = spec.split(":")[:2]
    frame = pd.read_csv(path)
    train, test = train_test_split(
        frame, test_size=0.2, random_state=0, stratify=frame[target].astype(str)
    )
    train_path, test_path = workdir / "sms_train.csv", workdir / "sms_test.csv"
    train.to_csv(train_path, index=False)
    test.to_csv(test_path, index=False)
    print(f"[sms_spam] {len(train)} train / {len(test)} test, {budget:.0f}s", flush=True)
    space = str(ROOT / "search_spaces" / "text.yaml")
    run = workdir / "sms_run"
    ours = _search_and_ensemble(
        str(train_path), str(test_path), target, space, budget, run, threads
    )
    trials = _completed(run)
    text_columns = [c for c in frame.columns if c != target]
    start = time.time()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x_train = vectorizer.fit_transform(train[text_columns[0]])
    classes = sorted(frame[target].unique())
    logistic = LogisticRegression(max_iter=2000).fit(x_train, train[target] == classes[1])
    auc = roc_auc_score(
        test[target] == classes[1],
        logistic.predict_proba(vectorizer.transform(test[text_columns[0]]))[:, 1],
    )
    baseline_seconds = time.time() - start
    best = _pick(trials, float("inf"), greater_is_better=True)
    best_text = _pick(trials[trials.family == "text_net"], float("inf"), greater_is_better=True)
    lines = [
        "# sms_spam (text)",
        "",
        f"80/20 split (stratified, seed 0): {len(train)} train / {len(test)} test messages. "
        f"Search budget {budget:.0f} s, {threads} CPU threads. Command: "
        f"`python scripts/benchmark.py --text {spec} --text-budget {budget:.0f}`.",
        "",
        "| system | test ROC AUC | detail |",
        "|---|---|---|",
    ]
    if best_text is not None:
        lines.append(
            f"| ours, best text network (by validation) | {best_text.test_score:.4f} | "
            f"#{best_text.number} `{json.dumps(best_text.params)}` |"
        )
    if best is not None:
        lines.append(
            f"| ours, best single model (by validation) | {best.test_score:.4f} | "
            f"#{best.number} {best.family} |"
        )
    for name, ens in ours["ensembles"].items():
        top = sorted(ens["weights"].items(), key=lambda kv: -abs(kv[1]))[:6]
        more = len(ens["weights"]) - len(top)
        members = ", ".join(f"{k} {v}" for k, v in top) + (f" (+{more} more)" if more else "")
        lines.append(f"| ours, ensemble ({name}) | {ens['test_score']:.4f} | {members} |")
    lines.append(
        f"| TF-IDF (1-2 grams) + logistic regression | {auc:.4f} | {baseline_seconds:.1f} s |"
    )
    lines += [
        "",
        f"Search: {ours['trials']} trials completed, {ours['failed']} failed. Trials by "
        "family: " + ", ".join(f"{k} {v}" for k, v in trials.family.value_counts().items()),
        "",
        _trial_table(trials),
    ]
    return "\n".join(lines) + "\n"


def memory(trials: int, threads: int, workdir: Path) -> str:
    """RSS of the search (its process and the Keras worker) after each of `trials` small Keras
    trials: flat, because the worker is replaced every KERAS_TRIALS_PER_WORKER trials."""
    import psutil

    from automl.search.isolation import KERAS_TRIALS_PER_WORKER
    from automl.search.loop import run_search

    space = workdir / "mlp.yaml"
    space.write_text(
        "family: mlp\nparams:\n  units: {type: int, low: 8, high: 64}\n"
        "  n_layers: {type: int, low: 1, high: 3}\n  epochs: {type: fixed, value: 3}\n"
    )
    me = psutil.Process()
    rss: list[float] = []

    def sample(line: str) -> None:
        if " mlp " in line and " val " in line:
            total = me.memory_info().rss + sum(
                c.memory_info().rss for c in me.children(recursive=True)
            )
            rss.append(total / 2**20)

    started = time.time()
    run_search(
        data="builtin:breast_cancer",
        target="target",
        out=workdir / "memory_run",
        spaces=[space],
        trials=trials,
        threads=threads,
        pruner="none",
        progress=sample,
    )
    seconds = time.time() - started
    first, later = max(rss[:5]), max(rss[5:])
    lines = [
        "# Memory over consecutive Keras trials",
        "",
        f"{trials} small MLP trials (breast_cancer) in one search, local executor; RSS of the "
        f"search process plus its Keras worker (replaced every {KERAS_TRIALS_PER_WORKER} "
        f"trials) after each trial. Command: `python scripts/benchmark.py --memory {trials}`.",
        "",
        f"- peak over trials 1-5: {first:.0f} MiB; peak over trials 6-{trials}: {later:.0f} MiB "
        f"({100 * (later / first - 1):+.1f}%)",
        f"- last: {rss[-1]:.0f} MiB; {seconds / trials:.1f} s per trial",
        "",
        "RSS (MiB) after each trial: " + ", ".join(f"{r:.0f}" for r in rss),
        "",
    ]
    return "\n".join(lines)


def epoch_speed(npz: str, threads: int, rows: int = 10_000) -> str:
    """Seconds per epoch on 60,000 images of `cnn.yaml`'s default network (every parameter at
    its default, subsample 1) under the CPU settings that could speed it up: how Keras is fed
    (NumPy arrays, or tf.data with prefetch), XLA (`jit_compile`) and the batch size; the
    thread pools are `import_keras`'s, sized to `threads`. Each variant trains two epochs on
    `rows` images; the second (traced, warm) is timed and scaled to 60,000."""
    import tensorflow as tf

    from automl.models import FAMILIES, BuildContext
    from automl.models.keras_base import import_keras
    from automl.space import SearchSpace

    keras = import_keras(threads)
    with np.load(npz) as archive:
        x = archive["x"][:rows].reshape(rows, -1).astype(np.float32) / 255.0
        y = archive["y"][:rows].astype(np.int64)
    defaults = SearchSpace.from_files([ROOT / "search_spaces" / "cnn.yaml"]).families["cnn"]
    params = defaults.default_params() | {"subsample": 1.0, "epochs": 2}
    layout = {"image_shape": [28, 28, 1]}
    variants: list[tuple[str, dict[str, Any]]] = [
        ("today: NumPy arrays, no XLA", {}),
        ("tf.data, prefetch", {"pipeline": True}),
        ("XLA (jit_compile)", {"jit": True}),
        ("tf.data, prefetch, XLA", {"pipeline": True, "jit": True}),
        ("batch 256", {"batch": 256}),
        ("tf.data, prefetch, XLA, batch 256", {"pipeline": True, "jit": True, "batch": 256}),
    ]
    lines = [
        f"# Seconds per epoch on 60,000 images: `cnn.yaml`'s default network, {threads} CPU "
        "threads",
        "",
        f"Command: `python scripts/benchmark.py --epoch-speed {npz}`. Each variant trains two "
        f"epochs on {rows:,} images; the second is timed and scaled to 60,000. Batch size "
        f"{params['batch_size']} unless named.",
        "",
        "| variant | seconds per epoch (60k) | train accuracy, epoch 2 |",
        "|---|---|---|",
    ]
    for name, options in variants:
        batch = int(options.get("batch", params["batch_size"]))
        ctx = BuildContext(task="multiclass", n_classes=10, seed=0, threads=threads,
                           layout=layout)  # fmt: skip
        network: Any = FAMILIES["cnn"].build(params | {"batch_size": batch}, ctx)
        keras.backend.clear_session()
        model = network.build(x)
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                      jit_compile=bool(options.get("jit")))  # fmt: skip
        ends: list[float] = []
        clock = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs, ends=ends: ends.append(time.perf_counter())
        )
        if options.get("pipeline"):
            data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(rows, seed=0)
            data = data.batch(batch).prefetch(tf.data.AUTOTUNE)
            history = model.fit(data, epochs=2, callbacks=[clock], verbose=0)
        else:
            history = model.fit(x, y, batch_size=batch, epochs=2, callbacks=[clock], verbose=0)
        seconds = (ends[1] - ends[0]) * 60_000 / rows
        accuracy = history.history["accuracy"][-1]
        lines.append(f"| {name} | {seconds:.1f} | {accuracy:.4f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"
