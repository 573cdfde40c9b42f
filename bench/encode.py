"""Mimi encoding on CPU: the encoder paths side by side, the chunk size, dtype, memory, and the machine's floor.

Full-size Mimi with seeded random weights (``full-random``: the real architecture, so it costs what real Mimi
costs). Every comparison runs on the same audio in one process, repetitions interleaved, medians reported, with
the load average; throughput is given both by wall clock and by CPU time ("x real time per core": audio seconds
per CPU second, the figure that survives a shared machine best).

    python bench/encode.py              # full run, writes the "encode" section of BENCHMARKS.md
    python bench/encode.py --quick      # short run, prints only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench._common import (
    REPO,
    SR,
    Interleaved,
    RssSampler,
    emilia_like_durations,
    fmt_x,
    load,
    speech_clips,
    timed,
)

# --- the floor ------------------------------------------------------------------------------------------------


def encoder_gflop_per_second(model) -> dict:
    """GFLOP per audio-second of the encoder (SEANet, transformer, downsampling, 8 codebooks), counted on 10 s."""
    import torch
    from torch import nn

    seconds = 10
    counts = {"seanet": 0.0, "transformer": 0.0, "downsample+quantizer": 0.0}
    where: dict = {}
    for name, mod in model.encoder.named_modules():
        if isinstance(mod, (nn.Conv1d, nn.Linear)):
            where[mod] = "seanet" if name.startswith("encoder_seanet") else (
                "transformer" if name.startswith("encoder_transformer") else "downsample+quantizer")

    def hook(mod, args, out):
        if isinstance(mod, nn.Conv1d):
            flops = 2 * out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0]
        else:
            flops = 2 * out.numel() * mod.in_features
        counts[where[mod]] += flops

    handles = [m.register_forward_hook(hook) for m in where]
    x = torch.zeros(1, 1, seconds * SR)
    with torch.inference_mode():
        latents = model.encoder(x).latents
    for h in handles:
        h.remove()
    cfg = model.config
    tokens = seconds * SR // int(np.prod(cfg.upsampling_ratios))  # transformer steps (25 Hz)
    window = min(tokens, cfg.sliding_window)
    # attention scores and values over the causal sliding window (what a windowed kernel needs)
    counts["transformer"] += cfg.num_hidden_layers * 2 * 2 * tokens * window * cfg.num_attention_heads * cfg.head_dim
    frames = latents.shape[-1]
    # input projections (semantic + acoustic) and, per codebook, distances to its 2048 centroids
    counts["downsample+quantizer"] += 2 * 2 * frames * cfg.hidden_size * cfg.codebook_dim
    counts["downsample+quantizer"] += 8 * 2 * frames * cfg.codebook_size * cfg.codebook_dim
    return {k: v / seconds / 1e9 for k, v in counts.items()}


def gemm_gflops(threads: int, reps: int = 5) -> tuple[float, float]:
    """Sustained fp32 GEMM (2048^3) on ``threads`` threads: (by wall clock, per core by CPU time)."""
    import torch

    torch.set_num_threads(threads)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    walls, cpus = [], []
    for _ in range(reps):
        wall, cpu, _ = timed(lambda: a @ b)
        walls.append(wall)
        cpus.append(cpu)
    flop = 2 * n**3
    return flop / float(np.median(walls)) / 1e9, flop / float(np.median(cpus)) / 1e9


# --- the paths --------------------------------------------------------------------------------------------------


def _encoders(model, threads: int):
    from sodadata.encode.codec import CodecConfig, MimiEncoder, reference_encode

    def plain(waves):
        return [reference_encode(model, w) for w in waves]

    eng_ref = MimiEncoder(CodecConfig(codec="full-random", engine="reference", batch_size=1, threads=threads), model)
    auto1 = MimiEncoder(CodecConfig(codec="full-random", batch_size=1, threads=threads), model)
    auto4 = MimiEncoder(CodecConfig(codec="full-random", batch_size=4, threads=threads), model)
    return {
        "MimiModel.encode, one at a time (transformers)": plain,
        "MimiEncoder engine=reference, batch 1": eng_ref.encode,
        "MimiEncoder engine=auto (chunked), batch 1": auto1.encode,
        "MimiEncoder engine=auto (chunked), batch 4": auto4.encode,
    }, auto1


def compare_paths(model, audio_sets: dict, thread_counts, reps: int) -> tuple[list, list[str]]:
    import torch

    rows, notes = [], []
    for label, waves in audio_sets.items():
        seconds = sum(len(w) for w in waves) / SR
        for threads in thread_counts:
            torch.set_num_threads(threads)
            fns, auto1 = _encoders(model, threads)
            run = Interleaved().run({k: (lambda f=f, w=waves: f(w)) for k, f in fns.items()}, reps)
            ref_name = next(iter(fns))
            ref = run.timings[ref_name]
            for name, t in run.timings.items():
                same = all(np.array_equal(a, b) for a, b in zip(run.outputs[name], run.outputs[ref_name]))
                rows.append([
                    label, threads, name, fmt_x(seconds / t.wall_median), fmt_x(seconds / t.cpu_median),
                    f"{ref.cpu_median / t.cpu_median:.2f}", f"{ref.wall_median / t.wall_median:.2f}",
                    "yes" if same else "NO",
                ])
            if auto1.stats.engine != "chunked":
                notes.append(f"{label}, {threads} threads: the chunked path fell back to the reference")
            notes.append(f"{label}, {threads} thread(s): {run.load_note()}, {reps} interleaved repetitions")
            print(rows[-4:], run.load_note(), flush=True)
    return rows, notes


def chunk_sweep(model, waves, chunks_s, reps: int) -> tuple[list, str]:
    """For each chunk size: latents bit-identical to the reference (with the tail absorbed, and with a narrow
    tail chunk), and the speed."""
    import torch

    from sodadata.encode.codec import CodecConfig, MimiEncoder

    torch.set_num_threads(1)
    seconds = sum(len(w) for w in waves) / SR
    # lengths that leave a narrow tail (100, 961, 500 samples) after whole chunks of every size swept
    tails = speech_clips([(96_000 + 100) / SR, (144_000 + 961) / SR, (240_000 + 500) / SR], seed=5)
    checks = [*waves, *tails]
    encoders, identical, identical_tail = {}, {}, {}
    with torch.inference_mode():
        xs = [torch.from_numpy(w)[None, None] for w in checks]
        refs = [model.encoder(x).latents for x in xs]
        for c in chunks_s:
            enc = MimiEncoder(CodecConfig(codec="full-random", batch_size=1, threads=1), model)
            enc._fast.chunk = round(c * SR / 960) * 960
            enc.verify = False  # time the chunk size itself (identity is checked here, below)
            identical[c] = sum(torch.equal(enc._fast.latents(x), r) for x, r in zip(xs, refs))
            enc._fast.absorb_tail = False
            identical_tail[c] = sum(torch.equal(enc._fast.latents(x), r) for x, r in zip(xs, refs))
            enc._fast.absorb_tail = True
            encoders[c] = enc
    run = Interleaved().run({f"{c:g} s": (lambda e=e: e.encode(waves)) for c, e in encoders.items()}, reps)
    rows = []
    for c in chunks_s:
        t = run.timings[f"{c:g} s"]
        rows.append([f"{c:g} s", f"{identical[c]} of {len(checks)}", f"{identical_tail[c]} of {len(checks)}",
                     fmt_x(seconds / t.cpu_median), fmt_x(seconds / t.wall_median)])
    return rows, run.load_note()


def stage_sweep(model, waves, reps: int) -> tuple[list, str]:
    """How many strided SEANet stages to run chunked (the rest whole): speed and bit-identity of each choice."""
    import torch

    from sodadata.encode.codec import CHUNKED_STRIDED_CONVS, CodecConfig, MimiEncoder

    torch.set_num_threads(1)
    seconds = sum(len(w) for w in waves) / SR
    encoders, identical = {}, {}
    with torch.inference_mode():
        xs = [torch.from_numpy(w)[None, None] for w in waves]
        refs = [model.encoder(x).latents for x in xs]
        for k in (1, 2, 3, 4):
            enc = MimiEncoder(CodecConfig(codec="full-random", batch_size=1, threads=1), model)
            enc.verify = False
            fast = enc._fast
            strided = [i for i, layer in enumerate(fast.layers) if getattr(getattr(layer, "conv", None), "stride",
                                                                              (1,))[0] > 1]
            fast.split = strided[k - 1] + 1
            identical[k] = sum(torch.equal(fast.latents(x), r) for x, r in zip(xs, refs))
            encoders[k] = enc
    run = Interleaved().run({str(k): (lambda e=e: e.encode(waves)) for k, e in encoders.items()}, reps)
    rows = []
    for k in encoders:
        t = run.timings[str(k)]
        rate = 24_000 // int(np.prod([encoders[k]._fast.layers[i].conv.stride[0] for i in range(encoders[k]._fast.split)
                                      if hasattr(encoders[k]._fast.layers[i], "conv")]))
        rows.append([f"{k}{' (default)' if k == CHUNKED_STRIDED_CONVS else ''}", f"{rate:,} Hz",
                     f"{identical[k]} of {len(waves)}", fmt_x(seconds / t.cpu_median), fmt_x(seconds / t.wall_median)])
    return rows, run.load_note()


def dtype_compare(model, waves, reps: int) -> tuple[list, str]:
    """bfloat16 on this CPU: speed and agreement of its codes with float32's."""
    import copy

    import torch

    from sodadata.encode.codec import CodecConfig, MimiEncoder

    torch.set_num_threads(1)
    seconds = sum(len(w) for w in waves) / SR
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    encs = {
        "float32": MimiEncoder(CodecConfig(codec="full-random", threads=1), model),
        "bfloat16": MimiEncoder(CodecConfig(codec="full-random", dtype="bfloat16", threads=1), bf16),
    }
    run = Interleaved().run({k: (lambda e=e: e.encode(waves)) for k, e in encs.items()}, reps)
    ref = np.concatenate(run.outputs["float32"], axis=1)
    rows = []
    for name in encs:
        codes = np.concatenate(run.outputs[name], axis=1)
        agree = codes == ref
        t = run.timings[name]
        rows.append([name, fmt_x(seconds / t.cpu_median), f"{run.timings['float32'].cpu_median / t.cpu_median:.2f}",
                     f"{100 * agree[0].mean():.2f} %", f"{100 * agree.mean():.2f} %",
                     f"{100 * agree.all(axis=0).mean():.2f} %"])
    return rows, run.load_note()


# --- memory (each probe in a fresh process: ru_maxrss cannot be reset) ------------------------------------------


def memory_probe(decoder: bool, engine: str, seconds: float) -> dict:
    import psutil
    import torch

    from sodadata.encode.codec import CodecConfig, MimiEncoder, build_random_mimi

    torch.set_num_threads(1)
    proc = psutil.Process()
    wave = speech_clips([seconds], seed=7)[0]
    base = proc.memory_info().rss
    model = build_random_mimi("full-random", encoder_only=not decoder)
    loaded = proc.memory_info().rss
    enc = MimiEncoder(CodecConfig(codec="full-random", engine=engine, threads=1), model)
    enc.verify = False  # the probe measures the path alone (verification runs the reference)
    # sampled, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would report the parent's peak
    with RssSampler(interval=0.005) as rss:
        enc.encode([wave])
    return {"model_mib": (loaded - base) / 2**20, "before_mib": loaded / 2**20,
            "peak_mib": max(rss.peak.values()),
            "params_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20}


def memory_table(seconds: float) -> list:
    rows = []
    for decoder, engine in ((True, "reference"), (False, "reference"), (False, "auto")):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-probe", json.dumps([decoder, engine, seconds])],
            capture_output=True, text=True, check=True, cwd=REPO,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(["encoder + decoder" if decoder else "encoder only", engine, f"{r['params_mib']:.0f}",
                     f"{r['model_mib']:.0f}", f"{r['peak_mib'] - r['before_mib']:.0f}", f"{r['peak_mib']:.0f}"])
        print(rows[-1], flush=True)
    return rows


# --- glibc malloc thresholds (Dask workers run with MALLOC_TRIM_THRESHOLD_=65536) ---------------------------------


def malloc_probe(seconds: float, reps: int) -> dict:
    import torch

    from sodadata.encode.codec import CodecConfig, MimiEncoder, build_random_mimi

    torch.set_num_threads(1)
    model = build_random_mimi("full-random", encoder_only=True)
    enc = MimiEncoder(CodecConfig(codec="full-random", threads=1), model)
    waves = speech_clips(emilia_like_durations(seconds, seed=4), seed=4)
    enc.encode(waves)
    cpu = [timed(lambda: enc.encode(waves))[1] for _ in range(reps)]
    return {"x_cpu": sum(len(w) for w in waves) / SR / float(np.median(cpu))}


def malloc_table(seconds: float, reps: int, rounds: int) -> tuple[list, str]:
    """Each variant in a fresh process (the environment is read at start), rounds interleaved."""
    import os

    variants = {
        "no MALLOC_TRIM_THRESHOLD_ (plain process)": ({}, False),
        "MALLOC_TRIM_THRESHOLD_=65536 (Dask worker), sodadata's malloc fix disabled": (
            {"MALLOC_TRIM_THRESHOLD_": "65536"}, True),
        "MALLOC_TRIM_THRESHOLD_=65536 (Dask worker), with the fix (default)": ({"MALLOC_TRIM_THRESHOLD_": "65536"}, False),
    }
    results: dict[str, list[float]] = {k: [] for k in variants}
    loads = [load()]
    for _ in range(rounds):
        for name, (extra, disable) in variants.items():
            env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"} | extra
            out = subprocess.run(
                [sys.executable, __file__, "--malloc-probe", json.dumps([seconds, reps, disable])],
                capture_output=True, text=True, check=True, cwd=REPO, env=env,
            )
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1])["x_cpu"])
    loads.append(load())
    base = float(np.median(results[next(iter(variants))]))
    rows = [[name, fmt_x(float(np.median(v))), f"{float(np.median(v)) / base:.2f}"] for name, v in results.items()]
    return rows, f"load average {min(loads):.1f}–{max(loads):.1f}, {rounds} rounds of fresh processes"


# --- main -------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short audio, 1 repetition, no BENCHMARKS.md")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=90.0, help="Emilia-like audio per comparison (3–30 s clips)")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--malloc-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.malloc_probe:
        seconds, reps, disable = json.loads(args.malloc_probe)
        if disable:
            import sodadata.encode.malloc_tuning

            sodadata.encode.malloc_tuning._MALLOC_TUNED = True  # as if already done: the fix is skipped
        print(json.dumps(malloc_probe(seconds, reps)))
        return 0
    if args.memory_probe:
        decoder, engine, seconds = json.loads(args.memory_probe)
        print(json.dumps(memory_probe(decoder, engine, seconds)))
        return 0

    import logging

    from bench.report import machine, publish, table
    from sodadata.encode.codec import CPU_CHUNK_SAMPLES, build_random_mimi

    logging.basicConfig(level=logging.ERROR)
    reps = 1 if args.quick else args.reps
    total = 30.0 if args.quick else args.seconds
    started = time.strftime("%Y-%m-%d %H:%M")
    load_start = load()
    model = build_random_mimi("full-random", encoder_only=True)

    flops = encoder_gflop_per_second(model)
    gflop = sum(flops.values())
    gemm = {t: gemm_gflops(t) for t in (1, 2)}
    peak_core = gemm[1][1]  # per core, by CPU time: the least disturbed figure of what one core sustains

    utterances = speech_clips(emilia_like_durations(total, seed=1), seed=1)
    long_piece = speech_clips([60.0 if not args.quick else 20.0], seed=2)
    audio_sets = {f"Emilia-like, {len(utterances)} clips 3–30 s": utterances,
                  f"one {len(long_piece[0]) / SR:.0f} s piece": long_piece}
    path_rows, path_notes = compare_paths(model, audio_sets, (1, 2), reps)

    sweep_waves = utterances[: max(3, len(utterances) // 2)]
    sweep_rows, sweep_note = chunk_sweep(model, sweep_waves, (0.2, 0.4, 1.0, 2.0, 4.0), reps)
    print(sweep_rows, flush=True)
    stage_rows, stage_note = stage_sweep(model, sweep_waves, reps)
    print(stage_rows, flush=True)
    dtype_rows, dtype_note = dtype_compare(model, sweep_waves, reps)
    print(dtype_rows, flush=True)
    mem_rows = memory_table(60.0 if not args.quick else 20.0)
    malloc_rows, malloc_note = malloc_table(20.0 if args.quick else 40.0, 1 if args.quick else 2, 1 if args.quick else 3)
    print(malloc_rows, flush=True)

    # the best measured path against the floor
    best = {}
    for r in path_rows:
        if "chunked), batch 1" in r[2] and r[0].startswith("Emilia"):
            best[r[1]] = r
    floor_core = peak_core / gflop

    headers = ["audio", "threads", "path", "x real time (wall)", "x real time per core (CPU time)",
               "speed-up (CPU time)", "speed-up (wall)", "codes = MimiModel.encode"]
    cpu = machine()
    body = f"""
Started {started} UTC; load average {load_start:.1f} at the start. {cpu['cores']} cores; other jobs, if any, show in the
load averages noted with each table: absolute wall-clock figures move with them, the ratios are side
by side. This CPU reports AVX-512 with `avx512_bf16` (torch uses its AVX512 kernels), unlike the AVX2 machine of
the issue's notes.

**The floor.** The encoder costs **{gflop:.2f} GFLOP per audio-second** (counted on a 10 s input: SEANet
{flops['seanet']:.2f}, transformer {flops['transformer']:.2f} incl. its 250-step attention window, downsampling +
8-codebook quantizer {flops['downsample+quantizer']:.2f}). Sustained fp32 GEMM (2048³): **{peak_core:.0f} GFLOP/s
per core by CPU time** ({gemm[1][0]:.0f} GFLOP/s wall on 1 thread, {gemm[2][0]:.0f} GFLOP/s wall on 2 threads,
both under the load above). Floor: {peak_core:.0f} / {gflop:.2f} = **{floor_core:.1f}x real time per core**,
{2 * floor_core:.1f}x on 2 idle cores; 60 % of it is {1.2 * floor_core:.1f}x on 2 cores.

**Encoder paths**, same audio, codes compared with `MimiModel.encode` one utterance at a time (60 s pieces):

{table(headers, path_rows)}

{chr(10).join('- ' + n for n in path_notes)}

The chunked path (`engine="auto"`, the default on CPU) runs the SEANet stages above 200 Hz over
{CPU_CHUNK_SAMPLES / SR:g} s chunks (each causal conv carrying its left context) and the rest whole, calling the
modules directly: same arithmetic, in cache. Speed-up column: the reference's median time over this path's.
Batching (batch 4 of similar-length clips) does not help on this CPU: the default stays batch 1 on CPU. With 2
threads in one process the figures depend on the other jobs (see the load notes): with free cores the chunked
path scales with threads like the reference, but when another job takes a core its many short parallel regions
wait on the descheduled thread and its lead shrinks or reverses. One torch thread per worker process avoids
that (bench/pipeline.py compares the layouts).

**Chunk size** (1 thread; latents compared bit for bit with `MimiModel.encoder`'s, per clip; {sweep_note}):

{table(["chunk", "latents bit-identical", "same, narrow tail chunk not absorbed", "x real time per core (CPU time)",
        "x real time (wall)"], sweep_rows)}

The clips checked are the timed ones plus three whose length leaves a tail of 100, 961 and 500 samples after whole
chunks. A tail that narrow, run as its own chunk, gets a different oneDNN kernel and different bits (third
column); so the last chunk absorbs the remainder. The default chunk is {CPU_CHUNK_SAMPLES / SR:g} s, and each
process verifies the path against the reference on the first batch of each width class (seven up to a 60 s piece),
falling back to the reference if they ever differ (e.g. another CPU, another oneDNN).

**Chunked stages** (how many strided SEANet stages run over chunks before the rest runs whole; 1 thread,
{CPU_CHUNK_SAMPLES / SR:g} s chunks; {stage_note}):

{table(["strided stages chunked", "rate where chunking stops", "latents bit-identical", "x real time per core (CPU time)",
        "x real time (wall)"], stage_rows)}

**dtype on CPU** (chunked path, 1 thread; agreement with float32's codes; {dtype_note}):

{table(["dtype", "x real time per core (CPU time)", "speed-up", "codebook 0 agrees", "all codes agree",
        "frames with all 8 equal"], dtype_rows)}

bfloat16 is faster on this AVX512-BF16 CPU but changes codes: it is not a default, and a corpus must not mix
dtypes.

**Memory** (fresh process per row, 1 thread, one {mem_rows and (60.0 if not args.quick else 20.0):.0f} s piece):

{table(["model", "engine", "parameters MiB", "RSS added by loading MiB", "RSS added while encoding MiB",
        "process peak RSS MiB"], mem_rows)}

**glibc malloc in Dask workers.** Dask's nanny starts workers with `MALLOC_TRIM_THRESHOLD_=65536`; setting any
malloc threshold turns off glibc's dynamic mmap threshold, so every encoder activation over 128 kB is a fresh
mmap (page faults, zeroing) and a munmap when freed. Encoder alone, 1 thread, each row a fresh process
({malloc_note}):

{table(["process environment", "x real time per core (CPU time)", "relative"], malloc_rows)}

`MimiEncoder` on CPU therefore sets the thresholds glibc's own dynamic scheme would reach (mmap above 32 MB, trim
above 64 MB) when, and only when, `MALLOC_TRIM_THRESHOLD_` is set.

Dropping the decoder (`load_mimi(..., encoder_only=True)`, what every worker does) halves the parameters (the
random model is built whole and then drops its decoder, so its RSS shows less of the saving than loading a real
checkpoint without one); the chunked path never holds a whole-piece 24 kHz activation (64 channels x 1.44 M
samples = 369 MB each for 60 s).
"""
    return publish("encode", "Mimi encoding on CPU: paths, chunk size, dtype, memory, floor (issue 8)", body,
                   write=not args.quick)


if __name__ == "__main__":
    sys.exit(main())
