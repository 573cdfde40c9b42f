"""The default command as a user types it (issue 17): end to end, start-up included, beside what bounds it.

On espeak-ng speech (real synthesized speech, English, 3-30 s utterances) in Emilia's real layout (tars of MP3 +
JSON pairs, both subsets), full-size Mimi with random weights (``--codec full-random``: the real cost), in one run
and interleaved over ``--reps`` repetitions, each figure as min / median / max:

1. the default command, as typed: ``python -m sodadata.recipes.emilia --source SRC --out OUT --codec full-random``
   (a fresh process: interpreter, imports, cluster, model load and the engine check all count), with the engine
   check's cache warm (any run after the first on a machine) and empty (the first run on a machine), and with
   transformers' Mimi modules in the workers instead of ``sodadata.encode.lean_mimi``'s (``SODADATA_LEAN_MIMI=0``:
   what the start-up cost before);
2. the same with ``--workers 1 --torch-threads 1``: the 1 -> N workers scaling; and one shard to do
   (``--limit-shards 1``) by default (the cores as torch threads) and with ``--torch-threads 1``: why fewer shards
   than cores get more torch threads;
3. ``MimiModel.encode`` one utterance at a time on the same decoded audio (one process, torch's threads on every
   usable core, model warm: the encode calls alone);
4. the machine's own ceiling: the bare warm sodadata encoder (1 torch thread) on a fixed minute of audio in N
   processes at once (N = usable cores), and in 1 process: what the hardware allows, Dask and tars aside;
5. peak resident memory of each worker process of the default command (the target is <= 2 GB).

And the same table for ``--codebooks 1`` (the SEANet costs the same; the quantizer shrinks). The first source gets
every row above for every ``--codebooks`` value; later (longer) sources get the default command, MimiModel.encode
and the ceiling with 8 codebooks (``--full-grid``: everything everywhere, about twice as long).

    python bench/defaults.py                 # 10 min in 4 tars and 1 h in 8 tars (~45 min); writes BENCHMARKS.md
    python bench/defaults.py --quick         # 1 min in 2 tars, 1 repetition, prints only (for development)
    python bench/defaults.py --sources 10min --reps 3

Generated speech is cached in ``.cache/bench-speech/`` (espeak-ng and the MP3 encoder are slow).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench._common import REPO, SR, RssSampler, load

sys.path.insert(0, str(REPO / "scripts"))  # make_sample.py: the samples' sentences, voices and espeak-ng call

SPEECH_CACHE = REPO / ".cache" / "bench-speech"
SOURCES = {  # name: (minutes of speech, tars)
    "10min": (10.0, 4),
    "1h": (60.0, 8),
    "quick": (1.0, 2),
}
CEILING_SECONDS = (4.0, 7.5, 11.0, 16.0, 22.0)  # one fixed minute of Emilia-like lengths
log = logging.getLogger("bench.defaults")


# --- the source: espeak-ng speech in Emilia's layout ------------------------------------------------------------


def _sentences() -> tuple[list[str], list[str]]:
    from make_sample import BOOK_SENTENCES, SENTENCES, VOICES  # the samples' own sentences and voices

    return [*SENTENCES, *BOOK_SENTENCES], VOICES


def build_source(minutes: float, tars: int, seed: int = 17) -> Path:
    """``tars`` Emilia tars (half Emilia, half Emilia-YODAS) holding ``minutes`` of espeak-ng speech; cached by
    its parameters and the espeak-ng version."""
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    key = hashlib.sha256(json.dumps([minutes, tars, seed, version, 1]).encode()).hexdigest()[:16]
    root = SPEECH_CACHE / f"emilia-{minutes:g}min-{tars}tars-{key}"
    if (root / "done").exists():
        return root
    from fixtures import encode_audio, write_tar
    from make_sample import speak

    from sodadata.read.completeness import write_sample_marker

    shutil.rmtree(root, ignore_errors=True)
    sentences, voices = _sentences()
    clips = {}  # (sentence, voice) -> 24 kHz speech: espeak-ng runs once per pair
    rng = np.random.default_rng(seed)
    pause = np.zeros(int(0.3 * SR), dtype=np.float32)
    per_tar = minutes * 60 / tars
    for t in range(tars):
        subset, folder = ("emilia", "Emilia") if t % 2 == 0 else ("emilia-yodas", "Emilia-YODAS")
        index = t // 2
        members, seconds, w = [], 0.0, 0
        doc = f"EN_B{index:05d}_S00000" if subset == "emilia" else f"EN_bench-vid{index}_"
        while seconds < per_tar:
            target = float(rng.uniform(3.0, 30.0))
            parts, said, voice, n = [], [], voices[int(rng.integers(len(voices)))], 0
            while n < target * SR:
                sentence = sentences[int(rng.integers(len(sentences)))]
                if (sentence, voice) not in clips:
                    clips[(sentence, voice)] = speak(sentence, voice)
                parts += [clips[(sentence, voice)], pause]
                said.append(sentence)
                n += len(parts[-2]) + len(pause)
            wave = np.concatenate(parts)[: int(target * SR)]
            key = f"{doc}_W{w:06d}"
            meta = {"id": key, "wav": f"{key}.mp3", "text": " " + " ".join(said), "duration": round(len(wave) / SR, 3),
                    "speaker": doc, "language": "en", "dnsmos": 3.2}
            members += [(f"{key}.json", json.dumps(meta).encode()), (f"{key}.mp3", encode_audio(wave))]
            seconds += len(wave) / SR
            w += 1
            if w % 20 == 0:  # Emilia's documents: a speaker's run of utterances
                doc = doc[:-1] + chr(ord(doc[-1]) + 1) if subset == "emilia-yodas" else doc.replace("_S", "_T", 1)
        write_tar(root / folder / "EN" / f"EN-B{index * 60:06d}.tar", members)
    write_sample_marker(root, "emilia", "bench/defaults.py: espeak-ng speech")
    (root / "done").write_text("")
    return root



def run_command(source: Path, work: Path, extra: list[str], cache: Path, codec: str, env_extra: dict | None = None) -> dict:
    """One run of the recipe CLI in a fresh process: wall clock from exec to exit, peak RSS of every process."""
    import psutil

    out = Path(tempfile.mkdtemp(dir=work))
    cmd = [sys.executable, "-m", "sodadata.recipes.emilia", "--source", str(source), "--out", str(out),
           "--codec", codec, *extra]
    env = {**os.environ, "SODADATA_CACHE": str(cache), "PYTHONPATH": str(REPO), **(env_extra or {})}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def tree():
        try:
            p = psutil.Process(proc.pid)
            return [proc.pid] + [c.pid for c in p.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    with RssSampler(pids=tree, interval=0.05) as rss:
        stdout, stderr = proc.communicate(timeout=6 * 3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {stderr[-2000:]}")
    (summary,) = [json.loads(p.read_text()) for p in (out / "_runs").glob("*.json")]
    records = [json.loads(p.read_text()) for p in out.glob("*/*/*.json")]
    audio = sum(r["audio_seconds"] for r in records)
    workers = [mib for pid, mib in rss.peak.items() if pid != proc.pid]
    shutil.rmtree(out)
    return {"wall": wall, "audio": audio, "x": audio / wall, "layout": stdout.splitlines()[0].rpartition("; ")[2][:-1],
            "worker_peak_gb": max(workers, default=rss.peak.get(proc.pid, 0.0)) / 1024,
            "driver_peak_gb": rss.peak.get(proc.pid, 0.0) / 1024, "startup": summary["startup"],
            "encode": sum(r["timings"].get("encode", 0.0) for r in records)}


# --- beside it: MimiModel.encode, and the machine's ceiling -----------------------------------------------------


def mimi_encode_rate(waves: list[np.ndarray], codebooks: int, codec: str) -> float:
    """``MimiModel.encode`` one utterance at a time, torch on every usable core, model warm: x real time."""
    import torch

    from sodadata.encode.codec import build_random_mimi, reference_encode
    from sodadata.run.worker_layout import usable_cores

    torch.set_num_threads(usable_cores())
    model = build_random_mimi(codec, encoder_only=True)
    reference_encode(model, waves[0][: 3 * SR], codebooks)  # warm
    t0 = time.perf_counter()
    for w in waves:
        reference_encode(model, w, codebooks)
    return sum(len(w) for w in waves) / SR / (time.perf_counter() - t0)


def _ceiling_worker(codebooks: int, codec: str, barrier, results) -> None:
    import torch

    torch.set_num_threads(1)
    from bench._common import speech_clips
    from sodadata.encode.codec import CodecConfig, MimiEncoder

    enc = MimiEncoder(CodecConfig(codec=codec, threads=1, num_codebooks=codebooks))
    waves = speech_clips(CEILING_SECONDS, seed=7)
    enc.encode(waves)  # warm: model, engine check, allocator
    barrier.wait()
    t0 = time.perf_counter()
    enc.encode(waves)
    results.put(time.perf_counter() - t0)


def ceiling(processes: int, codebooks: int, codec: str) -> float:
    """The bare warm encoder in ``processes`` processes at once: aggregate x real time."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_ceiling_worker, args=(codebooks, codec, barrier, results)) for _ in range(processes)]
    for p in procs:
        p.start()
    walls = [results.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    return processes * sum(CEILING_SECONDS) / max(walls)


# --- main -------------------------------------------------------------------------------------------------------


def spread(values: list[float], fmt: str = "{:.1f}x") -> str:
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


ALL_RUNS = ("default", "transformers", "cold", "one", "shard", "shard_one")
# the default command with transformers' Mimi modules instead of sodadata.encode.lean_mimi's (what it did before)
TRANSFORMERS_MODULES = {"SODADATA_LEAN_MIMI": "0"}


def measure(source: Path, work: Path, reps: int, codebooks: int, cores: int, reference_seconds: float,
            codec: str, kinds: tuple[str, ...] = ALL_RUNS) -> dict:
    from bench.pipeline import decoded_audio  # one decoder of a bench source (bench/gpu.py uses it too)

    waves = decoded_audio(source)
    seconds = sum(len(w) for w in waves) / SR
    ref_waves, total = [], 0.0  # MimiModel.encode on (a prefix of) the same audio: a rate, not a total
    for w in waves:
        if total >= reference_seconds:
            break
        ref_waves.append(w)
        total += len(w) / SR
    extra = ["--no-progress"] + ([] if codebooks == 8 else ["--codebooks", str(codebooks)])
    warm_cache = work / f"cache-warm-{codebooks}"
    # Fill the caches (not timed) for each key the warm runs look up: the engine check is cached per modules
    # (lean_mimi's or transformers') and torch thread count (one shard to do gets the cores as threads).
    run_command(source, work, extra, warm_cache, codec)
    if "transformers" in kinds:
        run_command(source, work, extra, warm_cache, codec, TRANSFORMERS_MODULES)
    if "shard" in kinds:
        run_command(source, work, [*extra, "--limit-shards", "1"], warm_cache, codec)
    rows: dict[str, list] = {k: [] for k in (*kinds, "mimi", "ceiling_n", "ceiling_1")}
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    loads = [load()]
    for rep in range(reps):
        for name, args, cache in (("default", extra, warm_cache),
                                  ("transformers", extra, warm_cache),
                                  ("cold", extra, work / f"cache-cold-{codebooks}-{rep}"),
                                  ("one", [*extra, "--workers", "1", "--torch-threads", "1"], warm_cache),
                                  # one shard to do (--limit-shards 1): the default gives it the cores as torch
                                  # threads; against one thread, as a worker of the many-shard layout has
                                  ("shard", [*extra, "--limit-shards", "1"], warm_cache),
                                  ("shard_one", [*extra, "--limit-shards", "1", "--torch-threads", "1"], warm_cache)):
            if name not in kinds:
                continue
            got = run_command(source, work, args, cache, codec,
                              TRANSFORMERS_MODULES if name == "transformers" else None)
            runs[name].append(got)
            rows[name].append(got["x"])
            print(f"codebooks {codebooks} rep {rep} {name}: {got['x']:.1f}x ({got['wall']:.1f} s, {got['layout']}, "
                  f"worker peak {got['worker_peak_gb']:.2f} GB, start-up {got['startup']})", flush=True)
        rows["mimi"].append(mimi_encode_rate(ref_waves, codebooks, codec))
        rows["ceiling_n"].append(ceiling(cores, codebooks, codec))
        rows["ceiling_1"].append(ceiling(1, codebooks, codec))
        loads.append(load())
        print(f"codebooks {codebooks} rep {rep}: MimiModel.encode {rows['mimi'][-1]:.1f}x, ceiling "
              f"{rows['ceiling_n'][-1]:.1f}x in {cores} processes, {rows['ceiling_1'][-1]:.1f}x in 1", flush=True)
    return {"seconds": seconds, "utterances": len(waves), "reference_seconds": total, "rows": rows, "runs": runs,
            "loads": loads}


def table_for(name: str, m: dict, cores: int) -> str:
    from bench.report import table

    rows, runs = m["rows"], m["runs"]
    default = runs["default"]
    layout = default[0]["layout"]
    ceiling_ratio = [n / o for n, o in zip(rows["ceiling_n"], rows["ceiling_1"])]
    peak = [r["worker_peak_gb"] for k in runs for r in runs[k]]
    workers = int(layout.split(" workers")[0]) if " workers" in layout else 1

    def startup(key, kind="default"):
        return spread([r["startup"][key]["max"] for r in runs[kind]], "{:.1f}")

    def share(values):
        return spread([100 * v for v in values], "{:.0f} %")

    prefix = "" if m["reference_seconds"] >= m["seconds"] - 1 else f", first {m['reference_seconds'] / 60:.0f} min"
    labels = {
        "default": f"default command ({layout}), caches warm",
        "transformers": "default command, transformers' Mimi modules (`SODADATA_LEAN_MIMI=0`), caches warm",
        "cold": "default command, first run on the machine (empty cache)",
        "one": "`--workers 1 --torch-threads 1`",
        "shard": f"one shard to do (`--limit-shards 1`), default ({runs['shard'][0]['layout'] if 'shard' in runs else ''})",
        "shard_one": "one shard to do, `--torch-threads 1`",
    }
    body = [[labels[k], spread(rows[k])] for k in runs]
    body += [
        [f"MimiModel.encode one utterance at a time ({cores} torch threads, warm, encode calls only{prefix})",
         spread(rows["mimi"])],
        [f"ceiling: bare warm encoder in {cores} processes at once", spread(rows["ceiling_n"])],
        ["ceiling: bare warm encoder in 1 process", spread(rows["ceiling_1"])],
    ]
    # start-up: the cluster's start plus the longest codec load + engine check a worker's first shard paid
    def start_of(kind):
        return [(r["startup"]["cluster_start"] or 0.0) + r["startup"]["model_load"]["max"]
                + r["startup"]["engine_check"]["max"] for r in runs[kind]]

    start = start_of("default")
    lines = [table(["run", "x real time, min / median / max"], body), "",
             f"- the default command against the ceiling ({cores} bare encoders), per repetition: "
             f"{share([d / c for d, c in zip(rows['default'], rows['ceiling_n'])])}; the share of its wall clock "
             f"outside encoding (interpreter, imports, cluster, codec load, engine check, decoding not overlapped, "
             f"writing, the last shard's tail): {share([1 - r['encode'] / workers / r['wall'] for r in default])}.",
             f"- start-up in the default command (cluster start + the longest codec load and engine check of a "
             f"worker's first shard): {spread(start, '{:.1f}')} s, {share([s / r['wall'] for s, r in zip(start, default)])} "
             f"of its wall clock; codec load {startup('model_load')} s (the import of torch included), "
             f"engine check {startup('engine_check')} s, cluster start "
             f"{spread([r['startup']['cluster_start'] or 0.0 for r in default], '{:.1f}')} s.",
             f"- peak resident memory of a worker process (every run above): {max(peak):.2f} GB at most "
             "(target <= 2 GB); the driver process: "
             f"{max(r['driver_peak_gb'] for r in default):.2f} GB."]
    if "transformers" in runs:
        other = start_of("transformers")
        lines.append(f"- with transformers' Mimi modules (`SODADATA_LEAN_MIMI=0`, which every worker imports): start-up "
                     f"{spread(other, '{:.1f}')} s, {share([s / r['wall'] for s, r in zip(other, runs['transformers'])])} "
                     f"of the wall clock; codec load {startup('model_load', 'transformers')} s; the default over it, "
                     f"per repetition: {spread([a / b for a, b in zip(rows['default'], rows['transformers'])], '{:.2f}x')}.")
    if "cold" in runs:
        lines.append(f"- with an empty cache (a machine's first run: the engine check's seven references, and "
                     f"full-random's weights drawn and saved) codec load took {startup('model_load', 'cold')} s and "
                     f"the check {startup('engine_check', 'cold')} s of a worker's first shard.")
    if "one" in runs:
        scaling = [d / o for d, o in zip(rows["default"], rows["one"])]
        lines.append(f"- scaling 1 -> {workers} workers (default over `--workers 1 --torch-threads 1`, per "
                     f"repetition): {spread(scaling, '{:.2f}x')}; the ceiling's own ratio ({cores} bare encoders "
                     f"over 1): {spread(ceiling_ratio, '{:.2f}x')}.")
    if "shard" in runs and "shard_one" in runs:
        lines.append(f"- one shard to do: the default's torch threads over one thread: "
                     f"{spread([a / b for a, b in zip(rows['shard'], rows['shard_one'])], '{:.2f}x')} (why fewer "
                     "shards than cores get the cores as torch threads: sodadata/run/worker_layout.py).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 min of speech in 2 tars, 1 repetition, prints only")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sources", default="10min,1h", help="comma list of: " + ", ".join(SOURCES))
    parser.add_argument("--codebooks", default="8,1", help="comma list: a table for each")
    parser.add_argument("--reference-minutes", type=float, default=10.0,
                        help="audio given to MimiModel.encode per source (a rate: the first N minutes)")
    parser.add_argument("--codec", default="full-random", choices=("full-random", "tiny-random"),
                        help="tiny-random: a smoke run of this script itself (its figures mean nothing; prints only)")
    parser.add_argument("--full-grid", action="store_true",
                        help="every row and codebooks value on every source (by default the sources after the first "
                             "get the default command, MimiModel.encode and the ceiling, --codebooks 8 only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if args.quick:
        args.reps, args.sources = 1, "quick"
    from bench.report import publish
    from sodadata.run.worker_layout import usable_cores

    cores = usable_cores()
    started, load_start = time.strftime("%Y-%m-%d %H:%M"), load()
    sections = []
    work = Path(tempfile.mkdtemp(prefix="sodadata-bench-defaults-"))
    try:
        for name in args.sources.split(","):
            minutes, tars = SOURCES[name]
            t0 = time.perf_counter()
            source = build_source(minutes, tars)
            print(f"source {name}: {source} ({time.perf_counter() - t0:.0f} s to find or make)", flush=True)
            first = name == args.sources.split(",")[0]
            for codebooks in (int(c) for c in args.codebooks.split(",")):
                if not (first or args.full_grid or codebooks == 8):
                    continue  # --codebooks 1 on the first source only (its cost is the SEANet's, as with 8)
                kinds = ALL_RUNS if first or args.full_grid else ("default",)
                m = measure(source, work, args.reps, codebooks, cores, args.reference_minutes * 60, args.codec, kinds)
                title = (f"**{m['seconds'] / 60:.1f} min of speech in {tars} tars** ({m['utterances']} utterances), "
                         f"`--codebooks {codebooks}`{' (the default)' if codebooks == 8 else ''}; load average "
                         f"{min(m['loads']):.1f}–{max(m['loads']):.1f} around the runs:")
                sections.append(f"{title}\n\n{table_for(name, m, cores)}")
                print(sections[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    body = f"""
Started {started} UTC, load average {load_start:.1f} at the start; {cores} usable cores. {args.reps} interleaved
repetitions: min / median / max of each figure. Speech: espeak-ng sentences (the samples' voices) joined into
3–30 s utterances, MP3 in Emilia's real layout (both subsets); codec `full-random` (Mimi's architecture and cost,
random weights). The default command is run as typed, in a fresh process (x real time: the audio over the
command's whole wall clock, interpreter start, imports, cluster, codec load and engine check included):
`python -m sodadata.recipes.emilia --source SRC --out OUT --codec full-random --no-progress`, its layout chosen by
`sodadata/run/worker_layout.py`. "Engine check cached": the chunked engine's check found in the cache a first run on
the machine left (`SODADATA_CACHE`, docs/performance.md); "first run": an empty cache. The ceiling: the sodadata
encoder alone (1 torch thread, warm, a fixed minute of audio) in every process at once (aggregate), then alone.

{chr(10).join(s + chr(10) for s in sections)}
"""
    return publish("defaults", "The default command as a user meets it: end to end, start-up included (issue 17)",
                   body, write=not args.quick and args.codec == "full-random")


if __name__ == "__main__":
    sys.exit(main())
