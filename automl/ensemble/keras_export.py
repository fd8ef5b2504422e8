"""An ensemble of Keras members saved as one Keras model (`ensembles/<name>/model.keras`).

Each member model is called as a layer on one shared input; its output is scaled by its weight
with built-in `Rescaling` layers (which also undo a regression member's target scaling) and
the outputs are added. No Lambda and no custom layer, so the file loads with
`safe_mode=True` anywhere Keras is installed. The input is the members' encoded features: the
saved `encoder.joblib` beside the model turns a data frame into them. The output matches the
Python ensemble: class probabilities (n, n_classes), or values (n, 1) for regression.

A CNN that predicts the mean over the image and its mirror (`automl.models.cnn`) is called on
both, mirrored by built-in layers. Only a fixed weighted average of Keras members that share
one encoder and one numeric input can be exported this way; otherwise the summary says why it
was skipped.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from automl.io import read_json, sha256_file, verify
from automl.run import RunDir

EXPORT_FILE = "model.keras"
ENCODER_COPY = "encoder.joblib"


def _skip(reason: str) -> dict[str, Any]:
    return {"skipped": reason}


def export_if_keras(run: RunDir, summary: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Write `model.keras` for an all-Keras weighted ensemble; say why not otherwise."""
    from automl.models import FAMILIES
    from automl.run import ENCODER_FILE, model_dirs

    members = summary["members"]
    if summary["combiner"] != "weighted":
        return _skip(f"{summary['combiner']} is not a fixed weighted average")
    others = [m["name"] for m in members if not FAMILIES[m["family"]].uses_keras]
    if others:
        return _skip(f"not all members are Keras models ({', '.join(others[:3])} ...)")
    if summary["power"] != 1.0:
        return _skip("power averaging has no built-in Keras layer")
    encoders = {m["trial"]: verify(run.trial_dir(m["trial"]), ENCODER_FILE) for m in members}
    if len({sha256_file(p) for p in encoders.values()}) != 1:
        return _skip("members use different encoders")
    weighted: list[tuple[Path, float]] = []
    for m in members:  # a cross-fitted member's weight is shared among its folds
        dirs = model_dirs(run.trial_dir(m["trial"]))
        weighted.extend((d, m["weight"] / len(dirs)) for d in dirs)
    try:
        model = build_keras_ensemble(weighted)
    except NotExportable as exc:
        return _skip(str(exc))
    tmp = directory / f".tmp-{os.getpid()}-{EXPORT_FILE}"
    model.save(tmp)
    os.replace(tmp, directory / EXPORT_FILE)
    shutil.copyfile(next(iter(encoders.values())), directory / ENCODER_COPY)
    return {
        "file": EXPORT_FILE,
        "files": [EXPORT_FILE, ENCODER_COPY],
        "input": f"features encoded by {ENCODER_COPY} (automl.preprocess.transform)",
    }


class NotExportable(Exception):
    """A member that cannot share the ensemble's one numeric input."""


def build_keras_ensemble(members: list[tuple[Path, float]]) -> Any:
    """One functional model averaging saved Keras members (model folders) with fixed weights."""
    from automl.models.cnn import averages_mirrors, mirror_averaged
    from automl.models.keras_base import META_FILE, MODEL_FILE, import_keras

    keras = import_keras(1)
    inputs = None
    scaled = []
    task = None
    for i, (path, weight) in enumerate(members):
        meta = read_json(verify(path, META_FILE))
        member = keras.saving.load_model(verify(path, MODEL_FILE), safe_mode=True)
        member.name = f"member_{i}"
        if len(member.inputs) != 1 or "float" not in str(member.inputs[0].dtype):
            raise NotExportable(
                f"member {path.name} takes several or non-numeric inputs (text, feature groups)"
            )
        if inputs is None:
            inputs = keras.Input(shape=member.inputs[0].shape[1:], name="features")
        share = weight
        task = meta["task"]
        if task == "regression":
            layer = keras.layers.Rescaling(
                scale=share * meta["y_std"], offset=share * meta["y_mean"], name=f"weight_{i}"
            )
        else:
            layer = keras.layers.Rescaling(scale=share, name=f"weight_{i}")
        if averages_mirrors(meta.get("family", "mlp"), meta["params"]):
            shape = meta["layout"]["image_shape"]
            output = mirror_averaged(keras, member, inputs, shape, name=f"mirror_average_{i}")
        else:
            output = member(inputs)
        scaled.append(layer(output))
    total = keras.layers.Add(name="weighted_sum")(scaled) if len(scaled) > 1 else scaled[0]
    if task == "binary":  # members output p(class 1); give both columns as Python does
        total = keras.layers.Concatenate(name="probabilities")(
            [keras.layers.Rescaling(scale=-1.0, offset=1.0, name="complement")(total), total]
        )
    return keras.Model(inputs, total, name="ensemble")
