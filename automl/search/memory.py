"""The search's memory limit: what the search process and every process under it hold
together (resident memory), watched while trials run.

Two rules, as a user of a shared machine expects:
- A trial that would pass the limit is not started. Each family's largest rise in memory over
  its trials so far is its estimate; when what is in use now plus that rise passes the limit,
  the trial is recorded as failed with the reason, and after three such failures the family is
  dropped (`driver.DROP_AFTER_FAILURES`), so the search goes on with the families that fit.
- A trial that passes it while running, in a process of its own (the Keras worker, a
  `trial_timeout` child), is stopped: the largest child process is killed, and the trial is
  recorded as failed with the reason. A trial running in the search process itself (trees and
  linear models) cannot be stopped from outside; its rise is measured, so the next one of its
  family is not started if it would pass the limit.

The default limit is `DEFAULT_SHARE` of the machine's memory.
"""

from __future__ import annotations

import os
import threading

import psutil

DEFAULT_SHARE = 0.75
POLL_SECONDS = 0.2
MEMORY_FAILURE = "the memory limit"  # in a trial's error when this module failed it


def machine_mb() -> float:
    return psutil.virtual_memory().total / 2**20


def default_limit_mb() -> float:
    return DEFAULT_SHARE * machine_mb()


def tree_mb(pid: int | None = None) -> float:
    """Resident memory of a process and all its descendants, MB."""
    root = psutil.Process(pid or os.getpid())
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:  # ended meanwhile
            continue
    return total / 2**20


class MemoryGuard:
    """Watches this process tree against `limit_mb` while a trial runs (`watching`)."""

    def __init__(self, limit_mb: float) -> None:
        self.limit_mb = limit_mb
        self.rise: dict[str, float] = {}  # each family's largest rise over a trial, MB
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._base = 0.0
        self._peak = 0.0
        self._active = False
        self._in_child = False
        self.killed = False  # the current trial's process was killed for memory
        self._thread = threading.Thread(target=self._watch, name="memory-guard", daemon=True)
        self._thread.start()

    def refusal(self, family: str) -> str | None:
        """Why a trial of `family` is not started now, or None: it may start."""
        expected = self.rise.get(family)
        if expected is None:
            return None
        in_use = tree_mb()
        if in_use + expected <= self.limit_mb:
            return None
        return (
            f"TrialFailed: not started: a {family} trial took up to {expected:.0f} MB here, and "
            f"with {in_use:.0f} MB in use that passes {MEMORY_FAILURE} of {self.limit_mb:.0f} MB"
        )

    def begin(self, in_child: bool) -> None:
        """A trial starts; `in_child`: in a process of its own, which may be stopped."""
        with self._lock:
            self._base = self._peak = tree_mb()
            self.killed = False
            self._in_child = in_child
            self._active = True

    def end(self, family: str) -> str | None:
        """Record the trial's rise for its family; why it was stopped, if it was."""
        with self._lock:
            self._active = False
            rise = max(0.0, self._peak - self._base)
        if not self.killed:  # a stopped trial's rise is its own configuration's, cut short
            self.rise[family] = max(self.rise.get(family, 0.0), rise)
        if self.killed:
            return (
                f"TrialFailed: stopped: the search and its trial processes passed "
                f"{MEMORY_FAILURE} of {self.limit_mb:.0f} MB ({self._peak:.0f} MB)"
            )
        return None

    def _watch(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            with self._lock:
                if not self._active:
                    continue
                now = tree_mb()
                self._peak = max(self._peak, now)
                if now > self.limit_mb and self._in_child and not self.killed:
                    self.killed = self._kill_largest_child()

    @staticmethod
    def _kill_largest_child() -> bool:
        children = []
        for child in psutil.Process().children(recursive=True):
            try:
                children.append((child.memory_info().rss, child))
            except psutil.Error:
                continue
        if not children:
            return False
        _, largest = max(children, key=lambda pair: pair[0])
        try:
            largest.kill()
        except psutil.Error:
            return False
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
