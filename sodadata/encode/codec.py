"""Mimi encoding: load the codec once per process and encode utterances in length-bucketed, masked batches.

:class:`MimiEncoder` splits utterances into 60 s pieces, batches pieces of similar length (padding repaired per
item: ``sodadata.encode.padding_repair``), and on CPU runs the chunked engine (``sodadata.encode.chunked_engine``) where this
process has verified it gives ``MimiModel.encode``'s latents bit for bit. :func:`get_encoder` keeps one per
process. The rest of the codec lives beside it, and its public names are importable from here too:

- ``sodadata.encode.codec_config``: :class:`CodecConfig` and the constants (``DEFAULT_CODEC``, ``RANDOM_CODECS`` ...);
- ``sodadata.encode.codec_loading``: ``check_codec`` (the driver's one-line check), ``load_mimi``, ``codec_identity``;
- ``sodadata.encode.codec_random``: the seeded ``tiny-random`` / ``full-random`` models;
- ``sodadata.encode.padding_repair``, ``sodadata.encode.chunked_engine``, ``sodadata.encode.malloc_tuning``: how it runs fast.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from sodadata.encode.chunked_engine import CHUNKED_STRIDED_CONVS, ChunkedEncoder
from sodadata.encode.codec_config import (
    CPU_CHUNK_SAMPLES,
    DEFAULT_CODEC,
    DTYPES,
    ENGINES,
    MAX_PIECE_SAMPLES,
    MAX_PIECE_SECONDS,
    NOT_REAL_WARNING,
    RANDOM_CODECS,
    CodecConfig,
)
from sodadata.encode.codec_loading import (
    WEIGHT_SUFFIXES,
    check_codec,
    codec_identity,
    is_local_codec,
    lean_model,
    load_mimi,
    weights_sha256,
)
from sodadata.encode.codec_random import build_random_mimi, tiny_random_config
from sodadata.encode.codes import (
    CODEBOOK_SIZE,
    NUM_CODEBOOKS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    frames_for_samples,
)
from sodadata.encode.engine_check import EngineCheck, check_key
from sodadata.encode.malloc_tuning import undo_fixed_malloc_trim_threshold
from sodadata.encode.padding_repair import PaddingRepairer

log = logging.getLogger(__name__)


@dataclass
class EncodeStats:
    calls: int = 0
    batches: int = 0
    items: int = 0
    audio_seconds: float = 0.0
    padded_seconds: float = 0.0
    encode_seconds: float = 0.0  # everything the encoder did, the engine check included
    check_seconds: float = 0.0  # of encode_seconds: the chunked engine's check (reference runs, cache, probe)
    by_batch_size: dict = field(default_factory=dict)
    engine: str = ""  # "chunked" or "reference": the path the last batch took


class MimiEncoder:
    """Encodes 24 kHz mono float32 waveforms into ``(num_codebooks, ceil(n/1920))`` int16 code arrays."""

    def __init__(self, config: CodecConfig, model=None) -> None:
        self.config = config
        reference = None
        if model is None:
            model = lean_model(config)
        if model is None:
            model = reference = load_mimi(config, encoder_only=True)
            if config.is_random:  # full-random's weights were just drawn and saved: the lean modules load them now,
                model = lean_model(config) or reference  # so that a machine's first run checks what later ones run
        self.model = model
        # transformers' MimiModel, what codes must equal: the model itself, or, when the chunked engine runs
        # lean_mimi's restatement of it, loaded on first need (a check the cache does not hold, a verdict "differs")
        self.lean = bool(getattr(self.model, "lean", False))
        self._reference_model = reference if self.lean else self.model
        self._reference_repair: PaddingRepairer | None = None
        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        self._repair = PaddingRepairer(self.model.encoder if self.model.encoder is not None else self.model)
        if not self.lean:
            self._reference_repair = self._repair
        elif reference is not None:
            self._reference_repair = PaddingRepairer(reference.encoder)
        self.batch_size = config.effective_batch_size() if self._repair.supported else 1
        self.max_batch_samples = config.effective_max_batch_samples()
        self._fast: ChunkedEncoder | None = None
        if self.device.type == "cpu":
            undo_fixed_malloc_trim_threshold()
        if config.engine == "auto" and self.device.type == "cpu" and self._repair.supported:
            fast = ChunkedEncoder(self.model, self._repair, config.effective_chunk_samples())
            self._fast = fast if fast.supported else None
        self.verify = True  # False only in benchmarks that time the chunked path alone
        self._verified: set[int] = set()  # width classes known good: checked here, or found in the check's cache
        self.check: EngineCheck | None = None  # built on the first chunked batch (it needs the thread count then)
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
            if self._fast is not None:
                audio_codes = self._encode_fast(inputs, lengths, padded)
            else:
                audio_codes = self._encode_reference(inputs, lengths, padded)
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


    def _reference(self):
        """transformers' MimiModel and its padding repairer (loaded now if the chunked engine runs lean_mimi's)."""
        if self._reference_model is None:
            t0 = time.perf_counter()
            self._reference_model = load_mimi(self.config, encoder_only=True)
            self._reference_repair = PaddingRepairer(self._reference_model.encoder)
            log.info("loaded transformers' MimiModel for the chunked engine's check in %.1fs (pid %d)",
                     time.perf_counter() - t0, os.getpid())
        return self._reference_model, self._reference_repair

    def _reference_latents(self, inputs, valid):
        """``MimiModel.encoder(inputs).latents`` (padded items repaired: ``valid``, their lengths, or None)."""
        model, repair = self._reference()
        repair.lengths = valid
        try:
            return model.encoder(inputs).latents
        finally:
            repair.lengths = None

    def _encode_reference(self, inputs, lengths: list[int], padded: bool):
        """Plain ``MimiModel.encode`` (padded batches repaired by the hooks)."""
        import torch

        model, repair = self._reference()
        longest = inputs.shape[-1]
        padding_mask = (torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]).to(self.device)
        repair.lengths = torch.tensor(lengths, device=self.device) if padded else None
        try:
            return model.encode(
                inputs, padding_mask=padding_mask, num_quantizers=self.config.num_codebooks, return_dict=True
            ).audio_codes
        finally:
            repair.lengths = None

    def _encode_fast(self, inputs, lengths: list[int], padded: bool):
        import torch

        fast = self._fast
        valid = torch.tensor(lengths, device=self.device) if padded else None
        if self.verify and self._check_says_differs():
            return self._encode_reference(inputs, lengths, padded)
        latents = fast.latents(inputs, valid)  # masks the SEANet itself; the repair hooks only for downsampling
        # oneDNN picks kernels (and how threads split the work) by shape, for the reference's whole-piece calls
        # as for our chunks. So the first batch of each width class (< 1 chunk, 1, < 4, < 8 ...: seven classes up
        # to a 60 s piece) is also run through the reference, and its latents must match bit for bit, or we stop
        # using the chunked path; once per machine, model and software (sodadata.encode.engine_check caches the verdicts).
        width_class = (inputs.shape[-1] // fast.chunk).bit_length()
        if width_class not in self._verified and self.verify:
            t0 = time.perf_counter()
            try:
                latents = self._check_width_class(width_class, inputs, valid, latents)
            finally:
                self.stats.check_seconds += time.perf_counter() - t0
        quantizer = self.model.quantizer if self._fast is not None else self._reference()[0].quantizer
        return quantizer.encode(latents, self.config.num_codebooks).transpose(0, 1)

    def _engine_check(self) -> EngineCheck:
        import torch

        if self.check is None:
            def probe_outputs(latents_of, model_of):
                def run(wave):
                    x = torch.from_numpy(wave)[None, None].to(self.device, self.dtype)
                    latents = latents_of(x)
                    return latents, model_of().quantizer.encode(latents, None)  # every codebook
                return run

            fast = self._fast
            self.check = EngineCheck(
                check_key(self.model, self.config, fast.chunk, torch.get_num_threads()),
                chunked=probe_outputs(fast.latents, lambda: self.model),
                reference=probe_outputs(lambda x: self._reference_latents(x, None), lambda: self._reference()[0]),
            )
        return self.check

    def _check_says_differs(self) -> bool:
        """The cache knows the chunked engine differs here: use the reference from the start (trusted as it is: the
        reference is MimiModel.encode)."""
        if self.check is not None and self.check.source is not None:
            return False  # read already, and acted on then
        t0 = time.perf_counter()
        try:
            differs = self._engine_check().any_differs()
        finally:
            self.stats.check_seconds += time.perf_counter() - t0
        if differs:
            log.info("the chunked CPU encoder's latents differ from MimiModel.encode's on this machine (cached check "
                     "%s); using MimiModel.encode (slower, same codes)", self.check.path)
            self._fast = None
        return differs

    def _check_width_class(self, width_class: int, inputs, valid, latents):
        """The first batch of a width class: the cached verdict if there is one, else the reference's latents
        compared bit for bit (and the verdict recorded). Returns the latents to quantize."""
        import torch

        check = self._engine_check()
        known = check.verdict(width_class)
        if known:
            self._verified.add(width_class)
            return latents
        reference = self._reference_latents(inputs, valid)
        self._verified.add(width_class)
        equal = torch.equal(reference, latents)
        if equal and self.lean:  # lean_mimi's quantizer too: every codebook, on these latents
            reference_model = self._reference()[0]
            equal = torch.equal(reference_model.quantizer.encode(reference, None), self.model.quantizer.encode(latents, None))
        check.record(width_class, equal)
        if not equal:
            # INFO: nothing is wrong and there is nothing to do; the codes are MimiModel.encode's either way
            # (the tiny test model always takes this path, see sodadata.encode.chunked_engine).
            log.info(
                "the chunked CPU encoder's latents differ from MimiModel.encode's on this machine (max %.3g); "
                "using MimiModel.encode from now on (slower, same codes)", float((reference - latents).abs().max()),
            )
            self._fast = None
            return reference
        return latents


_ENCODERS: dict[CodecConfig, MimiEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def own_gpu(config: CodecConfig) -> CodecConfig:
    """``--device cuda`` in worker ``k`` of a LocalCluster (one worker per GPU: sodadata.run.worker_layout) runs on
    GPU ``k`` (modulo the GPUs it sees); anywhere else, and for ``cuda:N``, the device as given."""
    if config.device != "cuda":
        return config
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):  # not in a Dask worker
        return config
    if not isinstance(name, int):  # a worker started by `dask worker`: its own CUDA_VISIBLE_DEVICES decides
        return config
    import torch

    count = torch.cuda.device_count()
    return replace(config, device=f"cuda:{name % count}") if count > 1 else config


def get_encoder(config: CodecConfig) -> MimiEncoder:
    """The process-wide encoder for ``config``: loaded once per worker process, shared by its threads."""
    config = own_gpu(config)
    with _ENCODERS_LOCK:
        enc = _ENCODERS.get(config)
        if enc is None:
            t0 = time.perf_counter()
            enc = MimiEncoder(config)
            log.info(
                "loaded codec %s on %s/%s in %.1fs (pid %d, batch size %d%s)",
                config.codec, config.device, config.dtype, time.perf_counter() - t0, os.getpid(), enc.batch_size,
                ", sodadata.encode.lean_mimi's modules" if enc.lean else "",
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
    "CHUNKED_STRIDED_CONVS",
    "CPU_CHUNK_SAMPLES",
    "DEFAULT_CODEC",
    "DTYPES",
    "ENGINES",
    "MAX_PIECE_SAMPLES",
    "MAX_PIECE_SECONDS",
    "NOT_REAL_WARNING",
    "RANDOM_CODECS",
    "SAMPLES_PER_FRAME",
    "WEIGHT_SUFFIXES",
    "CodecConfig",
    "EncodeStats",
    "MimiEncoder",
    "build_random_mimi",
    "check_codec",
    "codec_identity",
    "get_encoder",
    "is_local_codec",
    "load_mimi",
    "reference_encode",
    "tiny_random_config",
    "weights_sha256",
]
