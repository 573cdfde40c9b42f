"""Model shapes and training settings (dataclasses; the CLI only fills them in).

Model shapes are SODA's (the Marin audio runs, ``marin-community/marin`` ``experiments/audio/exp1699_marin_audio_all.py``):
Qwen3-style decoders in Levanter's ``Qwen3Config`` -- RMSNorm (pre-norm), per-head RMSNorm on queries and keys,
grouped-query attention, SwiGLU MLP, no biases, Llama-3 RoPE (theta 500,000 with Llama-3 frequency scaling,
Levanter's ``Llama3RotaryEmbeddingsConfig`` defaults), and **untied** input/output embeddings at every size (SODA
sets ``tie_word_embeddings=False`` on all four). Shapes by size:

- ``135m``: ``experiments/audio/qwen3.py:qwen3_135m`` (hidden 512, 15 layers, 8 heads, 8 kv-heads, MLP 1792).
- ``600m``: ``experiments/qwen3.py:qwen3_0_6b_hd128`` = HF ``Qwen/Qwen3-0.6B`` (1024, 28, 16, 8, head 128, 3072).
- ``1.7b``: ``experiments/qwen3.py:qwen3_1_7b`` = HF ``Qwen/Qwen3-1.7B`` (2048, 28, 16, 8, head 128, 6144).
- ``4b``:   ``experiments/qwen3.py:qwen3_4b_hd128`` = HF ``Qwen/Qwen3-4B`` (2560, 36, 32, 8, head 128, 9728).

The names are SODA's; with the 144,644-token vocabulary and untied embeddings the real counts are larger
(``ModelConfig.n_params``; ``docs/training.md`` has the table). ``tiny`` is ours, for tests and CPU benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

VOCAB_SIZE = 144_644  # SPEC.md §3: Llama-3 base (128,256) + 4 markers + 16,384 audio tokens


@dataclass(frozen=True)
class RopeConfig:
    """Llama-3 RoPE (Levanter ``Llama3RotaryEmbeddingsConfig`` defaults, which SODA used)."""

    theta: float = 500_000.0
    factor: float | None = 8.0  # None: plain RoPE without Llama-3 frequency scaling
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class ModelConfig:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    head_dim: int | None = None  # None: hidden // heads (Levanter's default)
    vocab_size: int = VOCAB_SIZE
    tie_embeddings: bool = False
    qk_norm: bool = True
    rms_eps: float = 1e-6
    rope: RopeConfig = field(default_factory=RopeConfig)
    init_std: float = 0.02
    max_seq_len: int = 4096

    def __post_init__(self) -> None:
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if self.dim_per_head % 2:
            raise ValueError("head_dim must be even for RoPE")

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def n_params(self) -> int:
        d, hd, v = self.hidden, self.dim_per_head, self.vocab_size
        attn = d * hd * (self.heads + 2 * self.kv_heads) + self.heads * hd * d + (2 * hd if self.qk_norm else 0)
        mlp = 3 * d * self.intermediate
        per_layer = attn + mlp + 2 * d
        return self.layers * per_layer + v * d * (1 if self.tie_embeddings else 2) + d

    def with_vocab(self, vocab_size: int | None) -> ModelConfig:
        return self if vocab_size is None else replace(self, vocab_size=vocab_size)


MODELS: dict[str, ModelConfig] = {
    # 2 layers at width 64: seconds per step on a laptop CPU even with the full 144,644-token vocabulary.
    # Tied, because at this width the two vocab matrices would be nearly all of the model.
    "tiny": ModelConfig("tiny", hidden=64, layers=2, heads=4, kv_heads=2, intermediate=192, tie_embeddings=True),
    "135m": ModelConfig("135m", hidden=512, layers=15, heads=8, kv_heads=8, intermediate=1792),
    "600m": ModelConfig("600m", hidden=1024, layers=28, heads=16, kv_heads=8, intermediate=3072, head_dim=128),
    "1.7b": ModelConfig("1.7b", hidden=2048, layers=28, heads=16, kv_heads=8, intermediate=6144),
    "4b": ModelConfig("4b", hidden=2560, layers=36, heads=32, kv_heads=8, intermediate=9728, head_dim=128),
}


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with linear warmup and cosine decay; decoupled weight decay on matrices only (not norms)."""

    learning_rate: float = 3e-4
    warmup_steps: int | None = None  # None: 10% of the run
    min_lr_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.033  # SODA's value
    max_grad_norm: float | None = 1.0


@dataclass(frozen=True)
class MeshConfig:
    """Device mesh ("data", "fsdp"): batches split over both axes, parameters sharded over "fsdp".

    ``-1`` on one axis takes the remaining devices. The default puts every device of a host on "fsdp" and the
    hosts on "data" (parameter all-gathers stay inside a host's fast interconnect).
    """

    data: int | None = None  # None: jax.process_count()
    fsdp: int = -1


EXTEND_MODES = ("constant", "rewarm", "stretch")  # how a resumed run's LR schedule continues (train/schedule.py)


@dataclass(frozen=True)
class RunDefaults:
    """What a run uses where the command line says nothing; ``train.data.fill_defaults`` applies them."""

    batch_size: int | None  # global windows; None: the recipe's lanes (rounded up to a multiple of the devices)
    max_seq_len: int | None  # cap on the recipe's window length; None: no cap
    loss_chunk_tokens: int  # see TrainConfig.loss_chunk_tokens
    remat: bool


# CPU: sized for a laptop. SODA's mixture at these (16 lanes: 16 x 512 windows of the tiny model, SODA's
# 144,644-token output layer) peaks at 1.32 GB, the README's sample step (1 window) less (BENCHMARKS.md); remat
# costs the tiny model little, its time is the output layer. GPUs and TPUs: the batch SODA-scale runs start from and chunks of the size the old per-row chunking gave.
DEFAULTS = {
    "cpu": RunDefaults(batch_size=None, max_seq_len=512, loss_chunk_tokens=256, remat=True),
    "accelerator": RunDefaults(batch_size=32, max_seq_len=None, loss_chunk_tokens=2048, remat=False),
}


@dataclass(frozen=True)
class TrainConfig:
    recipe: str
    model: ModelConfig
    steps: int
    data: str | None = None  # root of the shard directories, if the recipe's component paths are relative
    tokenizer: str | None = None  # overrides the recipe's tokenizer (a tokenizer.json path or a Hub id)
    # None in the next four: DEFAULTS for the backend (train.data.fill_defaults).
    batch_size: int | None = None  # global, in windows of seq_len tokens
    seq_len: int | None = None  # the recipe's, capped by DEFAULTS
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    z_loss_weight: float = 1e-4  # SODA's value; keeps the softmax normalizer near 1 over a 144k vocabulary
    compute_dtype: str = "float32"  # "bfloat16" on accelerators; parameters and optimizer state stay float32
    remat: bool | None = None  # recompute each layer's activations in the backward pass (large models, long windows)
    # Tokens per device in one chunk of the output projection + cross-entropy: bounds the logits' memory at about
    # 3 x tokens x vocab x 4 bytes (measured on CPU with SODA's vocabulary: 0.33 GB per 256 tokens), whatever the
    # batch and window.
    loss_chunk_tokens: int | None = None
    seed: int = 0
    ckpt_dir: str | None = None
    ckpt_every: int = 0  # 0: only at the end of the run (and at --stop-after)
    keep_checkpoints: int = 2
    stop_after: int | None = None  # leave after this many steps in this invocation; the schedule still uses `steps`
    extend: str | None = None  # on resume with other `steps`: how the LR schedule continues (train/schedule.py)
    repeat_batch: bool = False  # train on the first batch over and over (a learning smoke test)
    log_every: int = 1
    metrics_path: str | None = None  # JSON lines: one per logged step (+ a setup record)
    eval_path: str | None = None  # validation rows (train/evaluation.py): an output root, component or published copy
    eval_every: int = 0  # evaluate every N steps (0: only at the end of the invocation)
    eval_max_tokens: int = 8_388_608  # validation tokens read (dev-clean: ~3.9M audio + text)
