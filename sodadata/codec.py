"""Mimi encoding: load the codec once per process and encode utterances in length-bucketed, masked batches.

``--codec`` is a Hub id (default ``kyutai/mimi``), a local ``MimiModel.save_pretrained`` directory, or one of
two seeded random models: ``tiny-random`` (small, for tests and the offline demo) and ``full-random`` (the real
architecture with random weights: it costs exactly what real Mimi costs, for benchmarks). Their codes are NOT
real Mimi codes.

Batching without changing codes: transformers' Mimi encoder ignores ``padding_mask``, and its convolutions pad
the end of the signal (zeros in the SEANet, a repeat of the last value in the downsampling conv). Right-padding
a batch would therefore change the last frame of every shorter item. We hook every encoder convolution and
re-pad its input past each item's valid length exactly as a one-item call would, so batched codes equal
one-at-a-time ``MimiModel.encode`` codes (the encoder is causal: earlier frames never see the padding).

CPU speed (``engine="auto"``, bench/encode.py): most of a CPU encode is spent streaming 24 kHz activations
(64 channels x 1.44 M samples = 369 MB per tensor for a 60 s piece) through memory, not multiplying. We run the
high-rate SEANet stages over 1 s chunks carrying each causal convolution's left context (the same arithmetic,
in cache), and the low-rate rest, the transformer, downsampling and quantizer on the whole piece, calling the
modules directly. The result is bit-identical to ``MimiModel.encode`` provided oneDNN picks the same kernel for
a 1 s chunk as for the whole signal; each process checks that on the first batch of each width class (latents
compared bit for bit with the reference's) and falls back to the reference path if they ever differ. (On the
development machine, with 2 threads, the tiny test model's third stage did differ by 3e-6: the check matters.)
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sodadata.codes import CODEBOOK_SIZE, NUM_CODEBOOKS, SAMPLE_RATE, SAMPLES_PER_FRAME, frames_for_samples
from sodadata.recipe import ConfigError
from sodadata.sources import resolve_hf_revision

log = logging.getLogger(__name__)

DEFAULT_CODEC = "kyutai/mimi"
RANDOM_CODECS = ("tiny-random", "full-random")
MAX_PIECE_SECONDS = 60
MAX_PIECE_SAMPLES = MAX_PIECE_SECONDS * SAMPLE_RATE  # 750 frames exactly: pieces concatenate frame-aligned
DTYPES = ("float32", "tf32", "bfloat16", "float16")
ENGINES = ("auto", "reference")  # auto: the chunked CPU path where verified (see module docstring); reference: plain
# CPU chunk of the high-rate SEANet stages: 1 s. bench/encode.py measures 0.2-4 s chunks within ~10 % of each
# other, all bit-identical to whole-signal calls, 1 s the fastest in one process; the smallest lose a little to
# per-chunk overhead, the largest to cache misses, and with one worker per core side by side larger chunks also
# contend for the shared cache (bench/pipeline.py, chunk control). The last chunk absorbs the remainder (see
# _ChunkedEncoder.absorb_tail). Another model may need another chunk (``CodecConfig.chunk_seconds``): the tiny test
# model's narrow stages get other oneDNN kernels on 1 s chunks than on the whole signal, which the per-process
# check catches, and it then runs the reference path.
CPU_CHUNK_SAMPLES = 24_000
# SEANet stages run chunked: up to and including this many strided convolutions (Mimi: strides 4, 5, 6 -> 200 Hz).
# Past that the sequence is short and oneDNN is as fast or faster on it whole (bench/encode.py, chunked stages:
# chunking the 512->1024 stride-8 stage too is slower).
CHUNKED_STRIDED_CONVS = 3
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


def check_codec(config: CodecConfig) -> None:
    """Fail with one line (:class:`ConfigError`) unless ``config.codec`` can be loaded: run once, in the driver,
    before any task, so a typo or an unreachable model is reported once instead of by every task and retry.

    Accepts the built-in random models; a local directory holding a Mimi ``save_pretrained`` (config.json with
    model_type mimi, and weights); a Hub id the Hub knows (one request, no retries; with ``HF_HUB_OFFLINE=1``, or
    when the Hub cannot be reached, a model already in the local Hugging Face cache). A name a few letters off a
    built-in one gets "did you mean".
    """
    name = config.codec
    if config.is_random:
        return
    hint = _did_you_mean(name)
    if _is_local(name):
        _check_local_codec(Path(name).expanduser(), name, hint)
        return
    if "/" not in name and hint:
        # no Hub model of ours is named without its organisation: a near-miss of a built-in name is a typo
        raise ConfigError(f"unknown codec {name!r}{hint}; the built-in ones are {', '.join(RANDOM_CODECS)}")
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        info = HfApi().model_info(name, revision=config.revision, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except HFValidationError:
        raise ConfigError(f"--codec {name!r} is neither a local directory nor a Hub model id{hint}") from None
    except GatedRepoError:
        raise ConfigError(f"--codec {name!r} is gated on the Hub: accept its terms there and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"--codec {name!r}: no such model on the Hub (or it is private: set HF_TOKEN){hint}") from None
    except RevisionNotFoundError:
        raise ConfigError(f"--codec {name!r} has no revision {config.revision!r} on the Hub") from None
    except (OfflineModeIsEnabled, OSError, *_transport_errors()) as exc:
        if _cached_commit(name, config.revision) is not None:
            log.info("could not reach the Hub (%s); using %s from the local Hugging Face cache", _first_line(exc), name)
            return
        why = "HF_HUB_OFFLINE is set" if isinstance(exc, OfflineModeIsEnabled) else _first_line(exc)
        raise ConfigError(
            f"--codec {name!r}: cannot reach the Hub ({why}) and the model is not in the local cache. Download it "
            f"where the Hub is reachable, pass a local MimiModel.save_pretrained directory, or use --codec "
            f"tiny-random for an offline demo{hint}"
        ) from None
    files = {s.rfilename for s in info.siblings or ()}
    if files and ("config.json" not in files or not any(f.endswith(WEIGHT_SUFFIXES) for f in files)):
        raise ConfigError(f"--codec {name!r}: the Hub repo has no config.json and weights: it is not a Mimi model")


def _is_local(name: str) -> bool:
    """A path, not a Hub id: it exists, or it is written as a path (a Hub id is ``name`` or ``org/name``).
    Wider than :func:`is_local_codec` (an existing directory) so that a missing folder is "no such directory"."""
    return Path(name).expanduser().exists() or name.startswith(("/", "./", "../", "~")) or name.count("/") > 1


def _check_local_codec(path: Path, name: str, hint: str = "") -> None:
    if not path.exists():
        raise ConfigError(f"--codec {name!r}: no such directory{hint}")
    if not path.is_dir():
        raise ConfigError(f"--codec {name!r} is a file: pass the directory MimiModel.save_pretrained wrote")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"--codec {name!r} has no config.json: not a directory written by MimiModel.save_pretrained")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"--codec {name!r}: config.json is not a JSON object ({exc})") from None
    if model_type != "mimi":
        raise ConfigError(f"--codec {name!r} holds a {model_type!r} model, not Mimi")
    if not any(p.is_file() and p.name.endswith(WEIGHT_SUFFIXES) for p in path.iterdir()):
        raise ConfigError(f"--codec {name!r} has no weights ({', '.join('*' + s for s in WEIGHT_SUFFIXES)})")


def _did_you_mean(name: str) -> str:
    """" (did you mean tiny-random?)" for a near-miss of a built-in name, else ""."""
    close = difflib.get_close_matches(name, (*RANDOM_CODECS, DEFAULT_CODEC), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close and close[0] != name else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's connection errors (huggingface_hub's client is httpx2 today, httpx before)."""
    found = []
    for module in ("httpx2", "httpx"):
        try:
            found.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _hub_not_found_errors() -> tuple[type[BaseException], ...]:
    # RemoteEntryNotFoundError, not EntryNotFoundError: its other subclass is a cache miss while the Hub is unreachable
    from huggingface_hub.errors import (
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    return (RepositoryNotFoundError, RevisionNotFoundError, RemoteEntryNotFoundError)


def _chain_has(exc: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, types):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def load_mimi(config: CodecConfig, encoder_only: bool = False):
    """Load the MimiModel named by ``config.codec`` on its device and dtype (not cached: see :func:`get_encoder`)."""
    import torch
    from transformers import MimiConfig, MimiModel

    if config.threads:
        torch.set_num_threads(config.threads)
    if config.is_random:
        # INFO, not WARNING: every process of a run loads the codec, and the command that chose it says
        # NOT_REAL_WARNING once for the run (cli_recipe, decode, inspect). Said here, it came once per worker.
        log.info("building the seeded random codec %s (its codes are not real Mimi codes)", config.codec)
        model = build_random_mimi(config.codec, encoder_only=encoder_only)
    else:
        source = config.codec
        local = Path(source).expanduser()
        if _is_local(source):  # as check_codec does in the driver: a worker (another machine) may lack the folder
            _check_local_codec(local, source)
        kwargs = {} if local.is_dir() else {"revision": config.revision}
        if local.is_dir():
            source = str(local)
        try:
            mcfg = MimiConfig.from_pretrained(source, **kwargs)
            if encoder_only:
                mcfg.decoder_config = None
            model = MimiModel.from_pretrained(source, config=mcfg, **kwargs)
        except OSError as exc:
            message = (f"could not load Mimi from {config.codec!r}: {exc}. Pass a Hub id you can reach, a local "
                       "directory written by MimiModel.save_pretrained, or --codec tiny-random for an offline demo.")
            # A directory that does not hold a model, or a repo, revision or file the Hub says does not exist, stays
            # so on every retry; a connection that failed may not.
            if local.is_dir() or _chain_has(exc, _hub_not_found_errors()):
                raise ConfigError(message) from exc
            raise RuntimeError(message) from exc
    dtype = {"float32": torch.float32, "tf32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        config.dtype
    ]
    if config.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = config.dtype == "tf32"
        torch.backends.cudnn.allow_tf32 = config.dtype == "tf32"
    return model.to(device=config.device, dtype=dtype).eval()


# What from_pretrained reads the weights from (sharded checkpoints add an index and more files of the same kinds).
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def is_local_codec(name: str) -> bool:
    """True when ``--codec`` names a local ``save_pretrained`` directory (the rule :func:`load_mimi` follows)."""
    return name not in RANDOM_CODECS and Path(name).expanduser().is_dir()


def weights_sha256(directory: str | Path) -> str:
    """SHA-256 over a ``save_pretrained`` directory's weight files: each name (sorted) and its bytes.

    Content, not path: the same weights copied elsewhere hash the same, other weights under the same path do not.
    """
    root = Path(directory).expanduser()
    files = sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise RuntimeError(
            f"--codec {directory}: no weight files ({', '.join('*' + s for s in WEIGHT_SUFFIXES)}) in that directory; "
            "pass a directory written by MimiModel.save_pretrained"
        )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode("utf-8") + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(8 * 2**20):
                digest.update(chunk)
    return digest.hexdigest()


def _cached_commit(repo: str, revision: str | None) -> str | None:
    """The commit of ``repo``@``revision`` in the local Hugging Face cache (what an offline load would use)."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo, "config.json", revision=revision or "main", repo_type="model")
    return Path(path).parent.name if isinstance(path, str) else None


def codec_identity(config: CodecConfig) -> dict:
    """Which codec ``config`` names, as recorded in every shard's ``made_by["codec"]`` (SPEC §2).

    A Hub id with its revision resolved to a commit (asks the Hub, or its local cache offline: call it once, on the
    driver, and load that commit everywhere); a local ``save_pretrained`` directory as ``"local"`` with the SHA-256
    of its weights; a seeded random model by name with ``random: true``.
    """
    if config.is_random:
        return {"id": config.codec, "revision": None, "weights_sha256": None, "random": True}
    if is_local_codec(config.codec):
        return {"id": "local", "revision": None, "weights_sha256": weights_sha256(config.codec), "random": False}
    if _is_local(config.codec):  # a path that is no directory (missing, a file) is not a Hub id: say what it is
        _check_local_codec(Path(config.codec).expanduser(), config.codec)
    try:
        commit = resolve_hf_revision(config.codec, config.revision, repo_type="model")
    except RuntimeError as exc:
        commit = _cached_commit(config.codec, config.revision)
        if commit is None:
            raise RuntimeError(
                f"cannot resolve --codec {config.codec}@{config.revision or 'main'} to a commit, and it is not in the "
                f"local Hugging Face cache ({exc}). Connect to the Hub once, pass a local save_pretrained directory, "
                "or --codec tiny-random for an offline demo."
            ) from None
        log.info("codec %s: the Hub is not reachable; using commit %s from the local cache", config.codec, commit)
    return {"id": config.codec, "revision": commit, "weights_sha256": None, "random": False}


_MALLOC_TUNED = False


def _undo_fixed_malloc_trim_threshold() -> None:
    """Give glibc back heap reuse for tensor-sized blocks when ``MALLOC_TRIM_THRESHOLD_`` pinned it down.

    Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting any threshold turns off
    glibc's dynamic mmap threshold, so every block over 128 kB (every activation of the encoder) becomes its own
    mmap: freshly faulted, zeroed pages on every allocation, munmapped on every free: bench/encode.py (malloc
    table) measures the encoder at about 0.6x its plain speed under that setting. We set the values glibc's
    dynamic scheme would reach by itself (mmap above 32 MB, trim above 64 MB: at most 64 MB of freed memory kept).
    Only when the variable is set (Dask workers); never elsewhere, and only on glibc.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        ok = libc.mallopt(m_mmap_threshold, 32 * 2**20) == 1 and libc.mallopt(m_trim_threshold, 64 * 2**20) == 1
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to undo
        return
    log.info("MALLOC_TRIM_THRESHOLD_ is set (a Dask worker?): malloc thresholds set to mmap 32 MB, trim 64 MB (%s)",
             "ok" if ok else "refused")


class _PaddingRepairer:
    """Forward hooks that make a right-padded batch compute what each item alone would (see module docstring)."""

    def __init__(self, encoder) -> None:
        from transformers.models.mimi.modeling_mimi import MimiConv1d

        self.lengths = None  # valid input length of the next conv, per batch item (torch.LongTensor)
        self.handles = []
        self.supported = True
        for module in encoder.modules():
            if isinstance(module, MimiConv1d):
                if module.pad_mode not in ("constant", "replicate") or not module.causal:
                    self.supported = False
                self.handles.append(module.register_forward_pre_hook(self._pre))
                self.handles.append(module.register_forward_hook(self._post))

    def _pre(self, module, args):
        if self.lengths is None:
            return None
        import torch

        x = args[0]
        t = torch.arange(x.shape[-1], device=x.device)
        if module.pad_mode == "replicate":
            idx = torch.minimum(t[None, :], (self.lengths - 1).clamp(min=0)[:, None])
            x = torch.gather(x, 2, idx[:, None, :].expand(x.shape[0], x.shape[1], -1))
        else:
            x = x * (t[None, :] < self.lengths[:, None])[:, None, :].to(x.dtype)
        return (x, *args[1:])

    def _post(self, module, args, output):
        if self.lengths is not None:
            self.lengths = module._get_output_length(self.lengths).to(self.lengths.device)


class _ChunkedEncoder:
    """The CPU fast path: MimiModel.encode's arithmetic, with the high-rate SEANet stages run over time chunks.

    Each causal convolution keeps the last ``padding_total`` samples of its previous chunk's input as left
    context (zeros before the first chunk: the constant padding of a whole-signal call), and the last chunk gets
    the right padding a whole-signal call would add. Chunks start at multiples of ``chunk`` (a multiple of every
    chunked stride), so every layer sees the same samples at the same positions as in one call. Padded batches
    are masked at every convolution input exactly like :class:`_PaddingRepairer` does.
    """

    def __init__(self, model, repair: _PaddingRepairer, chunk: int) -> None:
        from transformers.models.mimi.modeling_mimi import MimiConv1d, MimiResnetBlock

        self._conv_cls, self._block_cls = MimiConv1d, MimiResnetBlock
        self.model, self.repair = model, repair
        enc = getattr(model, "encoder", None)
        self.supported = enc is not None and all(
            hasattr(enc, a) for a in ("encoder_seanet", "encoder_transformer", "downsample")
        )
        # The last chunk absorbs the remainder: a narrow tail chunk (a few hundred samples) gets a different oneDNN
        # kernel and different bits (bench/encode.py shows both). False only to measure that.
        self.absorb_tail = True
        if not self.supported:  # another transformers layout: the reference path only
            return
        self.enc = enc
        self.layers = list(enc.encoder_seanet.layers)
        strided = 0
        self.split = len(self.layers)
        stride = 1
        for i, layer in enumerate(self.layers):
            for conv in self._convs(layer):
                if not conv.causal or conv.pad_mode != "constant":
                    self.supported = False
            if isinstance(layer, MimiConv1d) and layer.conv.stride[0] > 1:
                strided += 1
                stride *= layer.conv.stride[0]
                if strided == CHUNKED_STRIDED_CONVS:
                    self.split = i + 1
                    break
        self.chunk = max(stride, chunk // stride * stride)

    def _convs(self, layer):
        if isinstance(layer, self._conv_cls):
            return [layer]
        if isinstance(layer, self._block_cls):
            convs = [m for m in layer.block if isinstance(m, self._conv_cls)]
            return convs + ([layer.shortcut] if isinstance(layer.shortcut, self._conv_cls) else [])
        return []

    def _conv(self, conv, x, state: dict, key, offset: int, last: bool, valid):
        import torch
        import torch.nn.functional as F

        if valid is not None:  # as _PaddingRepairer._pre: zero everything past each item's valid input length
            t = torch.arange(offset, offset + x.shape[-1], device=x.device)
            x = x * (t[None, :] < valid[:, None])[:, None, :].to(x.dtype)
        pad = int(conv.padding_total)
        if pad:
            ctx = state.get(key)
            if ctx is None:
                ctx = x.new_zeros(x.shape[0], x.shape[1], pad)
            x = torch.cat([ctx, x], dim=2)
            state[key] = x[..., x.shape[-1] - pad :]
        if last:  # the right padding MimiConv1d adds: up to a whole number of strides
            stride = conv.conv.stride[0]
            n = x.shape[-1] - pad + offset
            extra = -(-n // stride) * stride - n
            if extra:
                x = F.pad(x, (0, extra))
        return conv.conv(x)

    def _run(self, h, layers, base: int, state: dict, offset: int, last: bool, valid: dict):
        """Layers ``base..`` over one chunk starting at ``offset`` (in the coordinates of the first layer's input)."""
        for i, layer in enumerate(layers, start=base):
            if isinstance(layer, self._conv_cls):
                h = self._conv(layer, h, state, i, offset, last, valid.get(i))
                offset //= layer.conv.stride[0]  # chunk starts are multiples of every chunked stride: exact
            elif isinstance(layer, self._block_cls):  # stride 1 throughout
                residual = h
                for j, sub in enumerate(layer.block):
                    if isinstance(sub, self._conv_cls):
                        h = self._conv(sub, h, state, (i, j), offset, last, valid.get((i, j)))
                    else:  # in place, except on the block input, which the residual still needs
                        h = _activation(sub, h, inplace=j > 0)
                if isinstance(layer.shortcut, self._conv_cls):
                    residual = self._conv(layer.shortcut, residual, state, (i, "s"), offset, last, valid.get((i, "s")))
                else:
                    residual = layer.shortcut(residual)
                h = h.add_(residual)
            else:  # the activation between stages: its input is not needed afterwards
                h = _activation(layer, h, inplace=True)
        return h

    def _valid_lengths(self, lengths) -> dict:
        """Valid input length of every SEANet convolution, per batch item (what _PaddingRepairer tracks)."""
        valid: dict = {}
        for i, layer in enumerate(self.layers):
            if isinstance(layer, self._conv_cls):
                valid[i] = lengths
                lengths = layer._get_output_length(lengths).to(lengths.device)
            elif isinstance(layer, self._block_cls):
                inner = lengths
                for j, sub in enumerate(layer.block):
                    if isinstance(sub, self._conv_cls):
                        valid[(i, j)] = inner
                        inner = sub._get_output_length(inner).to(lengths.device)
                if isinstance(layer.shortcut, self._conv_cls):
                    valid[(i, "s")] = lengths
                lengths = inner
        valid["out"] = lengths
        return valid

    def seanet(self, x, lengths=None):
        """``encoder_seanet(x)``, chunked over time; ``lengths``: valid samples per item of a padded batch."""
        import torch

        valid = self._valid_lengths(lengths) if lengths is not None else {}
        total = x.shape[-1]
        starts = [a for a in range(0, total, self.chunk) if a == 0 or total - a >= self.chunk or not self.absorb_tail]
        state: dict = {}
        outs = []
        for n, a in enumerate(starts):
            end = starts[n + 1] if n + 1 < len(starts) else total
            outs.append(self._run(x[..., a:end], self.layers[: self.split], 0, state, a, end == total, valid))
        h = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        return self._run(h, self.layers[self.split :], self.split, {}, 0, True, valid), valid.get("out")

    def latents(self, x, lengths=None):
        """``MimiModel.encoder(x).latents``: what the quantizer reads."""
        h, seanet_lengths = self.seanet(x, lengths)
        h = self.enc.encoder_transformer(h.transpose(1, 2), use_cache=False).last_hidden_state.transpose(1, 2)
        # the downsampling conv pads by replication: its _PaddingRepairer hook handles padded batches
        self.repair.lengths = seanet_lengths
        try:
            latents = self.enc.downsample(h)
        finally:
            self.repair.lengths = None
        return latents


def _activation(module, h, inplace: bool):
    import torch.nn.functional as F
    from torch import nn

    if isinstance(module, nn.ELU):
        return F.elu(h, alpha=module.alpha, inplace=inplace)
    return module(h)


@dataclass
class EncodeStats:
    calls: int = 0
    batches: int = 0
    items: int = 0
    audio_seconds: float = 0.0
    padded_seconds: float = 0.0
    encode_seconds: float = 0.0
    by_batch_size: dict = field(default_factory=dict)
    engine: str = ""  # "chunked" or "reference": the path the last batch took


class MimiEncoder:
    """Encodes 24 kHz mono float32 waveforms into ``(num_codebooks, ceil(n/1920))`` int16 code arrays."""

    def __init__(self, config: CodecConfig, model=None) -> None:
        self.config = config
        self.model = model if model is not None else load_mimi(config, encoder_only=True)
        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        self._repair = _PaddingRepairer(self.model.encoder if self.model.encoder is not None else self.model)
        self.batch_size = config.effective_batch_size() if self._repair.supported else 1
        self.max_batch_samples = config.effective_max_batch_samples()
        self._fast: _ChunkedEncoder | None = None
        if self.device.type == "cpu":
            _undo_fixed_malloc_trim_threshold()
        if config.engine == "auto" and self.device.type == "cpu" and self._repair.supported:
            fast = _ChunkedEncoder(self.model, self._repair, config.effective_chunk_samples())
            self._fast = fast if fast.supported else None
        self.verify = True  # False only in benchmarks that time the chunked path alone
        self._verified: set[int] = set()  # width classes of batches checked bit for bit against the reference
        self.stats = EncodeStats()
        self._lock = threading.Lock()  # one forward at a time per model: threads share the weights, not the hooks

    def encode(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Encode many utterances; each is split into 60 s pieces, pieces are batched by similar length."""
        pieces: list[tuple[int, int, np.ndarray]] = []  # (utterance index, piece index, samples)
        for i, w in enumerate(waves):
            w = np.asarray(w, dtype=np.float32)
            if w.ndim != 1 or w.size == 0:
                raise ValueError(f"utterance {i}: expected non-empty 1-D 24 kHz audio, got shape {w.shape}")
            for p, start in enumerate(range(0, w.size, MAX_PIECE_SAMPLES)):
                pieces.append((i, p, w[start : start + MAX_PIECE_SAMPLES]))
        codes: dict[tuple[int, int], np.ndarray] = {}
        for batch in self._batches(pieces):
            for (i, p, _), c in zip(batch, self._encode_batch([b[2] for b in batch]), strict=True):
                codes[(i, p)] = c
        out = []
        for i, w in enumerate(waves):
            n_pieces = math.ceil(len(w) / MAX_PIECE_SAMPLES)
            out.append(np.concatenate([codes[(i, p)] for p in range(n_pieces)], axis=1))
        self.stats.calls += 1
        return out

    def _batches(self, pieces):
        order = sorted(pieces, key=lambda x: len(x[2]), reverse=True)
        batch: list = []
        for item in order:
            longest = len(batch[0][2]) if batch else len(item[2])
            if batch and (len(batch) >= self.batch_size or longest * (len(batch) + 1) > self.max_batch_samples):
                yield batch
                batch = []
            batch.append(item)
        if batch:
            yield batch

    def _encode_batch(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        lengths = [len(w) for w in waves]
        longest = max(lengths)
        x = np.zeros((len(waves), 1, longest), dtype=np.float32)
        for j, w in enumerate(waves):
            x[j, 0, : len(w)] = w
        t0 = time.perf_counter()
        with self._lock, torch.inference_mode():
            if self.config.threads and torch.get_num_threads() != self.config.threads:
                # torch's intra-op thread count is per calling thread (OpenMP): load_mimi set it in the thread that
                # loaded the model, but a Dask worker may encode in another (bench/pipeline.py's warm-up loads in
                # the worker's event-loop thread; tasks run in its executor threads).
                torch.set_num_threads(self.config.threads)
            inputs = torch.from_numpy(x).to(self.device, self.dtype)
            padded = len(waves) > 1 and min(lengths) != longest
            self._repair.lengths = torch.tensor(lengths, device=self.device) if padded else None
            try:
                if self._fast is not None:
                    audio_codes = self._encode_fast(inputs, lengths, padded)
                else:
                    audio_codes = self._encode_reference(inputs, lengths)
            finally:
                self._repair.lengths = None
            codes = audio_codes[:, : self.config.num_codebooks].to("cpu", torch.int16).numpy()
        elapsed = time.perf_counter() - t0
        st = self.stats
        st.engine = "chunked" if self._fast is not None else "reference"
        st.batches += 1
        st.items += len(waves)
        st.audio_seconds += sum(lengths) / SAMPLE_RATE
        st.padded_seconds += longest * len(waves) / SAMPLE_RATE
        st.encode_seconds += elapsed
        st.by_batch_size[len(waves)] = st.by_batch_size.get(len(waves), 0) + 1
        out = []
        for j, n in enumerate(lengths):
            c = codes[j, :, : frames_for_samples(n)]
            if c.shape[1] != frames_for_samples(n):
                raise RuntimeError(f"codec returned {c.shape[1]} frames for {n} samples, expected {frames_for_samples(n)}")
            if c.min() < 0 or c.max() >= CODEBOOK_SIZE:
                raise RuntimeError("codec returned codes outside [0, 2048): is this a Mimi checkpoint?")
            out.append(np.ascontiguousarray(c))
        return out


    def _encode_reference(self, inputs, lengths: list[int]):
        """Plain ``MimiModel.encode`` (padded batches repaired by the hooks, whose lengths the caller set)."""
        import torch

        longest = inputs.shape[-1]
        padding_mask = (torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]).to(self.device)
        return self.model.encode(
            inputs, padding_mask=padding_mask, num_quantizers=self.config.num_codebooks, return_dict=True
        ).audio_codes

    def _encode_fast(self, inputs, lengths: list[int], padded: bool):
        import torch

        fast = self._fast
        valid = torch.tensor(lengths, device=self.device) if padded else None
        self._repair.lengths = None  # the chunked path masks the SEANet itself; the hooks only for downsampling
        latents = fast.latents(inputs, valid)
        # oneDNN picks kernels (and how threads split the work) by shape, for the reference's whole-piece calls
        # as for our chunks. So the first batch of each width class (< 1 chunk, 1, < 4, < 8 ...: seven classes up
        # to a 60 s piece) is also run through the reference, and its latents must match bit for bit, or we stop
        # using the chunked path. Cost: at most seven reference encodes per process.
        width_class = (inputs.shape[-1] // fast.chunk).bit_length()
        if width_class not in self._verified and self.verify:
            self._repair.lengths = valid
            try:
                reference = self.model.encoder(inputs).latents
            finally:
                self._repair.lengths = None
            self._verified.add(width_class)
            if not torch.equal(reference, latents):
                # INFO: nothing is wrong and there is nothing to do; the codes are MimiModel.encode's either way
                # (the tiny test model always takes this path, see the module docstring).
                log.info(
                    "the chunked CPU encoder's latents differ from MimiModel.encode's on this machine (max %.3g); "
                    "using MimiModel.encode from now on (slower, same codes)", float((reference - latents).abs().max()),
                )
                self._fast = None
                latents = reference
        return self.model.quantizer.encode(latents, self.config.num_codebooks).transpose(0, 1)


_ENCODERS: dict[CodecConfig, MimiEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def get_encoder(config: CodecConfig) -> MimiEncoder:
    """The process-wide encoder for ``config``: loaded once per worker process, shared by its threads."""
    with _ENCODERS_LOCK:
        enc = _ENCODERS.get(config)
        if enc is None:
            t0 = time.perf_counter()
            enc = MimiEncoder(config)
            log.info(
                "loaded codec %s on %s/%s in %.1fs (pid %d, batch size %d)",
                config.codec, config.device, config.dtype, time.perf_counter() - t0, os.getpid(), enc.batch_size,
            )
            _ENCODERS[config] = enc
        return enc


def reference_encode(model, wave: np.ndarray, num_codebooks: int = NUM_CODEBOOKS) -> np.ndarray:
    """One utterance through plain ``MimiModel.encode``: the reference our batched path must equal."""
    import torch

    param = next(model.parameters())
    with torch.inference_mode():
        x = torch.from_numpy(np.asarray(wave, dtype=np.float32))[None, None].to(param.device, param.dtype)
        codes = model.encode(x, num_quantizers=num_codebooks, return_dict=True).audio_codes
    return codes[0, :num_codebooks].to("cpu", torch.int16).numpy()


__all__ = [
    "DEFAULT_CODEC",
    "SAMPLES_PER_FRAME",
    "CodecConfig",
    "MimiEncoder",
    "build_random_mimi",
    "check_codec",
    "codec_identity",
    "get_encoder",
    "load_mimi",
    "reference_encode",
]
