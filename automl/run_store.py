"""Run directories in object storage (`s3://bucket/prefix`, `gs://...`, `abfs://...`: any
filesystem pyarrow knows), through a local cache.

Every command works on a local copy of the run (the cache), as it does on a run directory on
disk; a `Mirror` brings the run's files down before (`pull`) and sends what changed back up
(`publish`): the search after every trial and at its end, `ensemble`, the refit and `report`
when they finish. An object appears whole or not at all, so a reader of the bucket never sees
half a file, and every trial's files are checked against their sha256 manifest once pulled.
The cache is keyed by content: a file whose sha256 the cache already holds is not moved
again. Endpoint and credentials come from the environment, the standard way
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...; `GOOGLE_APPLICATION_CREDENTIALS`; ...).

The study cannot live in the bucket: SQLite needs a local disk with working file locks, and a
run in object storage is meant to be opened from several machines. It lives in PostgreSQL
(`storage`); a run in object storage without one is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from automl.errors import UserInputError

# A location with a scheme other than file:// is object storage (s3://, gs://, abfs://, ...).
REMOTE = re.compile(r"^(?!file://)[A-Za-z][A-Za-z0-9+.-]*://")
# In the cache: each file's sha256 as the bucket last had it, with the cached copy's size and
# mtime (a file that kept both is not hashed again).
INDEX = ".mirror.json"
CHUNK = 8 * 1024 * 1024
# Written by a process for itself, never a part of the run that others read.
PRIVATE = re.compile(
    r"(^|/)(\.incoming|\.lock|ray|__pycache__)(/|$)|\.tmp[^/]*$|" + re.escape(INDEX)
)


def is_remote(location: str | Path | None) -> bool:
    return isinstance(location, str) and REMOTE.match(location) is not None


def cache_root() -> Path:
    """Where runs from object storage are cached: AUTOML_CACHE, else ~/.cache/automl/runs."""
    configured = os.environ.get("AUTOML_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "automl" / "runs"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Mirror:
    """A run directory in object storage and its local cache."""

    url: str
    cache: Path
    filesystem: Any = field(repr=False)
    base: str  # the run's path inside the filesystem (bucket/prefix)

    @classmethod
    def of(cls, url: str) -> Mirror:
        import pyarrow.fs as pafs

        try:
            filesystem, base = pafs.FileSystem.from_uri(url.rstrip("/"))
        except (pafs.ArrowInvalid, OSError, ValueError) as exc:  # type: ignore[attr-defined]
            raise UserInputError(f"{url}: cannot open this location ({exc})") from None
        name = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
        return cls(url.rstrip("/"), cache_root() / name, filesystem, base.rstrip("/"))

    def _index(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.cache / INDEX).read_text()))
        except (OSError, ValueError):
            return {}

    def _save_index(self, index: dict[str, Any]) -> None:
        temporary = self.cache / f"{INDEX}.tmp"
        temporary.write_text(json.dumps(index, sort_keys=True))
        os.replace(temporary, self.cache / INDEX)

    def _remote_files(self, under: str = "") -> Iterator[tuple[str, list[Any]]]:
        import pyarrow.fs as pafs

        folder = f"{self.base}/{under.strip('/')}" if under.strip("/") else self.base
        selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
        try:
            infos = self.filesystem.get_file_info(selector)
        except OSError as exc:
            raise UserInputError(f"{self.url}: cannot list the run ({one_line(exc)})") from None
        for info in infos:
            if info.type == pafs.FileType.File:
                yield info.path[len(self.base) + 1 :], _version(info)

    @staticmethod
    def _known(entry: Any, local: Path) -> bool:
        """Whether the cache's file is the one `entry` recorded (same size and mtime)."""
        if not isinstance(entry, dict) or not local.exists():
            return False
        stat = local.stat()
        return bool(entry.get("size") == stat.st_size and entry.get("mtime") == stat.st_mtime_ns)

    @staticmethod
    def _entry(local: Path, digest: str | None = None) -> dict[str, Any]:
        stat = local.stat()
        return {"sha256": digest or sha256_of(local), "size": stat.st_size,
                "mtime": stat.st_mtime_ns}  # fmt: skip

    def pull(self, under: str = "") -> Path:
        """Bring the run's files (or those in its folder `under`, relative to the run) into
        the cache, those it lacks or holds other bytes of; the cache's folder."""
        self.cache.mkdir(parents=True, exist_ok=True)
        index = self._index()
        for relative, version in self._remote_files(under):
            if PRIVATE.search(relative):
                continue
            local = self.cache / relative
            entry = index.get(relative)
            if entry is not None and self._known(entry, local) and entry.get("remote") == version:
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            temporary = local.with_name(f"{local.name}.tmp-pull")
            remote = f"{self.base}/{relative}"
            with (
                self.filesystem.open_input_stream(remote) as source,
                open(temporary, "wb") as target,
            ):
                while chunk := source.read(CHUNK):
                    target.write(chunk)
            os.replace(temporary, local)
            index[relative] = self._entry(local) | {"remote": version}
        self._save_index(index)
        return self.cache

    def publish(self, *under: Path) -> int:
        """Send the files of the cache (or of the folders `under` it) whose bytes the bucket
        does not have yet; how many were sent. Manifested folders go file by file, their
        manifest last, so a reader that finds a manifest finds every file it names."""
        index = self._index()
        roots = [Path(p) for p in under] or [self.cache]
        files: list[Path] = []
        for root in roots:
            if root.is_file():
                files.append(root)
            elif root.exists():
                files.extend(p for p in sorted(root.rglob("*")) if p.is_file())
        files.sort(key=lambda p: (p.name == "manifest.json", str(p)))
        sent = 0
        for path in files:
            relative = path.relative_to(self.cache).as_posix()
            if PRIVATE.search(relative) or self._known(index.get(relative), path):
                continue
            digest = sha256_of(path)
            if isinstance(index.get(relative), dict) and index[relative]["sha256"] == digest:
                index[relative] |= self._entry(path, digest)  # touched, not changed
                continue
            try:
                remote = f"{self.base}/{relative}"
                if getattr(self.filesystem, "type_name", "") == "local":  # folders of its own
                    self.filesystem.create_dir(remote.rsplit("/", 1)[0], recursive=True)
                with (
                    open(path, "rb") as source,
                    self.filesystem.open_output_stream(remote) as target,
                ):
                    while chunk := source.read(CHUNK):
                        target.write(chunk)
                version = _version(self.filesystem.get_file_info(remote))
            except OSError as exc:
                raise OSError(f"{self.url}/{relative}: cannot write ({one_line(exc)})") from exc
            index[relative] = self._entry(path, digest) | {"remote": version}
            sent += 1
        self._save_index(index)
        return sent


def _version(info: Any) -> list[Any]:
    """What tells one version of an object from the next: its size and modification time (a
    rewrite of the same size still moves the time)."""
    mtime = getattr(info, "mtime_ns", None)
    return [info.size, mtime]


def one_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def local_run(location: str | Path) -> tuple[Path, Mirror | None]:
    """A run directory's local folder: the location itself, or the cache of a run in object
    storage, brought up to date (`Mirror.pull`)."""
    if not is_remote(location):
        return Path(location), None
    mirror = Mirror.of(str(location))
    return mirror.pull(), mirror
