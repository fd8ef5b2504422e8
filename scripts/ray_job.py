#!/usr/bin/env python
"""Submit `automl search` to a running Ray cluster as a Ray job and stream its progress.

    RAY_AUTH_MODE=token RAY_AUTH_TOKEN=... python scripts/ray_job.py \
        --address http://127.0.0.1:8265 -- \
        --data /shared/data/adult.csv.gz --target class --out /shared/runs/adult \
        --workers 4 --time-budget 600 --storage postgresql://automl:...@db-host/automl

Everything after `--` is `automl search`'s arguments. The job's driver runs on the head node
with this project as its working directory (`working_dir` runtime env) and joins the cluster
(`--executor ray --ray-address auto` are added unless given). Paths that exist here are made
absolute, so they must also exist on the cluster's nodes (a shared filesystem); the study
should live in PostgreSQL when several machines write the run. Exit code: the job's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PATH_FLAGS = {"--data", "--out", "--space", "--test-data"}
AGENT_WAIT_SECONDS = 120
EXCLUDES = [".venv", "runs", "artifacts", ".git", "**/__pycache__", ".ruff_cache"]


def search_arguments(args: list[str]) -> list[str]:
    """`automl search`'s arguments for the job: `--out` and the paths that exist here made
    absolute (the job runs in a folder of its own); anything else (a bundled space's name such
    as `tabular`, `builtin:iris`, a URL) passed as given."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        value = out[i + 1]
        local = "://" not in value and (arg == "--out" or Path(value).exists())
        if arg in PATH_FLAGS and local:
            out[i + 1] = str(Path(value).resolve())
    if "--executor" not in out:
        out += ["--executor", "ray"]
    if "--ray-address" not in out:
        out += ["--ray-address", "auto"]
    return out


def submit(client: Any, **job: Any) -> str:
    """Submit, waiting for a cluster that is still starting: until its head's job agent has
    registered, the job server answers 500 "No available agent to submit job, please try
    again later"."""
    deadline = time.monotonic() + AGENT_WAIT_SECONDS
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as exc:
            if "try again later" not in str(exc) or time.monotonic() > deadline:
                raise
            print("the cluster's job agent is not ready yet; trying again", flush=True)
            time.sleep(2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265"),
        help="the cluster's job server (its dashboard address)",
    )
    parser.add_argument("--no-wait", action="store_true", help="submit and print the job id")
    parser.add_argument(
        "--python",
        default="python",
        help="the cluster's Python with automl installed (default: `python` on the head's PATH)",
    )
    parser.add_argument("search", nargs=argparse.REMAINDER, help="-- automl search arguments")
    args = parser.parse_args()
    search = args.search[1:] if args.search[:1] == ["--"] else args.search
    if not search:
        parser.error("give the search's arguments after --")

    import logging

    from ray.job_submission import JobStatus, JobSubmissionClient

    logging.getLogger("ray").setLevel(logging.WARNING)
    entrypoint = shlex.join([args.python, "-m", "automl", "search", *search_arguments(search)])
    client = JobSubmissionClient(args.address)
    job_id = submit(
        client,
        entrypoint=entrypoint,
        runtime_env={"working_dir": str(ROOT), "excludes": EXCLUDES},
    )
    print(f"submitted {job_id}: {entrypoint}", flush=True)
    if args.no_wait:
        return 0

    async def stream() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(stream())
    while (status := client.get_job_status(job_id)) not in {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    }:
        time.sleep(0.5)
    print(f"job {job_id}: {status.value}", flush=True)
    return 0 if status == JobStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
