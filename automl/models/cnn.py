"""The convolutional family for images: a stem, stages of searched blocks, a dense head.

The encoded pixels (flat, scaled to [0, 1]) are reshaped to (H, W, C) inside the model, so the
saved model takes the same matrix every other family takes. A stem stride of 2 quarters the
cost of every later layer (what a CPU budget often needs). Each stage after the first halves
the resolution (max pooling) and widens by `widen`; its blocks are `block` (plain, residual,
inception or separable; `automl.models.blocks`). Batch normalization follows every
convolution when `batch_norm` is on; global average pooling and dropout lead to the head.

Augmentation is part of the searched graph: Keras' random flip, translation, rotation, zoom and
contrast layers right after the reshape, each with a searched strength (0: left out). They
transform only while training; at inference they pass pixels through, so the saved model takes
plain pixels and predicts the same thing twice.

A network trained on randomly mirrored images has learnt that a mirrored image is the same
class, so it predicts the mean of its outputs on the image and on its mirror (test-time
augmentation). The averaging is in `predict`, not in the graph, so that the saved model stays
free of custom layers and loads in safe mode; every consumer of predictions (the validation
predictions the ensemble learns on, the refit, `automl predict`) goes through it. Per-epoch
reports (`quick`) skip it: they only rank epochs and trials.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from automl.models.blocks import CONV_BLOCKS, conv_bn, dense_block
from automl.models.keras_base import TRAINING_PARAMS, KerasNetwork, keras_family, unwrap

CNN_PARAMS = TRAINING_PARAMS | {
    "block",
    "stem_filters",
    "stem_stride",
    "n_stages",
    "blocks_per_stage",
    "widen",
    "batch_norm",
    "dropout",
    "dense_units",
    "augment_flip",
    "augment_translate",
    "augment_rotate",
    "augment_zoom",
    "augment_contrast",
}


def augmentation(h: Any, p: dict[str, Any], seed: int) -> Any:
    """The searched augmentation layers on image tensor `h` (each left out at strength 0)."""
    from keras import layers

    if p.get("augment_flip", "none") == "horizontal":
        h = layers.RandomFlip("horizontal", seed=seed, name="augment_flip")(h)
    shift = float(p.get("augment_translate", 0.0))
    if shift > 0:
        h = layers.RandomTranslation(
            shift, shift, fill_mode="constant", seed=seed, name="augment_translate"
        )(h)
    angle = float(p.get("augment_rotate", 0.0))
    if angle > 0:
        h = layers.RandomRotation(angle, fill_mode="constant", seed=seed, name="augment_rotate")(h)
    zoom = float(p.get("augment_zoom", 0.0))
    if zoom > 0:
        h = layers.RandomZoom(zoom, fill_mode="constant", seed=seed, name="augment_zoom")(h)
    contrast = float(p.get("augment_contrast", 0.0))
    if contrast > 0:
        h = layers.RandomContrast(contrast, seed=seed, name="augment_contrast")(h)
    return h


def averages_mirrors(family: str, params: dict[str, Any]) -> bool:
    """Whether a saved network of `family` predicts the mean over the image and its mirror:
    a CNN trained with random flips."""
    return family == ConvNet.family and params.get("augment_flip", "none") == "horizontal"


def mirrored(x: np.ndarray, shape: list[int]) -> np.ndarray:
    """Flat pixel rows of (H, W, C) images, each mirrored left to right."""
    images = np.asarray(x).reshape(len(x), *shape)
    return np.ascontiguousarray(images[:, :, ::-1, :]).reshape(len(x), -1)


def mirror_averaged(keras: Any, network: Any, pixels: Any, shape: list[int], name: str) -> Any:
    """`network`'s output on flat `pixels`, averaged with its output on their mirror, in
    built-in layers only (what `ConvNet.predict` does, for a graph that loads in safe mode):
    the width axis is moved last and reversed by a fixed permutation matrix."""
    from keras import layers

    height, width, channels = shape
    image = layers.Reshape((height, width, channels), name=f"{name}_image")(pixels)
    columns_last = layers.Permute((1, 3, 2), name=f"{name}_columns_last")(image)
    reverse = layers.Dense(width, use_bias=False, trainable=False, name=f"{name}_reverse")
    reversed_columns = reverse(columns_last)
    reverse.set_weights([np.eye(width, dtype=np.float32)[::-1]])
    back = layers.Permute((1, 3, 2), name=f"{name}_columns_back")(reversed_columns)
    mirror = layers.Reshape((height * width * channels,), name=f"{name}_pixels")(back)
    return layers.Average(name=name)([network(pixels), network(mirror)])


class ConvNet(KerasNetwork):
    family = "cnn"

    def predict(self, x: np.ndarray, quick: bool = False) -> np.ndarray:
        plain = super().predict(x, quick)
        if quick or not averages_mirrors(self.family, self.params):
            return plain
        return (plain + super().predict(mirrored(x, self.layout["image_shape"]), quick)) / 2

    def graph(self, keras: Any, x: np.ndarray) -> tuple[Any, dict[str, Any], dict[str, float]]:
        from keras import layers

        p = self.params
        shape = self.layout.get("image_shape")
        if not shape:
            raise ValueError("the cnn family needs image data: an .npz with x of shape (N,H,W)")
        bn = bool(p.get("batch_norm", True))
        block = CONV_BLOCKS[p.get("block", "residual")]
        inputs = keras.Input(shape=(x.shape[1],), name="pixels")
        h = layers.Reshape(tuple(shape), name="image")(inputs)
        h = augmentation(h, p, self.seed)
        filters = int(p.get("stem_filters", 32))
        h = conv_bn(h, filters, 3, name="stem", batch_norm=bn, strides=int(p.get("stem_stride", 1)))
        for stage in range(int(p.get("n_stages", 2))):
            if stage > 0:
                h = layers.MaxPooling2D(2, name=f"stage{stage}_downsample")(h)
                filters = int(round(filters * float(p.get("widen", 2.0))))
            for b in range(int(p.get("blocks_per_stage", 1))):
                h = block(h, filters, name=f"stage{stage}_block{b}", batch_norm=bn)
        h = layers.GlobalAveragePooling2D(name="global_pool")(h)
        dropout = float(p.get("dropout", 0.0))
        if dropout > 0:
            h = layers.Dropout(dropout, name="pool_dropout")(h)
        units = int(p.get("dense_units", 0))
        if units > 0:
            h = dense_block(h, units, dropout=dropout, name="head")
        outputs, losses, weights = self.heads(h)
        return keras.Model(inputs, unwrap(outputs), name="cnn"), losses, weights


FAMILIES = [keras_family(ConvNet, CNN_PARAMS, "image", needs="image")]
