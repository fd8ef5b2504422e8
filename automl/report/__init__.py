"""Reports rebuilt from a run directory: the leaderboard files and the self-contained HTML page."""

from automl.report.leaderboard import format_table, leaderboard_rows, write_leaderboard


def write_report(run):  # noqa: ANN001, ANN201
    """Write leaderboard.csv/.md and report.html; see `automl.report.page.write_report`."""
    from automl.report.page import write_report as _write_report

    return _write_report(run)


__all__ = ["format_table", "leaderboard_rows", "write_leaderboard", "write_report"]
