"""The failure taxonomy the search loop and the CLI act on.

- `UserInputError`: the user's data, files or arguments are wrong. The CLI prints its one-line
  message and exits with code 2, before anything is written.
- `TrialFailed`: one trial could not produce a usable model (exception, NaN, broken
  predictions). The loop records it as failed, with the message, and goes on.
- `TrialPruned`: a pruner judged a trial's per-epoch validation scores hopeless; recorded as
  pruned, not failed.
- `IntegrityError`: an artifact on disk does not match the manifest; nothing is loaded.
- `SearchStopped`: the search cannot go on (its database or disk failed, or too many trials
  failed in a row): spending the budget on more trials would only record more failures. The
  CLI prints the one-line message and exits with code 1; finished trials stay recorded and
  the same command resumes once the cause is fixed.
"""

import errno


class UserInputError(Exception):
    """Bad input from the user: a clear one-line message, exit code 2.

    `settings` names the library's parameters the message speaks of (`SearchConfig` fields,
    as they appear in it), so the CLI can print its flags in their place."""

    def __init__(self, message: str, settings: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.settings = settings


class TrialFailed(Exception):
    """One trial failed; the search records it and continues."""


class TrialPruned(Exception):
    """A pruner stopped a trial after epoch `step` (or, with a `reason`, after a fold): its
    validation curve was not promising. `value` is its score there, if known."""

    def __init__(self, step: int, reason: str = "", value: float | None = None) -> None:
        self.reason = reason or f"after epoch {step}"
        super().__init__(f"pruned {self.reason}")
        self.step = step
        self.value = value


class IntegrityError(UserInputError):
    """An artifact does not match the sha256 recorded when it was written."""


class SearchStopped(Exception):
    """The search stopped early for a cause no further trial can fix."""


def stopped_by(cause: str) -> SearchStopped:
    """The one line a failing disk or database stops the search with, whichever executor."""
    return SearchStopped(
        f"the search stopped: {cause}; finished trials are kept, and running the same "
        "command again resumes once the disk or database is fixed"
    )


# Disk failures a trial cannot fix: no space, a read-only or failing file system, a quota.
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT})


def is_fatal(exc: BaseException) -> bool:
    """A failure of the search's own storage or disk, rather than of one trial's model: the
    study's database (SQLAlchemy's or optuna's storage errors) or a full / read-only disk."""
    for error in (exc, exc.__cause__, exc.__context__):
        if error is None:
            continue
        if isinstance(error, OSError) and error.errno in FATAL_ERRNOS:
            return True
        if type(error).__module__.startswith(("sqlalchemy", "optuna.storages")):
            return True
        if type(error).__name__ == "StorageInternalError":
            return True
    return False


def one_line(exc: BaseException) -> str:
    """`Type: message` on one line, for a failed trial's record: the message's first non-empty
    line (some, like multiprocessing's bootstrapping RuntimeError, start with a newline)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return f"{type(exc).__name__}: {first}".strip()[:500]
