"""Training tokens per second of ``train/`` (stream -> global batch -> jitted step), and of the stream alone.

Data: generated shards of the four SODA components (tests/synthetic.py), the extended tokenizer on a small BPE base
(vocabulary 144,644, SPEC ids: the output layer has its real size), recipes/soda.yaml with ``--seq-len`` windows.
The run is ``train.trainer.train`` itself, so the figure includes reading, tokenizing and packing the batches and
the host-to-device transfer; the first step (compilation) is left out. The stream alone, on the same recipe and
batch shape, shows how much of that time is data.

Sizes measured: ``tiny`` on whatever JAX runs on here; ``135m`` as well when JAX sees a GPU or TPU.

    python bench/train.py                 # a few minutes on a 2-core CPU; writes its section of BENCHMARKS.md
    python bench/train.py --steps 4 --no-write
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import jax  # noqa: E402

from bench.report import table, write_section  # noqa: E402
from train.config import MODELS, MeshConfig, TrainConfig  # noqa: E402
from train.data import open_stream  # noqa: E402
from train.trainer import train  # noqa: E402

log = logging.getLogger("bench.train")
RECIPE = REPO / "recipes" / "soda.yaml"


def make_data(root: Path) -> tuple[Path, Path]:
    from synthetic import SODA_LIKE, WORDS, make_output_dir

    from sodadata.tokenizer import build_tokenizer, save_tokenizer, train_small_base

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6, help="training steps per size (the first is compilation)")
    p.add_argument("--batch-size", type=int, default=16, help="global batch in windows (>= the recipe's lanes)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sizes = ["tiny"] + (["135m"] if jax.default_backend() != "cpu" else [])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        data, tok = make_data(Path(tmp))
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
    print(body)
    print()
    print(notes)
    if not args.no_write:
        write_section("train", "Training throughput (issue 5)", body + "\n\n" + notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
