"""A trial's files across a Ray cluster that shares no disk: they travel through Ray.

On a cluster the run directory is on the driver's machine. A worker on another node cannot
write there (KubeRay pods, cloud VMs and a lab's servers rarely share a filesystem; Ray Tune
itself stopped syncing to the head in Ray 2.7 and asks for NFS or cloud storage instead). So a
trial that runs on another node writes its files into a folder of its own on that node, and
streams them to `RunDirSink`, an actor on the driver's node, in chunks of `CHUNK` bytes: no
process ever holds a whole model in memory. The sink writes them into a staging folder of the
run directory, checks every file against its sha256 manifest, and renames the folder into
place: a trial's folder appears whole or not at all, as it does when written locally. A
network promoted from a lower rung fetches its parent's files from the sink the same way
before it trains. The worker keeps nothing once its trial is recorded.

A run in object storage (`--out s3://...`) needs no sink: a trial on another node writes its
files straight to the bucket (`to_bucket`), manifest last, as the driver's own `publish` does,
and a promoted network pulls its parent's files from there. The worker finds the bucket with
the driver's object-storage settings (`storage_env`: endpoint and credentials from the driver's
environment, for the nodes that lack their own).

A trial on the driver's own node writes into the run directory (or its cache) directly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from automl.io import MANIFEST, read_json, verify
from automl.run import RunDir

CHUNK = 8 * 2**20  # bytes per call to the sink: large enough to amortize a call, small in memory
STAGING = ".incoming"  # in the run directory: trial folders still arriving


@dataclass(frozen=True)
class Transfer:
    """What moving one trial's files cost: recorded with the trial (`transfer_*` attributes)."""

    seconds: float
    bytes: int


def _inside(root: Path, relative: str) -> Path:
    """`root / relative`, refusing a path that would leave `root` (a file name from a worker
    is data, never a place to write)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"{relative}: not inside {root}")
    return path


class RunDirSink:
    """The run directory's end of the transfer; runs as a Ray actor on the driver's node."""

    def __init__(self, run_path: str) -> None:
        self.run = RunDir(run_path)
        self.staging = self.run.path / STAGING

    def begin(self, number: int) -> str:
        """A new, empty staging folder for trial `number`'s files; its name."""
        name = f"{number:04d}-{uuid.uuid4().hex[:8]}"
        (self.staging / name).mkdir(parents=True)
        return name

    def write(self, name: str, relative: str, chunk: bytes, first: bool) -> None:
        path = _inside(self.staging / name, relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb" if first else "ab") as handle:
            handle.write(chunk)

    def commit(self, name: str, number: int) -> None:
        """Check every file a manifest lists, then put the folder in place of the trial's."""
        folder = self.staging / name
        for manifest in folder.rglob(MANIFEST):
            for listed in read_json(manifest):
                verify(manifest.parent, listed)
        final = self.run.trial_dir(number)
        if final.exists():  # left by an earlier attempt of the same trial
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder, final)
        self._tidy()

    def abort(self, name: str) -> None:
        shutil.rmtree(self.staging / name, ignore_errors=True)
        self._tidy()

    def _tidy(self) -> None:
        """No staging folder left once nothing is arriving."""
        with contextlib.suppress(OSError):  # not empty: another trial is arriving
            self.staging.rmdir()

    def listing(self, number: int) -> list[tuple[str, int]]:
        """Trial `number`'s files, as (path relative to its folder, size)."""
        folder = self.run.trial_dir(number)
        return [
            (str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file()
        ]

    def read(self, number: int, relative: str, offset: int, size: int) -> bytes:
        with open(_inside(self.run.trial_dir(number), relative), "rb") as handle:
            handle.seek(offset)
            return handle.read(size)


def clear_staging(run: RunDir) -> None:
    """Remove what transfers left half-done: a worker node lost while it shipped a trial never
    aborts its staging folder (its trial runs again and ships anew). Called when no trial can be
    arriving: before the sink starts and after the search ends."""
    shutil.rmtree(run.path / STAGING, ignore_errors=True)


def start_sink(run: RunDir) -> Any:
    """The sink actor, pinned to this (the driver's) node; leftovers of a killed search's
    transfers are removed first."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    clear_staging(run)
    here = ray.get_runtime_context().get_node_id()
    actor: Any = ray.remote(RunDirSink)
    return actor.options(
        num_cpus=0,
        max_concurrency=4,  # several workers ship at once, each into its own staging folder
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
    ).remote(str(run.path))


def ship(sink: Any, number: int, folder: Path) -> Transfer:
    """Stream `folder` (trial `number`'s files, written on this node) into the run directory."""
    import ray

    start = time.perf_counter()
    name = ray.get(sink.begin.remote(number))
    sent = 0
    try:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = str(path.relative_to(folder))
            with open(path, "rb") as handle:
                first = True
                while True:
                    chunk = handle.read(CHUNK)
                    if chunk or first:  # an empty file is written once, empty
                        ray.get(sink.write.remote(name, relative, chunk, first))
                        sent += len(chunk)
                    if len(chunk) < CHUNK:
                        break
                    first = False
        ray.get(sink.commit.remote(name, number))
    except BaseException:
        ray.get(sink.abort.remote(name))
        raise
    return Transfer(time.perf_counter() - start, sent)


def fetch(sink: Any, number: int, folder: Path) -> Transfer:
    """Copy trial `number`'s files from the run directory into `folder` on this node."""
    import ray

    start = time.perf_counter()
    received = 0
    for relative, size in ray.get(sink.listing.remote(number)):
        path = _inside(folder, relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            for offset in range(0, max(size, 1), CHUNK):
                chunk = ray.get(sink.read.remote(number, relative, offset, CHUNK))
                handle.write(chunk)
                received += len(chunk)
    return Transfer(time.perf_counter() - start, received)


# The environment variables through which pyarrow and fsspec find an object store's endpoint
# and credentials (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AZURE_STORAGE_ACCOUNT_KEY`, ...).
STORAGE_ENV_PREFIXES = ("AWS_", "AZURE_STORAGE_", "GOOGLE_CLOUD_", "GCS_")


def storage_env() -> dict[str, str]:
    """The driver's object-storage settings, for workers on nodes that lack their own (they
    travel in Ray's object store, as Ray's own `runtime_env` variables do)."""
    return {k: v for k, v in os.environ.items() if k.startswith(STORAGE_ENV_PREFIXES)}


@dataclass(frozen=True)
class Bucket:
    """A run in object storage as a worker on another node reaches it."""

    url: str
    env: dict[str, str]

    def mirror(self, folder: Path) -> Any:
        """The run in the bucket with `folder` as this worker's cache of it; a setting the
        node has of its own (its own credentials) wins over the driver's."""
        from automl.run_store import Mirror

        for key, value in self.env.items():
            os.environ.setdefault(key, value)
        return replace(Mirror.of(self.url), cache=folder)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def to_bucket(mirror: Any, folder: Path) -> Transfer:
    """Write a trial's `folder` (inside the mirror's cache) straight to the bucket."""
    start = time.perf_counter()
    mirror.publish(folder)
    return Transfer(time.perf_counter() - start, _size(folder))


def from_bucket(mirror: Any, number: int, folder: Path) -> Transfer:
    """Pull trial `number`'s files from the bucket into `folder`, the mirror's cache of them."""
    start = time.perf_counter()
    mirror.pull(under=folder.relative_to(mirror.cache).as_posix())
    if not (folder / MANIFEST).exists():
        raise FileNotFoundError(f"{mirror.url}: trial {number} has no files in the bucket")
    return Transfer(time.perf_counter() - start, _size(folder))


def evaluate_away(
    number: int, flat: dict[str, Any], ctx: Any, sink: Any, bucket: Bucket | None = None
) -> tuple[Any, Transfer]:
    """Run trial `number` on a node that cannot see the run directory: in a folder of this
    node's own, its parent's files fetched first (a promoted network), its own sent after:
    to the bucket where the run is in object storage, else through the sink; the local
    folder goes either way. Returns the outcome and what moving the files cost."""
    from automl.search.evaluate import evaluate
    from automl.search.outcome import outcome_of
    from automl.search.promotion import WARM_START_KEY

    local = Path(tempfile.mkdtemp(prefix="automl-trial-"))
    moved = Transfer(0.0, 0)
    try:
        here = replace(ctx, run=RunDir(local))
        mirror = bucket.mirror(here.run.path) if bucket is not None else None
        if WARM_START_KEY in flat:
            parent = int(flat[WARM_START_KEY])
            folder = here.run.trial_dir(parent)
            if mirror is not None:
                moved = from_bucket(mirror, parent, folder)
            else:
                moved = fetch(sink, parent, folder)
        outcome = outcome_of(evaluate, number, flat, here)
        if outcome.result is not None:
            folder = here.run.trial_dir(number)
            sent = to_bucket(mirror, folder) if mirror is not None else ship(sink, number, folder)
            moved = Transfer(moved.seconds + sent.seconds, moved.bytes + sent.bytes)
        return outcome, moved
    finally:
        shutil.rmtree(local, ignore_errors=True)
