"""Loading tabular data, checking it, inferring the task and splitting it.

Everything the user hands us is checked here, before a run directory is written, and every
problem becomes a `UserInputError` naming the file and column and what was expected.
The test part is split off first and is never given to the search or the ensemble.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from automl.errors import UserInputError

TASKS = ("binary", "multiclass", "regression")
BUILTIN_PREFIX = "builtin:"
BUILTIN_TARGET = "target"
# Integer targets with at most this many distinct values are classes, not quantities.
MAX_CLASSES_FOR_INTEGER_TARGET = 20
# A text column is read as numeric garbage when at least this share of its values are numbers.
NUMERIC_SHARE_FOR_GARBAGE = 0.9
MIN_ROWS = 20
IMAGE_SHAPE_ATTR = "image_shape"


def _builtin_loaders() -> dict[str, Any]:
    from sklearn import datasets

    return {
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "digits": datasets.load_digits,
        "diabetes": datasets.load_diabetes,
        "iris": datasets.load_iris,
    }


BUILTIN_NAMES = ("breast_cancer", "wine", "digits", "diabetes", "iris")


def read_table(spec: str) -> pd.DataFrame:
    """Read a CSV (plain or .gz), a Parquet file, or `builtin:NAME` into a DataFrame."""
    if spec.startswith(BUILTIN_PREFIX):
        return _read_builtin(spec[len(BUILTIN_PREFIX) :])
    path = Path(spec)
    if not path.exists():
        raise UserInputError(f"{spec}: file not found")
    if path.is_dir():
        raise UserInputError(f"{spec}: is a directory, expected a CSV or Parquet file")
    if path.stat().st_size == 0:
        raise UserInputError(f"{spec}: the file is empty")
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        frame = _read_parquet(path)
    elif name.endswith(".npz"):
        frame = _read_npz(path)
    elif name.endswith((".csv", ".csv.gz", ".txt", ".tsv", ".gz")):
        frame = _read_csv(path)
    else:
        raise UserInputError(f"{spec}: unknown file type; expected .csv, .csv.gz, .parquet or .npz")
    if frame.shape[0] == 0:
        raise UserInputError(f"{spec}: has a header but no data rows")
    return frame


DataSource: TypeAlias = str | Path | pd.DataFrame  # a file, builtin:NAME, or a frame


def source_name(data: DataSource) -> str:
    """How messages and run.json name the data: its path, or `DataFrame` for a frame."""
    return "DataFrame" if isinstance(data, pd.DataFrame) else str(data)


def read_data(data: DataSource) -> pd.DataFrame:
    """A file or `builtin:NAME` read with `read_table`, or a copy of a DataFrame, checked the same
    way (column names as strings, unique, at least one row)."""
    if not isinstance(data, pd.DataFrame):
        return read_table(str(data))
    frame = data.copy()
    frame.columns = [str(c) for c in frame.columns]
    _check_unique(list(frame.columns), "DataFrame")
    if frame.shape[0] == 0:
        raise UserInputError("DataFrame: has columns but no rows")
    return frame


def _read_builtin(name: str) -> pd.DataFrame:
    loaders = _builtin_loaders()
    if name not in loaders:
        raise UserInputError(
            f"builtin:{name}: unknown built-in dataset; expected one of {', '.join(BUILTIN_NAMES)}"
        )
    bunch = loaders[name](as_frame=True)
    frame = bunch.frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    if name != "diabetes" and name != "digits":  # class names read better than codes
        names = np.asarray(bunch.target_names)
        frame[BUILTIN_TARGET] = names[frame[BUILTIN_TARGET].to_numpy()]
    return frame


def iter_table(spec: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The table of `read_table` in chunks of at most `chunk_rows` rows, so a file larger than
    memory can be predicted: CSV through pandas' chunked reader, Parquet by record batches;
    `.npz` and `builtin:` data come whole. The same checks as `read_table` come first."""
    path = Path(spec)
    name = path.name.lower()
    csv = name.endswith((".csv", ".csv.gz", ".txt", ".tsv", ".gz"))
    if spec.startswith(BUILTIN_PREFIX) or not (csv or name.endswith((".parquet", ".pq"))):
        yield read_table(spec)
        return
    if not path.exists() or path.is_dir() or path.stat().st_size == 0:
        yield read_table(spec)  # raises the same one-line error
        return
    if csv:
        yield from _iter_csv(path, chunk_rows)
        return
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=chunk_rows)
        for batch in batches:
            frame = batch.to_pandas()
            frame.columns = [str(c) for c in frame.columns]
            yield frame
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise UserInputError(f"{path}: not a readable Parquet file ({exc})") from None


def _iter_csv(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    head = _read_csv(path, nrows=2)  # delimiter, encoding, duplicate names, header
    sep = "\t" if path.name.lower().endswith((".tsv", ".tsv.gz")) else ","
    try:
        for chunk in pd.read_csv(path, sep=sep, chunksize=chunk_rows, low_memory=False):
            chunk.columns = list(head.columns)
            yield chunk
    except (pd.errors.ParserError, ValueError, OSError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"{path}: not a readable CSV file ({first})") from None


def _check_unique(names: list[str], source: str) -> None:
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise UserInputError(f"{source}: duplicate column names {duplicated}; names must be unique")


def _looks_binary(path: Path) -> bool:
    """NUL bytes or undecodable UTF-8 in the first 64 KiB (after gunzip) mean not a CSV."""
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(1 << 16)
    except (OSError, EOFError):
        return True
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(head) - 4  # a character cut at the block's end is fine
    return False


def _read_csv(path: Path, nrows: int | None = None) -> pd.DataFrame:
    sep = "\t" if path.name.lower().endswith((".tsv", ".tsv.gz")) else ","
    if _looks_binary(path):
        raise UserInputError(f"{path}: not a text CSV file (could not decode it as UTF-8)")
    try:
        header = pd.read_csv(path, sep=sep, nrows=1, header=None, dtype=str)
        frame = pd.read_csv(path, sep=sep, low_memory=False, nrows=nrows)
    except pd.errors.EmptyDataError:
        raise UserInputError(f"{path}: the file is empty") from None
    except UnicodeDecodeError:
        raise UserInputError(
            f"{path}: not a text CSV file (could not decode it as UTF-8)"
        ) from None
    except (pd.errors.ParserError, ValueError, OSError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"{path}: not a readable CSV file ({first})") from None
    names = [str(n) for n in header.iloc[0].tolist()] if header.shape[0] else []
    _check_unique(names, str(path))
    if frame.shape[1] == 1 and frame.shape[0] > 0 and any(d in names[0] for d in ";|\t"):
        raise UserInputError(
            f"{path}: found a single column {names[0]!r}; expected comma-separated values"
        )
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _read_npz(path: Path) -> pd.DataFrame:
    """Arrays `x` (N, ...) and `y` (N,): images flattened to columns px_0, px_1, ...; target `y`.
    `y` may be absent: new images to predict."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = sorted(archive.files)
            if "x" not in keys:
                raise UserInputError(
                    f"{path}: .npz must hold an array 'x' (and 'y' to train); found {keys}"
                )
            x = archive["x"]
            y = archive["y"] if "y" in keys else None
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UserInputError(
                f"{path}: 'x' holds arrays of different shapes (images of mixed sizes?); "
                "every image must have the same shape"
            ) from None
        raise UserInputError(f"{path}: not a readable .npz file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise UserInputError(f"{path}: not a readable .npz file ({exc})") from None
    if x.ndim < 2 or (y is not None and (y.ndim != 1 or len(x) != len(y))):
        raise UserInputError(
            f"{path}: expected x of shape (N, ...) and y of shape (N,); "
            f"got x {x.shape} and y {None if y is None else y.shape}"
        )
    if x.ndim > 4:
        raise UserInputError(
            f"{path}: expected images x of shape (N, H, W) or (N, H, W, C); got {x.shape}"
        )
    frame = pd.DataFrame(x.reshape(len(x), -1), columns=[f"px_{i}" for i in range(x[0].size)])
    if y is not None:
        frame["y"] = y
    if x.ndim >= 3:  # (N, H, W[, C]): images, whose shape the convolutional families need
        frame.attrs[IMAGE_SHAPE_ATTR] = [*x.shape[1:3], x.shape[3] if x.ndim == 4 else 1]
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 (pyarrow raises many types for a bad file)
        raise UserInputError(f"{path}: not a readable Parquet file ({exc})") from None
    frame.columns = [str(c) for c in frame.columns]
    return frame


def data_fingerprint(data: DataSource) -> str:
    """sha256 of the data file (of the built-in's name, of a DataFrame's columns and values):
    recorded, and checked on resume."""
    if isinstance(data, pd.DataFrame):
        digest = hashlib.sha256(repr(list(map(str, data.columns))).encode())
        digest.update(pd.util.hash_pandas_object(data, index=False).to_numpy().tobytes())
        return "frame:" + digest.hexdigest()
    spec = str(data)
    if spec.startswith(BUILTIN_PREFIX):
        return "builtin:" + hashlib.sha256(spec.encode()).hexdigest()
    digest = hashlib.sha256()
    with open(spec, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Features


@dataclass
class Schema:
    """Feature columns in order, with their kind; what `predict` data must provide.

    `text` columns hold free text (vectorized inside text networks, TF-IDF for the others);
    `image_shape` (H, W, C) says the numeric columns are an image's pixels, row-major;
    `dates` maps each date column to the parts it becomes (`when` -> `when.year`, ...), which
    are numeric columns: the models see the parts, `predict` data hold the dates.
    """

    numeric: list[str]
    categorical: list[str]
    text: list[str] = field(default_factory=list)
    image_shape: list[int] | None = None
    dates: dict[str, list[str]] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        """The model's feature columns, date parts included."""
        return self.numeric + self.categorical + self.text

    @property
    def input_columns(self) -> list[str]:
        """The columns the data must hold: date columns instead of their parts."""
        parts = {date_part_name(c, p) for c, names in self.dates.items() for p in names}
        return (
            [c for c in self.numeric if c not in parts]
            + self.categorical
            + self.text
            + list(self.dates)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "text": self.text,
            "image_shape": self.image_shape,
            "dates": self.dates,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        return cls(
            numeric=list(data["numeric"]),
            categorical=list(data["categorical"]),
            text=list(data.get("text") or []),
            image_shape=data.get("image_shape"),
            dates={k: list(v) for k, v in (data.get("dates") or {}).items()},
        )


# Dates become the parts AutoGluon's DatetimeFeatureGenerator makes of them: year, month, day
# and weekday, and the hour when any value has a time of day. A column of strings is a date
# column when every value starts like a date (2024-03-01, 01/03/2024, 2024.3.1) and parses.
DATE_PARTS = ("year", "month", "day", "weekday", "hour")
_DATE_START = r"^\s*\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}"


def date_part_name(column: str, part: str) -> str:
    return f"{column}.{part}"


def _parse_dates(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    return pd.to_datetime(values.astype("string"), errors="coerce", format="mixed")


def looks_like_dates(values: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(values):
        return True
    present = values.dropna()
    if len(present) == 0 or pd.api.types.is_numeric_dtype(present):
        return False
    sample = present.astype(str).iloc[:1000]
    if not sample.str.match(_DATE_START).all():
        return False
    return bool(_parse_dates(sample).notna().all())


def date_parts(values: pd.Series) -> list[str]:
    parsed = _parse_dates(values).dropna()
    with_time = len(parsed) and bool((parsed.dt.hour != 0).any())
    return [p for p in DATE_PARTS if p != "hour" or with_time]


def expand_dates(frame: pd.DataFrame, dates: dict[str, list[str]]) -> pd.DataFrame:
    """Add each date column's parts as float columns; a value that does not parse is missing."""
    if not dates:
        return frame
    frame = frame.copy()
    for column, parts in dates.items():
        parsed = _parse_dates(frame[column])
        for part in parts:
            values = parsed.dt.weekday if part == "weekday" else getattr(parsed.dt, part)
            frame[date_part_name(column, part)] = values.astype(float)
    return frame


# A string column is free text when its values are mostly distinct and several words long.
TEXT_MIN_MEDIAN_WORDS = 4
TEXT_MIN_DISTINCT_SHARE = 0.3


def looks_like_text(values: pd.Series) -> bool:
    present = values.dropna().astype(str)
    if len(present) == 0:
        return False
    words = present.str.split().str.len()
    return (
        float(words.median()) >= TEXT_MIN_MEDIAN_WORDS
        and present.nunique() / len(present) >= TEXT_MIN_DISTINCT_SHARE
    )


def infer_schema(
    features: pd.DataFrame, source: str, text_columns: list[str] | None = None
) -> Schema:
    """Decide which columns are numeric, categorical or text, rejecting garbage and infinities.

    Text is detected (several words, mostly distinct values) unless `text_columns` names it."""
    if text_columns:
        unknown = [c for c in text_columns if c not in features.columns]
        if unknown:
            raise UserInputError(
                f"text_columns: {source} has no column(s) {', '.join(map(repr, unknown))}",
                settings=("text_columns",),
            )
    numeric: list[str] = []
    categorical: list[str] = []
    text: list[str] = []
    dates: dict[str, list[str]] = {}
    for column in features.columns:
        values = features[column]
        if values.isna().all():
            continue  # carries no information; predict data need not have it either
        if text_columns is not None and column in text_columns:
            text.append(column)
        elif looks_like_dates(values):
            dates[column] = date_parts(values)
            numeric.extend(date_part_name(column, part) for part in dates[column])
        elif pd.api.types.is_bool_dtype(values):
            categorical.append(column)
        elif pd.api.types.is_numeric_dtype(values) or _mostly_numeric(values, source, column):
            numeric.append(column)
        elif text_columns is None and looks_like_text(values):
            text.append(column)
        else:
            categorical.append(column)
    if not numeric and not categorical and not text:
        raise UserInputError(f"{source}: no feature columns with values besides the target")
    return Schema(numeric=numeric, categorical=categorical, text=text, dates=dates)


def _mostly_numeric(values: pd.Series, source: str, column: str) -> bool:
    present = values.dropna()
    parsed = pd.to_numeric(present, errors="coerce")
    bad = present[parsed.isna()]
    if len(bad) == 0:
        return True
    if len(present) and 1 - len(bad) / len(present) >= NUMERIC_SHARE_FOR_GARBAGE:
        examples = ", ".join(repr(v) for v in bad.unique()[:3])
        rows = ", ".join(str(i) for i in bad.index[:3])
        raise UserInputError(
            f"{source}: column {column!r} is numeric except for {len(bad)} value(s) such as "
            f"{examples} (rows {rows}); fix them or leave those cells empty"
        )
    return False


def coerce_features(frame: pd.DataFrame, schema: Schema, source: str) -> pd.DataFrame:
    """The schema's columns in order, numeric ones as float, dates as their parts; checks what
    predict is given."""
    missing = [c for c in schema.input_columns if c not in frame.columns]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise UserInputError(
            f"{source}: missing feature column(s) {shown}; the model was trained on them"
        )
    out = expand_dates(frame, schema.dates)[schema.columns].copy()
    for column in schema.numeric:
        values = out[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            parsed = pd.to_numeric(values, errors="coerce")
            bad = values[parsed.isna() & values.notna()]
            if len(bad):
                raise UserInputError(
                    f"{source}: column {column!r} must be numeric; found {bad.iloc[0]!r} "
                    f"(row {bad.index[0]})"
                )
            values = parsed
        values = values.astype(float)
        if np.isinf(values.to_numpy()).any():
            row = int(np.flatnonzero(np.isinf(values.to_numpy()))[0])
            raise UserInputError(
                f"{source}: column {column!r} has infinite values (row {row}); "
                "replace them or leave those cells empty"
            )
        out[column] = values
    for column in schema.categorical:
        out[column] = out[column].astype("object").where(out[column].notna(), None)
        out[column] = out[column].map(lambda v: v if v is None else str(v))
    for column in schema.text:  # a missing text is an empty one
        out[column] = out[column].map(lambda v: "" if v is None or v != v else str(v))
    return out


# --------------------------------------------------------------------------------------------
# Target and task


def infer_task(y: pd.Series) -> str:
    """binary for two values, multiclass for text or few integers, regression otherwise."""
    distinct = y.nunique(dropna=True)
    if distinct == 2:
        return "binary"
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "multiclass"
    values = y.dropna().to_numpy(dtype=float)
    is_integer = np.all(np.equal(np.mod(values, 1), 0))
    if is_integer and distinct <= MAX_CLASSES_FOR_INTEGER_TARGET:
        return "multiclass"
    return "regression"


@dataclass
class Target:
    task: str
    classes: list[Any] = field(default_factory=list)  # original labels, in code order

    def encode(self, y: pd.Series) -> np.ndarray:
        if self.task == "regression":
            return y.to_numpy(dtype=float)
        lookup = {label: code for code, label in enumerate(self.classes)}
        return np.array([lookup[_label(v)] for v in y], dtype=np.int64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes, dtype=object)[codes]


def _label(value: Any) -> Any:
    """Plain Python labels so they survive JSON (numpy ints become ints, floats like 1.0 stay)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def make_target(y: pd.Series, task: str | None, source: str, column: str) -> Target:
    if task is not None and task not in TASKS:
        raise UserInputError(
            f"task must be one of {', '.join(TASKS)}; got {task!r}", settings=("task",)
        )
    task = task or infer_task(y)
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y):
            parsed = pd.to_numeric(y, errors="coerce")
            if parsed.isna().any():
                raise UserInputError(
                    f"{source}: target {column!r} must be numeric for regression; "
                    f"found {y[parsed.isna()].iloc[0]!r}"
                )
        return Target(task="regression")
    classes = sorted({_label(v) for v in y}, key=lambda v: (str(type(v)), v))
    if len(classes) < 2:
        raise UserInputError(
            f"{source}: target {column!r} has a single class {classes[0]!r}; "
            "need at least two to learn anything"
        )
    if task == "binary" and len(classes) != 2:
        raise UserInputError(
            f"{source}: target {column!r} has {len(classes)} classes; task binary needs exactly 2",
            settings=("task",),
        )
    return Target(task=task, classes=classes)


# --------------------------------------------------------------------------------------------
# The dataset a search sees


@dataclass
class OtherTarget:
    """A target trained beside the objective (`--target` given more than once)."""

    name: str
    target: Target
    y_fit: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray

    @property
    def task(self) -> str:
        return self.target.task


@dataclass
class Dataset:
    """Train (split into fit and validation parts) and test, with the schema and the target.

    `target` and the `y_*` arrays are the objective's; `others` are further targets that
    networks learn with heads of their own and tree models with a model each."""

    schema: Schema
    target: Target
    x_fit: pd.DataFrame
    y_fit: np.ndarray
    x_val: pd.DataFrame
    y_val: np.ndarray
    x_test: pd.DataFrame
    y_test: np.ndarray
    others: list[OtherTarget] = field(default_factory=list)

    @property
    def task(self) -> str:
        return self.target.task


def split_target(frame: pd.DataFrame, target: str, source: str) -> tuple[pd.DataFrame, pd.Series]:
    if target not in frame.columns:
        shown = ", ".join(repr(c) for c in list(frame.columns)[:10])
        more = " ..." if frame.shape[1] > 10 else ""
        raise UserInputError(f"{source}: no column {target!r}; columns are {shown}{more}")
    y = frame[target]
    if y.isna().all():
        raise UserInputError(f"{source}: target column {target!r} has no values (all missing)")
    keep = y.notna()
    return frame.loc[keep].drop(columns=[target]), y[keep]


def load_dataset(
    data: DataSource,
    target: str,
    *,
    task: str | None = None,
    test_data: DataSource | None = None,
    test_size: float = 0.2,
    val_size: float = 0.2,
    seed: int = 0,
    text_columns: list[str] | None = None,
    other_targets: list[str] | None = None,
) -> Dataset:
    """Read, check and split the data; every problem is a UserInputError with a clear line."""
    from sklearn.model_selection import train_test_split

    others = list(other_targets or [])
    if others:
        if test_data is not None:
            raise UserInputError(
                "test_data: not supported with several targets yet", settings=("test_data",)
            )
        duplicated = sorted({t for t in [target, *others] if [target, *others].count(t) > 1})
        if duplicated:
            raise UserInputError(
                f"target: {', '.join(map(repr, duplicated))} given twice", settings=("target",)
            )

    if not 0 <= test_size < 1:
        raise UserInputError(
            f"test_size must be from 0 (no test part) to below 1; got {test_size}",
            settings=("test_size",),
        )
    frame = read_data(data)
    data = source_name(data)  # from here on, the name messages use
    image_shape = frame.attrs.get(IMAGE_SHAPE_ATTR)
    other_y: dict[str, pd.Series] = {}
    for name in others:  # rows missing any target are left out, as for the objective
        frame, other_y[name] = _split_other(frame, name, data)
    features, y = split_target(frame, target, data)
    other_y = {name: values.loc[y.index] for name, values in other_y.items()}
    schema = infer_schema(features, data, text_columns)
    if image_shape is not None and len(schema.numeric) == features.shape[1]:
        schema.image_shape = list(image_shape)
    tgt = make_target(y, task, data, target)
    x_all = coerce_features(features, schema, data)
    if test_data is None and len(x_all) < MIN_ROWS:
        raise UserInputError(
            f"{data}: only {len(x_all)} rows with a target; need at least {MIN_ROWS} "
            "to split into fit, validation and test parts"
        )
    y_all = tgt.encode(y) if tgt.task != "regression" else pd.to_numeric(y).to_numpy(float)

    if test_data is not None:
        test_frame = read_data(test_data)
        test_data = source_name(test_data)
        test_features, test_y = split_target(test_frame, target, test_data)
        x_train, y_train = x_all, y_all
        x_test = coerce_features(test_features, schema, test_data)
        unknown = set(map(_label, test_y)) - set(tgt.classes) if tgt.task != "regression" else set()
        if unknown:
            raise UserInputError(
                f"{test_data}: target {target!r} has labels {sorted(map(str, unknown))} "
                "that the training data does not have"
            )
        y_test = tgt.encode(test_y) if tgt.task != "regression" else test_y.to_numpy(float)
    elif test_size == 0:  # no test part: every row trains, scores are out-of-fold only
        x_train, y_train = x_all, y_all
        x_test, y_test = x_all.iloc[:0], y_all[:0]
    else:
        x_train, x_test, y_train, y_test = train_test_split(
            x_all, y_all, test_size=test_size, random_state=seed, stratify=_strata(tgt, y_all)
        )
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train, y_train, test_size=val_size, random_state=seed, stratify=_strata(tgt, y_train)
    )
    if tgt.task != "regression" and len(np.unique(y_fit)) < 2:
        raise UserInputError(f"{data}: too few rows of the minority class to train on")
    extra = []
    for name, values in other_y.items():  # the objective's split, by row label
        other = make_target(values, None, data, name)
        codes = pd.Series(
            other.encode(values) if other.task != "regression" else values.to_numpy(float),
            index=values.index,
        )
        extra.append(
            OtherTarget(
                name,
                other,
                codes.loc[x_fit.index].to_numpy(),
                codes.loc[x_val.index].to_numpy(),
                codes.loc[x_test.index].to_numpy(),
            )
        )
    return Dataset(
        others=extra,
        schema=schema,
        target=tgt,
        x_fit=x_fit.reset_index(drop=True),
        y_fit=np.asarray(y_fit),
        x_val=x_val.reset_index(drop=True),
        y_val=np.asarray(y_val),
        x_test=x_test.reset_index(drop=True),
        y_test=np.asarray(y_test),
    )


def _split_other(frame: pd.DataFrame, name: str, source: str) -> tuple[pd.DataFrame, pd.Series]:
    rest, y = split_target(frame, name, source)
    return frame.loc[rest.index].drop(columns=[name]), y


def _strata(target: Target, y: np.ndarray) -> np.ndarray | None:
    """Stratify classification splits when every class has at least two rows."""
    if target.task == "regression":
        return None
    _, counts = np.unique(y, return_counts=True)
    return y if counts.min() >= 2 else None
