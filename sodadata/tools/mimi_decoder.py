"""Mimi codes -> waveforms: :class:`MimiDecoder` (``MimiModel.decode``, batched, in pieces) and :func:`get_decoder`.

Decoding is causal (Mimi's decoder convolutions and transformer only look back), which gives two things for free:
right-padding a batch does not change any item's samples, and a long utterance can be decoded in pieces, each
preceded by some already-decoded context, with little audible seam (the exact result would need the transformer's
whole receptive field of left context).

``tiny-random`` / ``full-random`` are seeded RANDOM models: decoding with them gives noise, not speech, and their
codes are NOT real Mimi codes. Decode with the codec that encoded the data (:mod:`sodadata.tools.recorded_codec`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sodadata.encode.codec import CodecConfig
from sodadata.encode.codes import CODEBOOK_SIZE, NUM_CODEBOOKS, SAMPLES_PER_FRAME, chars_to_codes
from sodadata.write.document import audio_spans

log = logging.getLogger(__name__)

# Long utterances are decoded in 60 s pieces (as they are encoded) so memory stays bounded: the decoder's attention
# mask grows with the square of the length. Each piece is preceded by 10 s of context (Mimi's decoder attends
# 250 steps at 25 Hz = 10 s per layer), decoded and thrown away, to hide the seam.
PIECE_FRAMES = 750
CONTEXT_FRAMES = 125


# --------------------------------------------------------------------------------------------------------------
# Decoding


@dataclass
class DecodeStats:
    calls: int = 0
    batches: int = 0
    frames: int = 0
    decode_seconds: float = 0.0
    by_batch_size: dict = field(default_factory=dict)


class MimiDecoder:
    """Decodes ``(num_codebooks, frames)`` code arrays to 24 kHz float32 waveforms of ``frames * 1920`` samples.

    Utterances are cut into pieces of ``piece_frames`` (each after ``context_frames`` of left context, decoded and
    dropped), pieces are batched by similar length up to the codec config's batch size (1 on CPU) and padded on
    the right, which the causal decoder ignores.
    """

    def __init__(
        self,
        config: CodecConfig,
        model: Any = None,
        piece_frames: int = PIECE_FRAMES,
        context_frames: int = CONTEXT_FRAMES,
    ) -> None:
        from sodadata.encode.codec import load_mimi

        if piece_frames < 1 or context_frames < 0:
            raise ValueError("piece_frames must be >= 1 and context_frames >= 0")
        self.config = config
        self.model = model if model is not None else load_mimi(config, encoder_only=False)
        if getattr(self.model, "decoder", None) is None:
            raise ValueError("this Mimi model has no decoder (loaded with encoder_only=True?)")
        param = next(self.model.parameters())
        self.device, self.dtype = param.device, param.dtype
        if self.device.type == "cpu":
            _native_transposed_convolutions(self.model)
        self.piece_frames = piece_frames
        self.context_frames = context_frames
        self.batch_size = config.effective_batch_size()
        self.max_batch_frames = max(1, config.effective_max_batch_samples() // SAMPLES_PER_FRAME)
        self.stats = DecodeStats()
        self._lock = threading.Lock()  # one forward at a time per model

    def decode(self, codes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Decode many utterances' codes; each result has exactly ``frames * 1920`` samples."""
        pieces: list[tuple[int, int, int, np.ndarray]] = []  # (utterance, start frame, context frames, codes)
        arrays = []
        for i, c in enumerate(codes):
            arr = np.asarray(c)
            if arr.ndim != 2 or not 1 <= arr.shape[0] <= NUM_CODEBOOKS:
                raise ValueError(f"utterance {i}: codes must be (n_codebooks <= 8, frames), got shape {arr.shape}")
            if arr.size and (arr.min() < 0 or arr.max() >= CODEBOOK_SIZE):
                raise ValueError(f"utterance {i}: codes must lie in [0, {CODEBOOK_SIZE})")
            arrays.append(arr)
            for start in range(0, arr.shape[1], self.piece_frames):
                ctx = min(self.context_frames, start)
                pieces.append((i, start, ctx, arr[:, start - ctx : start + self.piece_frames]))
        waves: dict[tuple[int, int], np.ndarray] = {}
        for batch in self._batches(pieces):
            for (i, start, ctx, _), w in zip(batch, self._decode_batch([b[3] for b in batch]), strict=True):
                waves[(i, start)] = w[ctx * SAMPLES_PER_FRAME :]
        out = []
        for i, arr in enumerate(arrays):
            parts = [waves[(i, s)] for s in range(0, arr.shape[1], self.piece_frames)]
            out.append(np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32))
        self.stats.calls += 1
        return out

    def decode_string(self, text: str) -> np.ndarray:
        """A bare span, a marked span, one utterance or a whole row -> the audio of its spans joined in order."""
        spans = audio_spans(text, self.config.num_codebooks)
        waves = self.decode([chars_to_codes(s, self.config.num_codebooks) for s in spans])
        return np.concatenate(waves) if waves else np.zeros(0, dtype=np.float32)

    def _batches(self, pieces):
        order = sorted(pieces, key=lambda p: p[3].shape[1], reverse=True)
        batch: list = []
        for item in order:
            longest = batch[0][3].shape[1] if batch else item[3].shape[1]
            if batch and (len(batch) >= self.batch_size or longest * (len(batch) + 1) > self.max_batch_frames):
                yield batch
                batch = []
            batch.append(item)
        if batch:
            yield batch

    def _decode_batch(self, codes: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        frames = [c.shape[1] for c in codes]
        longest = max(frames)
        x = np.zeros((len(codes), codes[0].shape[0], longest), dtype=np.int64)
        for j, c in enumerate(codes):
            x[j, :, : c.shape[1]] = c
        t0 = time.perf_counter()
        with self._lock, torch.inference_mode():
            values = self.model.decode(torch.from_numpy(x).to(self.device), return_dict=True).audio_values
            values = values[:, 0].to("cpu", torch.float32).numpy()
        st = self.stats
        st.batches += 1
        st.frames += sum(frames)
        st.decode_seconds += time.perf_counter() - t0
        st.by_batch_size[len(codes)] = st.by_batch_size.get(len(codes), 0) + 1
        out = []
        for j, n in enumerate(frames):
            want = n * SAMPLES_PER_FRAME
            if values.shape[1] < want:
                raise RuntimeError(f"codec returned {values.shape[1]} samples for {n} frames, expected {want}")
            out.append(np.ascontiguousarray(values[j, :want]))
        return out


def _native_transposed_convolutions(model) -> None:
    """Run the decoder's transposed convolutions on the CPU with ATen's own kernel instead of oneDNN's.

    oneDNN builds (JIT-compiles) a deconvolution for every new input length, which for Mimi's narrow upsampling
    layers costs up to seconds a shape (tiny-random decoded 50 s of audio in 10.8 s the first time, 0.2 s with ATen's
    kernel); for the full-size model ATen's kernel is as fast once oneDNN's are built, and needs no building.
    Decoding has no bit-exactness to keep (results agree to ~1e-7). Swapping the modules' class, rather than turning
    oneDNN off around the call, leaves every other convolution in the process (an encoder's) as it was.
    """
    import torch

    for module in model.modules():
        if type(module) is torch.nn.ConvTranspose1d and module.groups == 1 and module.padding_mode == "zeros":
            module.__class__ = _aten_conv_transpose1d_class()


def _aten_conv_transpose1d(module, x, output_size=None):
    import torch

    if output_size is not None or x.dim() != 3:
        return torch.nn.ConvTranspose1d.forward(module, x, output_size)
    # conv_transpose1d's own CPU path without oneDNN: the 1-D case as a 2-D one of height 1
    return torch.ops.aten.slow_conv_transpose2d(
        x.unsqueeze(2), module.weight.unsqueeze(2), (1, module.kernel_size[0]), module.bias, (1, module.stride[0]),
        (0, module.padding[0]), (0, module.output_padding[0]), (1, module.dilation[0]),
    ).squeeze(2)


@functools.cache
def _aten_conv_transpose1d_class() -> type:
    """nn.ConvTranspose1d with :func:`_aten_conv_transpose1d` as its forward (made on first use: torch loads late)."""
    import torch

    return type("AtenConvTranspose1d", (torch.nn.ConvTranspose1d,), {"forward": _aten_conv_transpose1d})


_DECODERS: dict[CodecConfig, MimiDecoder] = {}
_DECODERS_LOCK = threading.Lock()


def get_decoder(config: CodecConfig) -> MimiDecoder:
    """The process-wide decoder for ``config`` (full model incl. decoder; loaded once)."""
    with _DECODERS_LOCK:
        dec = _DECODERS.get(config)
        if dec is None:
            t0 = time.perf_counter()
            dec = MimiDecoder(config)
            log.info("loaded codec %s (with decoder) on %s/%s in %.1fs", config.codec, config.device, config.dtype,
                     time.perf_counter() - t0)
            _DECODERS[config] = dec
        return dec
