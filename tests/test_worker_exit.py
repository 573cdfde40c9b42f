"""Our LocalCluster's workers end without the interpreter's teardown (sodadata.run.worker_exit): cleanly, exit code 0,
nothing a task printed lost. (Only on the cluster the runner starts: tests/test_emilia.py checks that a cluster given
by --scheduler is left without it.)"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import logging, sys
    from distributed import Client
    from sodadata.run.runner import RunnerConfig, start_local_cluster
    from sodadata.run.worker_exit import ExitWithoutTeardown

    def work(_):
        import torch  # what made the teardown slow
        sys.stdout.write("a task's output, unflushed")  # no newline, no flush: lost if the exit skipped the flush
        logging.getLogger("distributed").warning("a worker's log line")
        return torch.__version__

    if __name__ == "__main__":
        cluster = start_local_cluster(RunnerConfig(workers=2, threads_per_worker=1))
        client = Client(cluster)
        if sys.argv[1] == "plugin":
            client.register_plugin(ExitWithoutTeardown(), name=ExitWithoutTeardown.name)
        client.gather(client.map(work, [0, 1], pure=False))
        processes = [nanny.process.process for nanny in cluster.workers.values()]
        client.close()
        cluster.close()
        print("\\nexit codes", [p.exitcode for p in processes])
""")


def _run(mode: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=env, timeout=120)


def test_workers_end_cleanly_and_lose_nothing_without_the_teardown():
    for mode in ("plugin", "without"):
        done = _run(mode)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.count("a task's output, unflushed") == 2, (mode, done.stdout)
        assert done.stderr.count("a worker's log line") == 2, (mode, done.stderr[-2000:])
        assert done.stdout.strip().endswith("exit codes [0, 0]"), (mode, done.stdout)

