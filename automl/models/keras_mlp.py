"""The Keras MLP family: a functional model built from a configuration, trained with callbacks.

TensorFlow is imported here lazily (it costs ~7 s), the first time a Keras model is built or
loaded, with its thread pools sized to the trial's CPU allotment. Each fit clears the Keras
session first so memory stays flat across hundreds of trials in one process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from automl.errors import TrialFailed
from automl.io import read_json, verify, write_json_atomic
from automl.models import BuildContext, Family

MODEL_FILE = "model.keras"
META_FILE = "keras_meta.json"
HISTORY_FILE = "history.csv"
MLP_PARAMS = frozenset(
    {
        "n_layers",
        "units",
        "shrink",
        "activation",
        "dropout",
        "batch_norm",
        "l2",
        "optimizer",
        "learning_rate",
        "momentum",
        "batch_size",
        "epochs",
        "patience",
    }
)


def import_keras(threads: int = 1) -> Any:
    """Import Keras on TensorFlow quietly, with TensorFlow's thread pools set to `threads`."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    import keras
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices for each new trial's model are noise
    try:  # only possible before TensorFlow's runtime starts; later calls keep the first value
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    return keras


def dense_block(
    x: Any, units: int, *, activation: str, dropout: float, batch_norm: bool, l2: float, name: str
) -> Any:
    """Dense -> (BatchNorm) -> activation -> (Dropout), every layer named after the block."""
    import keras
    from keras import layers

    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    x = layers.Dense(units, kernel_regularizer=regularizer, name=f"{name}_dense")(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def output_head(x: Any, task: str, n_classes: int) -> tuple[Any, str]:
    """The output layer and the loss that fits the task."""
    from keras import layers

    if task == "binary":
        return layers.Dense(1, activation="sigmoid", name="output")(x), "binary_crossentropy"
    if task == "multiclass":
        out = layers.Dense(n_classes, activation="softmax", name="output")(x)
        return out, "sparse_categorical_crossentropy"
    return layers.Dense(1, name="output")(x), "mse"


def make_optimizer(params: dict[str, Any]) -> Any:
    import keras

    name = params.get("optimizer", "adam")
    lr = float(params.get("learning_rate", 1e-3))
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=float(params.get("momentum", 0.9)))
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr)
    return keras.optimizers.Adam(learning_rate=lr)


class KerasMLP:
    """A multilayer perceptron over the encoded features, with our fit/predict/save contract."""

    def __init__(self, params: dict[str, Any], ctx: BuildContext) -> None:
        self.params = dict(params)
        self.task = ctx.task
        self.n_classes = ctx.n_classes
        self.seed = ctx.seed
        self.threads = ctx.threads
        self.log_dir = ctx.log_dir
        self.on_epoch = ctx.on_epoch
        self.y_mean = 0.0
        self.y_std = 1.0
        self.model: Any = None
        self.history: dict[str, list[float]] = {}

    def build(self, n_features: int) -> Any:
        keras = import_keras(self.threads)
        p = self.params
        inputs = keras.Input(shape=(n_features,), name="features")
        x = inputs
        units = float(p.get("units", 128))
        for i in range(int(p.get("n_layers", 2))):
            x = dense_block(
                x,
                max(8, int(round(units))),
                activation=p.get("activation", "relu"),
                dropout=float(p.get("dropout", 0.0)),
                batch_norm=bool(p.get("batch_norm", False)),
                l2=float(p.get("l2", 0.0)),
                name=f"block{i}",
            )
            units *= float(p.get("shrink", 1.0))
        outputs, loss = output_head(x, self.task, self.n_classes)
        model = keras.Model(inputs, outputs, name="mlp")
        model.compile(optimizer=make_optimizer(p), loss=loss)
        return model

    def fit(self, x, y, x_val, y_val, deadline=None):  # noqa: ANN001, ANN201
        keras = import_keras(self.threads)
        keras.backend.clear_session()
        keras.utils.set_random_seed(self.seed)
        x, x_val = np.asarray(x, np.float32), np.asarray(x_val, np.float32)
        y, y_val = self._encode_y(np.asarray(y), fit=True), self._encode_y(np.asarray(y_val))
        self.model = self.build(x.shape[1])
        patience = int(self.params.get("patience", 10))
        callbacks = [
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=patience, restore_best_weights=True
            ),
            keras.callbacks.TerminateOnNaN(),
        ]
        if deadline is not None:
            callbacks.append(_deadline_callback(deadline))
        if self.on_epoch is not None:  # lets a scheduler stop a poor trial early
            callbacks.append(_epoch_reporter(self, x_val, self.on_epoch))
        if self.log_dir is not None:  # per-epoch curves for `tensorboard --logdir RUN_DIR`
            callbacks.append(
                keras.callbacks.TensorBoard(
                    log_dir=str(self.log_dir), write_graph=False, profile_batch=0
                )
            )
        result = self.model.fit(
            x,
            y,
            validation_data=(x_val, y_val),
            epochs=int(self.params.get("epochs", 100)),
            batch_size=int(self.params.get("batch_size", 64)),
            callbacks=callbacks,
            verbose=0,
        )
        self.history = {k: [float(v) for v in vals] for k, vals in result.history.items()}
        losses = self.history.get("loss", [])
        if not losses or not np.isfinite(losses[-1]):
            raise TrialFailed("Keras training loss became NaN or infinite")
        return self

    def _encode_y(self, y: np.ndarray, fit: bool = False) -> np.ndarray:
        if self.task != "regression":
            return y.astype(np.int64)
        if fit:  # a standardized target trains far better than raw prices
            self.y_mean, self.y_std = float(y.mean()), float(y.std() or 1.0)
        return ((y - self.y_mean) / self.y_std).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(self.model.predict(np.asarray(x, np.float32), batch_size=4096, verbose=0))
        out = out.astype(float)
        if self.task == "binary":
            p1 = out[:, 0]
            return np.column_stack([1.0 - p1, p1])
        if self.task == "multiclass":
            return out
        return out[:, 0] * self.y_std + self.y_mean

    def count_params(self) -> int:
        return int(self.model.count_params())

    def save(self, directory: Path) -> list[str]:
        directory = Path(directory)
        tmp = directory / f".tmp-{os.getpid()}-{MODEL_FILE}"
        self.model.save(tmp)
        os.replace(tmp, directory / MODEL_FILE)
        write_json_atomic(
            directory / META_FILE,
            {
                "params": self.params,
                "task": self.task,
                "n_classes": self.n_classes,
                "y_mean": self.y_mean,
                "y_std": self.y_std,
                "seed": self.seed,
            },
        )
        _write_history(directory / HISTORY_FILE, self.history)
        return [MODEL_FILE, META_FILE, HISTORY_FILE]


def _deadline_callback(deadline: float) -> Any:
    """A callback that stops training at the search's wall-clock deadline (best weights kept)."""
    import keras

    class Deadline(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if time.time() >= deadline:
                self.model.stop_training = True

    return Deadline()


def _epoch_reporter(mlp: KerasMLP, x_val: np.ndarray, report: Any) -> Any:
    """A callback handing the validation predictions of each epoch to `report`."""
    import keras

    class EpochReport(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            report(epoch + 1, mlp.predict(x_val))

    return EpochReport()


def _write_history(path: Path, history: dict[str, list[float]]) -> None:
    from automl.io import write_text_atomic

    keys = sorted(history)
    rows = ["epoch," + ",".join(keys)]
    n = max((len(v) for v in history.values()), default=0)
    for i in range(n):
        rows.append(f"{i}," + ",".join(repr(history[k][i]) for k in keys))
    write_text_atomic(path, "\n".join(rows) + "\n")


def load_mlp(directory: Path) -> KerasMLP:
    """Load a saved MLP with Keras' safe mode on, after checking the manifest."""
    directory = Path(directory)
    meta = read_json(verify(directory, META_FILE))
    keras = import_keras(1)
    ctx = BuildContext(task=meta["task"], n_classes=meta["n_classes"], seed=meta["seed"])
    mlp = KerasMLP(meta["params"], ctx)
    mlp.y_mean, mlp.y_std = meta["y_mean"], meta["y_std"]
    mlp.model = keras.saving.load_model(verify(directory, MODEL_FILE), safe_mode=True)
    return mlp


FAMILIES = [
    Family(
        "mlp",
        MLP_PARAMS,
        "onehot",
        lambda params, ctx: KerasMLP(params, ctx),
        load_mlp,
        uses_keras=True,
    ),
]
