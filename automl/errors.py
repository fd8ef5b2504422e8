"""The failure taxonomy the search loop and the CLI act on.

- `UserInputError`: the user's data, files or arguments are wrong. The CLI prints its one-line
  message and exits with code 2, before anything is written.
- `TrialFailed`: one trial could not produce a usable model (exception, NaN, broken
  predictions). The loop records it as failed, with the message, and goes on.
- `IntegrityError`: an artifact on disk does not match the manifest; nothing is loaded.
"""


class UserInputError(Exception):
    """Bad input from the user: a clear one-line message, exit code 2."""


class TrialFailed(Exception):
    """One trial failed; the search records it and continues."""


class IntegrityError(UserInputError):
    """An artifact does not match the sha256 recorded when it was written."""
