"""Successive halving for networks: many configurations tried on part of the rows, the best
promoted to more rows, continuing from the weights they trained.

A network family whose `subsample` is a categorical parameter (`cnn.yaml`: 0.25, 0.5, 1.0)
has rungs: its shares of the fit rows, smallest first. Asynchronous successive halving (ASHA,
Li et al., 2020; what Ray Tune's ASHA scheduler and optuna's SuccessiveHalvingPruner do with
epochs) promotes a completed trial as soon as it ranks in the top 1/`REDUCTION` of the trials
completed at its rung: the same configuration runs again on the next share of the rows, its
network starting from the lower rung's trained weights (`WARM_START_KEY`) instead of from
scratch. Those weights were learned on a subset of the very rows the next rung trains on, with
the same architecture, so continuing is sound, and the promoted trial needs fewer epochs to
get further than a fresh start would. A trial is promoted at most once; the promoted trial is
an ordinary trial of the study (TPE learns from it, the ensembles may choose it), recorded
with the trial it came from (`PROMOTED_FROM_ATTR`).

The rule runs in the driver, before the sampler proposes, so every executor promotes the
same way. It needs one holdout split (`cv` 0): cross-fitted trials have no single network to
continue from.
"""

from __future__ import annotations

from typing import Any

from automl.models import FAMILIES
from automl.space import FAMILY_KEY, SearchSpace

PROMOTED_FROM_ATTR = "promoted_from"
WARM_START_KEY = "budget.warm_start"  # the trial whose weights a network starts from
REDUCTION = 3  # the top third of a rung is promoted (ASHA's eta)
RUNG_PARAM = "subsample"


def rungs(space: SearchSpace) -> dict[str, list[float]]:
    """Each network family's rungs (its `subsample` choices, ascending) that has more than one."""
    out: dict[str, list[float]] = {}
    for name, family in space.families.items():
        if not FAMILIES[name].uses_keras:
            continue
        for param in family.params:
            if param.name == RUNG_PARAM and param.type == "categorical":
                shares = sorted(float(c) for c in param.choices or [])
                if len(shares) > 1:
                    out[name] = shares
    return out


def next_promotion(
    trials: list[Any], space: SearchSpace, minimize: bool
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The next promotion among the study's `trials`, as (flat configuration, trial
    attributes), or None. Higher rungs are looked at first, so a configuration climbs as far
    as it earns before new ones are promoted below it."""
    from optuna.trial import TrialState

    ladders = rungs(space)
    if not ladders:
        return None
    taken = {t.user_attrs.get(PROMOTED_FROM_ATTR) for t in trials} - {None}
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    for family, shares in ladders.items():
        label = f"{family}.{RUNG_PARAM}"
        for level in reversed(range(len(shares) - 1)):
            at_rung = [
                t
                for t in complete
                if t.params.get(FAMILY_KEY) == family
                and float(t.params.get(label, -1)) == shares[level]
            ]
            ranked = sorted(at_rung, key=lambda t: t.value if minimize else -t.value)
            for trial in ranked[: len(ranked) // REDUCTION]:
                if trial.number in taken:
                    continue
                flat = dict(trial.params) | {label: shares[level + 1]}
                return flat, {PROMOTED_FROM_ATTR: trial.number}
    return None
