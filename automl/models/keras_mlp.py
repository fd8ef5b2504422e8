"""The Keras MLP family: a stack of dense blocks over the one-hot, scaled features."""

from __future__ import annotations

from typing import Any

import numpy as np

from automl.models.blocks import dense_block
from automl.models.keras_base import TRAINING_PARAMS, KerasNetwork, keras_family, unwrap

MLP_PARAMS = TRAINING_PARAMS | {
    "n_layers",
    "units",
    "shrink",
    "activation",
    "dropout",
    "batch_norm",
    "l2",
}


def dense_stack(x: Any, params: dict[str, Any], prefix: str = "block") -> Any:
    """The searched dense layers: `n_layers` blocks of `units`, shrinking by `shrink`."""
    units = float(params.get("units", 128))
    for i in range(int(params.get("n_layers", 2))):
        x = dense_block(
            x,
            max(8, int(round(units))),
            activation=params.get("activation", "relu"),
            dropout=float(params.get("dropout", 0.0)),
            batch_norm=bool(params.get("batch_norm", False)),
            l2=float(params.get("l2", 0.0)),
            name=f"{prefix}{i}",
        )
        units *= float(params.get("shrink", 1.0))
    return x


class KerasMLP(KerasNetwork):
    family = "mlp"

    def graph(self, keras: Any, x: np.ndarray) -> tuple[Any, dict[str, Any], dict[str, float]]:
        inputs = keras.Input(shape=(x.shape[1],), name="features")
        outputs, losses, weights = self.heads(dense_stack(inputs, self.params))
        return keras.Model(inputs, unwrap(outputs), name="mlp"), losses, weights


FAMILIES = [keras_family(KerasMLP, MLP_PARAMS, "onehot")]
