"""Drive keras-tuner's oracles (RandomSearch, BayesianOptimization, Hyperband) from our spaces.

The oracle proposes; the study records. Our YAML space becomes keras-tuner `HyperParameters`
(the family a `Choice`, each family's parameters in its conditional scope, `when` conditions
as nested scopes); each proposal is enqueued into the optuna study, so its trial lands in the
same leaderboard, report and ensemble as any other, and its result is handed back to the
oracle. Hyperband's epoch budget for a trial (`tuner/epochs`) becomes the network's `epochs`
(each rung trains from scratch: no checkpoint hand-over between rungs).

The oracle keeps its own state in `RUN_DIR/keras_tuner/`, reloaded on resume.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from automl.space import EPOCHS_ATTR, FAMILY_KEY, Param, SearchSpace

KT_TRIAL_ATTR = "keras_tuner_trial"
ALGORITHMS = ("random", "bayesian", "hyperband")
OBJECTIVE = "score"


def _encode(value: Any) -> str:
    """keras-tuner's Choice takes values of one type: every choice becomes its JSON text."""
    return json.dumps(value)


def _define(hp: Any, param: Param) -> None:
    if param.type == "categorical":
        hp.Choice(
            param.label,
            [_encode(c) for c in param.choices],
            default=_encode(param.default if param.default is not None else param.choices[0]),
        )
    elif param.type == "int":
        kwargs: dict[str, Any] = {"sampling": "log" if param.log else "linear"}
        if param.step:
            kwargs["step"] = int(param.step)
        low, high = param.bounds
        hp.Int(param.label, int(low), int(high), default=param.default, **kwargs)
    else:
        low, high = param.bounds
        hp.Float(
            param.label,
            float(low),
            float(high),
            step=param.step,
            sampling="log" if param.log else "linear",
            default=param.default,
        )


def to_hyperparameters(space: SearchSpace) -> Any:
    """Our space as keras-tuner HyperParameters with conditional scopes."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    hp.Choice(FAMILY_KEY, space.family_names, default=space.family_names[0])
    for family in space.families.values():
        with hp.conditional_scope(FAMILY_KEY, [family.name]):
            for param in family.params:
                if param.type == "fixed":
                    continue
                scopes = [
                    hp.conditional_scope(f"{family.name}.{parent}", [_encode(v) for v in values])
                    for parent, values in param.when.items()
                ]
                for scope in scopes:
                    scope.__enter__()
                try:
                    _define(hp, param)
                finally:
                    for scope in reversed(scopes):
                        scope.__exit__(None, None, None)
    return hp


def max_epochs(space: SearchSpace) -> int:
    """The largest epoch count any network family may train for: Hyperband's top rung."""
    top = 0
    for family in space.families.values():
        for param in family.params:
            if param.name == "epochs":
                top = max(top, int(param.value if param.type == "fixed" else param.bounds[1]))
    return top or 30


class KerasTunerProposer:
    """Proposes configurations with a keras-tuner oracle and tells it each trial's outcome."""

    def __init__(
        self, space: SearchSpace, algorithm: str, seed: int, minimize: bool, directory: Path
    ) -> None:
        from automl.models.keras_base import import_keras

        import_keras(1)  # keras-tuner imports TensorFlow: quietly, and with our thread settings
        import keras_tuner as kt

        self.space = space
        objective = kt.Objective(OBJECTIVE, direction="min" if minimize else "max")
        common = {
            "objective": objective,
            "hyperparameters": to_hyperparameters(space),
            "seed": seed,
            "max_consecutive_failed_trials": 10**9,  # a failing trial is ours to record
        }
        if algorithm == "random":
            self.oracle = kt.oracles.RandomSearchOracle(max_trials=10**6, **common)
        elif algorithm == "bayesian":
            self.oracle = kt.oracles.BayesianOptimizationOracle(max_trials=10**6, **common)
        else:
            self.oracle = kt.oracles.HyperbandOracle(
                max_epochs=max_epochs(space), factor=3, **common
            )
        self.oracle._display.verbose = 0  # our progress lines say what happened
        directory.mkdir(parents=True, exist_ok=True)
        self.oracle._set_project_dir(str(directory), "oracle")
        if (directory / "oracle" / "oracle.json").exists():
            self.oracle.reload()
            # A trial that was running when the search stopped is the study's to retry.
            self.oracle.ongoing_trials.clear()
        self.hyperband = algorithm == "hyperband"

    def enqueue(self, study: Any) -> None:
        proposal, attrs = self.propose()
        study.enqueue_trial(proposal, user_attrs=attrs)

    def propose(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The next flat configuration, and the trial attributes that tie it to the oracle."""
        trial = self.oracle.create_trial("automl")
        values = trial.hyperparameters.values
        flat: dict[str, Any] = {FAMILY_KEY: values[FAMILY_KEY]}
        for label, value in values.items():
            if label == FAMILY_KEY or label.startswith("tuner/"):
                continue
            param = self.space.param(label)
            if not trial.hyperparameters.is_active(label):
                continue
            flat[label] = json.loads(value) if param.type == "categorical" else param.snap(value)
        attrs: dict[str, Any] = {KT_TRIAL_ATTR: trial.trial_id}
        if self.hyperband and "tuner/epochs" in values:
            attrs[EPOCHS_ATTR] = int(values["tuner/epochs"])
        return flat, attrs

    def tell(self, attrs: dict[str, Any], value: float | None) -> None:
        """Hand a trial's validation score (None when it failed or was pruned) to the oracle."""
        from keras_tuner.engine import trial as trial_module

        trial_id = attrs.get(KT_TRIAL_ATTR)
        if trial_id is None or trial_id not in self.oracle.trials:
            return  # a default configuration, or a retry the oracle never proposed
        trial = self.oracle.trials[trial_id]
        if value is not None and math.isfinite(value):
            self.oracle.update_trial(trial_id, {OBJECTIVE: value})
            trial.status = trial_module.TrialStatus.COMPLETED
        else:
            trial.status = trial_module.TrialStatus.FAILED
        self.oracle.end_trial(trial)
        self.oracle.save()  # end_trial saves before it lets go of the trial: save what's true
