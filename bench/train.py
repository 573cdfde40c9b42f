"""Training tokens per second of ``train/`` (stream -> global batch -> jitted step), and of the stream alone.

Data: generated shards of the four SODA components (tests/synthetic.py), the extended tokenizer on a small BPE base
(vocabulary 144,644, SPEC ids: the output layer has its real size), recipes/soda.yaml with ``--seq-len`` windows.
The run is ``train.trainer.train`` itself, so the figure includes reading, tokenizing and packing the batches and
the host-to-device transfer; the first step (compilation) is left out. The stream alone, on the same recipe and
batch shape, shows how much of that time is data.

Sizes measured: ``tiny`` on whatever JAX runs on here; ``135m`` as well when JAX sees a GPU or TPU.

Memory (``--only memory``, its own section): the peak resident memory of ``python -m train --model tiny`` run as
a separate process on one CPU device, at the CPU defaults (the README's training step) and at larger shapes, read
from the kernel's accounting of that process (``os.wait4``'s ``ru_maxrss``: the most it ever held, not a sample).

    python bench/train.py                 # a few minutes on a 2-core CPU; writes its sections of BENCHMARKS.md
    python bench/train.py --only memory   # peak RSS only
    python bench/train.py --steps 4 --no-write
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import jax  # noqa: E402

from bench.report import publish, table, write_section  # noqa: E402
from train.config import DEFAULTS, MODELS, MeshConfig, TrainConfig  # noqa: E402
from train.data import open_stream  # noqa: E402
from train.trainer import train  # noqa: E402

log = logging.getLogger("bench.train")
RECIPE = REPO / "recipes" / "soda.yaml"
SAMPLE_RECIPE = REPO / "recipes" / "sample.yaml"  # the README's: SODA's components and weights, 512 tokens, 1 lane


def make_data(root: Path) -> tuple[Path, Path]:
    from synthetic import SODA_LIKE, WORDS, make_output_dir

    from sodadata.mix.tokenizer import build_tokenizer, save_tokenizer, train_small_base

    specs = tuple(dataclasses.replace(c, shards=4, docs_per_shard=max(c.docs_per_shard, 8)) for c in SODA_LIKE)
    make_output_dir(root / "data", specs, seed=0)
    corpus = [" ".join(WORDS[i:] + WORDS[:i]).capitalize() + "." for i in range(len(WORDS))] * 4
    save_tokenizer(build_tokenizer(train_small_base(corpus, vocab_size=400)), root / "tok")
    return root / "data", root / "tok"


def stream_rate(cfg: TrainConfig, steps: int) -> float:
    stream, _, seq_len = open_stream(cfg)
    batches = stream.batches(cfg.batch_size)
    next(batches)  # file handles, first row groups
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return steps * cfg.batch_size * seq_len / (time.perf_counter() - start)


def measure(name: str, data: Path, tok: Path, args, ckpt_root: Path) -> list:
    dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    cfg = TrainConfig(
        recipe=str(RECIPE), model=MODELS[name], steps=args.steps, data=str(data), tokenizer=str(tok),
        batch_size=args.batch_size, seq_len=args.seq_len, mesh=MeshConfig(), compute_dtype=dtype,
        ckpt_dir=None, log_every=max(1, args.steps // 3),
    )
    start = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - start
    tps = result.tokens_per_second
    data_tps = stream_rate(cfg, max(3, args.steps // 2))
    device = jax.devices()[0].device_kind
    return [name, f"{MODELS[name].n_params() / 1e6:.1f} M", f"{device} x{jax.device_count()}", dtype,
            f"{args.batch_size} x {args.seq_len}", f"{tps:,.0f}", f"{args.batch_size * args.seq_len / tps:.2f} s",
            f"{data_tps:,.0f}", f"{100 * tps / data_tps:.2g} %", f"{result.losses[0]:.2f} -> {result.losses[-1]:.2f}",
            f"{wall:.0f} s"]


# (label, recipe, arguments of `python -m train` after --recipe/--data/--tokenizer); the first is the README's
# training step as printed (its tokenizer: the byte-level one `sodadata tokenizer build --base bytes` writes).
MEMORY_RUNS = (
    ("the README's step: recipes/sample.yaml --model tiny --steps 3 --ckpt DIR", SAMPLE_RECIPE,
     ("--model", "tiny", "--steps", "3", "--ckpt", "{work}/ckpt-readme")),
    ("recipes/soda.yaml --model tiny (16 lanes)", RECIPE, ("--model", "tiny", "--steps", "2")),
    ("... --no-remat", RECIPE, ("--model", "tiny", "--steps", "2", "--no-remat")),
    ("... --loss-chunk-tokens 2048 (the GPU/TPU default)", RECIPE,
     ("--model", "tiny", "--steps", "2", "--loss-chunk-tokens", "2048")),
    ("... --batch-size 16 --seq-len 1024 (8.5 GB before issue 14)", RECIPE,
     ("--model", "tiny", "--steps", "2", "--batch-size", "16", "--seq-len", "1024")),
)


# The measured command runs as the child of this small process, not of the caller: Linux carries a process's RSS
# high-water mark over exec from the memory it was forked (or vforked) from, so a command started straight from a
# large parent (pytest holding JAX and torch: ~2 GB) reports at least the parent's peak as its own.
_SPAWN_AND_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def peak_rss(cmd: list[str], env: dict, log_path: Path) -> tuple[float, float, int]:
    """(peak RSS in GB, wall seconds, exit status) of ``cmd`` run as its own process."""
    start = time.perf_counter()
    with open(log_path, "w") as err:
        done = subprocess.run([sys.executable, "-c", _SPAWN_AND_MEASURE, *cmd], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=err, text=True, check=True)
    maxrss_kib, returncode = (int(v) for v in done.stdout.split())
    return maxrss_kib * 1024 / 1e9, time.perf_counter() - start, returncode  # ru_maxrss: KiB on Linux


def memory(data: Path, work: Path) -> tuple[str, float]:
    """The memory table and the README step's peak (GB)."""
    from sodadata.mix.tokenizer import build_tokenizer, save_tokenizer

    tok = work / "tok-bytes"
    save_tokenizer(build_tokenizer("bytes"), tok, base="bytes")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    env.pop("XLA_FLAGS", None)  # one CPU device, as on a laptop
    rows, readme_gb = [], float("nan")
    for i, (label, recipe, args) in enumerate(MEMORY_RUNS):
        metrics = work / f"memory-{i}.jsonl"
        cmd = [sys.executable, "-m", "train", "--recipe", str(recipe), "--data", str(data), "--tokenizer", str(tok),
               *(a.format(work=work) for a in args), "--metrics", str(metrics)]
        gb, wall, rc = peak_rss(cmd, env, work / f"memory-{i}.log")
        if rc != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed (rc {rc}): {(work / f'memory-{i}.log').read_text()[-3000:]}")
        setup = next(r for r in map(json.loads, metrics.read_text().splitlines()) if r.get("event") == "setup")
        readme_gb = gb if i == 0 else readme_gb
        rows.append([label, f"{setup['batch_size']} x {setup['seq_len']}", f"{gb:.2f} GB", f"{wall:.0f} s"])
        log.warning("%s: %.2f GB", label, gb)
    return table(["run (`python -m train --recipe ...`)", "batch (windows x tokens)", "peak RSS",
                  "wall (incl. compile)"], rows), readme_gb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6, help="training steps per size (the first is compilation)")
    p.add_argument("--batch-size", type=int, default=16, help="global batch in windows (>= the recipe's lanes)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--only", choices=("throughput", "memory"), help="measure one of the two (default: both)")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sizes = ["tiny"] + (["135m"] if jax.default_backend() != "cpu" else [])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        data, tok = make_data(Path(tmp))
        if args.only != "throughput":
            mem_table, readme_gb = memory(data, Path(tmp))
            cpu = DEFAULTS["cpu"]
            mem_notes = (
                f"Peak resident memory of the whole `python -m train` process (Python, JAX, the stream, compilation "
                f"and the steps) as the kernel accounted it, one CPU device, generated shards of SODA's four "
                f"components, the byte-level tokenizer, SODA's 144,644-token output layer. The CPU defaults "
                f"(train/config.py `DEFAULTS`) are the recipe's lanes as windows (1 for recipes/sample.yaml, 16 for "
                f"recipes/soda.yaml), at most {cpu.max_seq_len} tokens each, chunks of the output layer + loss of "
                f"{cpu.loss_chunk_tokens} tokens per device and remat: the README's training step peaks at "
                f"{readme_gb:.2f} GB. About 1.1 GB is the floor of any run (Python, JAX and its compiler, the "
                f"tokenizer, the stream). Before issue 14 a chunk was 256 positions of every row (at 16 rows, "
                f"4,096 x 144,644 floats, three times over in the backward pass) and the defaults 32 x 4096 windows: "
                f"8.5 GB at 16 x 1024 and over 24 GB at the defaults (killed). Load average when started: "
                f"{load:.1f} (RSS does not depend on it; the wall times do)."
            )
            print(mem_table, "\n\n" + mem_notes)
            if not args.no_write:
                write_section("train_memory", "Training memory on CPU (issue 14)", mem_table + "\n\n" + mem_notes,
                              command="python bench/train.py --only memory")
            if args.only == "memory":
                return 0
        rows = [measure(name, data, tok, args, Path(tmp)) for name in sizes]
    if "135m" not in sizes:
        rows.append(["135m", f"{MODELS['135m'].n_params() / 1e6:.1f} M", "GPU: none lent", "bfloat16",
                     f"{args.batch_size} x {args.seq_len}", "unmeasured", "-", "-", "-", "-", "-"])
    body = table(["model", "params", "device", "compute", "batch (windows x tokens)", "train tokens/s",
                  "s / step", "stream alone tokens/s", "stream share of capacity", "loss (first -> last)",
                  "wall incl. compile"], rows)
    notes = (
        f"`train tokens/s`: all positions of the windows per second of `python -m train`'s loop (reading, "
        f"tokenizing, packing, transfer and the step), from the end of step 1 (compilation) to the end of step "
        f"{args.steps}. `stream alone`: `MixtureStream.batches` on the same recipe and batch shape, no model: "
        f"the share column is train rate / stream rate, i.e. how much of one host's data capacity the step uses. "
        f"The full 144,644-token output layer is most of tiny's work (the chunked loss recomputes it in the "
        f"backward pass). Load average when started: {load:.1f} on {os.cpu_count()} cores (other jobs were "
        f"running; figures on a shared machine are lower bounds). The 135m figure needs a GPU or TPU: none was "
        f"lent to this run, so it is unmeasured; `python bench/train.py` measures it where JAX sees one."
    )
    return publish("train", "Training throughput (issue 5)", body + "\n\n" + notes, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
