"""A Ray cluster of one-CPU nodes on 127.0.0.1, for the tests and the executor benchmark.

The head node, then `workers` worker nodes, each started by `ray start` with token auth on (as
Ray 2.60's `ray start` does) and a dashboard agent on a free port of its own (two nodes on one
machine would both take the default 52365, and a head whose agent could not bind answers every
job with "No available agent to submit job"). With `hide`, each worker node runs in a mount
namespace of its own with an empty tmpfs over that folder, as a machine without a shared
filesystem would see it (root only: `unshare --mount`).
"""

from __future__ import annotations

import secrets
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LoopbackCluster:
    env: dict[str, str]  # what a process needs to join: the token and its mode
    address: str  # host:port of the head, for `--ray-address`
    jobs: str  # the head's dashboard URL, for `ray job submit`
    hide: Path | None = None  # the folder each worker node sees as an empty tmpfs
    worker_raylets: list[int] = field(default_factory=list)  # each worker node's raylet pid

    def add_worker(self) -> int:
        """Start one more one-CPU worker node (at any time: a node joining a running search);
        its raylet's pid."""
        ray = str(Path(sys.executable).parent / "ray")
        worker = [ray, "start", f"--address={self.address}", "--num-cpus=1",
                  "--node-ip-address=127.0.0.1", f"--dashboard-agent-listen-port={free_port()}",
                  "--disable-usage-stats"]  # fmt: skip
        if self.hide is not None:  # the node's processes inherit the namespace
            hidden = (
                f"mount -t tmpfs tmpfs {shlex.quote(str(self.hide))} && exec {shlex.join(worker)}"
            )
            worker = ["unshare", "--mount", "--propagation", "private", "sh", "-c", hidden]
        before = _raylets()
        _start(worker, self.env)
        added = _raylets() - before  # the one raylet this node's start added
        if len(added) != 1:
            raise RuntimeError(f"expected one new raylet after a worker's start; got {added}")
        self.worker_raylets.append(added.pop())
        return self.worker_raylets[-1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _raylets() -> set[int]:
    import psutil

    return {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "raylet"}


@contextmanager
def loopback_cluster(
    workers: int = 1, hide: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[LoopbackCluster]:
    """A head and `workers` worker nodes, stopped (every Ray process here) on exit."""
    import os

    if hide is not None and shutil.which("unshare") is None:
        raise RuntimeError("unshare (util-linux) is needed to hide a folder from a Ray node")
    env = dict(env or os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    port, dashboard = free_port(), free_port()
    ray = str(Path(sys.executable).parent / "ray")
    head = [ray, "start", "--head", f"--port={port}", "--num-cpus=1",
            "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats"]  # fmt: skip
    cluster = LoopbackCluster(env, f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}", hide)
    try:
        _start(head, env)
        for _ in range(workers):
            cluster.add_worker()
        yield cluster
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _start(command: list[str], env: dict[str, str]) -> None:
    started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        raise RuntimeError(f"{shlex.join(command[:3])} failed: {started.stderr[-2000:]}")
