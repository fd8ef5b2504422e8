"""Evaluate one configuration: encode, fit, predict, score, and save everything the ensemble,
the report and `predict` need into the trial's folder.

`evaluate` is the one function every executor calls; whatever goes wrong inside it is raised
and becomes a failed trial in the loop.
"""

from __future__ import annotations

import io
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import joblib
import numpy as np

from automl.data import Dataset
from automl.errors import TrialFailed
from automl.io import write_bytes_atomic, write_json_atomic, write_manifest
from automl.metrics import EXTRA_METRICS, METRICS, Metric
from automl.models import FAMILIES, BuildContext
from automl.preprocess import fit_encoder, transform
from automl.run import RunDir
from automl.space import SearchSpace

ENCODER_FILE = "encoder.joblib"


@dataclass
class TrialContext:
    """Everything a trial needs that does not change between trials."""

    dataset: Dataset
    space: SearchSpace
    metric: Metric
    run: RunDir
    seed: int = 0
    threads: int = 1
    deadline: float | None = None
    _encoded: dict[str, tuple[Any, np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False
    )

    def encoded(self, encoding: str) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
        """The fitted encoder and encoded fit/val/test matrices, computed once per encoding."""
        if encoding not in self._encoded:
            d = self.dataset
            encoder = fit_encoder(encoding, d.schema, d.x_fit)
            self._encoded[encoding] = (
                encoder,
                transform(encoder, d.x_fit),
                transform(encoder, d.x_val),
                transform(encoder, d.x_test),
            )
        return self._encoded[encoding]


@dataclass
class TrialResult:
    val_score: float
    test_score: float
    fit_seconds: float
    predict_seconds: float
    extra_scores: dict[str, float]


def check_predictions(pred: np.ndarray, n_rows: int, task: str, n_classes: int) -> None:
    expected = (n_rows, n_classes) if task != "regression" else (n_rows,)
    if pred.shape != expected:
        raise TrialFailed(f"predictions have shape {pred.shape}; expected {expected}")
    if not np.all(np.isfinite(pred)):
        raise TrialFailed("predictions contain NaN or infinite values")


def evaluate(number: int, flat: dict[str, Any], ctx: TrialContext) -> TrialResult:
    config = ctx.space.config(flat)
    family = FAMILIES[config.family]
    data = ctx.dataset
    n_classes = len(data.target.classes)
    trial_dir = ctx.run.trial_dir(number)
    if trial_dir.exists():  # left by an interrupted attempt of this same trial
        shutil.rmtree(trial_dir)
    trial_dir.mkdir(parents=True)

    encoder, x_fit, x_val, x_test = ctx.encoded(family.encoding)
    build_ctx = BuildContext(
        task=data.task, n_classes=n_classes, seed=ctx.seed, threads=ctx.threads
    )
    model = family.build(config.params, build_ctx)
    start = time.perf_counter()
    model.fit(x_fit, data.y_fit, x_val, data.y_val, deadline=ctx.deadline)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    val_pred = model.predict(x_val)
    test_pred = model.predict(x_test)
    predict_seconds = time.perf_counter() - start
    check_predictions(val_pred, len(data.y_val), data.task, n_classes)
    check_predictions(test_pred, len(data.y_test), data.task, n_classes)

    val_score = ctx.metric(data.y_val, val_pred)
    if not np.isfinite(val_score):
        raise TrialFailed(f"validation {ctx.metric.name} is {val_score}")
    test_score = ctx.metric(data.y_test, test_pred)
    extra = {f"test_{m}": METRICS[m](data.y_test, test_pred) for m in EXTRA_METRICS[data.task]}

    files = model.save(trial_dir)
    buffer = io.BytesIO()
    joblib.dump(encoder, buffer)
    write_bytes_atomic(trial_dir / ENCODER_FILE, buffer.getvalue())
    for part, pred in (("val", val_pred), ("test", test_pred)):
        buffer = io.BytesIO()
        np.save(buffer, pred, allow_pickle=False)
        write_bytes_atomic(trial_dir / f"{part}_pred.npy", buffer.getvalue())
    write_json_atomic(trial_dir / "config.json", {"family": config.family, "params": config.params})
    result = TrialResult(val_score, test_score, fit_seconds, predict_seconds, extra)
    write_json_atomic(trial_dir / "result.json", result.__dict__ | {"metric": ctx.metric.name})
    names = [*files, ENCODER_FILE, "val_pred.npy", "test_pred.npy", "config.json", "result.json"]
    write_manifest(trial_dir, names)
    return result
