"""Feature encoders, fitted on the fit part only and saved with every trial.

Two encodings cover the families: "onehot" (median-imputed, standardized numbers and one-hot
categories, for linear models and networks) and "ordinal" (numbers as they are, categories as
integer codes, for trees). Unseen categories at predict time are encoded as unknown, not errors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from automl.data import Schema

MISSING = "__missing__"
MAX_ONEHOT_CATEGORIES = 30


def make_encoder(encoding: str, schema: Schema) -> ColumnTransformer:
    if encoding == "onehot":
        numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
        categorical = make_pipeline(
            SimpleImputer(strategy="constant", fill_value=MISSING),
            OneHotEncoder(
                handle_unknown="infrequent_if_exist",
                max_categories=MAX_ONEHOT_CATEGORIES,
                sparse_output=False,
            ),
        )
    elif encoding == "ordinal":
        numeric = "passthrough"
        categorical = make_pipeline(
            SimpleImputer(strategy="constant", fill_value=MISSING),
            OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
        )
    else:
        raise ValueError(f"unknown encoding {encoding!r}")
    transformers = []
    if schema.numeric:
        transformers.append(("numeric", numeric, schema.numeric))
    if schema.categorical:
        transformers.append(("categorical", categorical, schema.categorical))
    return ColumnTransformer(transformers, sparse_threshold=0.0)


def fit_encoder(encoding: str, schema: Schema, x_fit: pd.DataFrame) -> ColumnTransformer:
    return make_encoder(encoding, schema).fit(x_fit)


def transform(encoder: ColumnTransformer, x: pd.DataFrame) -> np.ndarray:
    return np.asarray(encoder.transform(x), dtype=np.float64)
