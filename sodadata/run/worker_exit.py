"""How the worker processes of our own LocalCluster end: without the interpreter's teardown.

That teardown (freeing every module, libtorch's static destructors) cost each worker process ~0.7 s after its last
shard, and ``LocalCluster.close`` waits for every worker process to end: ~1 s at the end of every run, 3 % of a
10-minute one (closing 2 workers that had imported torch: 1.04 s, 0.07 s with this plugin; bench/defaults.py).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys

from distributed import WorkerPlugin


def _exit_now() -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a stream already closed has nothing left to lose
            stream.flush()
    os._exit(0)


class ExitWithoutTeardown(WorkerPlugin):
    """Once a worker has closed cleanly (``teardown``), its process ends as soon as the interpreter starts to exit.

    By then everything a shard writes is committed (before its task returned) and the worker's own close has run
    (its directory, its connections); the logs and the standard streams are flushed here. What is skipped: the atexit
    handlers registered before this one (the process started no children of its own) and the freeing of memory the
    process is about to give back. The runner installs it only on the LocalCluster it starts: the workers of a
    cluster given by ``--scheduler`` are not ours to end."""

    name = "sodadata-exit-without-teardown"

    def teardown(self, worker) -> None:
        atexit.register(_exit_now)  # the last registered runs first: after the worker's close, before the teardown
