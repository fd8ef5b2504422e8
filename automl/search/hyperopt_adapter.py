"""Drive hyperopt's TPE or random search from our search space, through optuna's storage.

Hyperopt has no ask/tell API, so each proposal rebuilds a `hyperopt.Trials` history from the
finished trials in the optuna study (the one source of truth), asks hyperopt's `suggest` for one
new point and returns it as a flat configuration; the loop enqueues it into the study. Being
stateless this way makes resume and sharing a study free of extra bookkeeping.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np

from automl.space import FAMILY_KEY, Param, SearchSpace


def _expr(param: Param) -> Any:
    from hyperopt import hp

    label = param.label
    if param.type == "categorical":
        return hp.choice(label, list(param.choices))
    low, high = param.bounds
    if param.step:
        return hp.quniform(label, low, high, param.step)
    if param.type == "int":
        if param.log:
            return hp.qloguniform(label, math.log(low), math.log(high), 1)
        return hp.uniformint(label, low, high)
    if param.log:
        return hp.loguniform(label, math.log(low), math.log(high))
    return hp.uniform(label, low, high)


def _family_expr(space: SearchSpace, family: str) -> dict[str, Any]:
    """Nested hyperopt choices: a categorical parent with children becomes a choice of dicts."""
    from hyperopt import hp

    params = space.families[family].params
    children = {p.name: [c for c in params if p.name in c.when] for p in params}

    def node(param: Param) -> dict[str, Any]:
        if param.type == "fixed":
            return {}
        kids = children[param.name]
        if param.type == "categorical" and kids:
            options = []
            for value in param.choices:
                option: dict[str, Any] = {param.label: value}
                for kid in kids:
                    if value in kid.when[param.name]:
                        option[f"{kid.label}#"] = node(kid)
                options.append(option)
            return {f"{param.label}#": hp.choice(param.label, options)}
        return {param.label: _expr(param)}

    expr: dict[str, Any] = {FAMILY_KEY: family}
    for param in params:
        if not param.when:
            expr.update(node(param))
    return expr


def to_hyperopt(space: SearchSpace) -> Any:
    from hyperopt import hp

    return hp.choice(FAMILY_KEY, [_family_expr(space, f) for f in space.family_names])


def _flatten(value: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    for key, item in value.items():
        if key.endswith("#"):
            _flatten(item, out)
        else:
            out[key] = item
    return out


def hyperopt_vals(space: SearchSpace, flat: dict[str, Any]) -> dict[str, list[Any]]:
    """The `misc.vals` hyperopt would have recorded for a flat configuration."""
    vals: dict[str, list[Any]] = {FAMILY_KEY: [space.family_names.index(flat[FAMILY_KEY])]}
    for family in space.families.values():
        for param in family.params:
            if param.type == "fixed":
                continue
            if param.label not in flat:
                vals[param.label] = []
            elif param.type == "categorical":
                vals[param.label] = [param.choices.index(flat[param.label])]
            else:
                vals[param.label] = [flat[param.label]]
    return vals


class HyperoptProposer:
    """Proposes the next configuration with hyperopt's TPE (`tpe`) or random search (`random`)."""

    def __init__(self, space: SearchSpace, algorithm: str, seed: int, minimize: bool) -> None:
        from hyperopt import Domain, rand, tpe

        self.space = space
        self.minimize = minimize
        self.seed = seed
        self.algo = partial(tpe.suggest, n_startup_jobs=10) if algorithm == "tpe" else rand.suggest
        self.domain = Domain(lambda config: 0.0, to_hyperopt(space))

    def enqueue(self, study: Any) -> None:
        enqueue_proposal(study, self)

    def tell(self, attrs: dict[str, Any], value: float | None) -> None:
        """Nothing to do: each proposal reads the whole history from the study."""

    def propose(
        self,
        finished: list[tuple[dict[str, Any], float | None]],
        running: list[dict[str, Any]] | None = None,
        stream: int | None = None,
    ) -> dict[str, Any]:
        """Next flat configuration given (flat params, value or None if failed) of past trials.

        `running` trials (proposed, not finished) join the history with a constant lie, the
        worst value seen so far, as optuna's TPE does with `constant_liar`: two workers are not
        handed the same region twice. `stream` keys the random stream: the number of trials
        the study has asked for, so a trial that adds nothing to `finished` (pruned, running)
        still moves it on, and the next proposal differs."""
        from hyperopt import JOB_STATE_DONE, STATUS_FAIL, STATUS_OK, Trials, space_eval

        values = [v for _, v in finished if v is not None and math.isfinite(v)]
        lie = (max(values) if self.minimize else min(values)) if values else None
        history_points = list(finished) + [(flat, lie) for flat in running or []]
        history = Trials()
        for tid, (flat, value) in enumerate(history_points):
            vals = hyperopt_vals(self.space, flat)
            misc = {
                "tid": tid,
                "cmd": ("domain_attachment", "FMinIter_Domain"),
                "workdir": None,
                "idxs": {k: ([tid] if v else []) for k, v in vals.items()},
                "vals": vals,
            }
            if value is None or not math.isfinite(value):
                result = {"status": STATUS_FAIL}
            else:
                result = {"status": STATUS_OK, "loss": value if self.minimize else -value}
            (doc,) = history.new_trial_docs([tid], [None], [result], [misc])
            doc["state"] = JOB_STATE_DONE
            history.insert_trial_docs([doc])
        history.refresh()
        new_id = history.new_trial_ids(1)
        position = len(history_points) if stream is None else stream
        rng = np.random.default_rng([self.seed, position])  # distinct streams per seed
        (doc,) = self.algo(new_id, self.domain, history, int(rng.integers(2**31 - 1)))
        point = {k: v[0] for k, v in doc["misc"]["vals"].items() if v}
        sampled = space_eval(self.domain.expr, point)
        flat = _flatten(sampled, {})
        return {
            k: (v if k == FAMILY_KEY else self.space.param(k).snap(v))
            for k, v in flat.items()
            if k == FAMILY_KEY or self.space.param(k).type != "fixed"
        }


def _value_for_proposer(trial: Any) -> float | None:
    """A finished trial's value for hyperopt: the objective, a pruned trial's last reported
    score (as optuna's TPE reads it), None for a failure."""
    from optuna.trial import TrialState

    if trial.state == TrialState.COMPLETE:
        return float(trial.value)
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        return float(trial.intermediate_values[max(trial.intermediate_values)])
    return None


def enqueue_proposal(study: Any, proposer: HyperoptProposer) -> None:
    """Ask hyperopt for the next configuration given everything in the study (finished,
    pruned and, with a constant lie, running trials) and queue it as the next trial."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    history = [
        (t.params, _value_for_proposer(t))
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
        and not t.user_attrs.get("interrupted")
    ]
    running = [t.params for t in trials if t.state == TrialState.RUNNING and FAMILY_KEY in t.params]
    study.enqueue_trial(proposer.propose(history, running, stream=len(trials)))
