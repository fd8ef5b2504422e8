"""Imported by the fork server that starts trial processes (`isolation`): its children never
import the user's main module.

A child started by `multiprocessing` (spawn or forkserver) first imports the parent's
`__main__` again, as `__mp_main__`, so that functions defined there can be unpickled. That is
why `multiprocessing` asks for an `if __name__ == "__main__":` guard: a plain five-line script
that fits an estimator would fit it again in every child, and the child's own start fails
(`BrokenPipeError` in the parent). Trial processes run package code only (their target, the
trial context and the outcome are all `automl`'s), so the fork server, and every child it
forks, skips that step: a script without the guard works, as it does with AutoGluon and
FLAML. Only this module's fork server is changed; the user's own processes are not.
"""

from __future__ import annotations

import multiprocessing.spawn


def _keep_main(_: str) -> None:
    """Leave the child's `__main__` as it is: a trial needs nothing from the user's script."""


multiprocessing.spawn._fixup_main_from_path = _keep_main  # type: ignore[attr-defined]
multiprocessing.spawn._fixup_main_from_name = _keep_main  # type: ignore[attr-defined]
