"""The text family: each text column vectorized inside the model, embedded and encoded.

TextVectorization (adapted on the fit rows) -> Embedding -> an encoder, either a Conv1D stack
with max pooling or a (bidirectional) LSTM. With several text columns, `share_encoder` chooses
one encoder (one set of weights, called on every column) or one per column. Other columns
(the "text" encoding one-hot encodes them) enter through a dense tabular branch, and every
branch is concatenated before the head: a multi-input functional model.

Raw strings go in, so the saved model predicts from text without any Python preprocessing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from automl.models.blocks import dense_block
from automl.models.keras_base import TRAINING_PARAMS, KerasNetwork, keras_family, unwrap

TEXT_PARAMS = TRAINING_PARAMS | {
    "max_tokens",
    "sequence_length",
    "embed_dim",
    "encoder",
    "conv_layers",
    "filters",
    "kernel_size",
    "lstm_units",
    "share_encoder",
    "dense_units",
    "dropout",
}


def text_encoder(keras: Any, params: dict[str, Any], texts: np.ndarray, name: str) -> Any:
    """A model from a (batch, 1) string tensor to a fixed-size encoding, adapted on `texts`."""
    from keras import layers

    p = params
    length = int(p.get("sequence_length", 64))
    vectorize = layers.TextVectorization(
        max_tokens=int(p.get("max_tokens", 10000)),
        output_sequence_length=length,
        name=f"{name}_vectorize",
    )
    vectorize.adapt(texts.reshape(-1).astype(str), batch_size=4096)
    text = keras.Input(shape=(1,), dtype="string", name=f"{name}_in")
    kind = p.get("encoder", "conv")
    h = vectorize(text)
    h = layers.Embedding(
        vectorize.vocabulary_size(),
        int(p.get("embed_dim", 64)),
        mask_zero=kind != "conv",
        name=f"{name}_embedding",
    )(h)
    if kind == "conv":
        for i in range(int(p.get("conv_layers", 1))):
            if i > 0:
                h = layers.MaxPooling1D(2, padding="same", name=f"{name}_pool{i}")(h)
            h = layers.Conv1D(
                int(p.get("filters", 64)),
                int(p.get("kernel_size", 5)),
                padding="same",
                activation="relu",
                name=f"{name}_conv{i}",
            )(h)
        h = layers.GlobalMaxPooling1D(name=f"{name}_global_pool")(h)
    else:
        lstm = layers.LSTM(int(p.get("lstm_units", 32)), name=f"{name}_lstm")
        h = layers.Bidirectional(lstm, name=f"{name}_bilstm")(h) if kind == "bilstm" else lstm(h)
    return keras.Model(text, h, name=name)


class TextNet(KerasNetwork):
    family = "text_net"

    def _text_columns(self) -> range:
        return range(*self.layout.get("text", [0, 0]))

    def _tabular(self) -> tuple[int, int]:
        start, stop = self.layout.get("tabular", [0, 0])
        return int(start), int(stop)

    def split(self, x: np.ndarray) -> Any:
        x = np.asarray(x, dtype=object)
        parts = {f"text_{i}": _strings(x[:, [c]]) for i, c in enumerate(self._text_columns())}
        start, stop = self._tabular()
        if stop > start:
            parts["tabular"] = x[:, start:stop].astype(np.float32)
        return parts

    def graph(self, keras: Any, x: np.ndarray) -> tuple[Any, dict[str, Any], dict[str, float]]:
        from keras import layers

        p = self.params
        columns = list(self._text_columns())
        if not columns:
            raise ValueError("the text_net family needs text columns (see --text-columns)")
        x = np.asarray(x, dtype=object)
        inputs = [keras.Input(shape=(1,), dtype="string", name=f"text_{i}") for i in columns]
        if bool(p.get("share_encoder", True)) or len(columns) == 1:
            shared = text_encoder(keras, p, x[:, columns], "text_encoder")
            branches = [shared(t) for t in inputs]
        else:
            branches = [
                text_encoder(keras, p, x[:, [c]], f"text_encoder_{i}")(t)
                for i, (c, t) in enumerate(zip(columns, inputs, strict=True))
            ]
        units = int(p.get("dense_units", 64))
        dropout = float(p.get("dropout", 0.0))
        start, stop = self._tabular()
        if stop > start:
            tabular = keras.Input(shape=(stop - start,), name="tabular")
            inputs.append(tabular)
            branches.append(dense_block(tabular, units, name="tabular"))
        h = branches[0] if len(branches) == 1 else layers.Concatenate(name="merge")(branches)
        h = dense_block(h, units, dropout=dropout, name="head")
        outputs, losses, weights = self.heads(h)
        return keras.Model(inputs, unwrap(outputs), name="text_net"), losses, weights


FAMILIES = [keras_family(TextNet, TEXT_PARAMS, "text", needs="text")]


def _strings(column: np.ndarray) -> Any:
    """A (n, 1) column of str as a string tensor: Keras' array adapter takes no numpy str."""
    import tensorflow as tf

    return tf.constant(column.astype(str))
