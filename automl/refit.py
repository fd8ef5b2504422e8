"""Refit the chosen model's members on every row of the user's data.

The search fits each trial on part of the rows (K-1 folds under cross-fitting, the fit part
with one holdout split) so that every score is measured on rows the model did not see. Once
the ensemble is chosen, those scores have done their work: each member is fitted once more on
all the rows of the search's data, the test part split off from it included, with the
iteration or epoch count its early stopping chose (the mean over folds). A separate
`test_data` file is never fitted on: it is the user's own holdout.

The refit models live in `trials/NNNN/refit/` beside the search's own (which stay, for
`load(..., refit=False)`); the trial's test score remains the one measured before the refit.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from automl.data import DataSource, Schema, data_fingerprint, load_dataset, source_name
from automl.errors import UserInputError
from automl.io import read_json, verify, write_bytes_atomic, write_json_atomic, write_manifest
from automl.models import FAMILIES, BuildContext
from automl.preprocess import fit_encoder, layout, transform
from automl.run import ENCODER_FILE, REFIT_INFO, RunDir, load_trials

# Why several targets keep their search-time models: a refit learns every target's counts
# (epochs, iterations) from the one objective's early stopping, which the further targets'
# heads and per-target models did not stop on; one holdout split keeps their scores honest.
SEVERAL_TARGETS = "the refit on every row takes one target (this run has several)"


@dataclass
class Rows:
    """Every row the refit learns from, with the schema the search inferred."""

    x: pd.DataFrame
    y: np.ndarray
    schema: Schema
    task: str
    n_classes: int
    seed: int


def refit_rows(run: RunDir, data: DataSource | None = None) -> Rows:
    """The search's data, read again and checked against the fingerprint the search recorded:
    its fit, validation and (when split from it) test rows."""
    info = run.info()
    source: DataSource = info["data"] if data is None else data
    is_file = not isinstance(source, pd.DataFrame) and not str(source).startswith("builtin:")
    if is_file and not Path(str(source)).exists():
        raise UserInputError(
            f"{source}: the search's data is not there; the refit needs it (pass its path)"
        )
    if data_fingerprint(source) != info["data_sha256"]:
        raise UserInputError(
            f"{source_name(source)}: not the data the search ran on (its sha256 differs)"
        )
    split_test = info.get("test_data") is None
    dataset = load_dataset(
        source,
        info["target"],
        task=info["task"],
        # With a test file, the search split no test part off: the data stand in for it here
        # (and are not used as such), so no row is left out.
        test_data=None if split_test else source,
        test_size=float(info["test_size"]),
        seed=int(info["seed"]),
        text_columns=info["schema"].get("text") or None,
    )
    parts_x = [dataset.x_fit, dataset.x_val]
    parts_y = [dataset.y_fit, dataset.y_val]
    if split_test:  # the test part came out of these rows: refit on it too
        parts_x.append(dataset.x_test)
        parts_y.append(dataset.y_test)
    return Rows(
        pd.concat(parts_x, ignore_index=True),
        np.concatenate(parts_y),
        Schema.from_dict(info["schema"]),
        dataset.task,
        len(info["classes"]),
        int(info["seed"]),
    )


def refit_params(
    params: dict[str, Any], stopped_at: list[dict[str, Any]], inherited_epochs: int = 0
) -> dict[str, Any]:
    """The trial's configuration with the counts its early stopping chose: the mean over its
    folds for whole numbers (iterations, epochs), the first fold's for anything else.

    A network trained on a share of the rows (`subsample`) is refit on all of them; one that
    continued from a lower rung's weights (`search.promotion`) trains from scratch for the
    epochs those weights had (`inherited_epochs`) and its own."""
    out = dict(params)
    for key in {k for fold in stopped_at for k in fold}:
        values = [fold[key] for fold in stopped_at if key in fold]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out[key] = max(1, int(round(float(np.mean(values)))))
        else:
            out[key] = values[0]
    if "subsample" in out and "epochs" in out:  # a network's share of the rows
        out["subsample"] = 1.0
    if inherited_epochs and "epochs" in out:
        out["epochs"] = int(out["epochs"]) + int(inherited_epochs)
    return out


def refit_scale(params: dict[str, Any], stopped_at: list[dict[str, Any]], inherited: int) -> float:
    """How much longer a network's refit trains than the fit it was measured on: every row
    instead of its `subsample` share, and the inherited epochs besides its own."""
    own = refit_params(params, stopped_at)
    full = refit_params(params, stopped_at, inherited)
    epochs = float(full.get("epochs", 1)) / max(1.0, float(own.get("epochs", 1)))
    return epochs / max(float(params.get("subsample", 1.0)), 1e-9)


def refit_trial(run: RunDir, number: int, rows: Rows, threads: int | None = None) -> float:
    """Fit trial `number`'s configuration on `rows` into its refit folder; the seconds taken.

    The folder appears whole or not at all: it is written under a temporary name first."""
    directory = run.trial_dir(number)
    config = read_json(verify(directory, "config.json"))
    family = FAMILIES[config["family"]]
    params = refit_params(
        config["params"], config.get("stopped_at") or [], config.get("inherited_epochs", 0)
    )
    start = time.perf_counter()
    encoder = fit_encoder(family.encoding, rows.schema, rows.x)
    x = transform(encoder, rows.x)
    build_ctx = BuildContext(
        task=rows.task,
        n_classes=rows.n_classes,
        seed=rows.seed,
        threads=threads or max(1, os.cpu_count() or 1),
        layout=layout(encoder),
    )
    model = family.build(params, build_ctx)
    model.fit(x, rows.y, None, None)
    seconds = time.perf_counter() - start
    final = run.refit_dir(number)
    tmp = final.with_name(f".{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = model.save(tmp)
    buffer = io.BytesIO()
    joblib.dump(encoder, buffer)
    write_bytes_atomic(tmp / ENCODER_FILE, buffer.getvalue())
    write_json_atomic(
        tmp / REFIT_INFO,
        {"family": config["family"], "params": params, "rows": len(rows.y), "seconds": seconds},
    )
    write_manifest(tmp, [*files, ENCODER_FILE, REFIT_INFO])
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return seconds


def expected_refit_seconds(one_fit: float, folds: int, train_rows: int, rows: int) -> float:
    """A refit's likely cost from the trial's measured `one_fit` (one model's fit up to the
    counts early stopping kept), scaled by the rows (about linear for trees)."""
    fit_rows = train_rows * (folds - 1) // folds if folds else train_rows
    return one_fit * rows / max(fit_rows, 1)


def refit_members(
    run: RunDir,
    members: list[int],
    data: DataSource | None = None,
    deadline: float | None = None,
    say: Callable[[str], None] = lambda _: None,
    threads: int | None = None,
) -> dict[int, str]:
    """Refit each trial in `members` (the most weighted first) that has no refit yet; a member
    whose measured fit time would pass `deadline` keeps its search-time models. Returns what
    happened to each: `refit`, `kept` (already refit) or why it was skipped."""
    todo = [n for n in members if not run.has_refit(n)]
    outcome = {n: "kept" for n in members if n not in todo}
    if not todo:
        return outcome
    info = run.info()
    if info.get("other_targets"):
        say(f"refit: skipped, {SEVERAL_TARGETS}; the search-time models predict")
        return outcome | {n: f"skipped: {SEVERAL_TARGETS}" for n in todo}
    rows = refit_rows(run, data)
    folds = int(info.get("cv") or 0)
    train_rows = info["rows"].get("train_cross_fitted") or info["rows"]["fit"]
    records = {r.number: r for r in load_trials(run)}
    for number in todo:
        measured = read_json(verify(run.trial_dir(number), "result.json")).get("refit_seconds")
        if measured is None:  # a trial from before this was measured: one model's fit time
            measured = (records[number].fit_seconds or 0.0) / max(folds, 1)
        expected = expected_refit_seconds(measured, folds, train_rows, len(rows.y))
        if deadline is not None and time.time() + expected > deadline:
            outcome[number] = f"skipped: about {expected:.1f} s, past the time budget"
            say(f"refit: trial {number} keeps its search-time models ({outcome[number]})")
            continue
        seconds = refit_trial(run, number, rows, threads)
        outcome[number] = "refit"
        say(f"refit: trial {number} on {len(rows.y)} rows in {seconds:.1f} s")
    return outcome


def refit_best(
    run_dir: str | Path | RunDir,
    data: DataSource | None = None,
    deadline: float | None = None,
    say: Callable[[str], None] = lambda _: None,
    threads: int | None = None,
) -> dict[int, str]:
    """Refit the members of what `load(run_dir, "best")` chooses (see `refit_members`); an
    open `RunDir` keeps the storage URL its caller holds (with its password)."""
    from automl.predict import choose

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    _, members, _ = choose(run, "best")
    by_weight = sorted(members, key=lambda m: -m[2])
    numbers = [number for number, _, _ in by_weight]
    return refit_members(run, numbers, data, deadline, say, threads)
