"""What every Keras family shares: training with callbacks, prediction, saving and loading.

A family subclasses `KerasNetwork` and says two things: how its functional graph is built
(`graph`) and how the encoded matrix is split into the graph's inputs (`split`). Training is
the same for all of them:
- callbacks: EarlyStopping (restores the best epoch), ModelCheckpoint (best weights only),
  ReduceLROnPlateau, TerminateOnNaN, CSVLogger (`history.csv`, written live), TensorBoard, a
  wall-clock deadline, and a per-epoch report of validation predictions so a pruner or
  scheduler can stop a poor trial early;
- fidelities: `epochs`, and `subsample`, the share of the fit rows a trial trains on;
- memory: each fit clears the Keras session, so hundreds of trials in one process stay flat.

TensorFlow is imported lazily (it costs ~10 s here), with its thread pools sized to the trial's CPU
allotment; a visible GPU is used with memory growth and mixed precision. Models are saved as
`.keras` with only the main output and load with `safe_mode=True`; a diagram is saved where
Graphviz is installed.
"""

from __future__ import annotations

import abc
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from automl.errors import TrialFailed
from automl.io import read_json, verify, write_json_atomic, write_text_atomic
from automl.models.base import BuildContext, Family

MODEL_FILE = "model.keras"
META_FILE = "keras_meta.json"
HISTORY_FILE = "history.csv"
CHECKPOINT_FILE = "checkpoint.weights.h5"
DIAGRAM_FILE = "model.png"
PREDICT_BATCH = 2048
MAIN_OUTPUT = "output"
AUX_OUTPUT = "aux"
# Parameters every network understands (training, not architecture).
TRAINING_PARAMS = frozenset(
    {
        "optimizer",
        "learning_rate",
        "momentum",
        "batch_size",
        "epochs",
        "patience",
        "subsample",
        "target_weight",
        "lr_schedule",
    }
)


# A line of TensorFlow's C++ log (`I0000 00:00:17.96 9669 cudart_stub.cc:31] Could not find
# cuda drivers ...`), or absl's note that such lines go to stderr before it is set up.
NATIVE_LOG_LINE = re.compile(
    r"[IWEF]\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w.-]+:\d+\]|"
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
)


@contextmanager
def native_logs_dropped() -> Iterator[None]:
    """Drop TensorFlow's C++ log lines written to stderr during the block; everything else
    written there (a Python warning, a real error's message) is written back after it.

    `TF_CPP_MIN_LOG_LEVEL` does not reach the lines TensorFlow's libraries write while they
    load, before absl's logging is set up (`cudart_stub.cc:31] Could not find cuda drivers`):
    they go straight to file descriptor 2, so that is where they are caught."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep quiet
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if not NATIVE_LOG_LINE.match(line)]  # fmt: skip
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def import_keras(threads: int = 1) -> Any:
    """Import Keras on TensorFlow quietly, with TensorFlow's thread pools set to `threads`:
    no TensorFlow log line reaches the user's terminal (errors still arrive, as exceptions)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    with native_logs_dropped():
        import keras
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")  # where CUDA logs that it found none
    tf.get_logger().setLevel("ERROR")  # retracing notices for each new trial's model are noise
    try:  # only possible before TensorFlow's runtime starts; later calls keep the first value
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        for gpu in gpus:  # trials sharing a GPU each take the memory they use, not all of it
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        pass
    keras.mixed_precision.set_global_policy(precision_policy(len(gpus)))
    return keras


def precision_policy(gpus: int) -> str:
    """Keras' dtype policy: float16 compute with float32 weights on a GPU (tensor cores; Keras
    scales the loss), float32 on CPUs, where float16 is slower. Output layers stay float32."""
    return "mixed_float16" if gpus else "float32"


def output_head(x: Any, task: str, n_classes: int, name: str = MAIN_OUTPUT) -> tuple[Any, str]:
    """The output layer and the loss that fits the task."""
    from keras import layers

    # float32 outputs under mixed precision: a float16 softmax or sigmoid loses the small
    # probabilities log-loss needs.
    if task == "binary":
        out = layers.Dense(1, activation="sigmoid", name=name, dtype="float32")(x)
        return out, "binary_crossentropy"
    if task == "multiclass":
        out = layers.Dense(n_classes, activation="softmax", name=name, dtype="float32")(x)
        return out, "sparse_categorical_crossentropy"
    return layers.Dense(1, name=name, dtype="float32")(x), "mse"


def make_optimizer(params: dict[str, Any], steps_per_epoch: int = 1) -> Any:
    """The optimizer, its learning rate constant or (`lr_schedule: cosine`) decaying along a
    cosine to 1% over the configured epochs."""
    import keras

    name = params.get("optimizer", "adam")
    lr: Any = float(params.get("learning_rate", 1e-3))
    if params.get("lr_schedule", "constant") == "cosine":
        steps = max(1, steps_per_epoch * int(params.get("epochs", 100)))
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps, alpha=0.01)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=float(params.get("momentum", 0.9)))
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr)
    return keras.optimizers.Adam(learning_rate=lr)


class KerasNetwork(abc.ABC):
    """A Keras functional network with our fit/predict/save contract. Subclasses build it."""

    family: ClassVar[str] = ""

    def __init__(self, params: dict[str, Any], ctx: BuildContext) -> None:
        self.params = dict(params)
        self.task = ctx.task
        self.n_classes = ctx.n_classes
        self.seed = ctx.seed
        self.threads = ctx.threads
        self.log_dir = ctx.log_dir
        self.work_dir = ctx.work_dir
        self.on_epoch = ctx.on_epoch
        self.warm_start = ctx.warm_start
        self.layout: dict[str, Any] = dict(ctx.layout or {})
        self.others: list[tuple[str, str, int]] = [(o[0], o[1], int(o[2])) for o in ctx.others]
        self.y_mean = 0.0
        self.y_std = 1.0
        self.other_scales: list[tuple[float, float]] = []
        self.model: Any = None  # the main output only: what predicts and is saved
        self.trained: Any = None  # with auxiliary outputs, if any: what was trained
        self.history: dict[str, list[float]] = {}
        # Seconds from `fit`'s start to its first epoch (building, compiling), then each
        # epoch's training pass alone: what a refit without validation rows repeats.
        self.setup_seconds = 0.0
        self.epoch_seconds: list[float] = []
        self.fit_seconds = 0.0

    # -- what a family defines ------------------------------------------------------------

    @abc.abstractmethod
    def graph(self, keras: Any, x: np.ndarray) -> tuple[Any, dict[str, Any], dict[str, float]]:
        """(model, losses by output name, loss weights by output name); the main output is
        named `output`. `x` is the training matrix, for layers that learn from data (adapt)."""

    def split(self, x: np.ndarray) -> Any:
        """The encoded matrix as the graph's input(s)."""
        return np.asarray(x, np.float32)

    def heads(self, h: Any) -> tuple[list[Any], dict[str, Any], dict[str, float]]:
        """The main output, and one head per further target (weighted by `target_weight`)."""
        main, loss = output_head(h, self.task, self.n_classes)
        outputs, losses, weights = [main], {MAIN_OUTPUT: loss}, {}
        for i, (_, task, n_classes) in enumerate(self.others):
            head, head_loss = output_head(h, task, n_classes, name=other_output(i))
            outputs.append(head)
            losses[other_output(i)] = head_loss
            weights[other_output(i)] = float(self.params.get("target_weight", 0.5))
        if weights:
            weights[MAIN_OUTPUT] = 1.0
        return outputs, losses, weights

    # -- shared -----------------------------------------------------------------------------

    def build(self, x: np.ndarray) -> Any:
        """The compiled training model (also used by the tests to check each graph)."""
        keras = import_keras(self.threads)
        model, losses, weights = self.graph(keras, x)
        batch = int(self.params.get("batch_size", 64))
        model.compile(
            optimizer=make_optimizer(self.params, steps_per_epoch=-(-len(x) // batch)),
            loss=losses,
            loss_weights=weights or None,
            jit_compile=False,
        )
        self.trained = model
        self.model = (
            model
            if len(model.outputs) == 1
            else keras.Model(model.inputs, model.get_layer(MAIN_OUTPUT).output, name=model.name)
        )
        return model

    def start_from(self, directory: Path) -> int:
        """Take the trained weights of the network saved in `directory` (the same
        architecture: a promoted trial's lower rung), layer by layer by name; the number of
        layers taken. The optimizer starts afresh: the new rung has its own schedule."""
        import keras

        saved = keras.saving.load_model(verify(Path(directory), MODEL_FILE), safe_mode=True)
        taken = 0
        for layer in saved.layers:
            weights = layer.get_weights()
            if not weights:
                continue
            try:
                target = self.trained.get_layer(layer.name)
            except ValueError:
                continue
            if [w.shape for w in target.get_weights()] == [w.shape for w in weights]:
                target.set_weights(weights)
                taken += 1
        if not taken:
            raise TrialFailed(f"{directory}: no layer of its network fits this architecture")
        return taken

    def _targets(self, y: np.ndarray, fit: bool = False) -> Any:
        """Encoded targets by output name; `y` has one column per target when there are
        further targets (the objective first)."""
        y = np.asarray(y)
        main = self._encode_y(y[:, 0] if y.ndim == 2 else y, fit=fit)
        names = list(self.trained.output_names)
        if len(names) == 1:
            return main
        out = {name: main for name in names}  # the objective, and the auxiliary head
        if fit:
            self.other_scales = []
        for i, (_, task, _) in enumerate(self.others):
            column = y[:, i + 1]
            if task != "regression":
                out[other_output(i)] = column.astype(np.int64)
                if fit:
                    self.other_scales.append((0.0, 1.0))
                continue
            if fit:
                self.other_scales.append((float(column.mean()), float(column.std() or 1.0)))
            mean, std = self.other_scales[i]
            out[other_output(i)] = ((column - mean) / std).astype(np.float32)
        return out

    def _monitor(self) -> str:
        return "val_loss" if len(self.trained.outputs) == 1 else f"val_{MAIN_OUTPUT}_loss"

    def _subsample(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        share = float(self.params.get("subsample", 1.0))
        if share >= 1.0:
            return x, y
        rng = np.random.default_rng(self.seed)
        n = max(self.n_classes * 2, int(round(len(y) * share)), 8)
        rows = np.sort(rng.permutation(len(y))[: min(n, len(y))])
        return x[rows], y[rows]

    def fit(self, x, y, x_val, y_val, deadline=None):  # noqa: ANN001, ANN201
        started = time.perf_counter()
        try:
            return self._fit(x, y, x_val, y_val, deadline)
        finally:
            self.fit_seconds = time.perf_counter() - started

    def _fit(self, x, y, x_val, y_val, deadline):  # noqa: ANN001, ANN202
        keras = import_keras(self.threads)
        imported = time.perf_counter()  # the first import in a process is no refit's cost
        keras.backend.clear_session()
        keras.utils.set_random_seed(self.seed)
        x, y = self._subsample(x, np.asarray(y))
        self.build(x)
        if self.warm_start is not None:
            self.start_from(self.warm_start)
        y = self._targets(y, fit=True)
        if x_val is None:  # a refit on every row: the epochs given, nothing to stop on
            return self._fit_all(keras, x, y, deadline, imported)
        y_val = self._targets(y_val)
        monitor = self._monitor()
        patience = int(self.params.get("patience", 10))
        callbacks = [
            _epoch_clock(self, imported),
            keras.callbacks.EarlyStopping(
                monitor=monitor, mode="min", patience=patience, restore_best_weights=True
            ),
            keras.callbacks.TerminateOnNaN(),
        ]
        if self.params.get("lr_schedule", "constant") == "constant":  # a schedule owns the rate
            callbacks.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor=monitor,
                    mode="min",
                    factor=0.5,
                    patience=max(1, patience // 2),
                    min_lr=1e-6,
                )
            )
        checkpoint = None
        if self.work_dir is not None:  # best weights on disk, and a live log of the epochs
            checkpoint = Path(self.work_dir) / CHECKPOINT_FILE
            callbacks.append(
                keras.callbacks.ModelCheckpoint(
                    str(checkpoint),
                    monitor=monitor,
                    mode="min",
                    save_best_only=True,
                    save_weights_only=True,
                )
            )
            callbacks.append(keras.callbacks.CSVLogger(str(Path(self.work_dir) / HISTORY_FILE)))
        if deadline is not None:
            callbacks.append(_deadline_callback(deadline))
        if self.on_epoch is not None:  # lets a pruner or scheduler stop a poor trial early
            callbacks.append(_epoch_reporter(self, x_val, self.on_epoch))
        if self.log_dir is not None:  # per-epoch curves for `tensorboard --logdir RUN_DIR`
            callbacks.append(
                keras.callbacks.TensorBoard(
                    log_dir=str(self.log_dir), write_graph=False, profile_batch=0
                )
            )
        try:
            self._train(x, y, (self.split(x_val), y_val), callbacks)
            if checkpoint is not None and checkpoint.exists():  # the best epoch, whatever stopped
                self.trained.load_weights(str(checkpoint))
        finally:  # pruned, failed or done: the checkpoint has served its purpose
            if checkpoint is not None:
                checkpoint.unlink(missing_ok=True)
        return self

    def _fit_all(
        self, keras: Any, x: np.ndarray, y: Any, deadline: float | None, imported: float
    ) -> Any:
        callbacks = [_epoch_clock(self, imported), keras.callbacks.TerminateOnNaN()]
        if deadline is not None:
            callbacks.append(_deadline_callback(deadline))
        self._train(x, y, None, callbacks)
        return self

    def _train(self, x: np.ndarray, y: Any, validation: Any, callbacks: list[Any]) -> None:
        """Keras' fit for the configured epochs; its history kept, a NaN loss a failure."""
        result = self.trained.fit(
            self.split(x),
            y,
            validation_data=validation,
            epochs=int(self.params.get("epochs", 100)),
            batch_size=int(self.params.get("batch_size", 64)),
            callbacks=callbacks,
            verbose=0,
        )
        self.history = {k: [float(v) for v in vals] for k, vals in result.history.items()}
        losses = self.history.get("loss", [])
        if not losses or not np.isfinite(losses[-1]):
            raise TrialFailed("Keras training loss became NaN or infinite")

    def stopped_at(self) -> dict[str, Any]:
        """The best epoch (lowest validation loss), as the epochs of a refit on every row."""
        losses = self.history.get(self._monitor(), [])
        return {"epochs": int(np.argmin(losses)) + 1} if losses else {}

    def kept_share(self) -> float:
        """What a refit for the best epoch's count costs, as a share of this fit's time: the
        set-up and the training passes up to that epoch. The validation passes, per-epoch
        reports and checkpoints, which a refit does not make, are left out (on credit_g they
        made an MLP's fit three times its refit)."""
        losses = self.history.get(self._monitor(), [])
        if not losses or not self.epoch_seconds or self.fit_seconds <= 0:
            return (int(np.argmin(losses)) + 1) / len(losses) if losses else 1.0
        kept = self.setup_seconds + sum(self.epoch_seconds[: int(np.argmin(losses)) + 1])
        return min(1.0, kept / self.fit_seconds)

    def _encode_y(self, y: np.ndarray, fit: bool = False) -> np.ndarray:
        if self.task != "regression":
            return y.astype(np.int64)
        if fit:  # a standardized target trains far better than raw prices
            self.y_mean, self.y_std = float(y.mean()), float(y.std() or 1.0)
        return ((y - self.y_mean) / self.y_std).astype(np.float32)

    def predict(self, x: np.ndarray, quick: bool = False) -> np.ndarray:
        """Probabilities or values. `quick` (per-epoch reports) skips `Model.predict`'s set-up
        cost, which on small validation sets doubles the time of an epoch."""
        if quick:
            inputs = self.split(x)
            n = len(x)
            chunks = [
                np.asarray(self.model.predict_on_batch(_rows(inputs, i, i + PREDICT_BATCH)))
                for i in range(0, n, PREDICT_BATCH)
            ]
            out = np.concatenate(chunks).astype(float)
        else:
            out = np.asarray(self.model.predict(self.split(x), batch_size=PREDICT_BATCH, verbose=0))
            out = out.astype(float)
        if self.task == "binary":
            p1 = out[:, 0]
            return np.column_stack([1.0 - p1, p1])
        if self.task == "multiclass":
            return out
        return out[:, 0] * self.y_std + self.y_mean

    def predict_others(self, x: np.ndarray) -> list[np.ndarray]:
        """Predictions for each further target, in the form `predict` gives the objective's."""
        if not self.others:
            return []
        outputs = self.trained.predict(self.split(x), batch_size=PREDICT_BATCH, verbose=0)
        by_name = dict(zip(self.trained.output_names, outputs, strict=True))
        out = []
        for i, (_, task, _) in enumerate(self.others):
            values = np.asarray(by_name[other_output(i)]).astype(float)
            if task == "binary":
                out.append(np.column_stack([1.0 - values[:, 0], values[:, 0]]))
            elif task == "multiclass":
                out.append(values)
            else:
                mean, std = self.other_scales[i]
                out.append(values[:, 0] * std + mean)
        return out

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
                "family": self.family,
                "params": self.params,
                "task": self.task,
                "n_classes": self.n_classes,
                "layout": self.layout,
                "y_mean": self.y_mean,
                "y_std": self.y_std,
                "seed": self.seed,
            },
        )
        _write_history(directory / HISTORY_FILE, self.history)
        names = [MODEL_FILE, META_FILE, HISTORY_FILE]
        if _plot(self.trained, directory / DIAGRAM_FILE):
            names.append(DIAGRAM_FILE)
        return names


def unwrap(outputs: list[Any]) -> Any:
    """A single output as itself (a one-output model), several as a list."""
    return outputs[0] if len(outputs) == 1 else outputs


def other_output(i: int) -> str:
    return f"target_{i}"


def _rows(inputs: Any, start: int, stop: int) -> Any:
    if isinstance(inputs, dict):
        return {name: value[start:stop] for name, value in inputs.items()}
    return inputs[start:stop]


def _plot(model: Any, path: Path) -> bool:
    """Save the model's diagram where pydot and Graphviz are installed; skip quietly otherwise."""
    try:
        import pydot  # noqa: F401
        from keras.utils import plot_model

        plot_model(model, to_file=str(path), show_shapes=True, show_layer_names=True, dpi=72)
    except Exception:  # noqa: BLE001 - no Graphviz is the common case, and never a failure
        return False
    return path.exists()


def _deadline_callback(deadline: float) -> Any:
    """A callback that stops training at the search's wall-clock deadline (best weights kept)."""
    import keras

    class Deadline(keras.callbacks.Callback):
        # Checked every batch too: one epoch of a CNN on 40,000 images can take minutes, and
        # stopping only at epoch ends overran a 30-minute budget by 192 s.
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if time.time() >= deadline:
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if time.time() >= deadline:
                self.model.stop_training = True

    return Deadline()


def _epoch_clock(network: KerasNetwork, started: float) -> Any:
    """A callback timing the set-up from `started` to the first epoch and each epoch's
    training pass (up to its validation pass, if any) into `network`."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        begun = 0.0
        open = False

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.begun = time.perf_counter()
            self.open = True
            if epoch == 0:
                network.setup_seconds = self.begun - started
                network.epoch_seconds = []

        def _close(self) -> None:
            if self.open:
                network.epoch_seconds.append(time.perf_counter() - self.begun)
                self.open = False

        def on_test_begin(self, logs: dict | None = None) -> None:
            self._close()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self._close()

    return EpochClock()


def _epoch_reporter(network: KerasNetwork, x_val: np.ndarray, report: Any) -> Any:
    """A callback handing the validation predictions of each epoch to `report`."""
    import keras

    class EpochReport(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            report(epoch + 1, network.predict(x_val, quick=True))

    return EpochReport()


def _write_history(path: Path, history: dict[str, list[float]]) -> None:
    keys = sorted(history)
    rows = ["epoch," + ",".join(keys)]
    n = max((len(v) for v in history.values()), default=0)
    for i in range(n):
        rows.append(f"{i}," + ",".join(repr(history[k][i]) for k in keys))
    write_text_atomic(path, "\n".join(rows) + "\n")


def load_network(directory: Path) -> KerasNetwork:
    """Load a saved network with Keras' safe mode on, after checking the manifest."""
    directory = Path(directory)
    meta = read_json(verify(directory, META_FILE))
    keras = import_keras(1)
    ctx = BuildContext(
        task=meta["task"], n_classes=meta["n_classes"], seed=meta["seed"], layout=meta.get("layout")
    )
    network = NETWORKS[meta.get("family", "mlp")](meta["params"], ctx)
    network.y_mean, network.y_std = meta["y_mean"], meta["y_std"]
    network.model = keras.saving.load_model(verify(directory, MODEL_FILE), safe_mode=True)
    return network


# Each Keras family's network class by family name, filled by `keras_family`: what a saved
# network's `family` names is built again from it before its weights load.
NETWORKS: dict[str, type[KerasNetwork]] = {}


def keras_family(
    network: type[KerasNetwork], params: frozenset[str], encoding: str, needs: str | None = None
) -> Family:
    """The registry entry of a Keras family (and its class in `NETWORKS`)."""
    NETWORKS[network.family] = network
    return Family(
        network.family,
        params,
        encoding,
        lambda config, ctx: network(config, ctx),
        load_network,
        uses_keras=True,
        needs=needs,
    )
