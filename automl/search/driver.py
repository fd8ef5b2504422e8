"""The study side of a search, shared by every executor: ask, record, count, stop.

Executors differ only in where `evaluate` runs (this process, a child process, Ray workers);
what is proposed, how a result, a failure, a pruned or an interrupted trial is written to the
study, the budget and the stopping rule live here, once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from automl.errors import stopped_by
from automl.models import FAMILIES
from automl.run import ENSEMBLE_ALLOWANCE_ATTR, SKIPPED_ATTR, RunDir
from automl.search.attrs import set_user_attrs
from automl.search.budget import (
    MIN_NETWORK_SECONDS,
    TF_IMPORT_SECONDS,
    Measured,
    Reserve,
    Rows,
    after_search,
    trial_seconds,
)
from automl.search.dropping import DROPPED_ATTR, SKIPS_PER_ASK, FamilyDropper, skipped
from automl.search.evaluate import DEADLINE_KEY, TrialContext, TrialResult
from automl.search.fold_halving import FOLD_BAR_KEY, FOLD_SCORES_ATTR, fold_bars
from automl.search.outcome import TrialOutcome
from automl.search.progress import Progress, status_line
from automl.search.promotion import PROMOTED_FROM_ATTR, WARM_START_KEY, next_promotion, rungs
from automl.search.proposers import BACKENDS
from automl.space import EPOCHS_ATTR, EPOCHS_KEY, SearchSpace

SPENT_ATTR = "spent_seconds"


def counts(study: Any) -> tuple[int, int]:
    """Finished trials (complete or failed, interrupted ones excluded) and how many failed."""
    from optuna.trial import TrialState

    finished = failed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if trial.user_attrs.get("interrupted") or skipped(trial):
            continue
        finished += 1
        failed += trial.state == TrialState.FAIL
    return finished, failed


def recover_interrupted(study: Any, say: Callable[[str], None]) -> None:
    """Trials a killed process left RUNNING: mark them interrupted and queue them again."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(trial.params, user_attrs=retry_attrs(trial))
        say(f"trial {trial.number} was interrupted by the last run; it will run again")


def retry_attrs(trial: Any) -> dict[str, Any]:
    """The attributes of an interrupted trial's rerun: what it retries, and the rung it
    continues from, if it was promoted."""
    promoted = trial.user_attrs.get(PROMOTED_FROM_ATTR)
    return {"retry_of": trial.number} | (
        {PROMOTED_FROM_ATTR: promoted} if promoted is not None else {}
    )


@dataclass
class SearchSettings:
    """One search's settings and parts, whichever executor runs its trials."""

    run: RunDir
    space: SearchSpace
    ctx: TrialContext
    study: Any
    sampler: str
    backend: str
    trials: int | None
    time_budget: float | None
    say: Callable[[str], None]
    started: float
    live: Progress | None = None
    pruner: str = "median"
    max_failures_in_a_row: int | None = None  # stop after this many failed trials in a row
    promote: bool = True  # successive halving of networks over rows (`search.promotion`)
    halve_folds: bool = True  # costly cross-fitted trials earn their folds (`fold_halving`)
    later_processes: int = 0  # the job's processes after the search (`budget.after_search`)
    memory_limit_mb: float = 0.0  # the local executor's limit (`search.memory`); 0: none


def is_network(family: str) -> bool:
    """Whether `family` is a registered Keras family (an unknown name is not)."""
    known = FAMILIES.get(family)
    return known is not None and known.uses_keras


class StudyDriver:
    """Proposes configurations and records outcomes in the study; knows when to stop."""

    def __init__(
        self, settings: SearchSettings, executor: str = "local", workers: int | str = 1
    ) -> None:
        import optuna
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        run, space, ctx, study = settings.run, settings.space, settings.ctx, settings.study
        sampler, backend, started = settings.sampler, settings.backend, settings.started
        time_budget, say = settings.time_budget, settings.say
        self.run, self.space, self.ctx, self.study = run, space, ctx, study
        self.trials, self.time_budget, self.say = settings.trials, time_budget, say
        self.live = settings.live
        self.metric = ctx.metric
        if not study.get_trials(deepcopy=False):
            # Networks win on all-numeric tables, rarely where there are categories: there
            # they start after the trees and linear models (see `SearchSpace.defaults`).
            categories = bool(ctx.dataset.schema.categorical)
            for flat in space.defaults(networks_last=categories):
                study.enqueue_trial(flat)
        recover_interrupted(study, say)
        make = BACKENDS[backend].make
        minimize = not ctx.metric.greater_is_better
        self.proposer = make(space, sampler, ctx.seed, minimize, run.path) if make else None
        # Successive halving of networks over rows: optuna's samplers, one holdout split, a
        # space with rungs (no scan of the study per trial otherwise).
        self.promote = (
            self.proposer is None and not ctx.cv and settings.promote and bool(rungs(space))
        )
        self.spent_before = float(study.user_attrs.get(SPENT_ATTR, 0.0))
        self.session_start = started
        if time_budget is not None:
            ctx.deadline = started + time_budget - self.spent_before
        study.set_user_attr("time_budget", time_budget)
        study.set_user_attr("executor", executor)
        study.set_user_attr("workers", workers)
        self.max_failures_in_a_row = settings.max_failures_in_a_row
        self.later_processes = settings.later_processes
        self.networks_possible = any(is_network(name) for name in space.family_names)
        self.families = FamilyDropper(study)  # those that keep failing here are dropped
        self.network_started = False  # a Keras trial of this session imported TensorFlow
        self.failed_in_a_row = 0
        self.last_error = ""
        self.running: dict[int, tuple[str, float]] = {}
        # Wall seconds of each finished trial, earlier runs' included (a resumed search knows
        # what a trial costs before its first trial ends).
        self.durations: list[float] = [
            (t.datetime_complete - t.datetime_start).total_seconds()
            for t in study.get_trials(deepcopy=False)
            if t.state.is_finished() and t.datetime_start and t.datetime_complete
            and not t.user_attrs.get("interrupted")
        ]  # fmt: skip
        # What the rest of the job (ensembles, refit, predicting) is reserved from.
        self.measured: list[Measured] = [
            self._measured(t.value, t.user_attrs, str(t.params.get("family")))
            for t in study.get_trials(deepcopy=False)
            if t.state.name == "COMPLETE" and t.value is not None
        ]
        # Fold halving: the completed trials' fold scores and families (`search.fold_halving`).
        self.halve_folds = bool(ctx.cv) and settings.halve_folds
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        self.fold_scores = [list(t.user_attrs.get(FOLD_SCORES_ATTR) or []) for t in complete]
        self.families_done = {str(t.params.get("family")) for t in complete}
        self.rows = self._rows()
        self.reserve = 0.0
        self.best = "-"
        self.best_value: float | None = None
        self._refresh()
        data = ctx.dataset
        say(
            f"search {run.path}: {data.task}, metric {self.metric.name} "
            f"({self.metric.direction}), {backend}/{sampler}, {executor} executor with "
            f"{workers} worker{'s' if workers != 1 else ''}, families "
            f"{', '.join(space.family_names)}, "
            + (
                f"{len(ctx.y_val)} train rows cross-fitted in {ctx.cv} folds"
                + (f" x {ctx.repeats} repeats" if ctx.repeats > 1 else "")
                + " / "
                if ctx.cv
                else f"{len(data.y_fit)} fit / {len(data.y_val)} val / "
            )
            + f"{len(data.y_test)} test rows"
        )

    @staticmethod
    def _measured(value: float, attrs: dict[str, Any], family: str) -> Measured:
        refit = attrs.get("refit_seconds")
        return Measured(
            float(value),
            float(attrs.get("fit_seconds") or 0.0),
            float(attrs.get("predict_seconds") or 0.0),
            is_network(family),
            float(refit) if refit is not None else None,
        )

    def _rows(self) -> Rows:
        ctx, data = self.ctx, self.ctx.dataset
        train = len(ctx.y_val) if ctx.cv else len(data.y_fit)
        fit = train * (ctx.cv - 1) // ctx.cv if ctx.cv else len(data.y_fit)
        test_from_data = self.run.exists() and self.run.info().get("test_data") is None
        refit = len(data.y_fit) + len(data.y_val) + (len(data.y_test) if test_from_data else 0)
        return Rows(train=train, fit=fit, refit=refit, folds=ctx.n_models)

    def spent(self) -> float:
        return self.spent_before + time.time() - self.session_start

    def _refresh(self) -> None:
        """Counts and best value from the study, once at start (they include earlier runs)."""
        from optuna.trial import TrialState

        self.finished, self.failed = counts(self.study)
        pruned = self.study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        self.pruned = sum(not skipped(t) for t in pruned)
        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if complete:
            best = self.study.best_trial
            self.best_value = best.value
            self.best = f"{best.value:.4f} (#{best.number} {best.params.get('family')})"
        if self.live is not None:
            self.live.status(self._status)

    def _status(self) -> str:
        running = next(iter(self.running.values()), None)
        label = running[0] if running else ""
        label += f" +{len(self.running) - 1}" if len(self.running) > 1 else ""
        return status_line(
            self.finished,
            self.failed,
            self.pruned,
            self.best,
            label if running else None,
            running[1] if running else None,
            self.time_budget - self.spent() if self.time_budget is not None else None,
        )

    def stop_reason(self, in_flight: int = 0) -> str | None:
        """Why no new trial should start (with `in_flight` trials still running), or None.

        Pruned trials count toward `--trials`, as in optuna's `n_trials`. Failed trials in a
        row stop the search: when every configuration fails, the cause is rarely the
        configuration, and more trials would only spend the budget recording it."""
        limit = self.max_failures_in_a_row
        if limit and self.failed_in_a_row >= limit:
            return "failures"
        if not self.families.allowed(self.space.family_names):
            return "dropped"
        if self.trials is not None and self.finished + self.pruned + in_flight >= self.trials:
            return "trials"
        if self.time_budget is not None:
            self.reserve = self._reserve().total
            left = self.time_budget - self.spent() - self.reserve
            if left <= 0 or left < self.expected_seconds():
                return "budget"
            self._stop_networks_out_of_time()
            if not self.families.allowed(self.space.family_names):
                return "budget"
        return None

    def _stop_networks_out_of_time(self) -> None:
        """Start no more networks in this session once a network trial's time would not pay
        for TensorFlow's import in its own process (until a network trial of this session has
        imported it) and `MIN_NETWORK_SECONDS` of training: the time goes to the other
        families. Not saved: a resumed search, with time of its own, may start them again."""
        if not self.measured:
            return
        networks = [name for name in self.families.allowed(self.space.family_names)
                    if is_network(name)]  # fmt: skip
        if not networks:
            return
        seconds = self._trial_seconds(uses_keras=True)
        needed = MIN_NETWORK_SECONDS + (0.0 if self.network_started else TF_IMPORT_SECONDS)
        if seconds >= needed:
            return
        why = (
            f"the time left gives a network trial {seconds:.0f} s, under the {needed:.0f} s "
            "it needs (TensorFlow's import, then training)"
        )
        for name in networks:
            self.families.for_now[name] = why
        self.say(f"no more network trials ({', '.join(networks)}): {why}")

    def _reserve(self) -> Reserve:
        assert self.time_budget is not None
        return after_search(self.measured, self.rows, self.time_budget,
                            self.metric.greater_is_better, self.later_processes,
                            self.networks_possible)  # fmt: skip

    def _trial_deadline(self, family: str) -> float:
        """When the trial about to start must end: before the reserve, less what the trial
        would add to it as a member (`budget.trial_seconds`)."""
        return time.time() + self._trial_seconds(is_network(family))

    def _trial_seconds(self, uses_keras: bool) -> float:
        assert self.time_budget is not None
        reserve = self._reserve()
        left = self.time_budget - self.spent() - reserve.total
        return trial_seconds(left, reserve, self.rows, self.time_budget, uses_keras,
                             bool(self.measured), self.later_processes)  # fmt: skip

    def expected_seconds(self) -> float:
        """What the next trial will likely take: the median of the finished trials (0 before
        any). A trial that would not finish in the time left is not started, so the
        budget holds for trials without a deadline of their own (histogram GB) and nothing is spent
        on a trial cut short by it."""
        if not self.durations:
            return 0.0
        return float(sorted(self.durations)[len(self.durations) // 2])

    def _enqueue_promotion(self) -> bool:
        """Queue the next network promoted to more rows (`search.promotion`), if one is due."""
        chosen = next_promotion(
            self.study.get_trials(deepcopy=False), self.space, not self.metric.greater_is_better
        )
        if chosen is None:
            return False
        flat, attrs = chosen
        self.study.enqueue_trial(flat, user_attrs=attrs)
        self.say(
            f"promoting trial {attrs[PROMOTED_FROM_ATTR]} ({flat['family']}) to the next rung: "
            "more rows, starting from its weights"
        )
        return True

    def ask(self) -> tuple[Any, dict[str, Any]]:
        for _ in range(SKIPS_PER_ASK):
            trial, flat = self._propose()
            if self.families.why(flat["family"]) is None:
                break
            self._skip(trial, flat)
        else:
            raise RuntimeError(f"the sampler proposed only dropped families {SKIPS_PER_ASK} times")
        study = self.study
        if EPOCHS_ATTR in trial.user_attrs:  # a proposer's epoch budget (Hyperband's rungs)
            flat[EPOCHS_KEY] = trial.user_attrs[EPOCHS_ATTR]
        if PROMOTED_FROM_ATTR in trial.user_attrs:  # continues from the lower rung's weights
            flat[WARM_START_KEY] = int(trial.user_attrs[PROMOTED_FROM_ATTR])
        bars = fold_bars(self.fold_scores, flat["family"] in self.families_done)
        if self.halve_folds and bars is not None:
            flat[FOLD_BAR_KEY] = bars
        if self.time_budget is not None:
            flat[DEADLINE_KEY] = self._trial_deadline(flat["family"])
        self.network_started = self.network_started or is_network(flat["family"])
        set_user_attrs(
            study,
            trial._trial_id,
            {"family": flat["family"], "trial_dir": str(self.run.trial_dir(trial.number))},
        )
        self.running[trial.number] = (f"#{trial.number} {flat['family']}", time.time())
        return trial, flat

    def _propose(self) -> tuple[Any, dict[str, Any]]:
        from optuna.trial import TrialState

        study = self.study
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        promoted = not waiting and self.promote and self._enqueue_promotion()
        if not waiting and not promoted and self.proposer is not None:
            self.proposer.enqueue(study)
        trial = study.ask()
        return trial, self.space.suggest(trial)

    def _skip(self, trial: Any, flat: dict[str, Any]) -> None:
        """A proposal of a dropped family: recorded as pruned without a score (`SKIPPED_ATTR`),
        never run; another family, drawn at random, is queued in its place."""
        import random

        from optuna.trial import TrialState

        family = flat["family"]
        set_user_attrs(self.study, trial._trial_id, {SKIPPED_ATTR: self.families.why(family)})
        self.study.tell(trial, state=TrialState.PRUNED)
        self._tell_proposer(trial, None)
        allowed = self.families.allowed(self.space.family_names)
        if allowed:
            pick = random.Random(self.ctx.seed * 100_003 + trial.number).choice(allowed)
            self.study.enqueue_trial({"family": pick})

    @staticmethod
    def label(trial: Any, flat: dict[str, Any]) -> str:
        return f"trial {trial.number:>3} {flat['family']:<13}"

    def _done(self, trial: Any) -> None:
        """After a trial's outcome is recorded: the counts were updated by the caller (reading
        them back from the study cost a scan of every trial, per trial)."""
        started = self.running.pop(trial.number, (None, None))[1]
        if started is not None:
            self.durations.append(time.time() - started)
        self.study.set_user_attr(SPENT_ATTR, self.spent())

    def record(self, trial: Any, flat: dict[str, Any], outcome: TrialOutcome, **attrs: Any) -> None:
        """Write how a trial ended into the study. A `fatal` outcome (the storage or disk
        failed under the trial) stops the search with its one line instead."""
        if outcome.status == "complete":
            assert outcome.result is not None
            self.succeeded(trial, flat, outcome.result, **attrs)
        elif outcome.status == "pruned":
            self.pruned_at(trial, flat, outcome.step, outcome.value, outcome.reason)
        elif outcome.status == "fatal":
            raise stopped_by(outcome.error)
        else:
            self.failed_with(trial, flat, outcome.error, **attrs)

    def succeeded(
        self, trial: Any, flat: dict[str, Any], result: TrialResult, **attrs: Any
    ) -> None:
        recorded: dict[str, Any] = {
            "test_score": result.test_score,
            "fit_seconds": result.fit_seconds,
            "predict_seconds": result.predict_seconds,
            "refit_seconds": result.refit_seconds,
            "extra_scores": result.extra_scores,
            "artifacts": result.files,
        }
        if result.n_params is not None:
            recorded["n_params"] = result.n_params
        if result.fold_scores:
            recorded[FOLD_SCORES_ATTR] = result.fold_scores
        # A run in object storage gets the trial's files before the study calls it complete:
        # a driver killed in between leaves a trial to run again, never one without files.
        self.run.publish(self.run.trial_dir(trial.number))
        set_user_attrs(self.study, trial._trial_id, recorded | attrs)
        self.study.tell(trial, result.val_score)
        self._tell_proposer(trial, result.val_score)
        self.measured.append(self._measured(result.val_score, recorded, flat["family"]))
        self.fold_scores.append(list(result.fold_scores))
        self.families_done.add(flat["family"])
        if self.best_value is None or self.metric.better(result.val_score, self.best_value):
            self.best_value = result.val_score
            self.best = f"{result.val_score:.4f} (#{trial.number} {flat['family']})"
        self.finished += 1
        self.failed_in_a_row = 0
        self.families.count(flat["family"], failed=False)
        self._done(trial)
        self.say(
            f"{self.label(trial, flat)} val {self.metric.name} {result.val_score:.4f} "
            f"({result.fit_seconds:5.1f}s) | best {self.best} | {self._tail()}"
        )

    def failed_with(self, trial: Any, flat: dict[str, Any], message: str, **attrs: Any) -> None:
        from optuna.trial import TrialState

        set_user_attrs(self.study, trial._trial_id, {"error": message} | attrs)
        self.study.tell(trial, state=TrialState.FAIL)
        self._tell_proposer(trial, None)
        self.finished += 1
        self.failed += 1
        self.failed_in_a_row += 1
        self.last_error = message
        self._done(trial)
        self.say(f"{self.label(trial, flat)} FAILED: {message}")
        family = flat["family"]
        if self.families.count(family, failed=True, error=message):
            self.study.set_user_attr(DROPPED_ATTR, self.families.dropped)
            self.say(f"dropping family {family}: {self.families.dropped[family]}; the search "
                     "goes on with the others")  # fmt: skip

    def pruned_at(
        self,
        trial: Any,
        flat: dict[str, Any],
        step: int,
        value: float | None,
        reason: str = "",
    ) -> None:
        from optuna.trial import TrialState

        if value is not None:
            trial.report(value, step)
        self.study.tell(trial, state=TrialState.PRUNED)
        self._tell_proposer(trial, None)
        self.pruned += 1
        self.failed_in_a_row = 0
        self._done(trial)
        self.say(f"{self.label(trial, flat)} pruned {reason or f'after epoch {step}'}")

    def _tell_proposer(self, trial: Any, value: float | None) -> None:
        if self.proposer is not None:
            self.proposer.tell(trial.user_attrs, value)

    def interrupted(self, trial: Any, flat: dict[str, Any]) -> None:
        """The search was stopped during this trial: it will run again on resume."""
        from optuna.trial import TrialState

        trial.set_user_attr("interrupted", True)
        self.study.tell(trial, state=TrialState.FAIL)
        # The driver sets these anew.
        budget_keys = (WARM_START_KEY, EPOCHS_KEY, FOLD_BAR_KEY, DEADLINE_KEY)
        params = {k: v for k, v in flat.items() if k not in budget_keys}
        self.study.enqueue_trial(params, user_attrs=retry_attrs(trial))
        self._done(trial)
        self.say(
            f"{self.label(trial, flat)} interrupted; run the same command again "
            "(or resume it) to continue"
        )

    def _tail(self) -> str:
        done = self.finished + self.pruned
        parts = [f"{done}{'/' + str(self.trials) if self.trials else ''} done"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.pruned:
            parts.append(f"{self.pruned} pruned")
        if self.time_budget is not None:
            parts.append(f"{max(0.0, self.time_budget - self.spent()):.0f}s left")
        else:
            parts.append(f"{self.spent():.0f}s")
        return ", ".join(parts)

    def finish(self, reason: str | None) -> tuple[int, int, Any]:
        from optuna.trial import TrialState

        if reason == "budget":
            self.say(
                f"time budget of {self.time_budget:.0f}s reached: {self.reserve:.0f}s kept for "
                "ensembles, the refit on every row and predicting"
            )
        elif reason == "failures":
            self.say(
                f"stopped: {self.failed_in_a_row} trials failed in a row "
                f"(the last: {self.last_error})"
            )
        elif reason == "dropped":
            self.say("stopped: every family was dropped")
        for family, why in self.families.dropped.items():
            self.say(f"dropped family {family}: {why}")
        self.study.set_user_attr(SPENT_ATTR, self.spent())
        if self.time_budget is not None:  # what `automl ensemble` may take, in its process
            after_ensemble = self._reserve().after_ensemble_step
            allowance = max(0.0, self.time_budget - self.spent() - after_ensemble)
            self.study.set_user_attr(ENSEMBLE_ALLOWANCE_ATTR, allowance)
        finished, failed = counts(self.study)
        completed = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = self.study.best_trial if completed else None
        self.say(
            f"done: {finished} trials ({failed} failed"
            + (f", {self.pruned} pruned" if self.pruned else "")
            + f") in {self.spent():.0f}s of search time"
            + (
                f"; best val {self.metric.name} {best.value:.4f} (trial {best.number})"
                if best
                else ""
            )
        )
        return finished, failed, best
