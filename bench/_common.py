"""Helpers shared by the encode/pipeline/scaling/resample/codes/gpu benchmarks (issue 8).

Timing on a shared machine: every comparison is run side by side, repetitions interleaved (A B C A B C ...), and
reported as medians; each run records the load average before and after. Two clocks are kept: wall time (what a
user waits for, inflated by other people's jobs) and CPU time of this process and its children (the work done:
much less sensitive to time-slicing, though cache and memory-bandwidth contention still inflate it).
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
if str(TESTS) not in sys.path:  # tests/fixtures.py: speech-like audio and corpora in their real layouts
    sys.path.insert(0, str(TESTS))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SR = 24_000


def load() -> float:
    return os.getloadavg()[0]


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its waited-for children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, cpu_seconds() - c0, out


@dataclass
class Interleaved:
    """Run named variants round-robin ``reps`` times; keep each one's timings and last output."""

    timings: dict[str, Timing] = field(default_factory=dict)
    outputs: dict[str, object] = field(default_factory=dict)
    loads: list[float] = field(default_factory=list)

    def run(self, variants: dict[str, Callable[[], object]], reps: int, warmup: bool = True) -> Interleaved:
        self.loads.append(load())
        if warmup:
            for name, fn in variants.items():
                self.outputs[name] = fn()
        for _ in range(reps):
            for name, fn in variants.items():
                wall, cpu, out = timed(fn)
                t = self.timings.setdefault(name, Timing())
                t.wall.append(wall)
                t.cpu.append(cpu)
                self.outputs[name] = out
        self.loads.append(load())
        return self

    def load_note(self) -> str:
        return f"load average {min(self.loads):.1f}–{max(self.loads):.1f} during the run"


def emilia_like_durations(total_seconds: float, seed: int, lo: float = 3.0, hi: float = 30.0) -> list[float]:
    """Utterance durations as in Emilia (3–30 s, uniform), adding up to about ``total_seconds``."""
    rng = np.random.default_rng(seed)
    out: list[float] = []
    while sum(out) < total_seconds:
        out.append(round(float(rng.uniform(lo, hi)), 3))
    return out


def speech_clips(durations: Sequence[float], seed: int = 0) -> list[np.ndarray]:
    from fixtures import speechlike

    return [speechlike(d, seed * 10_000 + i) for i, d in enumerate(durations)]


class RssSampler:
    """Peak resident set of a set of processes (this one by default), sampled every 10 ms in a thread."""

    def __init__(self, pids: Callable[[], Sequence[int]] | None = None, interval: float = 0.01) -> None:
        import psutil

        self._psutil = psutil
        self._pids = pids or (lambda: [os.getpid()])
        self.interval = interval
        self.peak: dict[int, float] = {}  # pid -> peak RSS in MiB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for pid in self._pids():
            try:
                rss = self._psutil.Process(pid).memory_info().rss / 2**20
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue
            self.peak[pid] = max(self.peak.get(pid, 0.0), rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def fmt_x(x: float) -> str:
    return f"{x:.1f}x"


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"
