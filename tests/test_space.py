"""The search-space language: shipped files parse, round-trip, and every mistake is named."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from automl.errors import UserInputError
from automl.space import SearchSpace
from tests.conftest import SPACES, write_space

SHIPPED = sorted(SPACES.glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_spaces_parse_and_round_trip(path: Path) -> None:
    space = SearchSpace.from_files([path])
    again = SearchSpace.from_dict(space.to_dict())
    assert again.to_dict() == space.to_dict()
    for flat in space.defaults():
        config = space.config(flat)
        assert config.family in space.families


def test_bundle_puts_families_under_one_choice() -> None:
    space = SearchSpace.from_files([SPACES / "tabular.yaml"])
    assert space.family_names == [
        "lightgbm",
        "random_forest",
        "extra_trees",
        "hist_gb",
        "catboost",
        "linear",
        "mlp",
        "wide_deep",
    ]
    # The portfolio (scripts/choose_portfolio.py): the defaults cheap first, the MLP's, then
    # six configurations greedy selection chose (wide & deep's default is not among them:
    # `sampled_only`). On data with categorical columns the order is the same.
    families = ["linear", "lightgbm", "hist_gb", "extra_trees", "random_forest", "catboost",
                "mlp", "catboost", "lightgbm", "linear", "linear", "extra_trees",
                "lightgbm"]  # fmt: skip
    assert [f["family"] for f in space.defaults()] == families
    assert space.defaults(networks_last=True) == space.defaults()
    assert space.defaults()[7]["catboost.depth"] == 5


def _bundle(tmp_path: Path, portfolio: str) -> Path:
    for name in ("lightgbm.yaml", "linear.yaml", "mlp.yaml"):
        (tmp_path / name).write_text((SPACES / name).read_text())
    return write_space(
        tmp_path,
        "b.yaml",
        "bundle: b\ninclude: [lightgbm.yaml, mlp.yaml, linear.yaml]\n" + portfolio,
    )


def test_a_portfolio_is_tried_first_then_the_families_defaults(tmp_path: Path) -> None:
    path = _bundle(
        tmp_path,
        "portfolio:\n"
        "  - {family: linear, C: 10.0}\n"
        "  - {family: lightgbm, num_leaves: 64, boosting_type: goss}\n"
        "  - {family: lightgbm}\n"
        "  - {family: random_forest, n_estimators: 100}\n",  # not in this space: dropped
    )
    space = SearchSpace.from_files([path])
    flats = space.defaults()
    assert [(f["family"], f.get("linear.C"), f.get("lightgbm.num_leaves")) for f in flats] == [
        ("linear", 10.0, None),
        ("lightgbm", None, 64),
        ("lightgbm", None, 31),
        ("mlp", None, None),
        ("linear", 1.0, None),  # the family's defaults, not tried yet
    ]
    assert "lightgbm.subsample" not in flats[1]  # inactive under goss
    assert flats[1]["lightgbm.learning_rate"] == 0.05  # unnamed: the default
    # Networks after the rest on data with categorical columns; the order otherwise kept.
    late = space.defaults(networks_last=True)
    assert [f["family"] for f in late] == ["linear", "lightgbm", "lightgbm", "linear", "mlp"]
    # ... after the other families' defaults, not after the portfolio's further entries.
    entries = ["{family: mlp}", "{family: lightgbm}", "{family: linear}",
               "{family: lightgbm, num_leaves: 64}"]  # fmt: skip
    path = _bundle(tmp_path, "portfolio:\n" + "".join(f"  - {e}\n" for e in entries))
    late = SearchSpace.from_files([path]).defaults(networks_last=True)
    assert [(f["family"], f.get("lightgbm.num_leaves")) for f in late] == [
        ("lightgbm", 31), ("linear", None), ("mlp", None), ("lightgbm", 64)
    ]  # fmt: skip
    again = SearchSpace.from_dict(space.to_dict())
    assert again.defaults() == flats  # run.json keeps the portfolio


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{family: linear, alpha: 1}", r"portfolio entry 1: family 'linear' has no parameter "),
        (
            "{family: linear, C: 1000.0}",
            r"portfolio entry 1: 'C' = 1000.0 is not a value of its range \[0.001, ",
        ),
        (
            "{family: lightgbm, boosting_type: dart}",
            r"portfolio entry 1: 'boosting_type' must be one of \[",
        ),
        ("{family: linear, max_iter: 5}", r"portfolio entry 1: 'max_iter' is fixed at 2000"),
    ],
)
def test_a_bad_portfolio_entry_is_named(tmp_path: Path, entry: str, message: str) -> None:
    path = _bundle(tmp_path, f"portfolio:\n  - {entry}\n")
    with pytest.raises(UserInputError, match=r"b\.yaml: " + message):
        SearchSpace.from_files([path])


def test_defaults_follow_conditions() -> None:
    space = SearchSpace.from_files([SPACES / "mlp.yaml"])
    (flat,) = space.defaults()
    assert flat["mlp.optimizer"] == "adam"
    assert "mlp.momentum" not in flat  # active only for sgd
    assert space.config(flat).params["epochs"] == 100  # fixed values are filled in


def test_conditional_parameter_active_only_for_its_parent_value() -> None:
    space = SearchSpace.from_files([SPACES / "lightgbm.yaml"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        flat = space.suggest(trial)
        boosting = flat["lightgbm.boosting_type"]
        seen.add(boosting)
        assert ("lightgbm.subsample" in flat) == (boosting == "gbdt")
        study.tell(trial, 0.0)
    assert seen == {"gbdt", "goss"}


def test_yaml_exponent_without_dot_is_accepted(tmp_path: Path) -> None:
    path = write_space(
        tmp_path,
        "s.yaml",
        "family: linear\nparams:\n  C: {type: float, low: 1e-4, high: 1, log: true}\n",
    )
    param = SearchSpace.from_files([path]).param("linear.C")
    assert param.low == pytest.approx(1e-4)
    assert param.default == pytest.approx(1e-2)  # geometric middle of a log range


BAD_SPACES = [
    ("not: [valid", r"s\.yaml: malformed YAML at line 1, column 12: expected .,. or .\]."),
    ("- a\n- b\n", r"s\.yaml: expected a mapping with 'family' and 'params' .*got list"),
    ("family: nope\nparams: {}\n", r"s\.yaml: unknown family 'nope'; expected one of .*lightgbm"),
    ("family: linear\nparams:\n  C: {type: gaussian}\n", r"parameter 'C': unknown type 'gaussian'"),
    (
        "family: linear\nparams:\n  C: {type: float, low: 5, high: 1}\n",
        r"s\.yaml: parameter 'C': low \(5\) must be <= high \(1\)",
    ),
    (
        "family: linear\nparams:\n  C: {type: float, low: 0, high: 1, log: true}\n",
        r"parameter 'C': log scale needs low > 0; got low=0",
    ),
    (
        "family: linear\nparams:\n  class_weight: {type: categorical, choices: []}\n",
        r"parameter 'class_weight': 'choices' must be a non-empty list",
    ),
    (
        "family: linear\nparams:\n  C: {type: float, low: 1, high: 2, when: {missing: a}}\n",
        r"parameter 'C': condition on unknown parameter 'missing'",
    ),
    (
        "family: linear\nparams:\n  penalty: {type: float, low: 1, high: 2}\n",
        r"family 'linear' has no parameter 'penalty'; known: C, class_weight, max_iter",
    ),
    (
        "family: linear\nparams:\n  C: {type: float, low: one, high: 2}\n",
        r"parameter 'C': low must be a number; got 'one'",
    ),
    (
        "family: linear\nparams:\n  C: {type: float, low: 1, high: 2, default: 3}\n",
        r"parameter 'C': default 3 is outside \[1, 2\]",
    ),
    (
        "family: linear\nparams:\n  C: {type: float, low: 1, high: 2, lo: 3}\n",
        r"parameter 'C': unknown key\(s\) \['lo'\] for type float",
    ),
    (
        "family: linear\nparams:\n  C: {type: float, low: 1, high: 2, log: true, step: 0.5}\n",
        r"parameter 'C': use either log or step, not both",
    ),
    (
        "family: linear\nparams:\n  max_iter: {type: int, low: 1.5, high: 2}\n",
        r"parameter 'max_iter': low must be a whole number for type int; got 1.5",
    ),
    (
        "family: mlp\nparams:\n  optimizer: {type: categorical, choices: [adam, sgd]}\n"
        "  momentum: {type: float, low: 0.1, high: 0.9, when: {optimizer: nadam}}\n",
        r"parameter 'momentum': condition value\(s\) \['nadam'\] are not choices of 'optimizer'",
    ),
    (
        "family: mlp\nparams:\n"
        "  optimizer: {type: categorical, choices: [a, b], when: {activation: relu}}\n"
        "  activation: {type: categorical, choices: [relu, tanh], when: {optimizer: a}}\n",
        r"conditions form a cycle among \['activation', 'optimizer'\]",
    ),
    ("bundle: x\ninclude: []\n", r"s\.yaml: 'include' must be a non-empty list of space files"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SPACES)
def test_bad_space_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = write_space(tmp_path, "s.yaml", text)
    with pytest.raises(UserInputError, match=message):
        SearchSpace.from_files([path])


def test_missing_space_file(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"nope\.yaml: search-space file not found"):
        SearchSpace.from_files([tmp_path / "nope.yaml"])


def test_family_defined_twice() -> None:
    with pytest.raises(UserInputError, match=r"family 'linear' is defined twice"):
        SearchSpace.from_files([SPACES / "linear.yaml", SPACES / "trees.yaml"])


def test_the_tabular_bundle_lets_the_sampler_propose_wide_and_deep() -> None:
    """Wide & deep is searched by default on tabular data; the measured stronger MLP default
    (benchmarks/wide_deep.md) is the network among the first trials."""
    from automl.resources import space_path

    space = SearchSpace.from_files([space_path("tabular")])
    assert "wide_deep" in space.family_names and space.sampled_only == ["wide_deep"]
    assert [f["family"] for f in space.defaults()].count("mlp") == 1
    assert "wide_deep" not in [f["family"] for f in space.defaults()]
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(sampler=sampler)
    proposed = [space.suggest(study.ask()) for _ in range(80)]
    wide = [f for f in proposed if f["family"] == "wide_deep"]
    assert wide and {f["wide_deep.inputs"] for f in wide} == {"one", "groups"}
    again = SearchSpace.from_dict(space.to_dict())  # run.json keeps the choice
    assert again.sampled_only == ["wide_deep"] and again.defaults() == space.defaults()


def test_the_image_bundle_starts_with_every_convolution_block() -> None:
    from automl.resources import space_path

    space = SearchSpace.from_files([space_path("images")])
    first = space.defaults()[:3]
    assert [(f["family"], f["cnn.block"], f["cnn.subsample"]) for f in first] == [
        ("cnn", "residual", 1.0),  # the measured strong default, on every row
        ("cnn", "inception", 0.25),  # short versions that successive halving can promote
        ("cnn", "separable", 0.25),
    ]
    assert [f["cnn.epochs"] for f in first] == [20, 8, 8]


def test_sampled_only_must_name_an_included_family(tmp_path: Path) -> None:
    path = write_space(
        tmp_path, "b.yaml", f"bundle: b\ninclude: [{SPACES / 'linear.yaml'}]\nsampled_only: [mlp]\n"
    )
    with pytest.raises(UserInputError, match=r"'sampled_only' must list families the bundle "):
        SearchSpace.from_files([path])
