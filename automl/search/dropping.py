"""Families that keep failing on this data are dropped, and the search goes on with the rest.

A family whose last `DROP_AFTER_FAILURES` trials failed is dropped, as AutoGluon drops a model
type that fails on a dataset. The sampler may still propose it; such a proposal is recorded
as pruned without a score (`run.SKIPPED_ATTR`: TPE counts a pruned trial without a score
among its worst, so it learns to stop proposing it), never run, and another family is drawn
in its place. Trials cut short by the time budget are not the family's fault. The dropped
families and why live in the study (`DROPPED_ATTR`), so a resumed search keeps them.
"""

from __future__ import annotations

from typing import Any

from automl.run import SKIPPED_ATTR

DROP_AFTER_FAILURES = 3
DROPPED_ATTR = "dropped_families"  # study attribute: family -> why it was dropped
BUDGET_FAILURE = "the time budget ran out"
SKIPS_PER_ASK = 100  # proposals of dropped families in a row before the driver gives up


def skipped(trial: Any) -> bool:
    """A proposal of a dropped family that never ran."""
    return bool(trial.user_attrs.get(SKIPPED_ATTR))


class FamilyDropper:
    """Counts each family's failures in a row; knows which families are dropped and why."""

    def __init__(self, study: Any) -> None:
        from optuna.trial import TrialState

        self.dropped: dict[str, str] = dict(study.user_attrs.get(DROPPED_ATTR) or {})
        # Families this session no longer starts, and why (the time left no longer pays for
        # them). Never saved: a resumed search, with time of its own, may start them again.
        self.for_now: dict[str, str] = {}
        self.failures: dict[str, int] = {}
        states = (TrialState.COMPLETE, TrialState.FAIL)
        for trial in study.get_trials(deepcopy=False, states=states):
            if not (trial.user_attrs.get("interrupted") or skipped(trial)):
                self.count(
                    str(trial.params.get("family")),
                    trial.state == TrialState.FAIL,
                    str(trial.user_attrs.get("error", "")),
                )

    def count(self, family: str, failed: bool, error: str = "") -> bool:
        """Count a finished trial of `family`; True when this failure drops the family."""
        if not failed:
            self.failures[family] = 0
            return False
        if BUDGET_FAILURE in error:
            return False
        self.failures[family] = self.failures.get(family, 0) + 1
        if self.failures[family] < DROP_AFTER_FAILURES or family in self.dropped:
            return False
        self.dropped[family] = f"its last {DROP_AFTER_FAILURES} trials failed (the last: {error})"
        return True

    def why(self, family: str) -> str | None:
        """Why `family` is not started, or None where it may be."""
        return self.dropped.get(family) or self.for_now.get(family)

    def allowed(self, families: list[str]) -> list[str]:
        return [f for f in families if self.why(f) is None]
