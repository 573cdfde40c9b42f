"""Which Mimi to run and how: :class:`CodecConfig` (checked when built, before any work) and the codec's constants.

``--codec`` is a Hub id (default ``kyutai/mimi``), a local ``MimiModel.save_pretrained`` directory, or one of
two seeded random models: ``tiny-random`` (small, for tests and the offline demo) and ``full-random`` (the real
architecture with random weights: it costs exactly what real Mimi costs, for benchmarks). Their codes are NOT
real Mimi codes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sodadata.encode.codes import NUM_CODEBOOKS, SAMPLE_RATE

DEFAULT_CODEC = "kyutai/mimi"
RANDOM_CODECS = ("tiny-random", "full-random")
MAX_PIECE_SECONDS = 60
MAX_PIECE_SAMPLES = MAX_PIECE_SECONDS * SAMPLE_RATE  # 750 frames exactly: pieces concatenate frame-aligned
DTYPES = ("float32", "tf32", "bfloat16", "float16")
ENGINES = ("auto", "reference")  # auto: the chunked CPU path where verified (see sodadata.encode.chunked_engine); reference: plain
# CPU chunk of the high-rate SEANet stages: 1 s. bench/encode.py measures 0.2-4 s chunks within ~10 % of each
# other, all bit-identical to whole-signal calls, 1 s the fastest in one process; the smallest lose a little to
# per-chunk overhead, the largest to cache misses, and with one worker per core side by side larger chunks also
# contend for the shared cache (bench/pipeline.py, chunk control). The last chunk absorbs the remainder (see
# sodadata.encode.chunked_engine.ChunkedEncoder.absorb_tail). Another model may need another chunk (``CodecConfig.chunk_seconds``): the tiny test
# model's narrow stages get other oneDNN kernels on 1 s chunks than on the whole signal, which the per-process
# check catches, and it then runs the reference path.
CPU_CHUNK_SAMPLES = 24_000
NOT_REAL_WARNING = (
    "codec {name!r} is a seeded RANDOM model: its codes are NOT real Mimi codes. "
    "Use it for tests, demos and benchmarks only; use --codec kyutai/mimi for training data."
)




@dataclass(frozen=True)
class CodecConfig:
    """Which codec to load and how to run it. Frozen and hashable: it keys the per-process model cache."""

    codec: str = DEFAULT_CODEC
    revision: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int | None = None  # None: 1 on CPU (batching is slower there), 64 on CUDA
    max_batch_seconds: float | None = None  # padded audio per batch; None: 120 s on CPU, 1,920 s on CUDA
    num_codebooks: int = NUM_CODEBOOKS
    threads: int | None = None  # torch intra-op threads; None leaves torch's default
    engine: str = "auto"  # see ENGINES; both give the same codes, "reference" is the slower plain MimiModel.encode
    chunk_seconds: float | None = None  # the CPU chunked engine's chunk; None: see CPU_CHUNK_SAMPLES

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if not 1 <= self.num_codebooks <= NUM_CODEBOOKS:
            raise ValueError(f"num_codebooks must be in 1..{NUM_CODEBOOKS}")
        if self.chunk_seconds is not None and not self.chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be positive, got {self.chunk_seconds}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"--device must be cpu, cuda or cuda:N, got {self.device!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_batch_seconds is not None and not self.max_batch_seconds > 0:
            raise ValueError(f"--max-batch-seconds must be positive, got {self.max_batch_seconds}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--torch-threads must be at least 1, got {self.threads}")

    @property
    def is_random(self) -> bool:
        return self.codec in RANDOM_CODECS

    def effective_batch_size(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return 1 if self.device == "cpu" else 64

    def effective_max_batch_samples(self) -> int:
        seconds = self.max_batch_seconds
        if seconds is None:
            seconds = 120.0 if self.device == "cpu" else 1920.0
        return int(seconds * SAMPLE_RATE)

    def effective_chunk_samples(self) -> int:
        if self.chunk_seconds is None:
            return CPU_CHUNK_SAMPLES
        return max(1, round(self.chunk_seconds * SAMPLE_RATE))

    def describe(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

