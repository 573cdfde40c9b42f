"""``python -m train``: train a SODA-family decoder on a mixture recipe's shards (see docs/training.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

from train.config import (
    DEFAULTS,
    EXTEND_MODES,
    MODELS,
    MeshConfig,
    OptimizerConfig,
    TrainConfig,
)

log = logging.getLogger("train")


def parser() -> argparse.ArgumentParser:
    from sodadata.cli import OneLineParser

    p = OneLineParser(prog="python -m train", description=__doc__)
    p.add_argument("--recipe", required=True, help="mixture recipe YAML (e.g. recipes/soda.yaml)")
    p.add_argument("--data", help="directory (or URL) the recipe's relative component paths are resolved against")
    p.add_argument("--model", default="tiny", choices=sorted(MODELS), help="model size (default: tiny)")
    p.add_argument("--steps", type=int, required=True, help="total optimizer steps (the LR schedule's length)")
    cpu, acc = DEFAULTS["cpu"], DEFAULTS["accelerator"]
    p.add_argument("--batch-size", type=int,
                   help=f"global batch, in windows (default: {acc.batch_size}; on CPU the recipe's lanes)")
    p.add_argument("--seq-len", type=int,
                   help=f"window length in tokens (default: the recipe's; on CPU at most {cpu.max_seq_len})")
    p.add_argument("--loss-chunk-tokens", type=int,
                   help="tokens per device in one chunk of the output layer + loss; its memory is about 3 x this x "
                        f"vocab x 4 bytes (default: {acc.loss_chunk_tokens}; on CPU {cpu.loss_chunk_tokens})")
    p.add_argument("--tokenizer", help="tokenizer.json path or Hub id (default: the recipe's)")
    p.add_argument("--vocab", type=int, help="override the model's vocabulary size (tests with a small tokenizer)")
    p.add_argument("--lr", type=float, default=OptimizerConfig.learning_rate, help="peak learning rate")
    p.add_argument("--warmup", type=int,
                   help="warmup steps (default: 10%% of --steps; with --extend rewarm: of the steps left)")
    p.add_argument("--min-lr-ratio", type=float, default=OptimizerConfig.min_lr_ratio)
    p.add_argument("--weight-decay", type=float, default=OptimizerConfig.weight_decay)
    p.add_argument("--mesh-data", type=int, help="size of the 'data' mesh axis (default: number of hosts)")
    p.add_argument("--mesh-fsdp", type=int, default=-1, help="size of the 'fsdp' axis (default: the rest)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    p.add_argument("--remat", action=argparse.BooleanOptionalAction,
                   help="recompute layer activations in the backward pass (default: on CPU only)")
    p.add_argument("--seed", type=int, default=0, help="parameter initialization seed")
    p.add_argument("--ckpt", help="checkpoint directory; a run resumes from its newest checkpoint")
    p.add_argument("--ckpt-every", type=int, default=0, help="checkpoint every N steps (default: only at the end)")
    p.add_argument("--keep", type=int, default=2, help="checkpoints to keep (default: 2)")
    p.add_argument("--extend", choices=EXTEND_MODES,
                   help="resuming with other --steps: constant (hold the final LR), rewarm (warm up again, new "
                        "cosine), stretch (spread the rest of the cosine); docs/training.md section 6")
    p.add_argument("--stop-after", type=int, help="leave after N steps of this invocation (checkpointing first)")
    p.add_argument("--repeat-batch", action="store_true", help="train on the first batch repeatedly (smoke test)")
    p.add_argument("--metrics", help="append one JSON line per step (and a setup record) to this file")
    p.add_argument("--log-every", type=int, default=1)
    p.add_argument("--eval", metavar="DIR_OR_URL",
                   help="validation rows: a sodadata output root, one component folder, a glob of Parquet files or a "
                        "published copy (what --data accepts); their NLL is logged and written to --metrics")
    p.add_argument("--eval-every", type=int, default=0,
                   help="with --eval: evaluate every K steps, and at the end (default 0: only at the end)")
    p.add_argument("--eval-max-tokens", type=int, default=TrainConfig.eval_max_tokens,
                   help="with --eval: read the validation rows up to this many tokens (default: %(default)s)")
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() first (multi-host: a TPU pod slice, a GPU cluster)")
    p.add_argument("--coordinator", help="with --distributed where not auto-detected: host:port of process 0")
    p.add_argument("--num-processes", type=int, help="with --coordinator: number of processes")
    p.add_argument("--process-id", type=int, help="with --coordinator: this process's index")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    model = MODELS[a.model].with_vocab(a.vocab)
    if a.seq_len is not None and a.seq_len < 2:
        raise ValueError("--seq-len must be at least 2")
    return TrainConfig(
        recipe=a.recipe, model=model, steps=a.steps, data=a.data, tokenizer=a.tokenizer, batch_size=a.batch_size,
        seq_len=a.seq_len, loss_chunk_tokens=a.loss_chunk_tokens,
        optimizer=replace(OptimizerConfig(), learning_rate=a.lr, warmup_steps=a.warmup, min_lr_ratio=a.min_lr_ratio,
                          weight_decay=a.weight_decay),
        mesh=MeshConfig(data=a.mesh_data, fsdp=a.mesh_fsdp), compute_dtype=a.dtype, remat=a.remat, seed=a.seed,
        ckpt_dir=a.ckpt, ckpt_every=a.ckpt_every, keep_checkpoints=a.keep, stop_after=a.stop_after, extend=a.extend,
        repeat_batch=a.repeat_batch, log_every=a.log_every, metrics_path=a.metrics, eval_path=a.eval,
        eval_every=a.eval_every, eval_max_tokens=a.eval_max_tokens,
    )


def setup_logging(verbose: bool) -> None:
    from sodadata.cli import setup_logging as setup_sodadata_logging

    setup_sodadata_logging(verbose)  # the format, and Hub retries (a --tokenizer from the Hub) hidden
    if not verbose:
        # Their INFO lines read as faults: JAX's probe of every backend it knows ("Unable to initialize backend
        # 'tpu'" on any machine without one) and optax's note, through absl, that a schedule part of zero steps
        # (no warmup in a 1-step run) is constant. --verbose shows them.
        for name in ("jax", "absl"):
            logging.getLogger(name).setLevel(logging.WARNING)


def interrupted_line(ckpt: str | None) -> str:
    """The one line Ctrl-C prints: what was kept and how to go on."""
    if not ckpt:
        return "interrupted: nothing was saved (no --ckpt); pass --ckpt DIR to make a run resumable"
    from train.checkpoint import latest

    last = latest(ckpt)
    if last is None:
        return f"interrupted before the first checkpoint in {ckpt}: rerun the same command to start again"
    return f"interrupted: rerun the same command to resume from {last} (steps after it are lost)"


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    if a.eval is None and (a.eval_every or a.eval_max_tokens != TrainConfig.eval_max_tokens):
        p.error("--eval-every and --eval-max-tokens need --eval")
    if a.eval_every < 0 or a.eval_max_tokens < 2:
        p.error("--eval-every must be at least 0 and --eval-max-tokens at least 2")
    setup_logging(a.verbose)
    try:
        return _main(a)
    except KeyboardInterrupt:
        print(interrupted_line(a.ckpt), file=sys.stderr)
        return 130


def _main(a: argparse.Namespace) -> int:
    if a.steps < 1:
        log.error("--steps must be at least 1")
        return 2
    from sodadata.mix.streaming import check_readable
    from sodadata.read.recipe import ConfigError

    try:  # a bucket's missing backend, refused credentials or absent prefix: one line before JAX starts
        for location in (a.data, a.eval):
            if location:
                check_readable(location)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    import jax

    if a.distributed:
        # On a TPU VM pod slice (or a SLURM / Open MPI cluster) every argument is discovered from the environment;
        # elsewhere (plain GPU or CPU hosts) pass the coordinator, the process count and this process's index.
        jax.distributed.initialize(a.coordinator, a.num_processes, a.process_id)
    from train.schedule import ScheduleError
    from train.trainer import train

    try:
        cfg = config_from_args(a)
        train(cfg)
    except ScheduleError as e:  # a resume that contradicts its checkpoint: nothing was read or compiled yet
        log.error("%s", e)
        return 2
    except (ValueError, FileNotFoundError) as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
