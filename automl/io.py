"""Files that readers can trust: atomic writes, and a sha256 manifest checked before loading.

Every artifact goes through `write_bytes_atomic` (temporary file, fsync, rename), so a reader
never sees half a file after a crash. A directory's `manifest.json` records the sha256 of each
artifact; `verify` refuses a file whose bytes changed, before anything unpickles it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from automl.errors import IntegrityError, UserInputError

MANIFEST = "manifest.json"


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; when the block ends without an error it is
    fsynced and renamed onto `path`, otherwise removed: `path` is the old file or the complete
    new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that the file is either the old one or the complete new one."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def write_npy_atomic(path: Path, array: Any) -> None:
    """An array as a .npy file (no pickled objects), written atomically."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    write_bytes_atomic(path, buffer.getvalue())


def check_can_write(path: Path, label: str) -> None:
    """Refuse, with one line, a path that cannot be created or written, before any work is done
    and without creating anything: its nearest existing ancestor must be a folder that takes a
    file (a probe, removed at once; permission bits alone say nothing for root)."""
    path = Path(path)
    ancestor = path if path.is_dir() else path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserInputError(
            f"{label} {path}: cannot be created; {ancestor} is a file", settings=(label,)
        )
    try:
        fd, probe = tempfile.mkstemp(dir=ancestor, prefix=".automl-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserInputError(
            f"{label} {path}: cannot write in {ancestor} ({exc.strerror or type(exc).__name__})",
            settings=(label,),
        ) from None


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__} to JSON")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, names: list[str]) -> None:
    """Record the sha256 of each named file in `directory/manifest.json`."""
    directory = Path(directory)
    entries = {name: sha256_file(directory / name) for name in sorted(names)}
    write_json_atomic(directory / MANIFEST, entries)


def verify(directory: Path, name: str) -> Path:
    """Return the path of `name` after checking its sha256 against the directory's manifest."""
    directory = Path(directory)
    path = directory / name
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        raise IntegrityError(f"{manifest_path}: missing; refusing to load {path}")
    expected = read_json(manifest_path).get(name)
    if expected is None:
        raise IntegrityError(f"{path}: not listed in {manifest_path}; refusing to load it")
    if not path.exists():
        raise IntegrityError(f"{path}: listed in the manifest but missing")
    if sha256_file(path) != expected:
        raise IntegrityError(
            f"{path}: sha256 does not match {manifest_path} (file changed after it was written); "
            "refusing to load it"
        )
    return path
