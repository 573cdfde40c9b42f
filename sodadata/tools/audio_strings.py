"""Waveform <-> audio-character string in one call, for notebooks: the pipeline's encoding and its inverse.

Two helpers, with SODA's names kept as aliases::

    from sodadata import audio_to_string, string_to_audio   # also: audio_to_str, str_to_audio
    s = audio_to_string(wave, 16_000)                         # NumPy array or torch tensor, any sample rate
    wave_24k = string_to_audio(s)                             # float32, 24 kHz, len(s) // 8 * 1920 samples

``audio_to_string`` encodes through :func:`sodadata.encode.codec.get_encoder` and resamples with
:func:`sodadata.encode.audio.to_mono_24k`, exactly as the pipeline does, so a notebook string equals a pipeline string
for the same audio and codec. ``string_to_audio`` decodes with :class:`sodadata.tools.mimi_decoder.MimiDecoder`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sodadata.encode.codec import DEFAULT_CODEC, CodecConfig, MimiEncoder, get_encoder
from sodadata.encode.codes import SAMPLE_RATE, codes_to_chars
from sodadata.tools.mimi_decoder import MimiDecoder, get_decoder
from sodadata.write.document import AUDIO_END, AUDIO_START


def _codec_config(codec: Any, device: str, dtype: str) -> CodecConfig:
    if isinstance(codec, CodecConfig):
        return codec
    if isinstance(codec, (str, Path)):
        return CodecConfig(codec=str(codec), device=device, dtype=dtype)
    raise TypeError(f"codec must be a name, a CodecConfig or a MimiModel, got {type(codec).__name__}")


def _is_model(obj: Any) -> bool:
    return hasattr(obj, "decode") and hasattr(obj, "encode") and hasattr(obj, "parameters")


def _wrapped(codec: Any, device: str, dtype: str, role: str, wrapper: type, shared: Callable[[CodecConfig], Any]):
    """The ``role`` ("encoder" or "decoder") for ``codec``: the process-wide ``shared`` one (get_encoder /
    get_decoder) for a name or a CodecConfig, or a ``wrapper`` (MimiEncoder / MimiDecoder) around a caller's own
    MimiModel."""
    if not _is_model(codec):
        return shared(_codec_config(codec, device, dtype))
    # The wrappers around a caller's own MimiModel live on the model, so there is one of each per model (MimiEncoder
    # hooks the model's convolutions: wrapping it twice would hook them twice) and they go with it.
    codecs = codec.__dict__.setdefault("_sodadata_codecs", {})
    if role not in codecs:
        codecs[role] = wrapper(CodecConfig(codec="<model>", device=str(codec.device).split(":")[0]), model=codec)
    return codecs[role]


def _as_numpy(audio: Any) -> np.ndarray:
    if hasattr(audio, "detach") and hasattr(audio, "cpu"):  # torch tensor (any device, maybe with grad)
        audio = audio.detach().to("cpu")
        if str(audio.dtype) in ("torch.bfloat16", "torch.float16"):
            audio = audio.float()
        audio = audio.numpy()
    x = np.asarray(audio)
    while x.ndim > 2 and x.shape[0] == 1:  # (1, 1, n) as fed to MimiModel.encode
        x = x[0]
    if x.ndim == 2:
        if 1 in x.shape:
            x = x.reshape(-1)
        elif x.shape[0] < x.shape[1]:
            # torch/torchaudio give (channels, samples), soundfile (samples, channels): the short side is channels
            x = x.T
    return x


def _check_rate(sample_rate: Any, extra: tuple, name: str) -> int:
    # SODA's own helpers are called as (x, mimi_model, device): say how ours differ instead of failing obscurely
    if extra or isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise TypeError(
            f"{name} takes (x, sample_rate, codec=...), not SODA's (x, mimi_model, device): pass your model as "
            f"codec=model and the sample rate as an int (got {type(sample_rate).__name__})"
        )
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    return int(sample_rate)


def audio_to_string(
    audio: Any,
    sample_rate: int = SAMPLE_RATE,
    *soda_args: Any,
    codec: Any = DEFAULT_CODEC,
    device: str = "cpu",
    dtype: str = "float32",
    markers: bool = False,
) -> str:
    """Encode a waveform to its audio-character string, exactly as the pipeline does.

    ``audio``: NumPy array or torch tensor, mono ``(n,)``, ``(1, n)``/``(1, 1, n)``, or multi-channel
    ``(channels, n)``/``(n, channels)`` (downmixed); integer PCM is scaled to [-1, 1). ``sample_rate``: its rate;
    resampled to 24 kHz. ``codec``: Hub id or local directory (default ``kyutai/mimi``), ``tiny-random``, a
    :class:`CodecConfig`, or your own loaded ``MimiModel``. ``markers=True`` wraps the span in
    ``<|audio_start|>…<|audio_end|>``. The result has ``8 * ceil(n_24k / 1920)`` characters.
    """
    from sodadata.encode.audio import to_mono_24k

    rate = _check_rate(sample_rate, soda_args, "audio_to_string")
    wave = to_mono_24k(_as_numpy(audio), rate, max_seconds=None)
    codes = _wrapped(codec, device, dtype, "encoder", MimiEncoder, get_encoder).encode([wave])[0]
    span = codes_to_chars(codes)
    return AUDIO_START + span + AUDIO_END if markers else span


def string_to_audio(
    text: str,
    sample_rate: int = SAMPLE_RATE,
    *soda_args: Any,
    codec: Any = DEFAULT_CODEC,
    device: str = "cpu",
    dtype: str = "float32",
) -> np.ndarray:
    """Decode a string's audio to a mono float32 waveform at ``sample_rate`` (default 24 kHz).

    ``text``: a bare audio span, a ``<|audio_start|>…<|audio_end|>`` span, an utterance or a whole row (its
    utterances' audio joined in order; transcripts are ignored). At 24 kHz the result has
    ``frames * 1920`` samples. ``codec`` as in :func:`audio_to_string`: use the one that encoded the string.
    """
    import soxr

    rate = _check_rate(sample_rate, soda_args, "string_to_audio")
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    wave = _wrapped(codec, device, dtype, "decoder", MimiDecoder, get_decoder).decode_string(text)
    if rate != SAMPLE_RATE and wave.size:
        wave = soxr.resample(wave, SAMPLE_RATE, rate, quality="HQ").astype(np.float32, copy=False)
    return wave


# SODA's published helpers are called audio_to_str / str_to_audio: same functions under those names.
audio_to_str = audio_to_string
str_to_audio = string_to_audio
