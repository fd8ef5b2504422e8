"""Feature encoders, fitted on the fit part only and saved with every trial.

Four encodings cover the families:
- "onehot": median-imputed, standardized numbers, one-hot categories and TF-IDF of text
  columns, for linear models and dense networks;
- "ordinal": numbers as they are, categories as integer codes, TF-IDF of text, for trees;
- "image": pixels scaled to [0, 1], for convolutional networks (which reshape them);
- "text": the raw text columns (vectorized inside the network) followed by the "onehot"
  encoding of the other columns, for text networks.

Unseen categories at predict time are encoded as unknown, not errors. `layout` tells a network
which columns of the encoded matrix are which, so it can route them to separate inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from automl.data import Schema

MISSING = "__missing__"
MAX_ONEHOT_CATEGORIES = 30
TFIDF_MAX_FEATURES = 2000
ENCODINGS = ("onehot", "ordinal", "image", "text")


def _tfidf() -> TfidfVectorizer:
    return TfidfVectorizer(max_features=TFIDF_MAX_FEATURES, ngram_range=(1, 2), sublinear_tf=True)


def make_tabular_encoder(encoding: str, schema: Schema) -> ColumnTransformer:
    if encoding == "onehot":
        numeric: Any = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
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
    transformers: list[tuple[str, Any, Any]] = []
    if schema.numeric:
        transformers.append(("numeric", numeric, schema.numeric))
    if schema.categorical:
        transformers.append(("categorical", categorical, schema.categorical))
    for column in schema.text:  # a vectorizer takes one column (a name, not a list)
        transformers.append((f"text:{column}", _tfidf(), column))
    return ColumnTransformer(transformers, sparse_threshold=0.0)


class ImageEncoder:
    """Pixels (the numeric columns, row-major) scaled to [0, 1] by the fit part's maximum."""

    def __init__(self, schema: Schema) -> None:
        self.columns = list(schema.numeric)
        self.image_shape = list(schema.image_shape or [])
        self.scale = 1.0

    def fit(self, x: pd.DataFrame) -> ImageEncoder:
        top = float(np.nanmax(x[self.columns].to_numpy(np.float32)))
        self.scale = top if top > 0 else 1.0
        return self

    def transform(self, x: pd.DataFrame) -> np.ndarray:
        pixels = x[self.columns].to_numpy(np.float32) / np.float32(self.scale)
        return np.nan_to_num(pixels, nan=0.0)

    def layout(self) -> dict[str, Any]:
        return {"image_shape": self.image_shape, "numeric": [0, len(self.columns)]}


class TextEncoder:
    """Raw text columns first (strings; the network vectorizes them), then the other columns
    one-hot encoded: one object matrix so every part of the pipeline still passes one array."""

    def __init__(self, schema: Schema) -> None:
        self.text = list(schema.text)
        rest = Schema(numeric=schema.numeric, categorical=schema.categorical)
        self.tabular = make_tabular_encoder("onehot", rest) if rest.columns else None

    def fit(self, x: pd.DataFrame) -> TextEncoder:
        if self.tabular is not None:
            self.tabular.fit(x)
        return self

    def transform(self, x: pd.DataFrame) -> np.ndarray:
        parts = [x[self.text].astype(str).to_numpy(object)]
        if self.tabular is not None:
            parts.append(np.asarray(self.tabular.transform(x), dtype=np.float64).astype(object))
        return np.concatenate(parts, axis=1)

    def layout(self) -> dict[str, Any]:
        n_text = len(self.text)
        width = 0
        if self.tabular is not None:
            width = max(s.stop for s in self.tabular.output_indices_.values())
        return {"text": [0, n_text], "text_columns": self.text, "tabular": [n_text, n_text + width]}


def make_encoder(encoding: str, schema: Schema) -> Any:
    if encoding == "image":
        if not schema.image_shape:
            raise ValueError("the image encoding needs image data (.npz with x of shape (N,H,W))")
        return ImageEncoder(schema)
    if encoding == "text":
        if not schema.text:
            raise ValueError("the text encoding needs text columns")
        return TextEncoder(schema)
    return make_tabular_encoder(encoding, schema)


def fit_encoder(encoding: str, schema: Schema, x_fit: pd.DataFrame) -> Any:
    return make_encoder(encoding, schema).fit(x_fit)


def transform(encoder: Any, x: pd.DataFrame) -> np.ndarray:
    if isinstance(encoder, ColumnTransformer):
        return np.asarray(encoder.transform(x), dtype=np.float64)
    return encoder.transform(x)


def layout(encoder: Any) -> dict[str, Any]:
    """Which columns of the encoded matrix hold what: `[start, stop]` per group ("numeric",
    "categorical", "text", "tabular") and the image shape, for networks with several inputs."""
    if not isinstance(encoder, ColumnTransformer):
        return encoder.layout()
    groups: dict[str, Any] = {}
    for name, where in encoder.output_indices_.items():
        if where.stop == where.start:
            continue
        group = "text" if name.startswith("text:") else name
        start, stop = groups.get(group, [where.start, where.stop])
        groups[group] = [min(start, where.start), max(stop, where.stop)]
    return groups
