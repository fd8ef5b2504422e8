"""The installed stack is the one pyproject.toml pins: what we tested is what runs."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

from tests.conftest import ROOT


def test_installed_versions_match_the_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        pins.extend(extra)
    mismatched = []
    for pin in pins:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]+\])?==([^;\s]+)", pin)
        assert match, f"{pin!r} is not pinned with =="
        name, wanted = match.group(1), match.group(3)
        if version(name) != wanted:
            mismatched.append(f"{name} {version(name)} != {wanted}")
    assert not mismatched, mismatched
