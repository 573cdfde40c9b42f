"""The trainer's side of the data path: the recipe's ``MixtureStream`` for this host, checked against the model."""

from __future__ import annotations

import logging

import jax

from sodadata.mixture import MixtureConfig
from sodadata.packing import MixtureStream
from train.config import TrainConfig

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
