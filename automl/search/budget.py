"""What the rest of the job will cost after the search: the reserve the search leaves.

`--time-budget` is the whole job's: search, ensembles, the refit of the chosen members on every
row, and predicting. The search cannot know which members will be chosen, so it reserves for
the likely ones, the best `REFIT_MEMBERS` trials: one refit each (measured: a model's fit time
up to the count its early stopping kept, and the time to save it and load it again, scaled to
every row) and their predictions, plus
building the ensembles over the best `POOL`; the refits' part is capped at `REFIT_SHARE` of the
budget. The reserve grows as better and slower trials
finish, and the search stops starting trials once what is left would not cover the next
trial plus the reserve.
"""

from __future__ import annotations

from dataclasses import dataclass

from automl.ensemble.build import STACKING_POOL

POOL = 20  # the ensembles' default pool (`automl ensemble --top-k`)
# Members refit, as reserved for: a weighted ensemble's usual size, and stacking's default pool
# (it refits every member it combines). Should more be chosen, in one process (estimators,
# benchmark) the refit skips the members whose time would pass the budget, and they keep
# their search-time models.
REFIT_MEMBERS = STACKING_POOL
# Measured on this project's 2-core machine: `import tensorflow` (or keras) takes 10.3-10.8 s,
# paid once more by each later process that refits or predicts with a network member.
TF_IMPORT_SECONDS = 11.0
# Building the four recipes on out-of-fold predictions: 5.2 s on 39,073 rows x 6 trials
# (adult, benchmarks/tabular_120s.md); with Nelder-Mead's evaluations of the metric in each of
# the optimized recipe's eight fits, 3.1 s on phoneme's 4,323 rows x 10 trials, most of it
# the same whatever the rows; about 4 s when another process shares the two cores (the test
# suite's second worker), which a reserve must cover.
ENSEMBLE_SECONDS = 4.0
ENSEMBLE_SECONDS_PER_ROW_MEMBER = 2.2e-5
# Starting one more Python process of the job, importing what it needs (pandas, scikit-learn,
# LightGBM, CatBoost, the project) and loading the members' models: on this project's 2-core
# machine the imports take 3.2-3.6 s (`import automl.cli, automl.ensemble.build, automl.refit,
# automl.predict, lightgbm, sklearn.ensemble`) and loading credit_g's four members 1.8 s more
# (`automl predict` took 5.7-7.0 s on its 200 rows; with 3.5 s kept, its 60-s job took 64 s).
PROCESS_START_SECONDS = 4.5
# The search's own end after its last trial (the summary, the leaderboard, closing the study):
# 1.3 s on adult's 39,073 rows.
SEARCH_END_SECONDS = 1.0
PROCESS_SHARE = 0.25  # at most this share of the budget (a 4 s job cannot keep 7 s for them)
# Writing files, loading the chosen models, the unexpected: a share of the budget.
MARGIN_SHARE = 0.02
# The most of the budget kept for refits. Five network refits on every image can cost more
# than the whole budget, which would leave the search no time at all; past this share the
# refit does the most weighted members it can afford and the rest keep their search-time
# models. On the tabular benchmark (120 s) refits took at most 21.5 s, under this cap. A
# member whose one refit passes the cap is not reserved for at all: the 30-min image job's
# first CNN (936 s on 40,000 images, a refit of about 1,170 s on 50,000) kept 720 s for a
# refit that could never run, and the search stopped at 960 s of 1,800.
REFIT_SHARE = 0.4
# Before any trial has finished, the rest of the job has no measured cost: this share of the
# budget stands in for the first member's refit, predictions and ensembles. Without it the
# 5-minute image job's first CNN trained until 2% of the budget was left, its search process
# ended at 306 s, and the job at 347 s.
UNCOSTED_SHARE = 0.1
# The least training time a network trial is started with, beyond TensorFlow's import in its
# own process. With less, its folds train a few epochs each or it runs out of time: on credit_g
# at 60 s an MLP started with about 12 s left spent them importing TensorFlow and failed after
# its first fold.
MIN_NETWORK_SECONDS = 10.0
# What a measured search's next trial keeps for its own refit and predictions, as a share of
# its time: a cross-fitted trial's refit (one model on every row) is about a quarter of its five
# folds; a holdout trial's refit may be skipped, its predictions may not.
OWN_SHARE = 0.25


@dataclass(frozen=True)
class Measured:
    """One completed trial, as the reserve needs it."""

    value: float
    fit_seconds: float  # summed over folds under cross-fitting
    predict_seconds: float
    uses_keras: bool
    # One refit's cost on a model's rows: the fit time up to the counts early stopping kept
    # (None: not measured; the fit time of one model stands in).
    refit_seconds: float | None = None


@dataclass(frozen=True)
class Rows:
    train: int  # rows the trials learn from (all of them under cross-fitting)
    fit: int  # rows one fitted model saw: a fold's training rows, or the fit part
    refit: int  # rows a refit learns from (training and test part)
    folds: int  # 0: one holdout split


def pool(done: list[Measured], greater_is_better: bool, size: int = POOL) -> list[Measured]:
    return sorted(done, key=lambda m: m.value, reverse=greater_is_better)[:size]


@dataclass(frozen=True)
class Reserve:
    """The seconds a search leaves for the rest of the job, part by part."""

    refit: float  # the likely members' refits on every row (capped at `REFIT_SHARE`)
    predict: float  # their predictions
    networks: float  # importing TensorFlow, once per process that needs it
    ensembles: float  # building the recipes
    processes: float  # starting the job's later processes and their imports
    margin: float  # writing files, loading models, the unexpected

    @property
    def total(self) -> float:
        return (
            self.refit + self.predict + self.networks + self.ensembles + self.processes
            + self.margin
        )  # fmt: skip

    @property
    def after_ensemble_step(self) -> float:
        """What comes after the ensemble step (building the recipes, then the refit): what
        predicting, in a process of its own, will need, and the margin. The margin is not the
        ensemble step's: the search's own end comes before that step's process starts, from
        which its allowance counts, and the unexpected is left to the last step. With the
        margin its own, credit_g's 60-s job took 62.2 s (predicting 6.2 s)."""
        return self.predict + self.networks / 2 + self.processes / 2 + self.margin


def margin(budget: float) -> float:
    """Writing files, loading models, the unexpected, and the search's own end."""
    return MARGIN_SHARE * budget + SEARCH_END_SECONDS


def after_search(
    done: list[Measured],
    rows: Rows,
    budget: float,
    greater_is_better: bool,
    later_processes: int = 0,
    networks_possible: bool = False,
) -> Reserve:
    """The reserve for ensembles, the refit of the likely members, and predicting, where the
    job runs `later_processes` more processes after the search (the CLI: `automl ensemble`
    and `automl predict`, each starting Python and importing the libraries again).

    Before any trial has finished (`done` empty), a share of the budget stands in for the
    unmeasured member, and the later processes' starts are kept, TensorFlow's import too where
    the space can run a network (`networks_possible`), together at most `PROCESS_SHARE`."""
    if not done:
        starts = PROCESS_START_SECONDS * later_processes
        if networks_possible:
            starts += TF_IMPORT_SECONDS * max(1, later_processes)
        return Reserve(
            refit=UNCOSTED_SHARE * budget,
            predict=0.0,
            networks=0.0,
            ensembles=0.0,
            processes=min(starts, PROCESS_SHARE * budget),
            margin=margin(budget),
        )
    members = pool(done, greater_is_better)
    likely = members[:REFIT_MEMBERS]
    per_model = max(rows.folds, 1)
    one_fit = [m.fit_seconds / per_model if m.refit_seconds is None else m.refit_seconds
               for m in likely]  # fmt: skip
    cap = REFIT_SHARE * budget
    every_row = [seconds * rows.refit / max(rows.fit, 1) for seconds in one_fit]
    # A member whose refit alone passes the cap is never refit (the ensemble step skips it and
    # it keeps its search-time models): keeping time for it would only shorten the search.
    refit = min(sum(s for s in every_row if s <= cap), cap)
    # Any member of the pool can be chosen (the mean recipe takes them all): predicting with
    # each, and TensorFlow's import where one is a network, are kept for the whole pool. On
    # credit_g a mean of 11 members with two networks outside the best 5 took the job to 142 s.
    predict = sum(m.predict_seconds / per_model for m in members)
    uses_keras = any(m.uses_keras for m in members)
    networks = TF_IMPORT_SECONDS * max(1, later_processes) if uses_keras else 0.0
    # One member needs no weights: its ensembles cost next to nothing, and reserving for them
    # would leave a budget as small as the reserve no room for the first trial.
    ensembles = (
        ENSEMBLE_SECONDS + ENSEMBLE_SECONDS_PER_ROW_MEMBER * rows.train * len(members)
        if len(members) > 1
        else 0.0
    )
    processes = min(PROCESS_START_SECONDS * later_processes, PROCESS_SHARE * budget)
    return Reserve(refit, predict, networks, ensembles, processes, margin(budget))


def trial_seconds(
    left: float,
    reserve: Reserve,
    rows: Rows,
    budget: float,
    uses_keras: bool,
    measured: bool,
    later_processes: int = 0,
) -> float:
    """The seconds a trial starting now may run, `left` being what remains before the reserve.

    Once some trial was measured (`measured`; before that, the reserve stands in for any
    member), a trial keeps room for what it would add to the reserve should it become a member:
    its refit and predictions, at most `OWN_SHARE` of its own time (a forest whose five fold
    models took 18 s on house_16H then took 16 s more to predict and save, and 10 s to
    predict in `automl predict`). A network while no network is in the ensembles' pool
    (`reserve.networks` is 0) also keeps TensorFlow's import in each later process and its
    whole refit, one model trained on every row (the trial's time over its models, scaled by the
    rows; at most `REFIT_SHARE` of the budget): without it, an MLP started after the trees on
    boston_housing trained for 66 s, and the job took 134 s of 120. The imports are kept in
    full, never capped at a share of the budget: a network that joins the ensembles costs every
    later process its import (capped at a quarter of 60 s, credit_g's job took 65 s); where
    that leaves too little, the driver starts no more networks (`MIN_NETWORK_SECONDS`)."""
    if not measured:
        return left
    share = rows.refit / max(rows.fit, 1) / max(rows.folds, 1)
    if uses_keras and reserve.networks == 0:
        left -= TF_IMPORT_SECONDS * max(1, later_processes)
    else:
        share = min(share, OWN_SHARE)
    return max(0.0, left / (1.0 + share), left - REFIT_SHARE * budget)


def after_search_seconds(
    done: list[Measured],
    rows: Rows,
    budget: float,
    greater_is_better: bool,
    later_processes: int = 0,
    networks_possible: bool = False,
) -> float:
    """Seconds to keep for ensembles, the refit of the likely members, and predicting."""
    reserve = after_search(done, rows, budget, greater_is_better, later_processes,
                           networks_possible)  # fmt: skip
    return reserve.total
