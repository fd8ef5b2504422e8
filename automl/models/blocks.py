"""Building blocks of the Keras families, each a `tensor -> tensor` function.

Every layer is named after its block (`name`), so graphs can be checked by the tests and read
in diagrams. Only built-in layers are used (no Lambda): saved models load with safe mode on.
"""

from __future__ import annotations

from typing import Any

BN_MOMENTUM = 0.9


def dense_block(
    x: Any,
    units: int,
    *,
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
    l2: float = 0.0,
    name: str,
) -> Any:
    """Dense -> (BatchNorm) -> activation -> (Dropout)."""
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


def conv_bn(
    x: Any,
    filters: int,
    kernel: int,
    *,
    name: str,
    batch_norm: bool = True,
    activation: str | None = "relu",
    separable: bool = False,
    strides: int = 1,
) -> Any:
    """(Separable) Conv2D -> (BatchNorm) -> (activation); no bias when BatchNorm follows."""
    from keras import layers

    conv = layers.SeparableConv2D if separable else layers.Conv2D
    x = conv(
        filters,
        kernel,
        strides=strides,
        padding="same",
        use_bias=not batch_norm,
        name=f"{name}_conv",
    )(x)
    if batch_norm:  # momentum 0.9: a few epochs on a CPU budget must settle the statistics
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def plain_block(x: Any, filters: int, *, name: str, batch_norm: bool = True) -> Any:
    """Two 3x3 convolutions."""
    x = conv_bn(x, filters, 3, name=f"{name}_a", batch_norm=batch_norm)
    return conv_bn(x, filters, 3, name=f"{name}_b", batch_norm=batch_norm)


def shortcut(x: Any, filters: int, *, name: str, batch_norm: bool = True) -> Any:
    """The identity when the channels already match; a 1x1 projection when they differ."""
    if x.shape[-1] == filters:
        return x
    return conv_bn(x, filters, 1, name=f"{name}_projection", batch_norm=batch_norm, activation=None)


def residual_block(x: Any, filters: int, *, name: str, batch_norm: bool = True) -> Any:
    """Two 3x3 convolutions added to the shortcut (ResNet v1 basic block)."""
    from keras import layers

    skip = shortcut(x, filters, name=name, batch_norm=batch_norm)
    y = conv_bn(x, filters, 3, name=f"{name}_a", batch_norm=batch_norm)
    y = conv_bn(y, filters, 3, name=f"{name}_b", batch_norm=batch_norm, activation=None)
    y = layers.Add(name=f"{name}_add")([skip, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def separable_block(x: Any, filters: int, *, name: str, batch_norm: bool = True) -> Any:
    """Xception-like: two depthwise-separable 3x3 convolutions added to the shortcut."""
    from keras import layers

    skip = shortcut(x, filters, name=name, batch_norm=batch_norm)
    y = conv_bn(x, filters, 3, name=f"{name}_a", batch_norm=batch_norm, separable=True)
    y = conv_bn(
        y, filters, 3, name=f"{name}_b", batch_norm=batch_norm, separable=True, activation=None
    )
    y = layers.Add(name=f"{name}_add")([skip, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def inception_branches(filters: int) -> dict[str, int]:
    """Output channels of each inception branch; they sum to `filters`."""
    quarter = max(1, filters // 4)
    return {
        "1x1": filters - 3 * quarter,
        "3x3": quarter,
        "double3x3": quarter,
        "pool": quarter,
    }


def inception_block(x: Any, filters: int, *, name: str, batch_norm: bool = True) -> Any:
    """Parallel 1x1, 1x1->3x3, 1x1->3x3->3x3 (a 5x5's field) and pool->1x1, concatenated."""
    from keras import layers

    width = inception_branches(filters)
    bn = batch_norm
    b1 = conv_bn(x, width["1x1"], 1, name=f"{name}_1x1", batch_norm=bn)
    b3 = conv_bn(x, width["3x3"], 1, name=f"{name}_3x3_reduce", batch_norm=bn)
    b3 = conv_bn(b3, width["3x3"], 3, name=f"{name}_3x3", batch_norm=bn)
    b5 = conv_bn(x, width["double3x3"], 1, name=f"{name}_d3x3_reduce", batch_norm=bn)
    b5 = conv_bn(b5, width["double3x3"], 3, name=f"{name}_d3x3_a", batch_norm=bn)
    b5 = conv_bn(b5, width["double3x3"], 3, name=f"{name}_d3x3_b", batch_norm=bn)
    bp = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    bp = conv_bn(bp, width["pool"], 1, name=f"{name}_pool_proj", batch_norm=bn)
    return layers.Concatenate(name=f"{name}_concat")([b1, b3, b5, bp])


CONV_BLOCKS = {
    "plain": plain_block,
    "residual": residual_block,
    "inception": inception_block,
    "separable": separable_block,
}
