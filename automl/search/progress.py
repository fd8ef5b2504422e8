"""What a person watching a search sees.

On a terminal: one line per finished trial, and under them a status line redrawn every second
(trials done / failed / pruned, best score, the trial running and for how long, time left).
Anywhere else (CI, a log file, a pipe): the same per-trial lines, plain, nothing redrawn.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

CLEAR_LINE = "\r\x1b[2K"


class Progress:
    """Prints trial lines; on a TTY also keeps a live status line at the bottom."""

    def __init__(
        self,
        stream: TextIO | None = None,
        live: bool | None = None,
        interval: float = 1.0,
    ) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.interval = interval
        self._lock = threading.Lock()
        self._status: Callable[[], str] | None = None
        self._shown = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def say(self, line: str) -> None:
        """A line for the log: above the status line on a TTY, plainly elsewhere."""
        with self._lock:
            if self._shown:
                self.stream.write(CLEAR_LINE)
            self.stream.write(line + "\n")
            self._draw()
            self.stream.flush()

    def status(self, render: Callable[[], str]) -> None:
        """Set what the live line shows (called again every `interval` while live)."""
        self._status = render
        if self.live and self._thread is None:
            self._thread = threading.Thread(target=self._tick, daemon=True, name="progress")
            self._thread.start()
        with self._lock:
            self._draw()
            self.stream.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            if self._shown:
                self.stream.write(CLEAR_LINE)
                self._shown = False
            self.stream.flush()

    def _draw(self) -> None:
        if not self.live or self._status is None:
            return
        self.stream.write(CLEAR_LINE + self._status())
        self._shown = True

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                self._draw()
                self.stream.flush()


def status_line(
    done: int,
    failed: int,
    pruned: int,
    best: str,
    running: str | None,
    running_since: float | None,
    left: float | None,
) -> str:
    parts = [f"{done} done", f"{failed} failed", f"{pruned} pruned", f"best {best}"]
    if running is not None and running_since is not None:
        parts.append(f"running {running} {time.time() - running_since:.0f}s")
    if left is not None:
        parts.append(f"{max(0.0, left):.0f}s left")
    return "[" + " | ".join(parts) + "]"
