"""Run trials in other processes: with `--trial-timeout`, each trial in its own, so a trial
that hangs, runs past the timeout or is killed for memory fails alone; and Keras trials in a
worker process replaced every few trials (`KerasWorker`), so what TensorFlow leaks per model
goes away with it and the search process never imports TensorFlow.

Processes come from a fork server that has imported the package but never TensorFlow, so a
child is cheap to start and safe to fork whatever the parent has imported; a Keras trial pays
for importing TensorFlow in its child.
"""

from __future__ import annotations

import multiprocessing
import signal
from typing import Any

from automl.errors import one_line
from automl.search.evaluate import TrialContext, evaluate
from automl.search.outcome import TrialOutcome, failed, outcome_of

_CONTEXT: Any = None


def _context() -> Any:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        # `trial_process` first: the server's children never import the user's main module,
        # so a script without a main guard works.
        preload = ["automl.search.trial_process", "automl.search.evaluate"]
        _CONTEXT.set_forkserver_preload([*preload, "automl.models.sklearn_models"])
    return _CONTEXT


def _child(number: int, flat: dict[str, Any], ctx: TrialContext, conn: Any) -> None:
    try:
        conn.send(outcome_of(evaluate, number, flat, ctx))
    except BaseException as exc:  # noqa: BLE001 - an interrupt too goes back as an outcome
        conn.send(failed(one_line(exc)))
    finally:
        conn.close()


def evaluate_isolated(
    number: int, flat: dict[str, Any], ctx: TrialContext, timeout: float | None
) -> TrialOutcome:
    """`evaluate` in a child process; a timeout or a dead child is a failed outcome."""
    mp = _context()
    receiver, sender = mp.Pipe(duplex=False)
    process = mp.Process(target=_child, args=(number, flat, ctx, sender), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            process.kill()
            process.join()
            return failed(
                f"TrialFailed: exceeded the trial timeout of {timeout:g}s and was stopped"
            )
        try:
            outcome: TrialOutcome = receiver.recv()
        except EOFError:
            process.join()
            return failed(f"TrialFailed: {_death(process.exitcode)}")
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join()
    return outcome


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (killed: out of memory?)" if name == "SIGKILL" else ""
        return f"trial process died by {name}{hint}"
    return f"trial process died with exit code {exitcode}"


# --------------------------------------------------------------------------------------------
# Keras trials in a recycled worker process

# Each new Keras model leaks ~4 MB inside TensorFlow (traced functions), even after
# `keras.backend.clear_session()`; a worker that is replaced after this many trials bounds it.
KERAS_TRIALS_PER_WORKER = 20

_WORKER_CTX: TrialContext | None = None


def _worker_init(ctx: TrialContext) -> None:
    global _WORKER_CTX
    _WORKER_CTX = ctx


def _worker_trial(
    number: int, flat: dict[str, Any], pruning: dict[str, Any] | None
) -> TrialOutcome:
    """Runs in the worker: evaluate, reporting each epoch to the study's pruner if asked."""
    ctx = _WORKER_CTX
    assert ctx is not None
    ctx.on_epoch = None
    if pruning is None:
        return outcome_of(evaluate, number, flat, ctx)
    import optuna

    from automl.run import close_study
    from automl.search.pruning import make_pruner, pruning_reporter

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=pruning["study"],
        storage=pruning["storage"],
        pruner=make_pruner(pruning["pruner"]),
    )
    try:
        ctx.on_epoch = pruning_reporter(optuna.trial.Trial(study, pruning["trial_id"]), ctx)
        return outcome_of(evaluate, number, flat, ctx)
    finally:
        ctx.on_epoch = None
        close_study(study)  # the worker lives on: one connection per trial would pile up


class KerasWorker:
    """One long-lived process for Keras trials, replaced every `KERAS_TRIALS_PER_WORKER`
    trials: the search process never imports TensorFlow, and memory stays bounded."""

    def __init__(self, ctx: TrialContext, trials_per_worker: int | None = None) -> None:
        self.ctx = ctx
        self.trials_per_worker = trials_per_worker or KERAS_TRIALS_PER_WORKER
        self.pool: Any = None

    def _pool(self) -> Any:
        from concurrent.futures import ProcessPoolExecutor

        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=_context(),
                initializer=_worker_init,
                initargs=(self.ctx,),
                max_tasks_per_child=self.trials_per_worker,
            )
        return self.pool

    def evaluate(
        self, number: int, flat: dict[str, Any], pruning: dict[str, Any] | None
    ) -> TrialOutcome:
        """`evaluate` in the worker; a worker that died is a failed outcome."""
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self._pool().submit(_worker_trial, number, flat, pruning).result()
        except BrokenProcessPool:
            self.close()
            return failed("TrialFailed: the Keras worker process died (killed: out of memory?)")

    def close(self) -> None:
        if self.pool is not None:
            processes = list((getattr(self.pool, "_processes", None) or {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.kill()
            self.pool = None
