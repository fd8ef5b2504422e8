"""How a trial ended: the one record every executor hands the driver (`StudyDriver.record`).

The local loop, the Keras worker process, a `--trial-timeout` child and Ray's workers all run
`evaluate` through `outcome_of`, so a failure is classified where its exception is still at
hand: a trial's own failure (`failed`: recorded, the search goes on), or its storage or disk
failing under it (`fatal`: the search stops with one line).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from automl.errors import TrialPruned, is_fatal, one_line
from automl.search.evaluate import TrialResult

Status = Literal["complete", "failed", "fatal", "pruned"]


@dataclass
class TrialOutcome:
    status: Status
    result: TrialResult | None = None  # complete
    error: str = ""  # failed, fatal: "Type: message" on one line
    step: int = 0  # pruned: the epoch (or fold) it was stopped after
    value: float | None = None  # pruned: its last reported score, if any
    reason: str = ""  # pruned: when and why, for the log ("after epoch 3" when empty)


def outcome_of(run: Callable[..., TrialResult], *args: Any) -> TrialOutcome:
    """`run(*args)` (`evaluate`); whatever it raises (but an interrupt) becomes its outcome."""
    try:
        return TrialOutcome("complete", result=run(*args))
    except TrialPruned as exc:
        return TrialOutcome("pruned", step=exc.step, value=exc.value, reason=exc.reason)
    except Exception as exc:  # noqa: BLE001 - a trial's failure is that trial's outcome
        return TrialOutcome("fatal" if is_fatal(exc) else "failed", error=one_line(exc))


def failed(message: str) -> TrialOutcome:
    return TrialOutcome("failed", error=message)
