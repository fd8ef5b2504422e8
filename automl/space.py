"""The declarative search-space language, loaded from YAML.

A family file names one model family and its parameters::

    family: lightgbm
    params:
      learning_rate: {type: float, low: 0.005, high: 0.3, log: true, default: 0.05}
      boosting: {type: categorical, choices: [gbdt, goss], default: gbdt}
      top_rate: {type: float, low: 0.1, high: 0.5, when: {boosting: goss}}
      verbose: {type: fixed, value: -1}

A bundle file puts several families under one top-level `family` choice, so one sampler searches
across families and their hyperparameters at once (the CASH problem)::

    bundle: tabular
    include: [lightgbm.yaml, random_forest.yaml]
    portfolio:                      # optional: the configurations tried first, in order
      - {family: lightgbm, learning_rate: 0.03, num_leaves: 64}
      - {family: random_forest}     # unnamed parameters take their defaults
    sampled_only: [wide_deep]       # optional: families the sampler proposes, whose defaults
                                    # are not among the first trials

Parameter types: `int` and `float` (`low`, `high`, optional `log` or `step`), `categorical`
(`choices`), `fixed` (`value`). `when: {parent: value-or-list}` makes a parameter active only for
some values of a categorical parent. Each parameter has a default (given, or the middle of its
range / the first choice). A search starts with the bundle's portfolio, then each family's
defaults that the portfolio did not already try (see `SearchSpace.defaults`).

Sampled configurations are flat dicts of "family" plus "<family>.<param>" names, the form optuna
stores; `Config` turns one back into a family and its parameters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from automl.errors import UserInputError

FAMILY_KEY = "family"
# A flat configuration may carry an epoch budget set by the searcher (keras-tuner's Hyperband
# rungs); it overrides a network's `epochs` and means nothing to other families.
EPOCHS_KEY = "budget.epochs"
EPOCHS_ATTR = "epochs"  # the trial attribute a searcher sets the budget with
PARAM_KEYS = {
    "int": {"type", "low", "high", "log", "step", "default", "when"},
    "float": {"type", "low", "high", "log", "step", "default", "when"},
    "categorical": {"type", "choices", "default", "when"},
    "fixed": {"type", "value", "when"},
}


# --------------------------------------------------------------------------------------------
# Parameters


@dataclass
class Param:
    """One hyperparameter of a family; `label` is its flat name "<family>.<name>"."""

    family: str
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)
    value: Any = None
    default: Any = None
    when: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.family}.{self.name}"

    @property
    def bounds(self) -> tuple[float, float]:
        """`low` and `high` of a numeric parameter (checked present when the space loaded)."""
        if self.low is None or self.high is None:
            raise ValueError(f"parameter {self.label!r} ({self.type}) has no low/high")
        return self.low, self.high

    def is_active(self, params: dict[str, Any]) -> bool:
        """Active when every condition's parent is set to one of the listed values."""
        return all(
            parent in params and params[parent] in values for parent, values in self.when.items()
        )

    def suggest(self, trial: Any) -> Any:
        """Ask an optuna trial for this parameter (define-by-run)."""
        if self.type == "fixed":
            return self.value
        if self.type == "categorical":
            return trial.suggest_categorical(self.label, self.choices)
        if self.type == "int":
            step = int(self.step) if self.step else 1
            low, high = self.bounds
            return trial.suggest_int(self.label, int(low), int(high), step=step, log=self.log)
        low, high = self.bounds
        return trial.suggest_float(self.label, low, high, step=self.step, log=self.log)

    def snap(self, value: Any) -> Any:
        """Bring a value proposed elsewhere (hyperopt) onto this parameter's exact grid."""
        if self.type in ("categorical", "fixed"):
            return value
        low, high = self.bounds
        value = min(max(float(value), low), high)
        if self.step:
            value = low + round((value - low) / self.step) * self.step
            value = min(value, high)
        if self.type == "int":
            return int(round(value))
        return float(value)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type in ("int", "float"):
            out.update(low=self.low, high=self.high)
            if self.log:
                out["log"] = True
            if self.step:
                out["step"] = self.step
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        if self.type == "fixed":
            out["value"] = self.value
        else:
            out["default"] = self.default
        if self.when:
            out["when"] = {k: (v[0] if len(v) == 1 else list(v)) for k, v in self.when.items()}
        return out


@dataclass
class FamilySpace:
    name: str
    params: list[Param]  # parents before children
    source: str = ""

    def default_params(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for param in self.params:
            if param.is_active(values):
                values[param.name] = param.value if param.type == "fixed" else param.default
        return values


@dataclass(frozen=True)
class Config:
    """One sampled configuration: the family and its active parameters (fixed ones included)."""

    family: str
    params: dict[str, Any]


class SearchSpace:
    """Families, each with its parameters; the single source the samplers are driven from."""

    def __init__(
        self, families: list[FamilySpace], portfolio: list[dict[str, Any]] | None = None
    ) -> None:
        if not families:
            raise UserInputError("the search space has no families")
        names = [f.name for f in families]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            sources = ", ".join(f.source for f in families if f.name in duplicated)
            raise UserInputError(f"family {duplicated[0]!r} is defined twice ({sources})")
        self.families = {f.name: f for f in families}
        # Entries for families the space lacks are dropped (a bundle's portfolio may name
        # more families than a user's own selection of its files).
        self.portfolio = [dict(e) for e in portfolio or [] if e.get(FAMILY_KEY) in self.families]
        self.sampled_only: list[str] = []  # families whose defaults are not tried first

    # -- loading and saving ------------------------------------------------------------------

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> SearchSpace:
        families: list[FamilySpace] = []
        portfolio: list[dict[str, Any]] = []
        sampled_only: list[str] = []
        for path in paths:
            more, entries, later = _load_file(Path(path), seen=set())
            families.extend(more)
            portfolio.extend(entries)
            sampled_only.extend(later)
        space = cls(families)
        space.portfolio = _check_portfolio(space, portfolio)
        space.sampled_only = [f for f in dict.fromkeys(sampled_only) if f in space.families]
        return space

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> SearchSpace:
        if "families" in data:
            space = cls([_parse_family(f, source) for f in data["families"]])
            space.portfolio = _check_portfolio(space, data.get("portfolio") or [], source)
            space.sampled_only = list(data.get("sampled_only") or [])
            return space
        return cls([_parse_family(data, source)])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "families": [
                {"family": f.name, "params": {p.name: p.to_dict() for p in f.params}}
                for f in self.families.values()
            ]
        }
        if self.portfolio:
            out["portfolio"] = self.portfolio
        if self.sampled_only:
            out["sampled_only"] = self.sampled_only
        return out

    # -- sampling --------------------------------------------------------------------------------

    @property
    def family_names(self) -> list[str]:
        return list(self.families)

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample a flat configuration from an optuna trial, define-by-run."""
        family = trial.suggest_categorical(FAMILY_KEY, self.family_names)
        values: dict[str, Any] = {}
        flat: dict[str, Any] = {FAMILY_KEY: family}
        for param in self.families[family].params:
            if param.is_active(values):
                values[param.name] = param.suggest(trial)
                if param.type != "fixed":
                    flat[param.label] = values[param.name]
        return flat

    def config(self, flat: dict[str, Any]) -> Config:
        """The family and parameters of a flat configuration, fixed values filled in."""
        family = self.families[flat[FAMILY_KEY]]
        values: dict[str, Any] = {}
        for param in family.params:
            if param.is_active(values):
                values[param.name] = param.value if param.type == "fixed" else flat[param.label]
        return Config(family=family.name, params=values)

    def defaults(self, networks_last: bool = False) -> list[dict[str, Any]]:
        """The flat configurations tried first: the portfolio's entries in order, then each
        family's defaults not already among them. `networks_last` moves the networks' entries
        after the other families' defaults (for data with categorical columns, where trees
        usually win), not after the portfolio's further configurations: behind those a short
        search would never reach a network."""
        from automl.models import FAMILIES

        out: list[dict[str, Any]] = []
        later = set(self.sampled_only)
        entries = [
            *self.portfolio,
            *({FAMILY_KEY: name} for name in self.families if name not in later),
        ]
        for entry in entries:
            flat = self._flat(entry)
            if flat not in out:
                out.append(flat)
        if networks_last:
            plain = [i for i, flat in enumerate(out)
                     if not FAMILIES[flat[FAMILY_KEY]].uses_keras
                     and flat == self._flat({FAMILY_KEY: flat[FAMILY_KEY]})]  # fmt: skip
            cut = plain[-1] + 1 if plain else 0
            head = sorted(out[:cut], key=lambda flat: FAMILIES[flat[FAMILY_KEY]].uses_keras)
            out = head + out[cut:]
        return out

    def _flat(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A flat configuration: the family's defaults, with the values `entry` sets."""
        family = self.families[entry[FAMILY_KEY]]
        values: dict[str, Any] = {}
        for param in family.params:
            if param.is_active(values):
                given = entry.get(param.name, param.default)
                values[param.name] = param.value if param.type == "fixed" else given
        flat = {FAMILY_KEY: family.name}
        flat.update({p.label: values[p.name] for p in family.params
                     if p.type != "fixed" and p.name in values})  # fmt: skip
        return flat

    def param(self, label: str) -> Param:
        family, _, name = label.partition(".")
        for param in self.families[family].params:
            if param.name == name:
                return param
        raise KeyError(label)


# --------------------------------------------------------------------------------------------
# Parsing and validation


def _load_file(
    path: Path, seen: set[Path]
) -> tuple[list[FamilySpace], list[dict[str, Any]], list[str]]:
    """The families a file defines (a bundle's, recursively), its portfolio entries and the
    families it leaves to the sampler."""
    source = str(path)
    if not path.exists():
        raise UserInputError(f"{source}: search-space file not found")
    resolved = path.resolve()
    if resolved in seen:
        raise UserInputError(f"{source}: includes itself (include cycle)")
    seen = seen | {resolved}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserInputError(f"{source}: malformed YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise UserInputError(f"{source}: not a text file") from None
    if not isinstance(data, dict):
        raise UserInputError(
            f"{source}: expected a mapping with 'family' and 'params' (or 'bundle' and 'include'); "
            f"got {type(data).__name__}"
        )
    if "bundle" in data or "include" in data:
        unknown = set(data) - {"bundle", "include", "portfolio", "sampled_only"}
        if unknown:
            raise UserInputError(
                f"{source}: unknown key(s) {sorted(unknown)}; a bundle has 'bundle', 'include' "
                "and optionally 'portfolio' and 'sampled_only'"
            )
        include = data.get("include")
        if not isinstance(include, list) or not include:
            raise UserInputError(f"{source}: 'include' must be a non-empty list of space files")
        families: list[FamilySpace] = []
        portfolio: list[dict[str, Any]] = []
        sampled_only: list[str] = []
        for item in include:
            more, entries, later = _load_file(path.parent / str(item), seen)
            families.extend(more)
            portfolio.extend(entries)
            sampled_only.extend(later)
        own = data.get("portfolio") or []
        if not isinstance(own, list) or not all(isinstance(e, dict) for e in own):
            raise UserInputError(f"{source}: 'portfolio' must be a list of mappings")
        _check_portfolio(SearchSpace(families), own, source)
        own_later = data.get("sampled_only") or []
        names = {f.name for f in families}
        if not isinstance(own_later, list) or not all(name in names for name in own_later):
            raise UserInputError(
                f"{source}: 'sampled_only' must list families the bundle includes "
                f"({', '.join(sorted(names))}); got {own_later!r}"
            )
        return families, [*own, *portfolio], [*own_later, *sampled_only]
    return [_parse_family(data, source)], [], []


def _check_portfolio(
    space: SearchSpace, entries: list[dict[str, Any]], source: str = "portfolio"
) -> list[dict[str, Any]]:
    """Every entry names a family of the space (or is dropped, see `SearchSpace`) and sets
    only its parameters, to values the space allows."""
    for i, entry in enumerate(entries, start=1):
        where = f"{source}: portfolio entry {i}"
        family = space.families.get(str(entry.get(FAMILY_KEY)))
        if family is None:
            continue
        by_name = {p.name: p for p in family.params}
        for name, value in entry.items():
            if name == FAMILY_KEY:
                continue
            param = by_name.get(name)
            if param is None:
                raise UserInputError(
                    f"{where}: family {family.name!r} has no parameter {name!r} in this space"
                )
            if param.type == "fixed" and value != param.value:
                raise UserInputError(f"{where}: {name!r} is fixed at {param.value!r}")
            if param.type == "categorical" and value not in param.choices:
                raise UserInputError(f"{where}: {name!r} must be one of {param.choices}")
            if param.type in ("int", "float") and param.snap(value) != value:
                low, high = param.bounds
                raise UserInputError(
                    f"{where}: {name!r} = {value!r} is not a value of its range [{low}, {high}]"
                )
    return [dict(e) for e in entries if e.get(FAMILY_KEY) in space.families]


def _parse_family(data: dict[str, Any], source: str) -> FamilySpace:
    from automl.models import FAMILIES

    unknown_keys = set(data) - {"family", "params", "description"}
    if unknown_keys:
        raise UserInputError(
            f"{source}: unknown key(s) {sorted(unknown_keys)}; expected 'family' and 'params'"
        )
    name = data.get("family")
    if not isinstance(name, str):
        raise UserInputError(f"{source}: 'family' must name a model family")
    if name not in FAMILIES:
        raise UserInputError(
            f"{source}: unknown family {name!r}; expected one of {', '.join(sorted(FAMILIES))}"
        )
    raw_params = data.get("params") or {}
    if not isinstance(raw_params, dict):
        raise UserInputError(f"{source}: 'params' must be a mapping of parameter name to spec")
    accepted = FAMILIES[name].params
    params = []
    for pname, spec in raw_params.items():
        pname = str(pname)
        if pname not in accepted:
            raise UserInputError(
                f"{source}: family {name!r} has no parameter {pname!r}; "
                f"known: {', '.join(sorted(accepted))}"
            )
        params.append(_parse_param(name, pname, spec, source))
    return FamilySpace(name=name, params=_order_by_conditions(params, source), source=source)


def _parse_param(family: str, name: str, spec: Any, source: str) -> Param:
    where = f"{source}: parameter {name!r}"
    if not isinstance(spec, dict):
        raise UserInputError(f"{where}: expected a mapping with a 'type'; got {spec!r}")
    ptype = spec.get("type")
    if ptype not in PARAM_KEYS:
        raise UserInputError(
            f"{where}: unknown type {ptype!r}; expected one of {', '.join(PARAM_KEYS)}"
        )
    extra = set(spec) - PARAM_KEYS[ptype]
    if extra:
        raise UserInputError(
            f"{where}: unknown key(s) {sorted(extra)} for type {ptype}; "
            f"allowed: {', '.join(sorted(PARAM_KEYS[ptype]))}"
        )
    param = Param(family=family, name=name, type=ptype, when=_parse_when(spec.get("when"), where))
    if ptype == "fixed":
        if "value" not in spec:
            raise UserInputError(f"{where}: type fixed needs a 'value'")
        param.value = spec["value"]
        return param
    if ptype == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserInputError(f"{where}: 'choices' must be a non-empty list")
        if any(isinstance(c, (dict, list)) for c in choices):
            raise UserInputError(f"{where}: choices must be plain values (text, numbers, booleans)")
        param.choices = choices
        param.default = spec.get("default", choices[0])
        if param.default not in choices:
            raise UserInputError(f"{where}: default {param.default!r} is not one of {choices}")
        return param
    for key in ("low", "high"):
        if key not in spec:
            raise UserInputError(f"{where}: type {ptype} needs '{key}'")
    low, high = _number(spec["low"], where, "low"), _number(spec["high"], where, "high")
    if low > high:
        raise UserInputError(f"{where}: low ({low}) must be <= high ({high})")
    param.low, param.high, param.log = low, high, bool(spec.get("log", False))
    if param.log and low <= 0:
        raise UserInputError(f"{where}: log scale needs low > 0; got low={low}")
    if "step" in spec:
        param.step = _number(spec["step"], where, "step")
        if param.step <= 0:
            raise UserInputError(f"{where}: step must be > 0; got {param.step}")
        if param.log:
            raise UserInputError(f"{where}: use either log or step, not both")
    if ptype == "int":
        for key, value in (("low", low), ("high", high), ("step", param.step or 1)):
            if float(value) != int(value):
                raise UserInputError(
                    f"{where}: {key} must be a whole number for type int; got {value}"
                )
        param.low, param.high = int(low), int(high)
    param.default = _numeric_default(param, spec.get("default"), where)
    return param


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool):
        raise UserInputError(f"{where}: {key} must be a number; got {value!r}")
    if isinstance(value, (int, float)):
        if math.isnan(value) or math.isinf(value):
            raise UserInputError(f"{where}: {key} must be a finite number; got {value}")
        return value
    if isinstance(value, str):
        # PyYAML reads 1e-4 as a string (it wants 1.0e-4); accept text that is a number.
        try:
            return _number(float(value), where, key)
        except ValueError:
            pass
    raise UserInputError(f"{where}: {key} must be a number; got {value!r}")


def _numeric_default(param: Param, given: Any, where: str) -> float | int:
    low, high = param.bounds
    if given is None:
        value = math.sqrt(low * high) if param.log else (low + high) / 2
        return param.snap(value)
    value = _number(given, where, "default")
    if not low <= value <= high:
        raise UserInputError(f"{where}: default {value} is outside [{param.low}, {param.high}]")
    return param.snap(value)


def _parse_when(when: Any, where: str) -> dict[str, list[Any]]:
    if when is None:
        return {}
    if not isinstance(when, dict) or not when:
        raise UserInputError(f"{where}: 'when' must map a parent parameter to its value(s)")
    return {str(k): (list(v) if isinstance(v, list) else [v]) for k, v in when.items()}


def _order_by_conditions(params: list[Param], source: str) -> list[Param]:
    """Check every condition and put parents before the parameters that depend on them."""
    by_name = {p.name: p for p in params}
    for param in params:
        for parent, values in param.when.items():
            where = f"{source}: parameter {param.name!r}"
            if parent not in by_name:
                raise UserInputError(f"{where}: condition on unknown parameter {parent!r}")
            parent_param = by_name[parent]
            if parent_param.type != "categorical":
                raise UserInputError(
                    f"{where}: conditions need a categorical parent; "
                    f"{parent!r} is {parent_param.type}"
                )
            unknown = [v for v in values if v not in parent_param.choices]
            if unknown:
                raise UserInputError(
                    f"{where}: condition value(s) {unknown} are not choices of {parent!r} "
                    f"({parent_param.choices})"
                )
    ordered: list[Param] = []
    placed: set[str] = set()
    pending = list(params)
    while pending:
        ready = [p for p in pending if set(p.when) <= placed]
        if not ready:
            raise UserInputError(
                f"{source}: conditions form a cycle among {sorted(p.name for p in pending)}"
            )
        for param in ready:
            ordered.append(param)
            placed.add(param.name)
            pending.remove(param)
    return ordered
