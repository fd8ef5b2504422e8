"""The package as users meet it: scikit-learn estimators, DataFrames, dates, bundled spaces,
paths that cannot be written, `--version`, Parquet output."""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import automl
from automl.data import coerce_features, infer_schema, load_dataset
from automl.resources import bundled_recipes, bundled_spaces, space_path
from automl.search.loop import default_space
from tests.conftest import FAST_MLP, FAST_TREES, ROOT, Cli, shared, write_space

TINY = {"time_budget": None, "trials": 1, "space": "linear", "ensemble": None}

# Checks that cannot pass, and why. Every one fits fewer than 20 rows: a search splits the rows
# into fit, validation and test parts, and refuses fewer than 20 (with a ValueError that names
# the number of samples). Every other check of scikit-learn 1.9 passes.
TOO_FEW_ROWS = "fits fewer than 20 rows; a search needs 20 to split fit, validation and test"
SKIPPED_CHECKS = {
    "AutoMLClassifier": {
        "check_n_features_in_after_fitting": TOO_FEW_ROWS,
        "check_classifier_data_not_an_array": TOO_FEW_ROWS,
        "check_fit2d_1feature": TOO_FEW_ROWS,
    },
    "AutoMLRegressor": {
        "check_n_features_in_after_fitting": TOO_FEW_ROWS,
        "check_regressors_no_decision_function": TOO_FEW_ROWS,
        "check_fit2d_1feature": TOO_FEW_ROWS,
    },
}


@parametrize_with_checks(
    [automl.AutoMLClassifier(**TINY), automl.AutoMLRegressor(**TINY)],
    expected_failed_checks=lambda est: SKIPPED_CHECKS[type(est).__name__],
    xfail_strict=True,
)
def test_scikit_learn_estimator_checks(estimator: BaseEstimator, check: Callable) -> None:
    check(estimator)


def _blood() -> tuple[pd.DataFrame, pd.Series]:
    frame = pd.read_csv(shared("blood_transfusion.csv.gz"))
    return frame.drop(columns=["Class"]), frame["Class"]


def test_classifier_in_a_pipeline_inside_cross_val_score() -> None:
    x, y = _blood()
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    pipe = Pipeline(
        [("scale", StandardScaler()), ("automl", automl.AutoMLClassifier(trials=3, space="linear"))]
    )
    ours = cross_val_score(pipe, x, y, cv=folds, scoring="roc_auc")
    reference = cross_val_score(
        Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression())]),
        x,
        y,
        cv=folds,
        scoring="roc_auc",
    )
    # Three real folds scored on rows the search never saw; a searched logistic regression
    # (fit on 64% of each training part) lands within 0.03 AUC of the plain one on each fold.
    assert ours.shape == (3,)
    assert ours.min() > 0.68
    np.testing.assert_allclose(ours, reference, atol=0.03)


def test_clone_get_params_and_set_params_round_trip(tmp_path: Path) -> None:
    est = automl.AutoMLRegressor(time_budget=30, cv=3, space=["lightgbm", "linear"])
    copy = clone(est)
    assert copy is not est and copy.get_params() == est.get_params()
    assert copy.get_params()["space"] == ["lightgbm", "linear"]
    copy.set_params(cv=None, run_dir=tmp_path)
    assert (copy.cv, copy.run_dir, est.cv) == (None, tmp_path, 3)


def test_fit_keeps_a_run_directory_that_load_gives_back_fitted(tmp_path: Path) -> None:
    x, y = _blood()
    est = automl.AutoMLClassifier(trials=2, space="linear", run_dir=tmp_path / "fits")
    est.fit(x, y.map({0: "no", 1: "yes"}))
    assert est.run_dir_ == tmp_path / "fits" / "fit-001"
    assert list(est.classes_) == ["no", "yes"]
    assert list(est.feature_names_in_) == list(x.columns) and est.n_features_in_ == 4
    info = json.loads((est.run_dir_ / "run.json").read_text())
    assert info["data"] == "DataFrame" and info["data_sha256"].startswith("frame:")

    loaded = automl.load(est.run_dir_)
    assert isinstance(loaded, automl.AutoMLClassifier) and loaded.name == est.name
    np.testing.assert_array_equal(loaded.predict_proba(x), est.predict_proba(x))
    # An array in fit's column order predicts the same as the DataFrame.
    np.testing.assert_array_equal(est.predict(x.to_numpy()), est.predict(x))
    assert set(est.predict(x)) <= {"no", "yes"} and (est.predict(x) == "yes").sum() > 0

    est.fit(x, y)  # a second fit is a new run, the first one stays
    assert est.run_dir_.name == "fit-002" and (tmp_path / "fits" / "fit-001").is_dir()


def test_an_estimator_keeps_its_fits_in_object_storage(
    tmp_path: Path,
    s3_bucket: dict,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run_dir="s3://..."` with the study in PostgreSQL: the fit (search, ensembles, refit)
    lands in the bucket, and `automl.load` from an empty cache (another machine) predicts the
    same."""
    for key, value in s3_bucket["env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AUTOML_CACHE", str(tmp_path / "cache-fit"))
    x, y = _blood()
    fits = f"{s3_bucket['url']}/fits"
    est = automl.AutoMLClassifier(trials=2, space="linear", run_dir=fits, storage=postgres_url)
    est.fit(x, y)
    assert isinstance(est.run_dir_, str) and est.run_dir_.startswith(f"{fits}/fit-")
    from urllib.parse import urlsplit

    # Another machine: an empty cache, and the password given the standard way (run.json
    # keeps the URL without it).
    monkeypatch.setenv("AUTOML_CACHE", str(tmp_path / "cache-load"))
    monkeypatch.setenv("AUTOML_STORAGE_PASSWORD", str(urlsplit(postgres_url).password))
    loaded = automl.load(est.run_dir_)
    assert loaded.name == est.name and loaded.run_dir_ == est.run_dir_  # the URL, not a cache
    np.testing.assert_array_equal(loaded.predict_proba(x), est.predict_proba(x))
    import boto3

    client = boto3.client("s3", **s3_bucket["client"])
    prefix = est.run_dir_.removeprefix(f"{s3_bucket['url']}/") + "/"
    listed = client.list_objects_v2(Bucket=s3_bucket["bucket"], Prefix=prefix)["Contents"]
    keys = {o["Key"].removeprefix(prefix) for o in listed}
    assert {"run.json", "leaderboard.csv"} <= keys
    assert any(k.startswith("ensembles/") for k in keys)
    assert any("/refit/" in k for k in keys)  # the refit's models too
    with pytest.raises(ValueError, match="give storage a postgresql:// URL"):
        automl.AutoMLClassifier(trials=1, space="linear", run_dir=fits).fit(x, y)


def test_run_search_takes_a_dataframe_and_resumes_only_on_the_same_one(tmp_path: Path) -> None:
    x, y = _blood()
    frame = x.assign(Class=y)
    space = write_space(tmp_path, "rf.yaml", FAST_TREES)
    common = {"target": "Class", "out": tmp_path / "run", "spaces": [space], "threads": 1}
    first = automl.run_search(data=frame, trials=2, progress=lambda line: None, **common)
    again = automl.run_search(data=frame, trials=3, progress=lambda line: None, **common)
    assert (first.finished, again.finished) == (2, 3)
    changed = frame.assign(Class=1 - frame.Class)
    with pytest.raises(automl.UserInputError, match=r"holds a search with different data_sha256"):
        automl.run_search(data=changed, trials=4, progress=lambda line: None, **common)


def _bike_rentals() -> pd.DataFrame:
    """Two years of daily rows with a real-looking timestamp column: busier on weekends and
    in summer, the pattern of a bike-rental log; the temperature is blood-transfusion's
    'Recency' column (real numbers, no relation to the target)."""
    days = pd.date_range("2022-01-01 08:00", periods=730, freq="D")
    stamps = days + pd.to_timedelta((np.arange(730) * 7) % 12, unit="h")
    noise = pd.read_csv(shared("blood_transfusion.csv.gz"))["Recency"].to_numpy()[:730]
    busy = (stamps.weekday >= 5) | stamps.month.isin([6, 7, 8])
    return pd.DataFrame(
        {"when": stamps.strftime("%Y-%m-%d %H:%M"), "recency": noise, "busy": busy.astype(int)}
    )


def test_date_columns_become_year_month_day_weekday_and_hour(tmp_path: Path) -> None:
    frame = _bike_rentals()
    schema = infer_schema(frame.drop(columns=["busy"]), "bikes")
    assert schema.dates == {"when": ["year", "month", "day", "weekday", "hour"]}
    assert schema.numeric == ["when.year", "when.month", "when.day", "when.weekday", "when.hour",
                              "recency"]  # fmt: skip
    assert schema.input_columns == ["recency", "when"]
    one = coerce_features(pd.DataFrame({"when": ["2024-03-01 14:30"], "recency": [3]}), schema, "x")
    assert one.iloc[0].tolist() == [2024, 3, 1, 4, 14, 3]  # a Friday, 14:00
    assert load_dataset(frame, "busy").x_fit.columns.tolist() == schema.columns

    # A forest learns the weekend-and-summer rule from the parts; predict takes the dates.
    path = tmp_path / "bikes.csv"
    frame.to_csv(path, index=False)
    space = write_space(tmp_path, "rf.yaml", FAST_TREES)
    summary = automl.run_search(
        data=str(path), target="busy", out=tmp_path / "run", spaces=[space], trials=2,
        threads=1, progress=lambda line: None,
    )  # fmt: skip
    est = automl.load(summary.run_dir)
    new = pd.DataFrame({"when": ["2030-07-03 10:00", "2030-11-09 09:00", "2030-11-07 18:30"],
                        "recency": [2, 14, 4]})  # fmt: skip
    assert list(est.predict(new)) == [1, 1, 0]  # July; a Saturday; a Thursday in November


def test_strings_that_only_look_like_dates_stay_categories() -> None:
    frame = pd.DataFrame({"code": ["12-A", "13-B", "2024-01-01"] * 10, "n": range(30)})
    assert infer_schema(frame, "codes").dates == {}


def test_the_data_choose_the_bundled_space(tmp_path: Path) -> None:
    with np.load(shared("fashion_mnist_train.npz")) as archive:
        np.savez(tmp_path / "img.npz", x=archive["x"][:200], y=archive["y"][:200])
    images = load_dataset(str(tmp_path / "img.npz"), "y").schema
    text = load_dataset(str(shared("sms_spam.csv.gz")), "label").schema
    tabular = load_dataset(str(shared("credit_g.csv.gz")), "class").schema
    assert default_space(images)[0] == "images"
    assert default_space(text) == ("text", "text column(s) text")
    assert default_space(tabular) == ("tabular", "tabular data")
    assert {"tabular", "images", "text", "lightgbm"} <= set(bundled_spaces())
    assert {"greedy", "stacking", "optimized", "optimized_power"} <= set(bundled_recipes())
    assert space_path("images") == ROOT / "search_spaces" / "images.yaml"
    with pytest.raises(automl.UserInputError, match=r"^nope: no such search-space file, and"):
        space_path("nope")


def test_the_wheel_carries_the_spaces_and_recipes(tmp_path: Path) -> None:
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path, ROOT],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("automl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for space in (ROOT / "search_spaces").glob("*.yaml"):
        assert f"automl/search_spaces/{space.name}" in names
    for recipe in (ROOT / "ensembles").glob("*.yaml"):
        assert f"automl/ensemble_recipes/{recipe.name}" in names
    assert "automl/py.typed" in names
    assert not any(n.startswith(("tests/", "scripts/")) for n in names)


def test_version(cli: Cli) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli("--version")
    assert exit_.value.code == 0
    assert automl.__version__ == "0.2.0"


def _run(tmp_path: Path) -> Path:
    space = write_space(tmp_path, "rf.yaml", FAST_TREES)
    return automl.run_search(
        data="builtin:iris", target="target", out=tmp_path / "run", spaces=[space], trials=1,
        threads=1, progress=lambda line: None,
    ).run_dir  # fmt: skip


def test_predict_writes_parquet(tmp_path: Path, cli: Cli) -> None:
    run = _run(tmp_path)
    for name in ("p.parquet", "p.csv"):
        result = cli("predict", run, "--data", "builtin:iris", "--out", tmp_path / name)
        assert result.code == 0, result.err
    parquet, csv = pd.read_parquet(tmp_path / "p.parquet"), pd.read_csv(tmp_path / "p.csv")
    assert list(parquet.columns) == ["prediction", "proba_setosa", "proba_versicolor",
                                     "proba_virginica"]  # fmt: skip
    pd.testing.assert_frame_equal(parquet, csv, check_exact=False, atol=1e-12)


@pytest.mark.parametrize("command", ["search", "predict", "compare"])
def test_an_out_that_cannot_be_created_is_one_line_and_exit_2(
    tmp_path: Path, cli: Cli, command: str
) -> None:
    run = _run(tmp_path) if command != "search" else None
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "sub" / "out"
    args = {
        "search": ["search", "--data", "builtin:iris", "--out", out],
        "predict": ["predict", run, "--data", "builtin:iris", "--out", out],
        "compare": ["report", run, "--compare", run, "--out", out],
    }[command]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = cli(*args)
    assert result.code == 2
    assert result.err == f"error: --out {out}: cannot be created; {blocker} is a file\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing half-written


def test_an_out_in_a_folder_that_takes_no_files(tmp_path: Path, cli: Cli) -> None:
    # /proc refuses new files even to root, which permission bits would not show.
    result = cli("search", "--data", "builtin:iris", "--out", "/proc/automl-run")
    assert result.code == 2
    assert re.fullmatch(
        r"error: --out /proc/automl-run: cannot write in /proc \(.+\)\n", result.err
    )


def test_predict_streams_chunks_into_one_file_or_none(tmp_path: Path) -> None:
    from automl.predict import load_predictor, predict_to_file

    run = _run(tmp_path)
    predictor = load_predictor(run)
    iris = pd.concat([automl_data_iris()] * 3, ignore_index=True)  # 450 rows
    source = tmp_path / "iris.csv"
    iris.to_csv(source, index=False)
    whole = predictor.predict_frame(iris)
    for name in ("chunked.csv", "chunked.parquet"):
        rows = predict_to_file(predictor, str(source), tmp_path / name, chunk_rows=64)
        assert rows == 450
        read = pd.read_csv if name.endswith(".csv") else pd.read_parquet
        pd.testing.assert_frame_equal(read(tmp_path / name), whole, check_exact=False, atol=1e-12)
    # A bad value in the sixth chunk: one-line error, and no file at all.
    iris["petal length (cm)"] = iris["petal length (cm)"].astype(object)
    iris.loc[350, "petal length (cm)"] = "oops"
    iris.to_csv(source, index=False)
    with pytest.raises(
        automl.UserInputError,
        match=r"column 'petal length \(cm\)' must be numeric; found 'oops' \(row 350\)",
    ):
        predict_to_file(predictor, str(source), tmp_path / "bad.csv", chunk_rows=64)
    assert not list(tmp_path.glob("*bad*")) and not list(tmp_path.glob(".*tmp"))


def automl_data_iris() -> pd.DataFrame:
    from automl.data import read_table

    return read_table("builtin:iris").drop(columns=["target"])


def test_a_default_fit_builds_the_four_recipes_and_keeps_the_best_by_honest_score(
    tmp_path: Path,
) -> None:
    from automl.ensemble import DEFAULT_METHODS
    from automl.ensemble.build import load_ensembles
    from automl.run import RunDir, load_trials

    x, y = _blood()
    space = write_space(tmp_path, "rf.yaml", FAST_TREES)
    est = automl.AutoMLClassifier(time_budget=None, trials=4, space=["linear", str(space)], cv=3)
    est.fit(x, y)
    run = RunDir(est.run_dir_)
    ensembles = {e["name"]: e for e in load_ensembles(run)}
    assert sorted(ensembles) == sorted(DEFAULT_METHODS)
    assert sorted(DEFAULT_METHODS) == ["greedy", "mean", "optimized", "stacking"]
    assert ensembles["optimized"]["nelder_mead"]["evaluations"] >= 1
    # The kept model is the best honest score among the ensembles and the single trials; a
    # tie goes to the single trial.
    scored = [(e["honest_val_score"], 0, f"ensemble-{name}") for name, e in ensembles.items()]
    scored += [(t.val_score, 1, t.name) for t in load_trials(run) if t.val_score is not None]
    best = max(scored)
    assert est.name.removesuffix(" (refit on every row)") == best[2]
    assert est.get_params()["ensemble"] == "default"
    with pytest.raises(ValueError, match=r"^nope: no such recipe file, and not a bundled one"):
        automl.AutoMLClassifier(trials=1, space="linear", ensemble="nope", run_dir=tmp_path).fit(
            x, y
        )
    assert not (tmp_path / "fit-001").exists()  # refused before any search


GUARDLESS_SCRIPT = """\
import sys
from sklearn.datasets import load_breast_cancer
from automl import AutoMLClassifier
X, y = load_breast_cancer(return_X_y=True)
clf = AutoMLClassifier(time_budget=None, trials=1, space=sys.argv[1], cv=0, ensemble=None,
                       run_dir=sys.argv[2]).fit(X, y)
print("fitted", clf.name, round(clf.score(X, y), 3), clf.run_dir_)
"""


@pytest.mark.slow
def test_a_script_without_a_main_guard_fits_a_network_and_nothing_prints_tensorflow_logs(
    tmp_path: Path,
) -> None:
    """How most people first try a library: a plain script, no `if __name__ == "__main__":`,
    run as a file and from standard input; its network trial runs in a worker process, which
    must not run the script again. Neither the script nor `automl predict` on its run shows a
    line of TensorFlow's C++ log (`cudart_stub.cc:31] Could not find cuda drivers ...`)."""
    import subprocess
    import sys

    from automl.models.keras_base import NATIVE_LOG_LINE

    space = write_space(tmp_path, "mlp.yaml", FAST_MLP.replace("value: 3", "value: 40"))
    script = tmp_path / "script.py"
    script.write_text(GUARDLESS_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    outputs = []
    ways = [("file", [str(script)], None), ("stdin", ["-"], GUARDLESS_SCRIPT)]
    running = [  # both at once: each spends most of its time importing TensorFlow
        (subprocess.Popen([sys.executable, *args, str(space), str(tmp_path / how)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=tmp_path, env=env), stdin)
        for how, args, stdin in ways
    ]  # fmt: skip
    for process, stdin in running:  # the script (or nothing) on standard input, then EOF
        assert process.stdin is not None
        process.stdin.write(stdin or "")
        process.stdin.close()
        process.stdin = None  # closed: `communicate` below must not flush it
    for process, _ in running:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-2000:]
        words = stdout.split()
        assert words[:2] == ["fitted", "t0000-mlp"] and float(words[-2]) > 0.85, stdout
        outputs.append(stdout + stderr)
    run_dir = Path(words[-1])
    data = tmp_path / "rows.csv"
    pd.DataFrame(
        __import__("sklearn.datasets").datasets.load_breast_cancer(return_X_y=True)[0][:20],
        columns=[f"x{i}" for i in range(30)],
    ).to_csv(data, index=False)
    predicted = subprocess.run(
        [str(Path(sys.executable).with_name("automl")), "predict", str(run_dir),
         "--data", str(data), "--out", str(tmp_path / "p.csv")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.startswith("20 predictions from t0000-mlp")
    outputs.append(predicted.stdout + predicted.stderr)
    for text in outputs:
        noise = [line for line in text.splitlines() if NATIVE_LOG_LINE.match(line)]
        assert noise == [] and "cuda" not in text.lower(), text
