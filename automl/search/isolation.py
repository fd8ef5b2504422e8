"""Run one trial in its own process, so a trial that hangs, runs past `--trial-timeout` or is
killed for memory fails alone, and whatever it leaked goes away with its process.

Processes come from a fork server that has imported the package but never TensorFlow, so a
child is cheap to start and safe to fork whatever the parent has imported; a Keras trial pays
for importing TensorFlow in its child.
"""

from __future__ import annotations

import multiprocessing
import signal
from typing import Any

from automl.errors import TrialFailed
from automl.search.evaluate import TrialContext, TrialResult, evaluate

_CONTEXT: Any = None


def _context() -> Any:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["automl.search.evaluate", "automl.models.sklearn_models"])
    return _CONTEXT


def _child(number: int, flat: dict[str, Any], ctx: TrialContext, conn: Any) -> None:
    try:
        conn.send(("ok", evaluate(number, flat, ctx)))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent as text
        message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]
        conn.send(("error", message))
    finally:
        conn.close()


def evaluate_isolated(
    number: int, flat: dict[str, Any], ctx: TrialContext, timeout: float | None
) -> TrialResult:
    """`evaluate` in a child process; a timeout or a dead child raises `TrialFailed`."""
    mp = _context()
    receiver, sender = mp.Pipe(duplex=False)
    process = mp.Process(target=_child, args=(number, flat, ctx, sender), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            process.kill()
            process.join()
            raise TrialFailed(f"exceeded --trial-timeout of {timeout:g}s and was stopped")
        try:
            kind, payload = receiver.recv()
        except EOFError:
            process.join()
            raise TrialFailed(_death(process.exitcode)) from None
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join()
    if kind == "error":
        raise TrialFailed(payload)
    return payload


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (killed: out of memory?)" if name == "SIGKILL" else ""
        return f"trial process died by {name}{hint}"
    return f"trial process died with exit code {exitcode}"
