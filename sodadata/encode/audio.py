"""Audio in: decode file bytes, downmix to mono, resample to 24 kHz float32, and say why when we cannot.

soundfile (libsndfile) decodes WAV/FLAC/OGG/MP3; soxr resamples. torchaudio is not used: its PyPI wheels are
CUDA builds pinned to one torch release, and its resampler's filter design (measured through SciPy) is slower
and leaks more than soxr's (see BENCHMARKS.md, resample).
"""

from __future__ import annotations

import io
import re

import numpy as np
import soundfile as sf
import soxr

from sodadata.encode.codes import SAMPLE_RATE

# Chosen by bench/resample.py: VHQ. HQ's narrower passband (91 % vs 95 % of Nyquist) changed 0.3-0.5 % of Mimi
# codes against VHQ's output, where a 16-bit copy of the same audio changed none; VHQ still runs at thousands of
# times real time (under 1 % of encoding, and in the prefetch thread).
RESAMPLE_QUALITY = "VHQ"
DEFAULT_MAX_SECONDS = 600.0  # an utterance; Yodas videos (whole recordings) pass their own limit
_BYTESIO_ADDRESS_RE = re.compile(r"<_io\.BytesIO object at 0x[0-9a-f]+>")  # how libsndfile names a BytesIO


class AudioError(ValueError):
    """Audio that cannot be used, with a short reason code for reject records."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def to_mono_24k(samples: np.ndarray, sample_rate: int, *, max_seconds: float | None = DEFAULT_MAX_SECONDS) -> np.ndarray:
    """Downmix (frames, channels) or (frames,) samples to mono, check them, resample to 24 kHz float32."""
    x = np.asarray(samples)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    elif x.ndim != 1:
        raise AudioError("bad_audio_shape", f"expected (frames,) or (frames, channels), got {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if sample_rate <= 0:
        raise AudioError("bad_sample_rate", f"sample rate {sample_rate}")
    if x.size == 0:
        raise AudioError("empty_audio", "no samples")
    seconds = x.size / sample_rate
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError("too_long_audio", f"{seconds:.1f} s > limit {max_seconds:.0f} s")
    if not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise AudioError("nonfinite_audio", f"{bad} NaN/inf samples")
    if sample_rate != SAMPLE_RATE:
        x = soxr.resample(x, sample_rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)
    return x


def decoder_error_detail(exc: BaseException) -> str:
    """A decoder's exception as a reject detail: its type and message, without the address libsndfile names the
    ``BytesIO`` object by, so the same bad file gives the same detail in every run."""
    return f"{type(exc).__name__}: {_BYTESIO_ADDRESS_RE.sub('<bytes>', str(exc))}"


def decode_audio(data: bytes, *, max_seconds: float | None = DEFAULT_MAX_SECONDS) -> np.ndarray:
    """Decode WAV/FLAC/OGG/MP3 bytes to mono 24 kHz float32, or raise :class:`AudioError` with a reason."""
    if not data:
        raise AudioError("empty_audio", "zero-length file")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate = f.samplerate
            if max_seconds is not None and f.frames > 0 and f.frames / rate > max_seconds * 1.01:
                raise AudioError("too_long_audio", f"{f.frames / rate:.1f} s > limit {max_seconds:.0f} s")
            samples = f.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, EOFError) as exc:
        raise AudioError("undecodable_audio", decoder_error_detail(exc)) from exc
    return to_mono_24k(samples, rate, max_seconds=max_seconds)
