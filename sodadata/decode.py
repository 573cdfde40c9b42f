"""Codes -> audio: hear what a row holds.

The reverse of the pipeline: a string of audio characters (SPEC.md §1) -> Mimi codes -> waveform with
``MimiModel.decode``. It works on one audio span, one utterance of a row, or a whole row (the utterances' audio
joined in order). Two one-call helpers for notebooks, with SODA's names kept as aliases::

    from sodadata import audio_to_string, string_to_audio   # also: audio_to_str, str_to_audio
    s = audio_to_string(wave, 16_000)                         # NumPy array or torch tensor, any sample rate
    wave_24k = string_to_audio(s)                             # float32, 24 kHz, len(s) // 8 * 1920 samples

``audio_to_string`` encodes through :func:`sodadata.codec.get_encoder` and resamples with
:func:`sodadata.audio.to_mono_24k`, exactly as the pipeline does, so a notebook string equals a pipeline string
for the same audio and codec.

Command line: ``sodadata decode OUT_DIR --id ROW_ID [--out file.wav]`` finds the row across an output directory
(predicate pushdown on the ``id`` column, not a full read) and writes its audio.

Decoding is causal (Mimi's decoder convolutions and transformer only look back), which gives two things for free:
right-padding a batch does not change any item's samples, and a long utterance can be decoded in pieces, each
preceded by some already-decoded context, with little audible seam (the exact result would need the transformer's
whole receptive field of left context).

``--codec tiny-random`` / ``full-random`` are seeded RANDOM models: decoding with them gives noise, not speech,
and their codes are NOT real Mimi codes. Decode with the codec that encoded the data: ``sodadata decode`` reads it
from the shard's record when ``--codec`` is not given.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sodadata.codec import (
    DEFAULT_CODEC,
    NOT_REAL_WARNING,
    RANDOM_CODECS,
    CodecConfig,
    MimiEncoder,
    get_encoder,
)
from sodadata.codes import (
    CODEBOOK_SIZE,
    NUM_CODEBOOKS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    chars_to_codes,
    codes_to_chars,
)
from sodadata.document import AUDIO_END, AUDIO_START, ParsedRow, Utterance, audio_spans, parse_row
from sodadata.outputs import NO_MADE_BY, find_shards

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
        from sodadata.codec import load_mimi

        if piece_frames < 1 or context_frames < 0:
            raise ValueError("piece_frames must be >= 1 and context_frames >= 0")
        self.config = config
        self.model = model if model is not None else load_mimi(config, encoder_only=False)
        if getattr(self.model, "decoder", None) is None:
            raise ValueError("this Mimi model has no decoder (loaded with encoder_only=True?)")
        param = next(self.model.parameters())
        self.device, self.dtype = param.device, param.dtype
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


# --------------------------------------------------------------------------------------------------------------
# Notebook helpers

def _codec_config(codec: Any, device: str, dtype: str) -> CodecConfig:
    if isinstance(codec, CodecConfig):
        return codec
    if isinstance(codec, (str, Path)):
        return CodecConfig(codec=str(codec), device=device, dtype=dtype)
    raise TypeError(f"codec must be a name, a CodecConfig or a MimiModel, got {type(codec).__name__}")


def _is_model(obj: Any) -> bool:
    return hasattr(obj, "decode") and hasattr(obj, "encode") and hasattr(obj, "parameters")


def _model_codecs(model: Any) -> dict:
    # The encoder/decoder wrapped around a caller's own MimiModel live on the model, so there is one pair per model
    # (MimiEncoder hooks the model's convolutions: wrapping it twice would hook them twice) and they go with it.
    return model.__dict__.setdefault("_sodadata_codecs", {})


def _encoder_for(codec: Any, device: str, dtype: str) -> MimiEncoder:
    if _is_model(codec):
        codecs = _model_codecs(codec)
        if "encoder" not in codecs:
            codecs["encoder"] = MimiEncoder(CodecConfig(codec="<model>", device=str(codec.device).split(":")[0]),
                                            model=codec)
        return codecs["encoder"]
    return get_encoder(_codec_config(codec, device, dtype))


def _decoder_for(codec: Any, device: str, dtype: str) -> MimiDecoder:
    if _is_model(codec):
        codecs = _model_codecs(codec)
        if "decoder" not in codecs:
            codecs["decoder"] = MimiDecoder(CodecConfig(codec="<model>", device=str(codec.device).split(":")[0]),
                                            model=codec)
        return codecs["decoder"]
    return get_decoder(_codec_config(codec, device, dtype))


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
    from sodadata.audio import to_mono_24k

    rate = _check_rate(sample_rate, soda_args, "audio_to_string")
    wave = to_mono_24k(_as_numpy(audio), rate, max_seconds=None)
    codes = _encoder_for(codec, device, dtype).encode([wave])[0]
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
    wave = _decoder_for(codec, device, dtype).decode_string(text)
    if rate != SAMPLE_RATE and wave.size:
        wave = soxr.resample(wave, SAMPLE_RATE, rate, quality="HQ").astype(np.float32, copy=False)
    return wave


# SODA's published helpers are called audio_to_str / str_to_audio: same functions under those names.
audio_to_str = audio_to_string
str_to_audio = string_to_audio


# --------------------------------------------------------------------------------------------------------------
# Finding rows in an output directory


def row_files(out_dir: Path) -> list[Path]:
    """Every finished shard at or below ``out_dir`` (an output root, a folder holding roots, one component, or one
    shard), found by :func:`sodadata.outputs.find_shards`: never ``_hub`` staged copies, rejects or partial files."""
    return [s.parquet for s in find_shards(Path(out_dir)).shards]


@dataclass(frozen=True)
class FoundRow:
    row: dict  # the row's columns
    path: Path  # its shard
    record: dict | None  # the shard's record (<stem>.json), if finished


def find_rows(
    where: Path | Sequence[Path], ids: Sequence[str], columns: Sequence[str] | None = None
) -> list[FoundRow]:
    """The rows with these ids under ``where`` (a folder, or a list of shards), in the order of ``ids``.

    Read with a filter on ``id``: the ``id`` column's row-group statistics let Arrow skip what cannot match.
    """
    import json

    import pyarrow.dataset as ds

    files = row_files(where) if isinstance(where, (str, Path)) else [Path(f) for f in where]
    if not files or not ids:
        return []
    dataset = ds.dataset([str(f) for f in files], format="parquet")
    cols = list(columns) if columns is not None else dataset.schema.names
    if "id" not in cols:
        cols = ["id", *cols]
    table = dataset.to_table(filter=ds.field("id").isin(list(ids)), columns=[*cols, "__filename"])
    found, records = [], {}
    for row in table.to_pylist():
        path = Path(row.pop("__filename"))
        if path not in records:
            rec_path = path.with_suffix(".json")
            records[path] = json.loads(rec_path.read_text(encoding="utf-8")) if rec_path.exists() else None
        found.append(FoundRow(row, path, records[path]))
    order = {i: k for k, i in enumerate(ids)}
    return sorted(found, key=lambda f: (order.get(f.row["id"], len(order)), str(f.path)))


def find_row(out_dir: Path, row_id: str) -> FoundRow:
    """The row ``row_id`` (a document id finds its ``_type1`` row).

    ``KeyError`` with a hint when absent; ``LookupError`` naming both shards when the row is in two (two output
    roots below ``out_dir`` holding the same corpus, say): one id, one answer, never a guess.
    """
    hits = find_rows(out_dir, [row_id, row_id + "_type1"])
    exact = [h for h in hits if h.row["id"] == row_id] or hits
    if len(exact) > 1:
        raise LookupError(f"row {exact[0].row['id']} is in {len(exact)} shards: "
                          f"{' and '.join(str(h.path) for h in exact)}; pass the output root (or shard) to decode from")
    if exact and exact[0].row["id"] != row_id:
        log.info("%s is a document id: decoding its row %s", row_id, exact[0].row["id"])
    if exact:
        return exact[0]
    raise KeyError(f"no row with id {row_id!r} under {out_dir} (ids look like '<doc id>_type1'; "
                   "list some with: python -c \"import pyarrow.parquet as pq; print(pq.read_table('SHARD', "
                   "columns=['id'])['id'][:10])\")")


# --------------------------------------------------------------------------------------------------------------
# Writing audio files

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


# --------------------------------------------------------------------------------------------------------------
# CLI


def add_codec_args(p: argparse.ArgumentParser) -> None:
    """Codec options shared by ``decode`` and ``inspect``."""
    p.add_argument("--codec", default=None,
                   help="Mimi to decode with: Hub id, local dir, or tiny-random/full-random (RANDOM: noise, not "
                        "speech). Default: the codec the shard's record names (made_by: id and revision); a shard "
                        "made with a local folder needs --codec DIR, whose weights must hash as recorded")
    p.add_argument("--revision", default=None, help="Hub revision of --codec (default: the recorded one)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=("float32", "tf32", "bfloat16", "float16"))


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    # inspect resolves the codec once per sampled row: say each thing once
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


@functools.lru_cache(maxsize=8)
def _local_weights_sha256(directory: str) -> str:
    from sodadata.codec import weights_sha256

    return weights_sha256(directory)


def codebooks_of(record: dict | None) -> int:
    """The codebooks per frame of a shard's rows, as its record states them (``made_by.codebooks``; a record made
    before format 2: its codec settings), 8 when it says nothing."""
    record = record or {}
    made_by = record.get("made_by")
    if isinstance(made_by, dict):
        return int(made_by.get("codebooks") or NUM_CODEBOOKS)
    legacy = record.get("codec") if isinstance(record.get("codec"), dict) else {}
    return int(legacy.get("num_codebooks", NUM_CODEBOOKS))


def codec_config_from(args: Any, record: dict | None) -> CodecConfig:
    """The codec to decode a shard's rows with: the one its record's ``made_by`` names (id and revision), unless
    ``--codec`` says otherwise (a warning when it names another model).

    A shard made with a local ``save_pretrained`` directory (``codec.id == "local"``) needs ``--codec DIR``, and
    that directory's weights must hash to the recorded ``weights_sha256`` (``ValueError`` otherwise: another model
    decodes codes into noise). A record without ``made_by`` (made before format 2) falls back to its ``codec``
    settings. ``args``: anything with ``codec``, ``revision``, ``device`` and ``dtype`` (parsed options,
    InspectOptions).
    """
    record = record or {}
    made_by = record.get("made_by")
    name, revision = args.codec, args.revision
    if isinstance(made_by, dict):
        codec = made_by.get("codec")
        if not isinstance(codec, dict):
            raise ValueError("this shard holds text only (its made_by names no codec): there is no audio to decode")
        rec_name, rec_rev = codec.get("id"), codec.get("revision")
        if rec_name == "local":
            want = codec.get("weights_sha256")
            if name is None:
                raise ValueError(f"this shard was encoded with a local codec (weights sha256 {want}): pass --codec "
                                 "DIR, the MimiModel.save_pretrained folder holding those weights")
            if name in RANDOM_CODECS or not Path(name).is_dir():
                raise ValueError(f"this shard was encoded with a local codec (weights sha256 {want}); --codec {name} "
                                 "is not a folder: pass the save_pretrained folder holding those weights")
            got = _local_weights_sha256(str(Path(name).resolve()))
            if got != want:
                raise ValueError(f"--codec {name}: its weights hash to sha256 {got}, but this shard was encoded with "
                                 f"weights {want}: pass the folder that encoded it")
        elif name is None:
            name, revision = rec_name, revision or rec_rev
            log.info("decoding with %s%s, the codec recorded for this shard", name, f"@{revision}" if revision else "")
        elif name != rec_name:
            _warn_once(f"the shard was encoded with {rec_name!r} but you decode with {name!r}: expect noise unless "
                       "they are the same model")
    else:
        # made before format 2: the record's codec settings are all there is
        legacy = record.get("codec") if isinstance(record.get("codec"), dict) else {}
        rec_name, rec_rev = legacy.get("codec"), legacy.get("revision")
        if name is None:
            known = isinstance(rec_name, str) and (rec_name in RANDOM_CODECS or "/" in rec_name
                                                   or Path(rec_name).is_dir())
            if not known:
                raise ValueError("the shard's record names no codec (made before format 2, "
                                 f"codec {rec_name!r}): pass --codec")
            name, revision = rec_name, revision or rec_rev
            _warn_once(f"the shard's record has no made_by ({NO_MADE_BY}): decoding with {name}, the codec its "
                       "settings name")
        elif rec_name and rec_name != name:
            _warn_once(f"the shard was encoded with {rec_name!r} but you decode with {name!r}: expect noise unless "
                       "they are the same model")
    num_codebooks = codebooks_of(record)
    if num_codebooks < NUM_CODEBOOKS:
        # Mimi decodes from any prefix of its codebooks; the finer ones are simply absent (quieter, muffled audio)
        _warn_once(f"this shard keeps {num_codebooks} of Mimi's {NUM_CODEBOOKS} codebooks (made_by.codebooks): "
                   f"decoded from those alone, lossy")
    return CodecConfig(codec=name, revision=revision, device=args.device, dtype=args.dtype,
                       num_codebooks=num_codebooks)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sodadata decode",
        description="Decode one row of an output directory back to audio (its utterances joined in order).",
    )
    p.add_argument("out_dir", type=Path, help="output root, a folder holding output roots, one component, or one "
                   "shard (never its _hub/ staged copies)")
    p.add_argument("--id", required=True, dest="row_id", help="row id, e.g. EN_B00000_S00040_type1 (a document id "
                   "finds its _type1 row)")
    p.add_argument("--out", type=Path, default=None, help="audio file to write (.wav, .flac, .mp3, .ogg); "
                   "default <row id>.wav")
    p.add_argument("--utterance", type=int, default=None, help="only this utterance (0-based)")
    add_codec_args(p)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from sodadata.cli import setup_logging

    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    if not args.out_dir.exists():
        print(f"sodadata decode: {args.out_dir} does not exist", file=sys.stderr)
        return 2
    try:
        found = find_row(args.out_dir, args.row_id)
    except LookupError as exc:  # KeyError (not there) too
        print(f"sodadata decode: {exc.args[0]}", file=sys.stderr)
        return 1
    row = found.row
    try:
        parsed = parse_row(row["text"], row.get("format"), codebooks_of(found.record))
    except ValueError as exc:
        print(f"sodadata decode: row {row['id']} in {found.path} is malformed: {exc}", file=sys.stderr)
        return 1
    if not parsed.utterances:
        print(f"sodadata decode: row {row['id']} is a text row (format {parsed.format!r}): it holds no audio",
              file=sys.stderr)
        return 1
    utts = list(parsed.utterances)
    if args.utterance is not None:
        if not 0 <= args.utterance < len(utts):
            print(f"sodadata decode: --utterance must be in 0..{len(utts) - 1} for row {row['id']}", file=sys.stderr)
            return 2
        utts = [utts[args.utterance]]
    try:
        config = codec_config_from(args, found.record)
    except ValueError as exc:
        print(f"sodadata decode: {found.path}: {exc}", file=sys.stderr)
        return 2
    if config.is_random:
        log.warning(NOT_REAL_WARNING.format(name=config.codec) + " Decoded audio is noise, not speech.")
    out = args.out or Path(f"{row['id']}.wav")
    try:
        decoder = get_decoder(config)
        waves = decoder.decode([chars_to_codes(u.audio, config.num_codebooks) for u in utts])
        wave = np.concatenate(waves)
        gain = write_audio(out, wave)
        if gain < 1.0:
            log.warning("decoded audio peaks above full scale: written %.3f times as loud to avoid clipping", gain)
    except (RuntimeError, ValueError) as exc:
        print(f"sodadata decode: {exc}", file=sys.stderr)
        return 1
    log.info("decoded %d utterance(s), %.2f s of audio in %.1fs", len(utts), wave.size / SAMPLE_RATE,
             decoder.stats.decode_seconds)
    # the command's own output: where the audio went and what is said in it
    print(f"{out}\t{row['id']}\t{wave.size / SAMPLE_RATE:.2f} s\t{len(utts)} utterance(s)")
    for u in utts:
        print(f"  [{u.index}] {u.seconds:6.2f} s  {u.text}")
    return 0


__all__ = [
    "AUDIO_FORMATS",
    "FoundRow",
    "MimiDecoder",
    "ParsedRow",
    "Utterance",
    "audio_spans",
    "audio_to_str",
    "audio_to_string",
    "codebooks_of",
    "compact_audio_format",
    "find_row",
    "find_rows",
    "get_decoder",
    "parse_row",
    "row_files",
    "str_to_audio",
    "string_to_audio",
    "write_audio",
]
