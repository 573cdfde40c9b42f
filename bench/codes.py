"""The small things stay small (issue 8, point 4): codes <-> characters, and a task's Parquet + JSON writing.

1. ``codes_to_chars`` / ``chars_to_codes`` (the C loop, and the NumPy path with it switched off) against the
   reference per-character loops (SPEC.md §1), on lengths from a 3 s caption to one hour and on Emilia's mix;
   outputs compared for identity.
2. The write phase of a task as ``run_task`` does it (documents -> two rows each -> ``ShardWriter`` -> commit with
   fsync; rejects file; JSON record), for 0.25, 1 and 4 hours of Emilia-like documents with random codes; a
   straight-line fit gives the fixed cost per task and the cost per audio-hour, and with the chunked encoder's
   rate (measured here too) the share of a task's time, for the bench's small tars and for real Emilia tars.

    python bench/codes.py           # writes the "codes" section of BENCHMARKS.md
    python bench/codes.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench._common import SR, emilia_like_durations, fmt_x, load, speech_clips, timed

AUDIO_BASE, CODEBOOK_SIZE = 0xE000, 2048
FRAMES_PER_SECOND = 12.5
# Real Emilia tars, from catalogs/emilia.yaml: hours / shards (English)
REAL_TARS = {"Emilia EN tar (46,800 h / 1,140)": 46_800 / 1_140, "Emilia-YODAS EN tar (92,000 h / 1,362)": 92_000 / 1_362}


CONV_HEADER = ["audio", "direction", "sodadata µs (C loop)", "NumPy path µs", "reference loop µs",
               "speed-up (C loop)", "speed-up (NumPy path)", "identical (all three)"]


def ref_codes_to_chars(codes: np.ndarray) -> str:
    """SPEC.md §1 literally: frame-major, one ``chr`` per code."""
    n, frames = codes.shape
    return "".join(chr(AUDIO_BASE + i * CODEBOOK_SIZE + int(codes[i, t])) for t in range(frames) for i in range(n))


def ref_chars_to_codes(text: str, n: int = 8) -> np.ndarray:
    """The inverse, one character at a time, with the same well-formedness check as ``chars_to_codes``."""
    if len(text) % n:
        raise ValueError("length is not a multiple of the codebook count")
    out = np.empty((n, len(text) // n), dtype=np.int64)
    for k, ch in enumerate(text):
        code = ord(ch) - AUDIO_BASE - (k % n) * CODEBOOK_SIZE
        if not 0 <= code < CODEBOOK_SIZE:
            raise ValueError(f"character {k} is not in codebook {k % n}'s range")
        out[k % n, k // n] = code
    return out


def _per_call_times(fns: list[tuple], items: list, reps: int, inner: int) -> list[float]:
    """Median seconds per call of each ``(function, context)`` over ``items``. Samples interleaved (f1, f2, f3, f1,
    f2 ...); a sample is ``inner`` passes over the items inside the context, one bare call per item, as ``timeit``
    would time it (a sub-microsecond call needs many calls to a timer reading)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for k, (fn, context) in enumerate(fns):
            with context():
                t0 = time.perf_counter()
                for _ in range(inner):
                    for x in items:
                        fn(x)
                times[k].append((time.perf_counter() - t0) / inner)
    return [statistics.median(t) for t in times]


@contextlib.contextmanager
def numpy_path():
    """``sodadata.encode.codes`` with its C loop switched off: the NumPy implementation, same output."""
    import sodadata.encode.codes as codes

    native, codes._native = codes._native, None
    try:
        yield
    finally:
        codes._native = native


def conversions(reps: int) -> list:
    """Rows of (audio, direction, C µs, NumPy µs, loop µs, speed-ups, identical), one call per utterance."""
    from sodadata.encode.codes import NATIVE, chars_to_codes, codes_to_chars

    if not NATIVE:
        raise SystemExit("sodadata.encode._codes is not built (no C compiler at install): pip install -e . with gcc present")
    rng = np.random.default_rng(0)

    def codes_of(seconds: float) -> np.ndarray:  # int16: what the encoder hands the pipeline
        return rng.integers(0, CODEBOOK_SIZE, size=(8, int(seconds * FRAMES_PER_SECOND)), dtype=np.int16)

    # (label, the utterances, samples, passes per sample)
    cases = [(label, [codes_of(s)], (reps, 1) if s >= 3600 else (60, 100))
             for label, s in (("3 s utterance", 3), ("10 s utterance", 10), ("30 s utterance", 30), ("1 hour", 3600))]
    # the pipeline's real workload: one call per utterance over Emilia's length distribution (3-30 s, uniform)
    cases.append(("Emilia-like: 40 utterances of 3–30 s, one call each",
                  [codes_of(d) for d in rng.uniform(3.0, 30.0, 40)], (40, 5)))
    plain = contextlib.nullcontext
    rows = []
    for label, codes, (n, inner) in cases:
        text = [codes_to_chars(c) for c in codes]
        with numpy_path():
            same = text == [codes_to_chars(c) for c in codes] == [ref_codes_to_chars(c) for c in codes]
        fast_t, np_t, ref_t = _per_call_times([(codes_to_chars, plain), (codes_to_chars, numpy_path),
                                               (ref_codes_to_chars, plain)], codes, n, inner)
        rows.append([label, "codes -> characters", fast_t, np_t, ref_t, same])
        back = [chars_to_codes(t) for t in text]
        with numpy_path():
            back_np = [chars_to_codes(t) for t in text]
        same = all(np.array_equal(f, c) and np.array_equal(p, c) and np.array_equal(ref_chars_to_codes(t), c)
                   for f, p, t, c in zip(back, back_np, text, codes, strict=True))
        fast_t, np_t, ref_t = _per_call_times([(chars_to_codes, plain), (chars_to_codes, numpy_path),
                                               (ref_chars_to_codes, plain)], text, n, inner)
        rows.append([label, "characters -> codes (with span check)", fast_t, np_t, ref_t, same])
    return [conversion_row(*r) for r in rows]


def conversion_row(label: str, direction: str, fast: float, pure: float, ref: float, same: bool) -> list:
    return [label, direction, f"{1e6 * fast:,.2f}", f"{1e6 * pure:,.1f}", f"{1e6 * ref:,.0f}", f"{ref / fast:,.0f}x",
            f"{ref / pure:,.0f}x", "yes" if same else "NO"]


def hour_with_worker_malloc() -> tuple[list[float], list[float]]:
    """The one-hour conversions in a fresh process whose glibc keeps freed heap (the thresholds ``MimiEncoder``
    sets in Dask workers): in a plain process, the 1.4 MB arrays of an hour are handed back to the kernel on
    every free and faulted in again on the next call, which costs more than the arithmetic."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(32 * 2**20), MALLOC_TRIM_THRESHOLD_=str(64 * 2**20))
    out = subprocess.run([sys.executable, __file__, "--hour-only"], env=env, check=True, capture_output=True,
                         text=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    return got["codes_to_chars"], got["chars_to_codes"]


def _hour_only() -> None:
    from sodadata.encode.codes import chars_to_codes, codes_to_chars

    codes = np.random.default_rng(0).integers(0, CODEBOOK_SIZE, size=(8, int(3600 * FRAMES_PER_SECOND)),
                                              dtype=np.int16)
    text = codes_to_chars(codes)
    both = [contextlib.nullcontext, numpy_path]
    c2s = _per_call_times([(codes_to_chars, c) for c in both], [codes], 9, 1)
    s2c = _per_call_times([(chars_to_codes, c) for c in both], [text], 9, 1)
    print(json.dumps({"codes_to_chars": c2s, "chars_to_codes": s2c}))


def _documents(hours: float, seed: int):
    """Emilia-like documents (3-30 s utterances, 4 a document) with random codes, as EncodedUtterance lists."""
    from sodadata.encode.codes import codes_to_chars
    from sodadata.write.document import EncodedUtterance

    rng = np.random.default_rng(seed)
    docs: dict[str, list] = {}
    for k, d in enumerate(emilia_like_durations(hours * 3600, seed)):
        doc = f"EN_B00000_S{k // 4:05d}"
        frames = int(np.ceil(d * FRAMES_PER_SECOND))
        codes = rng.integers(0, CODEBOOK_SIZE, size=(8, frames), dtype=np.int16)
        docs.setdefault(doc, []).append(EncodedUtterance(
            id=f"{doc}_W{k % 4:06d}", doc_id=doc, order=(k % 4,), text=f"Utterance {k} says something ordinary.",
            audio=codes_to_chars(codes), seconds=d))
    return docs


def write_phase(docs: dict, out: Path) -> float:
    """What run_task does after encoding: rows, shard commit, rejects file, JSON record. Seconds."""
    from sodadata.locations import write_json_atomic
    from sodadata.read.recipe import ShardTask, SourceFile
    from sodadata.run.pipeline import TaskCounts, _DocumentRows, _UncommittedShard
    from sodadata.write.document import DEFAULT_FORMATS
    from sodadata.write.shards import REJECT_SCHEMA, ShardPaths, ShardWriter

    task = ShardTask("emilia/en", "EN-B000000", "Emilia-EN-B000000", (SourceFile("bench://x", 0),))
    paths = ShardPaths(out, task.component, task.stem)
    t0 = time.perf_counter()
    shard = _UncommittedShard(ShardWriter(paths.parquet))
    rows = _DocumentRows(shard, task, {}, {}, TaskCounts(), DEFAULT_FORMATS)
    for doc_id in sorted(docs):
        rows.write(doc_id, docs[doc_id])
    with ShardWriter(paths.rejects, schema=REJECT_SCHEMA) as w:
        w.write_all([])
        w.commit()
    shard.writer.commit()
    write_json_atomic(paths.record, {"rows": shard.rows, "documents": shard.documents,
                                     "audio_seconds": shard.audio_seconds, "audio_tokens": shard.audio_tokens,
                                     "timings": {"write": 0.0}})
    return time.perf_counter() - t0


def write_costs(hours_list, reps: int) -> tuple[list, float, float, float]:
    """Per size: median seconds of the write phase; the fixed cost is measured on a one-utterance task."""
    rows = []
    tiny = _documents(5 / 3600, seed=1)
    fixed = statistics.median(_timed_write(tiny) for _ in range(max(5, reps)))
    rows.append(["one 5 s utterance", f"{fixed:.3f}", "", ""])
    xs, ys = [], []
    for hours in hours_list:
        docs = _documents(hours, seed=int(hours * 100))
        t = statistics.median(_timed_write(docs) for _ in range(reps))
        with tempfile.TemporaryDirectory() as tmp:
            write_phase(docs, Path(tmp))
            size = sum(p.stat().st_size for p in Path(tmp).rglob("*.parquet"))
        xs.append(hours)
        ys.append(t)
        rows.append([f"{hours:g} h", f"{t:.3f}", f"{t / hours:.4f}", f"{size / (hours * 3600):,.0f}"])
    slope = float(np.polyfit(xs, ys, 1)[0])  # the fixed cost (fsync noise) cancels in the slope
    return rows, fixed, max(slope, 0.0), load()


def _timed_write(docs: dict) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return write_phase(docs, Path(tmp))


def encoder_rate(seconds: float) -> float:
    """Chunked encoder, 1 thread: audio seconds per CPU second (full-random, speech-like audio)."""
    import torch

    from sodadata.encode.codec import CodecConfig, MimiEncoder, build_random_mimi

    torch.set_num_threads(1)
    enc = MimiEncoder(CodecConfig(codec="full-random", threads=1), build_random_mimi("full-random", encoder_only=True))
    waves = speech_clips(emilia_like_durations(seconds, seed=6), seed=6)
    enc.encode(waves)
    cpu = [timed(lambda: enc.encode(waves))[1] for _ in range(2)]
    return sum(len(w) for w in waves) / SR / min(cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--hour-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hour_only:
        _hour_only()
        return 0
    from bench.report import publish, table

    reps = 5 if args.quick else 9
    started, load0 = time.strftime("%Y-%m-%d %H:%M"), load()
    conv = conversions(reps)
    hour_ref = {r[1]: float(r[4].replace(",", "")) / 1e6 for r in conv if r[0] == "1 hour"}  # the loop, µs
    for direction, (c, p) in zip(("codes -> characters", "characters -> codes (with span check)"),
                                 hour_with_worker_malloc(), strict=True):
        conv.append(conversion_row("1 hour, worker's malloc thresholds", direction, c, p, hour_ref[direction], True))
    print(table(CONV_HEADER, conv), flush=True)
    hours_list = (0.05, 0.2, 0.5) if args.quick else (0.25, 1.0, 4.0)
    wrows, fixed, per_hour, load1 = write_costs(hours_list, 1 if args.quick else 3)
    print(table(["audio", "s", "s/h", "B/s"], wrows), fixed, per_hour, flush=True)
    rate = encoder_rate(20.0 if args.quick else 60.0)
    encode_per_hour = 3600 / rate

    def share(hours: float) -> float:
        w = fixed + per_hour * hours
        return w / (w + encode_per_hour * hours)

    bench_tar_h = 3 * 4 * 16.5 / 3600  # bench/pipeline.py's default tar: 3 documents x 4 utterances x ~16.5 s
    srows = [[f"bench/pipeline.py tar (~{bench_tar_h * 60:.1f} min)", f"{100 * share(bench_tar_h):.2f} %"],
             ["1 h of audio", f"{100 * share(1.0):.2f} %"]]
    srows += [[name, f"{100 * share(h):.3f} %"] for name, h in REAL_TARS.items()]
    body = f"""
Started {started} UTC, load average {load0:.1f} at the start, {load1:.1f} after the write runs (2 shared cores).

**Codes <-> characters** (`sodadata.encode.codes`: its C loop, and its NumPy path with the C loop switched off) against
the per-character loops of SPEC.md §1, median of 60 samples of 100 calls (9 single calls for the hour, 40 samples of 5 passes over the 40 utterances),
one bare call per utterance, samples of the three interleaved; random int16 codes
(what the encoder returns), 8 codebooks; the same output required of all three:

{table(CONV_HEADER, conv)}

**A task's write phase** (`_DocumentRows` -> `ShardWriter` zstd Parquet, commit with fsync, rejects file, JSON
record; Emilia-like documents of four 3–30 s utterances, random codes):

{table(["audio in the task", "seconds (median)", "seconds per audio-hour", "Parquet bytes per audio-second"],
        wrows)}

Model: **{fixed:.3f} s per task (the one-utterance task) + {per_hour:.4f} s per audio-hour** (slope of the
sized runs). Against the chunked encoder measured here
({fmt_x(rate)} real time per core by CPU time: {encode_per_hour:.0f} s per audio-hour), writing is this share of a
task's time (target < 2 %):

{table(["task", "Parquet + JSON share"], srows)}

The fixed part (fsyncs of the shard, the rejects file, the record and their directories) only shows on toy tars;
random codes compress worse than real ones, so the byte figures are an upper bound.

Conversions: the pipeline converts one utterance per call, a few hundred to a few thousand characters. The NumPy
path is a handful of NumPy calls on unsigned values (one `max` checks both ends of the range; the culprit is
looked for only on failure): a few microseconds of per-call overhead plus about a nanosecond per character, so
per call on 3–10 s utterances (Yodas2's captions are mostly that short) it stays below 50x the loop. The C loop
(`sodadata/encode/_codes.c`, built at install, optional) does a call in one pass over the buffer with no temporaries
and no per-call NumPy work beyond allocating the result; it only ever succeeds, and hands anything malformed to
the NumPy path, which raises and words the error, so both give the same output and the same errors
(tests/test_codes.py runs every test on both; tests/test_codes_native.py compares them on random good and bad
input). Converting a
bucket's utterances in one NumPy call (concatenate, convert, slice) was measured earlier and was no faster on
Emilia's mix. The two "malloc thresholds" rows rerun the hour in a fresh process with the thresholds a Dask
worker's encoder sets (against the loop's time from the plain process, identity checked there): in a plain process
glibc may hand the hour's megabyte arrays back to the kernel and fault them in again on the next call.
"""
    return publish("codes", "The small things: codes <-> characters, Parquet and JSON writing (issue 8)", body,
                   write=not args.quick)


if __name__ == "__main__":
    sys.exit(main())
