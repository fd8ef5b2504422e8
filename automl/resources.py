"""The search spaces and ensemble recipes that ship with the package, found by name.

They live at the top of the repository (`search_spaces/`, `ensembles/`), where users read and
copy them, and inside the wheel as `automl/search_spaces/` and `automl/ensemble_recipes/`
(pyproject.toml maps one onto the other). Nothing here resolves a path outside the installed
package, except in a source checkout, where the top-level folders are the package data.
"""

from __future__ import annotations

from pathlib import Path

from automl.errors import UserInputError

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(installed: str, checkout: str) -> Path:
    """The folder inside the installed package, or the top-level one of a source checkout."""
    inside = _PACKAGE / installed
    return inside if inside.is_dir() else _PACKAGE.parent / checkout


SPACES_DIR = _data_dir("search_spaces", "search_spaces")
RECIPES_DIR = _data_dir("ensemble_recipes", "ensembles")


def _names(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def bundled_spaces() -> list[str]:
    """Names `--space` accepts besides a path: `tabular`, `images`, `lightgbm`, ..."""
    return _names(SPACES_DIR)


def bundled_recipes() -> list[str]:
    """Names `--recipe` accepts besides a path: `greedy`, `stacking`, ..."""
    return _names(RECIPES_DIR)


def _resolve(spec: str | Path, directory: Path, what: str) -> Path:
    path = Path(spec)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path  # a path the user gave; its reader reports a missing file
    bundled = directory / f"{spec}.yaml"
    if bundled.exists():
        return bundled
    raise UserInputError(
        f"{spec}: no such {what} file, and not a bundled one; bundled {what}s are "
        f"{', '.join(_names(directory))}"
    )


def space_path(spec: str | Path) -> Path:
    """A search-space file: a path, or the name of a bundled space (`tabular`)."""
    return _resolve(spec, SPACES_DIR, "search-space")


def recipe_path(spec: str | Path) -> Path:
    """An ensemble recipe: a path, or the name of a bundled recipe (`greedy`)."""
    return _resolve(spec, RECIPES_DIR, "recipe")
