"""Search backends: who proposes the next configuration. A registry that is a dict.

optuna's samplers propose define-by-run, inside `study.ask` (no proposer). Every other backend
is a `Proposer`: before a trial is asked for, it puts its next configuration in the study's
queue (`enqueue`), and it hears each trial's outcome (`tell`). The study stays the one record
of every trial whichever backend proposed it, so resume, the leaderboard and the ensembles do
not know backends exist.

A new backend is one module with a `Proposer` and one entry in `BACKENDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from automl.space import SearchSpace


class Proposer(Protocol):
    def enqueue(self, study: Any) -> None:
        """Queue the next configuration (and its trial attributes) in the optuna study."""
        ...

    def tell(self, attrs: dict[str, Any], value: float | None) -> None:
        """A trial ended: its attributes and validation score (None: failed or pruned)."""
        ...


# (space, sampler, seed, minimize, run directory) -> Proposer
MakeProposer = Callable[[SearchSpace, str, int, bool, Path], Proposer]


@dataclass(frozen=True)
class Backend:
    samplers: tuple[str, ...]  # the first is the default: each backend's model-based one
    make: MakeProposer | None = None  # None: optuna's own sampler proposes


def _hyperopt(space: SearchSpace, sampler: str, seed: int, minimize: bool, _: Path) -> Proposer:
    from automl.search.hyperopt_adapter import HyperoptProposer

    return HyperoptProposer(space, sampler, seed, minimize)


def _keras_tuner(
    space: SearchSpace, sampler: str, seed: int, minimize: bool, run_dir: Path
) -> Proposer:
    from automl.search.keras_tuner_adapter import KerasTunerProposer

    return KerasTunerProposer(space, sampler, seed, minimize, run_dir / "keras_tuner")


BACKENDS: dict[str, Backend] = {
    "optuna": Backend(("tpe", "random")),
    "hyperopt": Backend(("tpe", "random"), _hyperopt),
    "keras-tuner": Backend(("bayesian", "random", "hyperband"), _keras_tuner),
}
