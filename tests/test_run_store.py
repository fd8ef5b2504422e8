"""A run directory in object storage through a local cache (`automl.run_store`), on pyarrow's
local filesystem standing in for a bucket (the S3 server test is in test_ray.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from automl.errors import UserInputError
from automl.run_store import Mirror, is_remote


def _mirror(tmp_path: Path, cache: str) -> Mirror:
    bucket = tmp_path / "bucket"
    bucket.mkdir(exist_ok=True)
    return Mirror("s3://bucket/run", tmp_path / cache, pafs.LocalFileSystem(), str(bucket))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_publish_sends_what_changed_and_a_fresh_cache_pulls_the_whole_run(tmp_path: Path) -> None:
    first = _mirror(tmp_path, "cache-a")
    _write(first.cache / "run.json", '{"task": "binary"}')
    _write(first.cache / "trials" / "0000" / "val_pred.npy", "x" * 100)
    _write(first.cache / "trials" / "0000" / "manifest.json", "{}")
    _write(first.cache / ".lock", "")  # a process's own: never sent
    _write(first.cache / ".incoming" / "0001" / "model.joblib", "partial")
    _write(first.cache / "ray" / "tune" / "state.json", "{}")
    assert first.publish() == 3
    assert first.publish() == 0  # nothing changed: nothing sent, nothing hashed again
    _write(first.cache / "run.json", '{"task": "multiclass"}')
    assert first.publish(first.cache / "trials") == 0  # only what is under the folder given
    assert first.publish() == 1
    sent = sorted(p.relative_to(tmp_path / "bucket").as_posix()
                  for p in (tmp_path / "bucket").rglob("*") if p.is_file())  # fmt: skip
    assert sent == ["run.json", "trials/0000/manifest.json", "trials/0000/val_pred.npy"]

    second = _mirror(tmp_path, "cache-b")  # another machine
    assert second.pull() == second.cache
    assert json.loads((second.cache / "run.json").read_text()) == {"task": "multiclass"}
    assert (second.cache / "trials" / "0000" / "val_pred.npy").read_text() == "x" * 100
    before = (second.cache / "run.json").stat().st_mtime_ns
    second.pull()  # the cache holds every file: none is fetched again
    assert (second.cache / "run.json").stat().st_mtime_ns == before
    _write(first.cache / "run.json", '{"task": "regression"}')
    first.publish()
    second.pull()  # a file the bucket has other bytes of is fetched again
    assert json.loads((second.cache / "run.json").read_text()) == {"task": "regression"}


def test_a_manifest_is_sent_after_every_file_it_names(tmp_path: Path) -> None:
    mirror = _mirror(tmp_path, "cache")
    order: list[str] = []
    real = mirror.filesystem

    class Recording:
        type_name = "local"

        def __getattr__(self, name: str):  # noqa: ANN204 - the rest is the real filesystem's
            return getattr(real, name)

        def open_output_stream(self, path: str):  # noqa: ANN202
            order.append(Path(path).name)
            return real.open_output_stream(path)

    mirror.filesystem = Recording()
    for name in ("manifest.json", "a.npy", "z.npy"):
        _write(mirror.cache / "trials" / "0003" / name, name)
    mirror.publish()
    assert order[-1] == "manifest.json" and sorted(order) == ["a.npy", "manifest.json", "z.npy"]


def test_object_storage_locations_and_the_study_they_need(tmp_path: Path) -> None:
    assert is_remote("s3://bucket/run") and is_remote("gs://b/r") and is_remote("abfs://c/r")
    assert not is_remote("runs/a") and not is_remote(tmp_path) and not is_remote("file:///x")
    from automl.search.loop import run_search

    with pytest.raises(
        UserInputError,
        match=r"^out s3://bucket/run: a run kept in a bucket keeps its study in a database that "
        r"every machine reaches \(SQLite needs a local disk with file locks\); give storage a "
        r"postgresql:// URL$",
    ):
        run_search(data="builtin:iris", target="target", out="s3://bucket/run", trials=1)
    assert not (tmp_path / "bucket").exists()


def test_a_worker_writes_its_trial_to_the_bucket_and_a_promoted_one_pulls_only_its_parent(
    tmp_path: Path,
) -> None:
    """On a cluster, a trial on another node writes its folder straight to the bucket, manifest
    included; a promoted network on yet another node pulls its parent's folder, and nothing
    else of the run, into a cache of its own."""
    from dataclasses import replace

    from automl.io import write_manifest
    from automl.search.ray_files import from_bucket, to_bucket

    driver = _mirror(tmp_path, "driver-cache")
    _write(driver.cache / "run.json", "{}")
    driver.publish()
    worker = replace(driver, cache=tmp_path / "worker")
    trial = worker.cache / "trials" / "0003"
    _write(trial / "model.keras", "w" * 50_000)
    write_manifest(trial, ["model.keras"])
    sent = to_bucket(worker, trial)
    assert sent.bytes == sum(p.stat().st_size for p in trial.iterdir())
    assert sent.bytes > 50_000

    other = replace(driver, cache=tmp_path / "other-worker")
    got = from_bucket(other, 3, other.cache / "trials" / "0003")
    assert got.bytes == sent.bytes
    assert (other.cache / "trials" / "0003" / "model.keras").read_text() == "w" * 50_000
    assert not (other.cache / "run.json").exists()  # only the parent's folder
    with pytest.raises(FileNotFoundError, match="s3://bucket/run: trial 7 has no files"):
        from_bucket(other, 7, other.cache / "trials" / "0007")
