"""The Keras functional families, checked on their graphs and trained briefly on real data.

Graph checks read the built model (layers, shapes, weights), not only that it runs: inception
channels, residual projections, separable parameter counts, wide & deep inputs and outputs,
shared text encoders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from automl.data import Schema, infer_schema
from automl.io import write_manifest
from automl.models import FAMILIES, BuildContext
from automl.models.cnn import mirrored
from automl.preprocess import fit_encoder, layout, transform
from tests.conftest import shared

pytestmark = pytest.mark.keras


@pytest.fixture(scope="module")
def keras() -> Any:
    from automl.models.keras_base import import_keras

    return import_keras(2)


def all_layers(model: Any) -> list[Any]:
    """Every layer, nested models' layers included."""
    import keras

    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(all_layers(layer))
    return found


def block_model(keras: Any, block: str, channels: int, filters: int) -> Any:
    from automl.models.blocks import CONV_BLOCKS

    x = keras.Input(shape=(8, 8, channels))
    return keras.Model(x, CONV_BLOCKS[block](x, filters, name="b"))


# -- blocks ---------------------------------------------------------------------------------


def test_inception_output_channels_are_the_sum_of_its_branches(keras: Any) -> None:
    from automl.models.blocks import inception_branches

    model = block_model(keras, "inception", channels=16, filters=40)
    concat = model.get_layer("b_concat")
    branch_channels = [t.shape[-1] for t in concat.input]
    assert len(branch_channels) == 4
    assert branch_channels == list(inception_branches(40).values())
    assert model.output.shape[-1] == sum(branch_channels) == 40
    assert model.get_layer("b_d3x3_b_conv").kernel.shape[:2] == (3, 3)  # 3x3 after 3x3


@pytest.mark.parametrize("block", ["residual", "separable"])
def test_a_residual_block_projects_exactly_when_shapes_differ(keras: Any, block: str) -> None:
    same = block_model(keras, block, channels=16, filters=16)
    wider = block_model(keras, block, channels=16, filters=32)
    names = lambda m: {layer.name for layer in m.layers}  # noqa: E731
    assert "b_projection_conv" not in names(same)
    assert same.get_layer("b_add").input[0].shape[-1] == 16  # the identity: the input itself
    projection = wider.get_layer("b_projection_conv")
    assert projection.kernel.shape == (1, 1, 16, 32)
    assert wider.output.shape[1:] == (8, 8, 32)


def test_separable_blocks_have_fewer_parameters_than_plain_convolutions(keras: Any) -> None:
    plain = block_model(keras, "plain", channels=32, filters=32)
    separable = block_model(keras, "separable", channels=32, filters=32)
    assert separable.count_params() < plain.count_params() / 3
    kinds = {type(layer).__name__ for layer in separable.layers}
    assert "SeparableConv2D" in kinds and "Conv2D" not in kinds


def test_every_convolution_is_followed_by_batch_normalization(keras: Any) -> None:
    model = block_model(keras, "inception", channels=8, filters=16)
    convs = [layer.name for layer in model.layers if "Conv" in type(layer).__name__]
    for conv in convs:
        assert model.get_layer(conv.replace("_conv", "_bn"))


# -- families on real data -------------------------------------------------------------------


def encoded(
    frame: pd.DataFrame, target: str, encoding: str, schema: Schema | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    y = frame[target].astype("category").cat.codes.to_numpy()
    x = frame.drop(columns=[target])
    schema = schema or infer_schema(x, "test")
    encoder = fit_encoder(encoding, schema, x)
    return transform(encoder, x), y, layout(encoder)


def fit_predict(
    family: str, params: dict, x: np.ndarray, y: np.ndarray, lay: dict, tmp: Path
) -> np.ndarray:
    n_classes = int(y.max()) + 1
    task = "binary" if n_classes == 2 else "multiclass"
    ctx = BuildContext(task=task, n_classes=n_classes, seed=0, threads=2, layout=lay, work_dir=tmp)
    model = FAMILIES[family].build({"epochs": 1, "batch_size": 64, **params}, ctx)
    half = len(y) * 3 // 4
    model.fit(x[:half], y[:half], x[half:], y[half:])
    proba = model.predict(x[half:])
    assert proba.shape == (len(y) - half, n_classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    return model


def test_wide_and_deep_with_two_inputs_and_an_auxiliary_output(keras: Any, tmp_path: Path) -> None:
    frame = pd.read_csv(shared("credit_g.csv.gz")).head(200)
    x, y, lay = encoded(frame, "class", "onehot")
    params = {"inputs": "groups", "aux_output": True, "aux_weight": 0.35, "units": 16}
    model = fit_predict("wide_deep", params, x, y, lay, tmp_path)

    trained = model.trained
    assert [t.name for t in trained.inputs] == ["wide", "deep"]
    assert (
        trained.get_layer("wide").output.shape[-1] == lay["categorical"][1] - lay["categorical"][0]
    )
    assert trained.get_layer("deep").output.shape[-1] == lay["numeric"][1] - lay["numeric"][0]
    assert list(trained.output_names) == ["output", "aux"]
    assert trained.get_compile_config()["loss_weights"] == {"output": 1.0, "aux": 0.35}
    assert {"output_loss", "aux_loss", "val_output_loss"} <= set(model.history)
    # The wide path (the categories themselves) reaches the output beside the deep path.
    merged = trained.get_layer("wide_and_deep")
    assert merged.output.shape[-1] == 16 + trained.get_layer("wide").output.shape[-1]
    # What is saved and predicts: the main output only, from the same two inputs.
    assert len(model.model.outputs) == 1 and len(model.model.inputs) == 2


def test_shared_text_encoder_has_one_set_of_weights(keras: Any, tmp_path: Path) -> None:
    sms = pd.read_csv(shared("sms_spam.csv.gz")).head(240).reset_index(drop=True)
    frame = pd.DataFrame(  # two text columns: the message and another message
        {"a": sms["text"], "b": sms["text"][::-1].to_numpy(), "label": sms["label"]}
    )
    frame["length"] = frame["a"].str.len()
    x, y, lay = encoded(frame, "label", "text")
    assert lay["text"] == [0, 2] and lay["tabular"] == [2, 3]
    params = {"max_tokens": 500, "sequence_length": 16, "embed_dim": 8, "filters": 8}
    shared_model = fit_predict("text_net", {**params, "share_encoder": True}, x, y, lay, tmp_path)
    separate = fit_predict("text_net", {**params, "share_encoder": False}, x, y, lay, tmp_path)

    def kinds(model: Any, kind: str) -> list[Any]:
        return [layer for layer in all_layers(model.model) if type(layer).__name__ == kind]

    assert len(kinds(shared_model, "Embedding")) == 1
    assert len(kinds(shared_model, "TextVectorization")) == 1
    assert len(kinds(separate, "Embedding")) == 2
    encoder = shared_model.model.get_layer("text_encoder")
    assert shared_model.model.count_params() == separate.model.count_params() - (
        encoder.count_params()
    )
    assert [t.name for t in shared_model.model.inputs] == ["text_0", "text_1", "tabular"]


@pytest.mark.parametrize("encoder", ["conv", "bilstm"])
def test_text_network_trains_on_sms_and_reloads_in_safe_mode(
    keras: Any, tmp_path: Path, encoder: str
) -> None:
    from automl.models.keras_base import load_network

    frame = pd.read_csv(shared("sms_spam.csv.gz")).head(300)
    x, y, lay = encoded(frame, "label", "text")
    params = {"encoder": encoder, "max_tokens": 1000, "sequence_length": 24, "lstm_units": 8}
    model = fit_predict("text_net", params, x, y, lay, tmp_path)
    write_manifest(tmp_path, model.save(tmp_path))
    again = load_network(tmp_path)
    np.testing.assert_allclose(again.predict(x[:20]), model.predict(x[:20]), atol=1e-6)


def fashion_images(n: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The first `n` Fashion-MNIST images, encoded as the image families take them."""
    with np.load(shared("fashion_mnist_train.npz")) as archive:
        images, labels = archive["x"][:n], archive["y"][:n]
    frame = pd.DataFrame(images.reshape(n, -1), columns=[f"px_{i}" for i in range(784)])
    schema = Schema(numeric=list(frame.columns), categorical=[], image_shape=[28, 28, 1])
    frame["y"] = labels
    return encoded(frame, "y", "image", schema)


@pytest.mark.parametrize("block", ["residual", "inception"])
def test_cnn_trains_one_epoch_on_fashion_mnist(keras: Any, tmp_path: Path, block: str) -> None:
    from automl.models.keras_base import CHECKPOINT_FILE, HISTORY_FILE

    x, y, lay = fashion_images(256)
    assert x.max() == 1.0 and lay["image_shape"] == [28, 28, 1]
    params = {"block": block, "stem_filters": 8, "n_stages": 2, "blocks_per_stage": 1}
    params |= {"dropout": 0.2, "dense_units": 16}  # a dense head after the pooled features
    model = fit_predict("cnn", params, x, y, lay, tmp_path)
    assert model.model.get_layer("image").output.shape[1:] == (28, 28, 1)
    assert model.model.get_layer("stage1_downsample").output.shape[1:3] == (14, 14)
    assert (tmp_path / HISTORY_FILE).read_text().startswith("epoch,")  # CSVLogger, live
    assert not (tmp_path / CHECKPOINT_FILE).exists()  # loaded back, then removed


def test_augmentation_transforms_in_training_only_and_reloads_in_safe_mode(
    keras: Any, tmp_path: Path
) -> None:
    """Every searched augmentation layer is in the graph after the reshape; they transform in
    training and pass pixels through at inference (the same predictions twice), and the saved
    model loads in Keras' safe mode to the same predictions."""
    from automl.models.keras_base import MODEL_FILE, load_network

    x, y, lay = fashion_images(256)
    augment = {"augment_flip": "horizontal", "augment_translate": 0.1, "augment_rotate": 0.06,
               "augment_zoom": 0.1, "augment_contrast": 0.2}  # fmt: skip
    params = {"stem_filters": 8, "n_stages": 2, "learning_rate": 1e-3, "lr_schedule": "cosine"}
    params |= augment
    model = fit_predict("cnn", params, x, y, lay, tmp_path)
    names = [layer.name for layer in model.model.layers]
    wanted = ["image", *(f"augment_{k}" for k in ("flip", "translate", "rotate", "zoom",
                                                  "contrast")), "stem_conv"]  # fmt: skip
    assert [n for n in names if n in wanted] == wanted
    first = model.predict(x[:64])
    np.testing.assert_array_equal(model.predict(x[:64]), first)
    # Trained on random mirrors, it predicts the mean over the image and its mirror: the
    # same for an image and its mirror, unlike the bare model.
    mirror = mirrored(x[:64], [28, 28, 1])
    assert np.array_equal(mirror.reshape(64, 28, 28)[:, 5, ::-1], x[:64].reshape(64, 28, 28)[:, 5])
    np.testing.assert_allclose(model.predict(mirror), first, atol=1e-6)
    bare = [np.asarray(model.model.predict(a, verbose=0)) for a in (x[:64], mirror)]
    assert np.abs(bare[0] - bare[1]).max() > 1e-3
    np.testing.assert_allclose(first, (bare[0] + bare[1]) / 2, atol=1e-6)
    moved = np.asarray(model.model.get_layer("augment_translate")(x[:4].reshape(4, 28, 28, 1),
                                                                  training=True))  # fmt: skip
    assert not np.allclose(moved, x[:4].reshape(4, 28, 28, 1))  # it does transform in training
    # The cosine schedule owns the learning rate: at the end of the configured epochs it is
    # at its floor, 1% of the start (no plateau callback touches it).
    assert float(model.trained.optimizer.learning_rate) == pytest.approx(1e-5, rel=1e-3)
    write_manifest(tmp_path, model.save(tmp_path))
    assert (tmp_path / MODEL_FILE).exists()
    again = load_network(tmp_path)  # safe mode: no Lambda layers, no custom code
    np.testing.assert_allclose(again.predict(x[:64]), first, atol=1e-6)
    # Exported as a one-member ensemble, it still averages the mirror, in built-in layers.
    from automl.ensemble.keras_export import build_keras_ensemble

    build_keras_ensemble([(tmp_path, 1.0)]).save(tmp_path / "exported.keras")
    exported = keras.saving.load_model(tmp_path / "exported.keras", safe_mode=True)
    np.testing.assert_allclose(exported.predict(x[:64], verbose=0), first, atol=1e-6)


def test_training_keeps_the_best_epoch_and_records_every_callback(
    keras: Any, tmp_path: Path
) -> None:
    """ModelCheckpoint's best weights are what the model ends with; the LR is reduced on a
    plateau; history.csv and TensorBoard logs land in the trial's folder."""
    from automl.models.keras_base import HISTORY_FILE

    frame = pd.read_csv(shared("credit_g.csv.gz")).head(300)
    x, y, lay = encoded(frame, "class", "onehot")
    ctx = BuildContext(
        task="binary", n_classes=2, layout=lay, work_dir=tmp_path, log_dir=tmp_path / "tb"
    )
    params = {"epochs": 12, "patience": 4, "learning_rate": 0.05, "units": 64, "batch_size": 32}
    model = FAMILIES["mlp"].build(params, ctx)
    model.fit(x[:200], y[:200], x[200:], y[200:])
    best = min(model.history["val_loss"])
    assert model.model.evaluate(x[200:], y[200:], verbose=0) == pytest.approx(best, rel=1e-4)
    assert min(model.history["learning_rate"]) < 0.05  # ReduceLROnPlateau acted
    header = (tmp_path / HISTORY_FILE).read_text().splitlines()[0].split(",")
    assert {"epoch", "loss", "val_loss", "learning_rate"} <= set(header)
    assert any((tmp_path / "tb").rglob("events.out.tfevents.*"))


def test_subsample_fidelity_trains_on_a_share_of_the_rows(keras: Any, tmp_path: Path) -> None:
    frame = pd.read_csv(shared("credit_g.csv.gz")).head(400)
    x, y, lay = encoded(frame, "class", "onehot")
    ctx = BuildContext(task="binary", n_classes=2, layout=lay)
    model = FAMILIES["mlp"].build({"subsample": 0.25}, ctx)
    sub_x, sub_y = model._subsample(x, y)
    assert len(sub_y) == 100 and sub_x.shape == (100, x.shape[1])


# -- GPU and mixed precision --------------------------------------------------------------------


def test_mixed_precision_computes_in_float16_with_float32_outputs(
    keras: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a GPU gets, exercised on the CPU: float16 layers, a scaled loss, float32
    probabilities, a saved model that reloads in safe mode with the same predictions."""
    from automl.models import keras_base
    from automl.models.keras_base import load_network, precision_policy

    assert (precision_policy(0), precision_policy(1)) == ("float32", "mixed_float16")
    frame = pd.read_csv(shared("credit_g.csv.gz")).head(200)
    x, y, lay = encoded(frame, "class", "onehot")
    monkeypatch.setattr(keras_base, "precision_policy", lambda gpus: "mixed_float16")
    try:
        model = fit_predict("mlp", {"units": 16, "epochs": 2}, x, y, lay, tmp_path)
        hidden = [layer for layer in model.model.layers if layer.name != "output"][-1]
        assert hidden.compute_dtype == "float16"
        assert model.model.get_layer("output").compute_dtype == "float32"
        assert type(model.trained.optimizer).__name__ == "LossScaleOptimizer"
        proba = model.predict(x[:32])
        assert np.isfinite(proba).all()
        write_manifest(tmp_path, model.save(tmp_path))
        np.testing.assert_allclose(load_network(tmp_path).predict(x[:32]), proba, atol=1e-6)
    finally:
        monkeypatch.undo()  # and import_keras sets this CPU's policy back
        assert keras_base.import_keras(2).mixed_precision.dtype_policy().name == "float32"


def test_a_visible_gpu_trains_the_network() -> None:
    """Runs where a GPU is visible (the lent GPU machine); skipped, with the reason, elsewhere."""
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("no GPU visible to TensorFlow: the GPU path is checked on a GPU machine")
    from automl.models.keras_base import import_keras

    keras = import_keras(2)
    assert keras.mixed_precision.dtype_policy().name == "mixed_float16"
    frame = pd.read_csv(shared("credit_g.csv.gz")).head(200)
    x, y, lay = encoded(frame, "class", "onehot")
    ctx = BuildContext(task="binary", n_classes=2, layout=lay)
    model = FAMILIES["mlp"].build({"epochs": 1, "units": 16}, ctx)
    model.fit(x[:150], y[:150], x[150:], y[150:])
    assert "GPU" in model.trained.trainable_weights[0].value.device
