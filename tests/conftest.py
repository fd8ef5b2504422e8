"""Shared fixtures: the real data beside the project, tiny slices of it, and an in-process CLI."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
import pytest

from automl.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SPACES = ROOT / "search_spaces"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def missing(reason: str) -> NoReturn:
    """A component a test needs is absent: in CI (CI=true) that fails the test, since a
    skipped test proves nothing; on a developer's machine it skips, saying why."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: a missing component fails, never skips)")
    pytest.skip(reason)


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        missing(f"{path} is missing: the tests expect ../shared/data beside the project")
    return path


@pytest.fixture
def credit_csv(tmp_path: Path) -> Path:
    """300 rows of credit-g: numeric and text columns, string labels good/bad."""
    frame = pd.read_csv(shared("credit_g.csv.gz")).sample(300, random_state=0)
    path = tmp_path / "credit.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def blood_csv(tmp_path: Path) -> Path:
    path = tmp_path / "blood.csv"
    pd.read_csv(shared("blood_transfusion.csv.gz")).to_csv(path, index=False)
    return path


def write_space(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


FAST_MLP = """family: mlp
params:
  n_layers: {type: int, low: 1, high: 2, default: 1}
  units: {type: int, low: 8, high: 32, default: 16}
  epochs: {type: fixed, value: 3}
  batch_size: {type: fixed, value: 64}
"""

FAST_TREES = """family: random_forest
params:
  n_estimators: {type: int, low: 10, high: 40, default: 20}
  max_depth: {type: categorical, choices: [null, 4, 8], default: null}
"""

FAST_LINEAR = """family: linear
params:
  C: {type: float, low: 1.0e-2, high: 10.0, log: true, default: 1.0}
"""


BloodSearch = Callable[..., Any]  # search(*space_texts, out=..., **run_search options)


@pytest.fixture
def blood_search(tmp_path: Path, blood_csv: Path) -> BloodSearch:
    """Search blood-transfusion (target Class) into tmp_path/OUT over the given space texts."""
    from automl.search.loop import run_search

    def search(*space_texts: str, out: str | Path = "run", **options: Any) -> Any:
        spaces = [write_space(tmp_path, f"space{i}.yaml", t) for i, t in enumerate(space_texts)]
        options = {"threads": 1, "progress": lambda line: None} | options
        return run_search(
            data=str(blood_csv), target="Class", out=tmp_path / out, spaces=spaces, **options
        )

    return search


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


Cli = Callable[..., "CliResult"]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run `automl ARGS...` in-process; return exit code and captured output."""

    def run(*args: str) -> CliResult:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL that `make test` starts on loopback; dropped after."""
    admin = os.environ.get("AUTOML_TEST_POSTGRES_URL")
    if not admin:
        missing("AUTOML_TEST_POSTGRES_URL is unset: `make test` starts PostgreSQL and sets it")
    import secrets

    import psycopg2

    name = f"automl_test_{secrets.token_hex(4)}"
    connection = psycopg2.connect(admin)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        yield admin.rsplit("/", 1)[0] + f"/{name}"
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        connection.close()


@pytest.fixture
def s3_bucket(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An S3-compatible server (moto's, a test dependency) on a free loopback port with an
    empty bucket: `url` (s3://bucket), `env` (the standard AWS variables that point a process
    at it) and `client` (boto3's arguments)."""
    import shutil
    import socket
    import subprocess
    import sys
    import time

    server = Path(sys.executable).with_name("moto_server")
    if not server.exists() and shutil.which("moto_server") is None:
        missing("moto_server is not installed: `make test` installs the dev extra (moto[server])")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}  # fmt: skip
    client = {"endpoint_url": endpoint, "aws_access_key_id": "test",
              "aws_secret_access_key": "test", "region_name": "us-east-1"}  # fmt: skip
    try:
        import boto3

        deadline = time.time() + 30
        while True:
            try:
                boto3.client("s3", **client).create_bucket(Bucket="runs")
                break
            except Exception:
                if time.time() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        yield {"url": "s3://runs", "bucket": "runs", "env": env, "client": client}
    finally:
        process.terminate()
        process.wait(timeout=30)


def queue_trials(run: Path, configs: list[dict[str, Any]]) -> str:
    """Make the run's own study (study.db, maximizing) with `configs` queued as its first
    trials, before `run_search` opens it; returns the study's storage URL. (A database given
    as storage would hold the run's study under a name of its own.)"""
    import optuna

    from automl.run import STUDY_NAME

    run.mkdir()
    storage = f"sqlite:///{run / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="maximize")
    for config in configs:
        study.enqueue_trial(config)
    return storage
