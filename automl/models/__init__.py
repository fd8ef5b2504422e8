"""The model families a search space can name: a registry that is a plain dict.

Each family says which parameters its YAML may set, how its features are encoded, how to build
an estimator from a configuration, and how to load a saved one (`automl.models.base`). Nothing
here imports TensorFlow: the Keras family imports it only when a Keras model is built or loaded.
"""

from __future__ import annotations

from automl.models import catboost_model, cnn, keras_mlp, sklearn_models, text_net, wide_deep
from automl.models.base import BuildContext, Family, Model


def _families() -> dict[str, Family]:
    families = [
        *sklearn_models.FAMILIES,
        *catboost_model.FAMILIES,
        *keras_mlp.FAMILIES,
        *wide_deep.FAMILIES,
        *cnn.FAMILIES,
        *text_net.FAMILIES,
    ]
    return {family.name: family for family in families}


FAMILIES: dict[str, Family] = _families()

__all__ = ["FAMILIES", "BuildContext", "Family", "Model"]
