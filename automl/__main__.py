"""`python -m automl` is the `automl` command."""

from automl.cli import entry_point

entry_point()
