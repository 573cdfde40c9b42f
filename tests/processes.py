"""Stopping the processes a test started (a `dask scheduler`, `dask worker`s): ask, wait, then kill."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable


def stop_processes(procs: Iterable[subprocess.Popen]) -> None:
    """Terminate every process still running (all first, so none waits on another), then reap each; one that does
    not stop within 30 s is killed."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
