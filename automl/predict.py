"""Predictions on new data from a run directory: the best ensemble, or the best single model.

Members are loaded from their trial folders only after each file's sha256 matches the trial's
manifest; Keras models load in safe mode. Input columns are matched by name: extra columns are
ignored, order does not matter, a missing one is an error, unseen categories are encoded as
unknown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import joblib
import numpy as np
import pandas as pd

from automl.data import Schema, coerce_features
from automl.ensemble.base import weighted_average
from automl.ensemble.build import COMBINER_FILE, load_ensembles
from automl.errors import UserInputError
from automl.io import atomic_file, verify
from automl.metrics import METRICS
from automl.preprocess import transform
from automl.run import ENCODER_FILE, RunDir, load_trial_model, load_trials


class TrialModel:
    """One trial's encoder and model, loaded from its folder: the refit on every row when
    `refit` and there is one, else the search's own (the mean of its folds under cv).

    A network's refit joins its search-time network instead of replacing it, and the trial
    predicts the mean of the two. They are one architecture trained from different random
    starts on different rows, so together they are an ensemble of two. A single network's
    variance over its start makes that worth a second prediction (measured against replacing
    in benchmarks/fashion_mnist.md). A tree or linear refit replaces its search-time model.
    """

    def __init__(self, run: RunDir, number: int, family: str, refit: bool = True) -> None:
        from automl.models import FAMILIES

        self.refit = refit and run.has_refit(number)
        self.parts: list[tuple[Any, Any]] = []  # (encoder, model), their predictions averaged
        if not self.refit or FAMILIES[family].uses_keras:
            directory = run.trial_dir(number)
            self.parts.append(
                (joblib.load(verify(directory, ENCODER_FILE)), load_trial_model(directory))
            )
        if self.refit:
            directory = run.refit_dir(number)
            self.parts.append(
                (joblib.load(verify(directory, ENCODER_FILE)), FAMILIES[family].load(directory))
            )

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        preds = [model.predict(transform(encoder, x)) for encoder, model in self.parts]
        return preds[0] if len(preds) == 1 else np.mean(preds, axis=0)


class Predictor:
    """Trial models combined as their ensemble was: a weighted (power) average, or a stacking
    meta-learner; a single model is one member of weight 1."""

    def __init__(
        self,
        run: RunDir,
        members: list[tuple[int, str, float]],
        name: str,
        power: float = 1.0,
        combiner: Any = None,
        refit: bool = True,
    ) -> None:
        info = run.info()
        self.task: str = info["task"]
        self.classes: list[Any] = info["classes"]
        self.schema = Schema.from_dict(info["schema"])
        self.power = power
        self.combiner = combiner
        self.members = [
            (TrialModel(run, number, family, refit), weight) for number, family, weight in members
        ]
        refit_count = sum(model.refit for model, _ in self.members)
        self.refit = refit_count == len(self.members)  # every member saw every row
        if refit_count:
            how = "refit on every row" if self.refit else f"{refit_count} members refit"
            name = f"{name} ({how})"
        self.name = name

    def _raw(self, frame: pd.DataFrame, source: str) -> np.ndarray:
        x = coerce_features(frame, self.schema, source)
        preds = [model.predict(x) for model, _ in self.members]
        if self.combiner is not None:
            return self.combiner.predict(preds)
        weights = np.array([weight for _, weight in self.members])
        return weighted_average(np.stack(preds), weights, self.power)

    def predict_proba(self, frame: pd.DataFrame, source: str = "data") -> np.ndarray:
        if self.task == "regression":
            raise ValueError("predict_proba is for classification runs; this run is a regression")
        return self._raw(frame, source)

    def predict(self, frame: pd.DataFrame, source: str = "data") -> np.ndarray:
        raw = self._raw(frame, source)
        if self.task == "regression":
            return raw
        return np.asarray(self.classes, dtype=object)[raw.argmax(axis=1)]

    def predict_frame(self, frame: pd.DataFrame, source: str = "data") -> pd.DataFrame:
        """`prediction` plus, for classification, one `proba_<label>` column per class."""
        raw = self._raw(frame, source)
        if self.task == "regression":
            return pd.DataFrame({"prediction": raw})
        out = pd.DataFrame(
            {"prediction": np.asarray(self.classes, dtype=object)[raw.argmax(axis=1)]}
        )
        for i, label in enumerate(self.classes):
            out[f"proba_{label}"] = raw[:, i]
        return out


def load_predictor(
    run_dir: str | Path | RunDir, which: str = "best", refit: bool = True
) -> Predictor:
    """`best`, `best_single`, or a trial number (see `choose`); with `refit`, each member's
    models refit on every row where `automl.refit` made them, else the search's own."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    name, members, how = choose(run, which)
    return Predictor(run, members, name, refit=refit, **how)


def choose(run: RunDir, which: str) -> tuple[str, list[tuple[int, str, float]], dict[str, Any]]:
    """The model `which` names: (its name, its members as (trial, family, weight), how they
    combine).

    `best` compares single trials by their validation score with ensembles by their
    cross-validated one (each row scored by an ensemble fit without it; see
    `ensemble.insight`), never by a score fit on the rows it is measured on; on a tie the
    single model wins. An ensemble whose rows were too few to cross-validate is left out."""
    info = run.info()
    metric = METRICS[info["metric"]]
    trials = [r for r in load_trials(run) if r.status == "complete" and r.val_score is not None]
    family_of = {r.number: r.family for r in trials}
    if which.isdigit():
        number = int(which)
        if number not in family_of:
            raise UserInputError(f"{run.path}: no completed trial {number}")
        return f"trial {number}", [(number, family_of[number], 1.0)], {}
    candidates: list[tuple[float, str, list[tuple[int, str, float]], dict[str, Any]]] = [
        (cast(float, r.val_score), r.name, [(r.number, r.family, 1.0)], {}) for r in trials
    ]
    if which == "best":
        for ensemble in load_ensembles(run):
            honest = ensemble.get("honest_val_score")
            if honest is None:
                continue
            members = [(m["trial"], m["family"], m["weight"]) for m in ensemble["members"]]
            how: dict[str, Any] = {"power": ensemble.get("power", 1.0)}
            if ensemble.get("combiner", "weighted") != "weighted":
                directory = run.ensemble_dir(ensemble["name"])
                how["combiner"] = joblib.load(verify(directory, COMBINER_FILE))
            candidates.append((honest, f"ensemble-{ensemble['name']}", members, how))
    elif which != "best_single":
        raise UserInputError(
            f"which must be 'best', 'best_single' or a trial number; got {which!r}"
        )
    if not candidates:
        raise UserInputError(f"{run.path}: no completed trial to predict with")
    candidates.sort(key=lambda c: -c[0] if metric.greater_is_better else c[0])
    _, name, members, how = candidates[0]
    return name, members, how


CHUNK_ROWS = 100_000


def predict_to_file(
    predictor: Predictor, data: str, out: Path, chunk_rows: int = CHUNK_ROWS
) -> int:
    """Predict `data` (a file or `builtin:NAME`) chunk by chunk into `out` (CSV, or Parquet for
    a .parquet name), so memory stays bounded by the chunk, not the file. The file appears
    whole or not at all (`atomic_file`)."""
    from automl.data import iter_table

    parquet = out.suffix.lower() in (".parquet", ".pq")
    rows = 0
    writer: Any = None
    with atomic_file(out) as tmp:
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as text:
                for chunk in iter_table(data, chunk_rows):
                    if chunk.empty:  # a header and no rows: said below, in one line
                        continue
                    predictions = predictor.predict_frame(chunk, source=data)
                    rows += len(predictions)
                    if parquet:
                        writer = _write_parquet_chunk(writer, tmp, predictions)
                    else:
                        predictions.to_csv(text, index=False, header=rows == len(predictions))
        finally:
            if writer is not None:
                writer.close()
        if rows == 0:
            raise UserInputError(f"{data}: has a header but no data rows")
    return rows


def _write_parquet_chunk(writer: Any, path: Path, predictions: pd.DataFrame) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(predictions, preserve_index=False)
    if writer is None:
        writer = pq.ParquetWriter(path, table.schema)
    writer.write_table(table.cast(writer.schema))
    return writer
