"""Process scaling (issue 8, point 2), measured longer and more often than bench/pipeline.py can afford.

The Emilia recipe on speech-like MP3 tars in the real layout, full-size Mimi with random weights, on warm
LocalClusters with the runner's settings, one cluster at a time, interleaved in each repetition:

1. 1 worker x 1 torch thread;
2. 2 workers x 1 torch thread;
3. 2 workers x 1 torch thread with Dask's statistical worker profiler on (Dask's default; the runner turns it off).

Every repetition gives its own ratio (2 workers / 1 worker, runs minutes apart), so the spread shows how much of
a ratio is this shared machine's noise. bench/pipeline.py holds the rest of the end-to-end story.

    python bench/scaling.py                 # writes the "scaling" section of BENCHMARKS.md
    python bench/scaling.py --reps 1 --tars-per-subset 1 --quick
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench._common import fmt_x, load
from bench.pipeline import _run_dask, build_source, warm_cluster

LAYOUTS = {  # name: (workers, Dask's worker profiler on)
    "1 worker": (1, False),
    "2 workers": (2, False),
    "2 workers, profiler on": (2, True),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tars-per-subset", type=int, default=6, help="12 tasks: 6 a worker with 2 workers")
    parser.add_argument("--quick", action="store_true", help="print only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    for name in ("distributed", "sodadata", "bench"):
        logging.getLogger(name).setLevel(logging.ERROR)

    from bench.report import publish, table

    started, loads = time.strftime("%Y-%m-%d %H:%M"), [load()]
    work = Path(tempfile.mkdtemp(prefix="sodadata-bench-scaling-"))
    rates: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    cpu: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    try:
        root = work / "src"
        build_source(root, args.tars_per_subset, docs=3, utts=4, seed=8)
        n_tars = len(list(root.rglob("*.tar")))
        audio = 0.0
        for rep in range(args.reps):
            for name, (n, profiled) in LAYOUTS.items():
                cluster = warm_cluster(n, 1, profiled)
                try:
                    got = _run_dask(root, work, cluster.scheduler_address, 1)
                finally:
                    cluster.close()
                audio = got["audio"]
                rates[name].append(audio / got["elapsed"])
                cpu[name].append(audio / got["cpu"])
                loads.append(load())
                print(rep, name, f"{rates[name][-1]:.1f}x wall, {cpu[name][-1]:.1f}x per CPU-second", loads[-1],
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    ratios, ratios_prof = [], []
    for rep in range(args.reps):
        r1, r2, r2p = (rates[name][rep] for name in LAYOUTS)
        ratios.append(r2 / r1)
        ratios_prof.append(r2p / r1)
        rows.append([str(rep + 1), fmt_x(r1), fmt_x(r2), f"{r2 / r1:.2f}x", fmt_x(r2p), f"{r2p / r1:.2f}x"])
    med = {name: statistics.median(v) for name, v in rates.items()}
    rows.append(["median", fmt_x(med["1 worker"]), fmt_x(med["2 workers"]),
                 f"**{statistics.median(ratios):.2f}x**", fmt_x(med["2 workers, profiler on"]),
                 f"{statistics.median(ratios_prof):.2f}x"])
    cpu_med = {name: statistics.median(v) for name, v in cpu.items()}
    body = f"""
Started {started} UTC; load average {min(loads):.1f}–{max(loads):.1f} around the runs (2 cores; other jobs, if any,
show there). Source: {n_tars} Emilia tars in the real layout ({n_tars} tasks), {audio / 60:.1f} min of speech-like
MP3 utterances of 3–30 s; codec `full-random` (the real architecture, 1 torch thread a worker). Warm LocalClusters
with the runner's settings (worker saturation 1.0, largest shard first, no worker profiler), one at a time,
interleaved in each repetition; `run_recipe` elapsed time, x real time:

{table(["repetition", "1 worker", "2 workers", "2 workers / 1 worker (target >= 1.8x)",
        "2 workers, Dask's profiler on", "ratio with the profiler on"], rows)}

By the workers' CPU time (audio seconds per CPU-second, medians): 1 worker {cpu_med['1 worker']:.1f}x, 2 workers
{cpu_med['2 workers']:.1f}x each, with the profiler on {cpu_med['2 workers, profiler on']:.1f}x each. A 2-worker run
has no idle core: the scheduler, the nannies, the workers' event loops and the MP3 decode threads take their time
from the encoders, where with 1 worker they ran on the second core. Dask's statistical profiler (100 stack
samples a second on each worker's event loop, under the GIL) was the largest of those costs; the runner's
LocalCluster turns it off and the runner warns when workers of a cluster started elsewhere still run it.
Each repetition's ratio compares runs a few minutes apart on a shared machine, hence the spread.
"""
    return publish("scaling", "Process scaling: 2 workers against 1, repeated (issue 8)", body, write=not args.quick)


if __name__ == "__main__":
    sys.exit(main())
