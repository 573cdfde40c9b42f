"""Mimi encoding on a GPU (issue 8, point 3): audio-hours per GPU-hour by dtype and batch size, code agreement of
each dtype with float32, and whether CPU decoding can feed it.

Where CUDA is available (e.g. the device tool's H100):
- the encoder alone on Emilia-like clips (3–30 s), for float32, tf32 and bfloat16 and padded audio per batch of
  480–3,840 s: audio-hours per GPU-hour (= x real time), peak GPU memory;
- code agreement of each dtype with float32 on the GPU, and of GPU float32 with CPU float32 (``MimiModel.encode``
  one utterance at a time) on a subset;
- the Emilia pipeline end to end on MP3 tars with the codec on the GPU and decoding in ``decode_threads`` CPU
  threads, against the encoder alone on the same audio.
Everywhere (also without a GPU):
- CPU decode + resample throughput with 1..N threads (what feeds a GPU: 10,000 audio-hours per GPU-hour needs
  10,000x real time of decoding);
- bfloat16 against float32 code agreement computed on CPU (same dtype arithmetic as on a GPU, different kernels).

    python bench/gpu.py            # writes the "gpu" section of BENCHMARKS.md
    python bench/gpu.py --quick
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench._common import SR, emilia_like_durations, fmt_x, load, speech_clips, timed

DTYPES = ("float32", "tf32", "bfloat16")
BATCH_SECONDS = (480.0, 960.0, 1920.0, 3840.0)
TARGET_PER_GPU_HOUR = 10_000


def code_agreement(codes: list[np.ndarray], reference: list[np.ndarray]) -> dict:
    """Share of codes equal to the reference's: all codebooks, codebook 0 (semantic), whole frames (all 8)."""
    a = np.concatenate(codes, axis=1)
    b = np.concatenate(reference, axis=1)
    eq = a == b
    return {"all": float(eq.mean()), "codebook0": float(eq[0].mean()), "frames": float(eq.all(axis=0).mean())}


# --- decode feed (CPU) ----------------------------------------------------------------------------------------


def decode_feed(threads_list, seconds: float, reps: int) -> list:
    """MP3 at 24 kHz (Emilia) and FLAC at 16 kHz (resampled, as MLS), decoded by a pool of N threads."""
    from fixtures import encode_audio

    from sodadata.encode.audio import decode_audio

    rows = []
    durations = emilia_like_durations(seconds, seed=21)
    for label, rate, fmt in (("MP3 24 kHz (Emilia)", 24_000, "MP3"), ("FLAC 16 kHz -> 24 kHz (MLS-like)", 16_000, "FLAC")):
        from fixtures import speechlike

        files = [encode_audio(speechlike(d, 40 + i, sr=rate), sr=rate, fmt=fmt) for i, d in enumerate(durations)]
        total = sum(durations)
        rates = {}
        for n in threads_list:
            with ThreadPoolExecutor(n) as pool:
                list(pool.map(decode_audio, files[:2]))
                walls = [timed(lambda p=pool, f=files: list(p.map(decode_audio, f)))[0] for _ in range(reps)]
            rates[n] = total / float(np.median(walls))
        base = rates[threads_list[0]]
        for n in threads_list:
            rows.append([label, n, fmt_x(rates[n]), f"{rates[n] / base:.2f}",
                         f"{TARGET_PER_GPU_HOUR / (rates[n] / n):.1f}"])
    return rows


def gil_probe(n_files: int) -> list:
    """Decode rate alone and beside a busy Python thread (what the thread driving a GPU is), for libsndfile
    reading from memory (``decode_audio``: Python virtual-IO callbacks, each needing the GIL) and from a tmpfs file."""
    import io
    import threading

    import soundfile as sf
    from fixtures import encode_audio, speechlike

    files = [encode_audio(speechlike(15.0, 60 + i)) for i in range(n_files)]
    seconds = 15.0 * n_files

    def from_memory(b: bytes):
        with sf.SoundFile(io.BytesIO(b)) as f:
            return f.read(dtype="float32", always_2d=True)

    def from_file(b: bytes):
        with tempfile.NamedTemporaryFile(dir="/dev/shm" if os.path.isdir("/dev/shm") else None, suffix=".mp3") as t:
            t.write(b)
            t.flush()
            with sf.SoundFile(t.name) as f:
                return f.read(dtype="float32", always_2d=True)

    rows = []
    for name, fn in (("from memory (BytesIO, as decode_audio)", from_memory), ("from a tmpfs file", from_file)):
        alone = seconds / timed(lambda f=fn: [f(b) for b in files])[0]
        stop = threading.Event()

        def spin(stop: threading.Event = stop) -> None:
            x = 0
            while not stop.is_set():
                x += 1

        th = threading.Thread(target=spin)
        th.start()
        try:
            beside = seconds / timed(lambda f=fn: [f(b) for b in files])[0]
        finally:
            stop.set()
            th.join()
        rows.append([name, fmt_x(alone), fmt_x(beside)])
    return rows


# --- dtype agreement on CPU -----------------------------------------------------------------------------------


def cpu_bf16_agreement(seconds: float) -> dict:
    import torch

    from sodadata.encode.codec import CodecConfig, MimiEncoder, build_random_mimi

    torch.set_num_threads(1)
    model = build_random_mimi("full-random", encoder_only=True)
    waves = speech_clips(emilia_like_durations(seconds, seed=22), seed=22)
    fp32 = MimiEncoder(CodecConfig(codec="full-random"), model).encode(waves)
    bf16 = MimiEncoder(CodecConfig(codec="full-random", dtype="bfloat16"),
                       copy.deepcopy(model).to(torch.bfloat16)).encode(waves)
    return code_agreement(bf16, fp32) | {"seconds": sum(len(w) for w in waves) / SR}


# --- GPU --------------------------------------------------------------------------------------------------------


def _set_tf32(on: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def gpu_encoder_sweep(seconds: float, reps: int, quick: bool) -> tuple[list, dict]:
    import torch

    from sodadata.encode.codec import CodecConfig, MimiEncoder, build_random_mimi, reference_encode

    base = build_random_mimi("full-random", encoder_only=True)
    waves = speech_clips(emilia_like_durations(seconds, seed=23), seed=23)
    audio = sum(len(w) for w in waves) / SR
    models = {"float32": base.to("cuda"), "tf32": None, "bfloat16": copy.deepcopy(base).to("cuda", torch.bfloat16)}
    models["tf32"] = models["float32"]
    rows, best, codes_by = [], {}, {}
    for dtype in DTYPES:
        _set_tf32(dtype == "tf32")
        for batch_seconds in BATCH_SECONDS[:2] if quick else BATCH_SECONDS:
            cfg = CodecConfig(codec="full-random", device="cuda", dtype=dtype, batch_size=1024,
                              max_batch_seconds=batch_seconds)
            enc = MimiEncoder(cfg, models[dtype])
            enc.encode(waves[:8])
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            walls = []
            for _ in range(reps):
                wall, _, out = timed(lambda e=enc: e.encode(waves))  # codes come back to the CPU: synchronized
                walls.append(wall)
            rate = audio / float(np.median(walls))
            peak = torch.cuda.max_memory_allocated() / 2**30
            codes_by[(dtype, batch_seconds)] = out
            rows.append([dtype, f"{batch_seconds:g}", f"{rate:,.0f}", f"{peak:.1f}"])
            if rate > best.get(dtype, (0, None))[0]:
                best[dtype] = (rate, batch_seconds)
            print(rows[-1], flush=True)
    _set_tf32(False)
    # agreement of each dtype (at its best batch size) with float32 on the GPU, and GPU fp32 vs CPU fp32
    fp32 = codes_by[("float32", best["float32"][1])]
    agree = {d: code_agreement(codes_by[(d, best[d][1])], fp32) for d in DTYPES}
    subset = waves[:6]
    cpu_model = build_random_mimi("full-random", encoder_only=True)
    cpu_ref = [reference_encode(cpu_model, w) for w in subset]
    agree["float32 GPU vs CPU"] = code_agreement(fp32[: len(subset)], cpu_ref)
    return rows, {"best": best, "agree": agree, "audio": audio}


def gpu_pipeline(minutes: float, decode_threads: int) -> dict:
    """The Emilia recipe with the codec on the GPU and decoding in CPU threads, vs the encoder alone."""
    from fixtures import make_emilia_source

    from bench.pipeline import _records, decoded_audio
    from sodadata.encode.codec import CodecConfig, get_encoder
    from sodadata.recipes.emilia import EmiliaRecipe
    from sodadata.run.pipeline import PipelineConfig
    from sodadata.run.runner import RunnerConfig, run_recipe

    work = Path(tempfile.mkdtemp(prefix="sodadata-bench-gpu-"))
    try:
        utts = max(2, round(minutes * 60 / 16.5 / 4 / 4))  # 4 tars (2 per subset) x 4 documents
        make_emilia_source(work / "src", seed=9, quirks=False, tars_per_subset=2, docs_per_tar=4, utts_per_doc=utts,
                           seconds=(3.0, 30.0))
        codec = CodecConfig(codec="full-random", device="cuda")
        enc = get_encoder(codec)
        waves = decoded_audio(work / "src")
        enc.encode(waves[:8])
        raw = timed(lambda: enc.encode(waves))[0]
        audio = sum(len(w) for w in waves) / SR
        out = work / "out"
        result = run_recipe(EmiliaRecipe(source=str(work / "src")),
                            PipelineConfig(out=str(out), codec=codec, bucket_seconds=None,
                                           decode_threads=decode_threads),
                            RunnerConfig(serial=True, progress=False))
        assert result.ok, result.failures
        recs = _records(out)
        return {"audio": audio, "raw_rate": audio / raw, "pipeline_rate": audio / result.elapsed_seconds,
                "decode_threads": decode_threads,
                "decode_share": sum(r["timings"]["read_decode"] for r in recs) / sum(r["elapsed_seconds"] for r in recs)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from bench.report import publish, table

    started, load0 = time.strftime("%Y-%m-%d %H:%M"), load()
    cores = os.cpu_count() or 1
    threads_list = sorted({1, 2, cores} if cores > 2 else {1, cores})
    feed = decode_feed(threads_list, 60.0 if args.quick else 300.0, 2 if args.quick else 3)
    print(table(["source", "threads", "x", "scale", "cores"], feed), flush=True)
    gil = gil_probe(6 if args.quick else 20)
    print(gil, flush=True)
    cpu_bf16 = cpu_bf16_agreement(20.0 if args.quick else 60.0)
    print(cpu_bf16, flush=True)
    feed_table = table(["source", "decode threads", "x real time (wall)", "speed-up vs 1 thread",
                        f"cores to feed {TARGET_PER_GPU_HOUR:,} audio-h per GPU-h"], feed)
    common = f"""
**Feeding a GPU from CPU decoding** (this machine, {cores} cores shared with other jobs; a pool of threads
running `sodadata.encode.audio.decode_audio`):

{feed_table}

Decoding threads do not scale freely: libsndfile reads in-memory bytes through Python virtual-IO callbacks, and
each callback needs the GIL. MP3 decode of 15 s clips, one thread, alone and beside a busy pure-Python thread
(standing in for the thread that drives a GPU):

{table(["libsndfile input", "alone (x real time)", "beside a busy Python thread"], gil)}

So on a GPU machine, decoding from memory in threads starves against the GPU-driving thread; decoding from
files (or in a process pool) is the way to feed 10,000x. Not done here: unmeasured on a GPU, and on the CPU
path (the default) the encoder holds the GIL so little that the prefetch thread costs nothing measurable
(bench/pipeline.py: pipeline at ~100 % of the encoder alone).

**bfloat16 vs float32 codes, computed on CPU** (full-size Mimi, random weights, {cpu_bf16['seconds']:.0f} s of
speech-like audio): all codes {100 * cpu_bf16['all']:.2f} %, codebook 0 {100 * cpu_bf16['codebook0']:.2f} %,
whole frames {100 * cpu_bf16['frames']:.2f} %. bfloat16 changes codes; float32 stays the default everywhere.
"""
    if not torch.cuda.is_available():
        body = f"""
Started {started} UTC, load average {load0:.1f}. **No GPU was available to this run: the GPU figures (audio-hours
per GPU-hour by dtype and batch size, GPU code agreement, the pipeline fed by CPU decoding) are unmeasured
here.** `python bench/gpu.py` on a CUDA machine measures and writes them. What runs there: `CodecConfig(device=
"cuda")` (batch 64, 1,920 s of padded audio per batch unless set; length-sorted batches with the padding repair,
codes equal to one-at-a-time `MimiModel.encode` in float32 — tested on CPU with the CUDA configuration's limits
in `tests/test_performance_paths.py`), buckets of 2 x the batch audio, and `decode_threads` = every core.
{common}"""
    else:
        props = torch.cuda.get_device_properties(0)
        rows, sweep = gpu_encoder_sweep(300.0 if args.quick else 3600.0, 1 if args.quick else 3, args.quick)
        e2e = gpu_pipeline(5.0 if args.quick else 40.0, cores)
        best_dtype = max(sweep["best"], key=lambda d: sweep["best"][d][0])
        agree_rows = [[k, f"{100 * v['all']:.2f} %", f"{100 * v['codebook0']:.2f} %", f"{100 * v['frames']:.2f} %"]
                      for k, v in sweep["agree"].items()]
        body = f"""
Started {started} UTC. Device: {props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda},
torch {torch.__version__}, {cores} CPU cores.

**Encoder alone** ({sweep['audio'] / 3600:.2f} h of Emilia-like clips, full-size Mimi, random weights; audio-hours
per GPU-hour = x real time):

{table(["dtype", "padded audio per batch s", "audio-h per GPU-h", "peak GPU memory GiB"], rows)}

Best: {", ".join(f"{d} {v[0]:,.0f} at {v[1]:g} s" for d, v in sweep['best'].items())}; fastest dtype
{best_dtype} (target {TARGET_PER_GPU_HOUR:,}).

**Code agreement with float32** (each dtype at its best batch size; and GPU float32 against CPU
`MimiModel.encode`):

{table(["dtype", "all codes", "codebook 0", "whole frames"], agree_rows)}

**Pipeline** (Emilia recipe, MP3 tars, codec on the GPU in float32, {e2e['decode_threads']} decode threads):
{e2e['pipeline_rate']:,.0f} audio-h per GPU-h against {e2e['raw_rate']:,.0f} for the encoder alone on the same
audio ({100 * e2e['pipeline_rate'] / e2e['raw_rate']:.0f} %); decoding took {100 * e2e['decode_share']:.0f} % of
the tasks' time in thread-seconds (overlapped).
{common}"""
    return publish("gpu", "Mimi encoding on GPU: dtype, batch size, agreement, feeding (issue 8)", body,
                   write=not args.quick)


if __name__ == "__main__":
    sys.exit(main())
