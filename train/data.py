"""The trainer's side of the data path: the recipe's ``MixtureStream`` for this host, checked against the model."""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import jax

from sodadata.mix.mixture import MixtureConfig
from sodadata.mix.packing import MixtureStream
from train.config import DEFAULTS, TrainConfig

log = logging.getLogger(__name__)


def load_mixture(cfg: TrainConfig) -> MixtureConfig:
    """The recipe with the run's overrides (shard root, tokenizer, window length) applied."""
    mixture = MixtureConfig.load(cfg.recipe, root=cfg.data)
    if cfg.tokenizer:
        mixture.tokenizer = cfg.tokenizer
    if cfg.seq_len is not None:
        if cfg.seq_len < 2:
            raise ValueError("seq_len must be at least 2")
        # Part of the recipe fingerprint: a checkpoint made with another window length refuses to resume.
        mixture.seq_len = cfg.seq_len
    return mixture


def fill_defaults(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with what the command line left out (None) taken from ``DEFAULTS`` for this backend.

    On CPU the defaults are sized for a laptop: a 32 x 4096 batch of the tiny model needs over 20 GB there
    (attention scores alone are batch x heads x 4096² floats) and minutes per step.
    """
    kind = "cpu" if jax.default_backend() == "cpu" else "accelerator"
    d = DEFAULTS[kind]
    batch, seq_len = cfg.batch_size, cfg.seq_len
    if batch is None or seq_len is None:
        mixture = load_mixture(cfg)
        if batch is None:
            batch = d.batch_size or math.lcm(mixture.lanes, jax.device_count(), jax.process_count())
        if seq_len is None:
            seq_len = min(mixture.seq_len, d.max_seq_len or mixture.seq_len)
    filled = replace(cfg, batch_size=batch, seq_len=seq_len,
                     loss_chunk_tokens=cfg.loss_chunk_tokens if cfg.loss_chunk_tokens is not None
                     else d.loss_chunk_tokens, remat=cfg.remat if cfg.remat is not None else d.remat)
    if kind == "cpu" and filled != cfg:
        log.info("CPU defaults for what the command line left out: batch %d x %d tokens, loss chunks of %d tokens, "
                 "remat %s", batch, seq_len, filled.loss_chunk_tokens, "on" if filled.remat else "off")
    return filled


def open_stream(cfg: TrainConfig) -> tuple[MixtureStream, list[str], int]:
    """This host's stream (``process_index`` of ``process_count``), the component names and the window length."""
    mixture = load_mixture(cfg)
    if cfg.batch_size < mixture.lanes:
        raise ValueError(f"--batch-size {cfg.batch_size} is smaller than the recipe's lanes ({mixture.lanes})")
    if mixture.seq_len > cfg.model.max_seq_len:
        log.warning("windows of %d tokens are longer than %s was configured for (%d)", mixture.seq_len,
                    cfg.model.name, cfg.model.max_seq_len)
    stream = MixtureStream(mixture, process_index=jax.process_index(), process_count=jax.process_count())
    vocab = stream.encoder.layout.vocab_size
    if vocab > cfg.model.vocab_size:
        raise ValueError(f"the tokenizer has {vocab:,} ids but model {cfg.model.name} has a vocabulary of "
                         f"{cfg.model.vocab_size:,}: pass --vocab {vocab}")
    log.info("stream: %s, %d-token windows, %d lanes, tokenizer %s (%s ids)", ", ".join(
        f"{c.name} {w:.3f} ({len(s.paths)} shards)" for c, w, s in zip(mixture.components, mixture.weights(),
                                                                     stream.shards)),
        mixture.seq_len, mixture.lanes, mixture.tokenizer, f"{vocab:,}")
    return stream, mixture.names, mixture.seq_len
