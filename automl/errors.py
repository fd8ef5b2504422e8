"""The failure taxonomy the search loop and the CLI act on.

- `UserInputError`: the user's data, files or arguments are wrong. The CLI prints its one-line
  message and exits with code 2, before anything is written.
- `TrialFailed`: one trial could not produce a usable model (exception, NaN, broken
  predictions). The loop records it as failed, with the message, and goes on.
- `TrialPruned`: a pruner judged a trial's per-epoch validation scores hopeless; recorded as
  pruned, not failed.
- `IntegrityError`: an artifact on disk does not match the manifest; nothing is loaded.
"""


class UserInputError(Exception):
    """Bad input from the user: a clear one-line message, exit code 2."""


class TrialFailed(Exception):
    """One trial failed; the search records it and continues."""


class RemoteTrialFailed(TrialFailed):
    """A trial that failed in a worker process; its message is already "Type: message"."""


class TrialPruned(Exception):
    """A pruner stopped a trial after epoch `step`: its validation curve was not promising."""

    def __init__(self, step: int) -> None:
        super().__init__(f"pruned after epoch {step}")
        self.step = step


class IntegrityError(UserInputError):
    """An artifact does not match the sha256 recorded when it was written."""


def one_line(exc: BaseException) -> str:
    """`Type: message` on one line, for a failed trial's record: the message's first non-empty
    line (some, like multiprocessing's bootstrapping RuntimeError, start with a newline)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if isinstance(exc, RemoteTrialFailed) and first:  # already the worker's "Type: message"
        return first[:500]
    return f"{type(exc).__name__}: {first}".strip()[:500]
