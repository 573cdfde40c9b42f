"""The seeded random Mimi models: ``tiny-random`` (small: tests, the offline demo) and ``full-random`` (the real
architecture with random weights: benchmarks). Deterministic across processes and machines for the same torch;
their codes are NOT real Mimi codes."""

from __future__ import annotations

from sodadata.encode.codec_config import RANDOM_CODECS
from sodadata.encode.codes import NUM_CODEBOOKS


def tiny_random_config():
    """A small Mimi with the real framing (24 kHz, 1920 samples a frame, 2048 codes a codebook)."""
    from transformers import MimiConfig

    kwargs = dict(
        hidden_size=32,
        num_filters=4,
        num_residual_layers=1,
        codebook_dim=16,
        vector_quantization_hidden_dimension=16,
        num_quantizers=NUM_CODEBOOKS,
        num_semantic_quantizers=1,
        num_hidden_layers=2,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=2,
        upsample_groups=32,
    )
    return MimiConfig(**kwargs)


def _fill_codebooks(model, seed: int) -> None:
    """Give every codebook seeded random centroids: a fresh MimiModel's are all zero, so every code would be 0."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    for name, buf in model.named_buffers():
        if name.endswith("embed_sum"):
            buf.copy_(torch.randn(buf.shape, generator=gen, dtype=buf.dtype))
        elif name.endswith("cluster_usage"):
            buf.fill_(1.0)
    for module in model.modules():
        if hasattr(module, "_embed"):
            module._embed = None


def build_random_mimi(name: str, seed: int = 0, encoder_only: bool = False):
    """``tiny-random`` or ``full-random``: deterministic across processes and machines for the same torch."""
    import torch
    from transformers import MimiConfig, MimiModel

    if name == "tiny-random":
        config = tiny_random_config()
    elif name == "full-random":
        config = MimiConfig()
    else:
        raise ValueError(f"unknown random codec {name!r}; expected one of {RANDOM_CODECS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MimiModel(config)
    with torch.no_grad():
        _fill_codebooks(model, seed)
    if encoder_only:  # built whole first so the weights do not depend on encoder_only
        model.decoder = None
    return model.eval()

