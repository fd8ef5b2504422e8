"""The wide & deep family (Cheng et al. 2016) for tabular data.

The deep path is the searched dense stack; the wide path is the features themselves, a linear
term concatenated with the deep path just before the output. The search chooses:
- `inputs: one` (one feature matrix feeds both paths) or `groups` (two inputs: the one-hot
  categories and text features feed the wide path, the scaled numbers the deep path; a group
  the data lacks falls back to every feature);
- `aux_output`: an auxiliary head on the deep path, trained with the same target at
  `aux_weight` of the main loss, a regularizer for the deep path. The main output is the
  objective and the only one saved.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from automl.models.keras_base import (
    AUX_OUTPUT,
    MAIN_OUTPUT,
    KerasNetwork,
    keras_family,
    output_head,
    unwrap,
)
from automl.models.keras_mlp import MLP_PARAMS, dense_stack

WIDE_DEEP_PARAMS = MLP_PARAMS | {"inputs", "aux_output", "aux_weight"}


class WideDeep(KerasNetwork):
    family = "wide_deep"

    def _groups(self, n_features: int) -> dict[str, np.ndarray]:
        """Column indices of the wide and the deep input (`inputs: groups`)."""
        every = np.arange(n_features)

        def columns(*groups: str) -> np.ndarray:
            parts = [np.arange(*self.layout[g]) for g in groups if g in self.layout]
            return np.concatenate(parts) if parts else every

        return {"wide": columns("categorical", "text"), "deep": columns("numeric")}

    def split(self, x: np.ndarray) -> Any:
        x = np.asarray(x, np.float32)
        if self.params.get("inputs", "one") != "groups":
            return x
        return {name: x[:, cols] for name, cols in self._groups(x.shape[1]).items()}

    def graph(self, keras: Any, x: np.ndarray) -> tuple[Any, dict[str, Any], dict[str, float]]:
        from keras import layers

        p = self.params
        if p.get("inputs", "one") == "groups":
            groups = self._groups(x.shape[1])
            wide = keras.Input(shape=(len(groups["wide"]),), name="wide")
            deep = keras.Input(shape=(len(groups["deep"]),), name="deep")
            inputs = [wide, deep]
        else:
            wide = deep = keras.Input(shape=(x.shape[1],), name="features")
            inputs = [wide]
        deep_out = dense_stack(deep, p, prefix="deep")
        merged = layers.Concatenate(name="wide_and_deep")([deep_out, wide])
        outputs, losses, weights = self.heads(merged)
        if p.get("aux_output", False):
            aux, aux_loss = output_head(deep_out, self.task, self.n_classes, name=AUX_OUTPUT)
            outputs.append(aux)
            losses[AUX_OUTPUT] = aux_loss
            weights |= {MAIN_OUTPUT: 1.0, AUX_OUTPUT: float(p.get("aux_weight", 0.3))}
        return keras.Model(inputs, unwrap(outputs), name="wide_deep"), losses, weights


FAMILIES = [keras_family(WideDeep, WIDE_DEEP_PARAMS, "onehot")]
