"""How a run lays out its work on one machine: worker processes, tasks at once per worker, torch threads per task.

The default is the layout that measured fastest (bench/defaults.py, bench/pipeline.py, docs/performance.md):

- CPU: one worker process per usable core (``os.sched_getaffinity``: what this process may run on, not what the
  machine has), one task at a time, one torch thread. Processes scale better than torch's intra-op threads (2
  workers x 1 thread did 1.1-1.2x what 1 worker x 2 threads did on 2 cores). With fewer shards to do than cores,
  one worker per shard, and the cores shared out as torch threads (1 shard on 2 cores: 1 worker x 2 threads, which
  measured 1.6x one worker x 1 thread); the cores a division leaves over stay idle.
- CUDA: one worker per GPU (``--device cuda``; ``cuda:N`` names one GPU: one worker), each given its own GPU
  (``sodadata.encode.codec.get_encoder``), the CPU cores shared out as torch threads for what runs on the CPU.

What the user sets wins: ``--workers``, ``--threads-per-worker`` and ``--torch-threads`` each replace only their own
default (torch threads then follow the workers: cores / (workers x threads per worker)). A cluster given by
``--scheduler`` keeps its own layout: its workers were started with theirs, and torch threads stay as its workers'
environment sets them (``dask worker --nthreads 1`` sets ``OMP_NUM_THREADS=1``) unless ``--torch-threads``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or ``taskset``'s share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cuda_devices() -> int:
    """GPUs torch sees (0 without CUDA); imports torch, so asked only for ``--device cuda``."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass(frozen=True)
class Layout:
    """What a run uses. ``workers``/``threads_per_worker`` are None for a cluster given by ``--scheduler`` (its own);
    ``torch_threads`` None leaves torch's default (what the worker's environment sets)."""

    workers: int | None
    threads_per_worker: int | None
    torch_threads: int | None
    device: str  # cpu, cuda, cuda:N; "" for a text-only recipe
    cores: int
    serial: bool = False
    external: bool = False  # --scheduler: the cluster's own layout

    def describe(self) -> str:
        """One phrase for the summary line, e.g. ``2 workers x 1 torch thread, cpu`` or ``in this process x 2 ...``."""
        torch = ("" if not self.device else
                 f" x {self.torch_threads} torch thread{'s' if self.torch_threads != 1 else ''}" if self.torch_threads
                 else " x the workers' torch threads")
        if self.serial:
            where = "in this process"
        elif self.external:
            where = "the scheduler's workers"
        else:
            where = f"{self.workers} worker{'s' if self.workers != 1 else ''}"
            if self.threads_per_worker != 1:
                where += f" x {self.threads_per_worker} tasks"
        device = f", {self.device}" if self.device else ""
        return f"{where}{torch}{device}"

    def to_dict(self) -> dict:
        return {"workers": self.workers, "threads_per_worker": self.threads_per_worker,
                "torch_threads": self.torch_threads, "device": self.device or None, "cores": self.cores,
                "serial": self.serial, "external": self.external}


def choose_layout(shards: int, *, device: str = "cpu", cores: int | None = None, gpus: int | None = None,
                  workers: int | None = None, threads_per_worker: int | None = None,
                  torch_threads: int | None = None, serial: bool = False, external: bool = False) -> Layout:
    """The layout for ``shards`` shards to do (see the module docstring); ``workers``, ``threads_per_worker`` and
    ``torch_threads`` are what the user set (None: choose). ``device`` "" for a text-only recipe (no torch).
    ``cores`` and ``gpus`` default to this machine's (:func:`usable_cores`, :func:`cuda_devices`)."""
    cores = cores if cores is not None else usable_cores()
    if external:
        return Layout(None, None, torch_threads, device, cores, external=True)
    if serial:
        return Layout(1, 1, torch_threads or (cores if device else None), device, cores, serial=True)
    tasks_at_once = threads_per_worker or 1
    if workers is None:
        if device.startswith("cuda"):
            per_gpu = 1 if ":" in device else gpus if gpus is not None else cuda_devices()
            workers = max(1, min(per_gpu, shards))
        else:
            workers = max(1, min(cores // tasks_at_once, shards))
    if device and torch_threads is None:
        torch_threads = max(1, cores // (workers * tasks_at_once))
    return Layout(workers, tasks_at_once, torch_threads, device, cores)
