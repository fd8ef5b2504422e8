"""The installed stack is the one constraints.txt locks: what we tested is what runs; and the
ranges in pyproject.toml admit it."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version

from packaging.requirements import Requirement

from tests.conftest import ROOT


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^;\s]+)", line)
        assert match, f"constraints.txt: {line!r} is not NAME==VERSION"
        pins[match.group(1)] = match.group(2)
    return pins


def test_installed_versions_match_the_lock() -> None:
    pins = locked()
    assert len(pins) > 100  # every transitive package, not only the direct ones
    mismatched = []
    for name, wanted in pins.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "missing"
        if installed != wanted:
            mismatched.append(f"{name} {installed} != {wanted}")
    assert not mismatched, mismatched


def test_every_dependency_is_a_range_that_admits_the_locked_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements.extend(extra)
    pins = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in locked().items()}
    for text in requirements:
        requirement = Requirement(text)
        assert "==" not in str(requirement.specifier), f"{text!r} is pinned; use a range"
        assert requirement.specifier, f"{text!r} has no lower bound"
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{requirement.name} is not in constraints.txt"
        assert requirement.specifier.contains(pins[name]), (
            f"{text!r} does not admit the locked {pins[name]}"
        )
