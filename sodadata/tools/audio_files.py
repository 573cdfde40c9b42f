"""Writing decoded audio to files: WAV, FLAC, MP3, Opus, Vorbis (libsndfile through soundfile), clipping avoided."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from sodadata.encode.codes import SAMPLE_RATE

log = logging.getLogger(__name__)

# suffix -> (soundfile format, subtype, extra write options). MP3 is VBR at ~50 kb/s for 24 kHz speech: compact and
# clean enough to judge codec artifacts; Opus at libsndfile's default (~32 kb/s) likewise.
AUDIO_FORMATS: dict[str, tuple[str, str, dict]] = {
    "mp3": ("MP3", "MPEG_LAYER_III", {"compression_level": 0.2, "bitrate_mode": "VARIABLE"}),
    "opus": ("OGG", "OPUS", {}),
    "ogg": ("OGG", "VORBIS", {}),
    "flac": ("FLAC", "PCM_16", {}),
    "wav": ("WAV", "PCM_16", {}),
}
AUDIO_MIME = {"mp3": "audio/mpeg", "opus": "audio/ogg; codecs=opus", "ogg": "audio/ogg", "flac": "audio/flac",
              "wav": "audio/wav"}


def can_write(fmt: str) -> bool:
    """Whether the installed libsndfile can write ``fmt`` (MPEG needs libsndfile >= 1.1, Opus >= 1.0.29)."""
    import soundfile as sf

    major, subtype, _ = AUDIO_FORMATS[fmt]
    return major in sf.available_formats() and subtype in sf.available_subtypes(major)


def compact_audio_format() -> str:
    """The most compact format we can write: MP3 (every browser plays it), else Opus, else WAV."""
    for fmt in ("mp3", "opus"):
        if can_write(fmt):
            return fmt
    return "wav"


def audio_suffix(fmt: str) -> str:
    return ".ogg" if fmt == "opus" else f".{fmt}"


def write_audio(path: Path, wave: np.ndarray, sample_rate: int = SAMPLE_RATE, fmt: str | None = None) -> float:
    """Write mono ``wave`` to ``path`` in ``fmt`` (default: from the suffix; ``.ogg`` is Opus when available).

    Samples beyond [-1, 1] would clip in every format: a louder wave (random codecs produce them) is scaled down to
    a 0.99 peak, with a warning. Returns the gain applied (1.0 when none).
    """
    import soundfile as sf

    path = Path(path)
    if fmt is None:
        suffix = path.suffix.lower().lstrip(".")
        fmt = {"ogg": "opus" if can_write("opus") else "ogg"}.get(suffix, suffix)
    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"cannot write {path.name}: use one of .{', .'.join(sorted(set(AUDIO_FORMATS) - {'opus'}))}")
    if not can_write(fmt):
        raise ValueError(f"this libsndfile cannot write {fmt}: write .wav instead")
    x = np.asarray(wave, dtype=np.float32)
    peak = float(np.abs(x).max()) if x.size else 0.0
    gain = 1.0
    if peak > 1.0:
        gain = 0.99 / peak
        x = x * gain
        log.debug("%s: decoded audio peaks at %.2f; scaled by %.3f to avoid clipping", path.name, peak, gain)
    if x.size == 0:
        x = np.zeros(1, dtype=np.float32)  # some encoders refuse empty files; one silent sample is harmless
    major, subtype, opts = AUDIO_FORMATS[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sample_rate, format=major, subtype=subtype, **opts)
    return gain
