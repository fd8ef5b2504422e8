"""Reports rebuilt from a run directory: the leaderboard files and the self-contained HTML page."""

from __future__ import annotations

from typing import TYPE_CHECKING

from automl.report.leaderboard import format_table, leaderboard_rows, write_leaderboard

if TYPE_CHECKING:
    from pathlib import Path

    from automl.run import RunDir


def write_report(run: RunDir, out: Path | None = None) -> str:
    """Write leaderboard.csv/.md and report.html; see `automl.report.page.write_report`.
    The page (and matplotlib) load only when a report is written."""
    from automl.report.page import write_report as _write_report

    return _write_report(run, out)


__all__ = ["format_table", "leaderboard_rows", "write_leaderboard", "write_report"]
