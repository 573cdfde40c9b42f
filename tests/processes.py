"""Stopping the processes a test started (a `dask scheduler`, `dask worker`s): ask, wait, then kill."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable


def stop_processes(procs: Iterable[subprocess.Popen]) -> None:
    """Terminate each process still running, in the order given, and reap it before the next; one that does not
    stop within 30 s is killed. List the workers before their scheduler: a worker told to stop closes through its
    scheduler, and with the scheduler already gone it waits out Dask's 30 s connect timeout instead."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
