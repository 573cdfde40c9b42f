"""Mimi codes <-> characters (SPEC.md §1).

The character for frame ``t``, codebook ``i`` is ``chr(0xE000 + i*2048 + code[i, t])``, frame-major:
``f0c0 f0c1 … f0c7 f1c0 …``. With fewer codebooks (``--codebooks N``, 1-8) the first ``N`` are kept and the mapping
is unchanged: a frame is ``N`` characters, character ``k`` lies in codebook ``k mod N``; every function here takes
``N`` (the number of rows of a code array, or ``num_codebooks`` for a string). Two implementations with the same output: a C loop (``sodadata/encode/_codes.c``, built
at install when a C compiler is present; :data:`NATIVE` says whether it is) that converts a call's characters in
one pass, and NumPy through the UTF-32 view of strings. The C loop only ever succeeds; anything it declines
(a malformed span, a code out of range, an unusual dtype) goes to the NumPy path, the one place that raises and
words the errors. The pipeline converts one utterance (a few hundred characters) per call, where NumPy's few
microseconds of per-call overhead are the whole cost: the C loop takes well under one.

Nothing here normalizes text: codebook 3 holds characters that NFC/NFKC would rewrite.
"""

from __future__ import annotations

import numpy as np

try:
    from sodadata.encode import _codes as _native
except ImportError:  # installed without a C compiler: the NumPy path gives the same output
    _native = None

NATIVE: bool = _native is not None

AUDIO_BASE = 0xE000
CODEBOOK_SIZE = 2048
NUM_CODEBOOKS = 8
AUDIO_END_CODEPOINT = AUDIO_BASE + NUM_CODEBOOKS * CODEBOOK_SIZE  # exclusive: 0x12000
FRAME_RATE_HZ = 12.5
SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 1920
CHARS_PER_SECOND = int(FRAME_RATE_HZ * NUM_CODEBOOKS)  # 100


# The NumPy path keeps per-call cost low too: a handful of NumPy calls, the range of all codes checked with one
# ``max`` over an unsigned view (values below the range wrap to huge ones), the culprit looked for only on failure.
_OFFSETS = (AUDIO_BASE + CODEBOOK_SIZE * np.arange(NUM_CODEBOOKS, dtype=np.uint32)).astype("<u4")
_OFFSETS_INT64 = _OFFSETS.astype(np.int64)[:, None]
_INT64 = np.dtype(np.int64)
_empty = np.empty  # looked up once: on a 3 s utterance each attribute lookup is a visible share of the call


def codes_to_chars(codes: np.ndarray) -> str:
    """Map a ``(n_codebooks, frames)`` integer array to its frame-major character string."""
    if _native is not None:
        text = _native.codes_to_chars(codes)
        if text is not None:
            return text
    return _numpy_codes_to_chars(codes)


def _numpy_codes_to_chars(codes: np.ndarray) -> str:
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise ValueError(f"codes must be 2-D (n_codebooks, frames), got shape {arr.shape}")
    n_codebooks = arr.shape[0]
    if not 1 <= n_codebooks <= NUM_CODEBOOKS:
        raise ValueError(f"codes must have 1..{NUM_CODEBOOKS} codebooks, got {n_codebooks}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"codes must be integers, got dtype {arr.dtype}")
    if arr.size == 0:
        return ""
    # a 64-bit value like 2**32 + 5 would wrap into range under the uint32 cast: those are checked before it
    wide_ok = arr.dtype.itemsize <= 4 or (int(arr.min()) >= 0 and int(arr.max()) < CODEBOOK_SIZE)
    points = arr.T.astype("<u4")  # frame-major copy; negative codes wrap to huge values
    if not wide_ok or int(points.max()) >= CODEBOOK_SIZE:
        bad = np.argwhere((arr < 0) | (arr >= CODEBOOK_SIZE))[0]
        raise ValueError(
            f"code {int(arr[tuple(bad)])} at codebook {bad[0]}, frame {bad[1]} is outside [0, {CODEBOOK_SIZE})"
        )
    points += _OFFSETS[:n_codebooks]
    return points.tobytes().decode("utf-32-le")


def _codepoints(text: str) -> np.ndarray:
    if not text:
        return np.zeros(0, dtype="<u4")
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def _span_codes(text: str, num_codebooks: int) -> tuple[np.ndarray | None, tuple[int, str] | None]:
    """``text`` as ``(num_codebooks, frames)`` int64 codes, or ``None`` and its first fault: ``(index, what)``."""
    points = _codepoints(text)
    if points.size % num_codebooks:
        return None, (points.size, f"length {points.size} is not a multiple of {num_codebooks}")
    # straight into the int64 result, no uint32 temporary: for an hour of codes the temporary's page faults cost
    # more than the arithmetic (bench/codes.py)
    codes = np.empty((num_codebooks, points.size // num_codebooks), dtype=np.int64)
    np.subtract(points.reshape(-1, num_codebooks).T, _OFFSETS_INT64[:num_codebooks], out=codes)
    if codes.size == 0 or int(codes.view(np.uint64).max()) < CODEBOOK_SIZE:  # negatives view as huge
        return codes, None
    frame, codebook = np.argwhere((codes.T < 0) | (codes.T >= CODEBOOK_SIZE))[0]  # frame-major: the first character
    k = int(frame) * num_codebooks + int(codebook)
    base = AUDIO_BASE + CODEBOOK_SIZE * (k % num_codebooks)
    return None, (k, (
        f"character {k} (U+{int(points[k]):04X}) is not in codebook {k % num_codebooks}'s range "
        f"U+{base:04X}..U+{base + CODEBOOK_SIZE - 1:04X}"
    ))


def span_fault(text: str, num_codebooks: int = NUM_CODEBOOKS) -> tuple[int, str] | None:
    """The first fault of ``text`` as an audio span of ``num_codebooks`` codebooks: ``(character index, what)``,
    or ``None`` if it is well-formed. The one definition of SPEC §1's check (``validate`` reports its index).

    Well-formed: length a multiple of ``num_codebooks`` and character ``k`` inside codebook ``k mod n``'s range.
    """
    if not 1 <= num_codebooks <= NUM_CODEBOOKS:
        raise ValueError(f"num_codebooks must be in 1..{NUM_CODEBOOKS}, got {num_codebooks}")
    if _native is not None and _native.span_codes(text, num_codebooks, None):
        return None
    return _span_codes(text, num_codebooks)[1]


def span_error(text: str, num_codebooks: int = NUM_CODEBOOKS) -> str | None:
    """Why ``text`` is not a well-formed audio span of ``num_codebooks`` codebooks, or ``None`` if it is."""
    fault = span_fault(text, num_codebooks)
    return None if fault is None else fault[1]


def check_audio_span(text: str, num_codebooks: int = NUM_CODEBOOKS) -> None:
    """Raise ``ValueError`` naming the fault if ``text`` is not a well-formed audio span."""
    err = span_error(text, num_codebooks)
    if err is not None:
        raise ValueError(f"malformed audio span: {err}")


def chars_to_codes(text: str, num_codebooks: int = NUM_CODEBOOKS) -> np.ndarray:
    """Inverse of :func:`codes_to_chars`: a ``(num_codebooks, frames)`` int64 array."""
    if not 1 <= num_codebooks <= NUM_CODEBOOKS:
        raise ValueError(f"num_codebooks must be in 1..{NUM_CODEBOOKS}, got {num_codebooks}")
    if _native is not None and isinstance(text, str):
        codes = _empty((num_codebooks, len(text) // num_codebooks), _INT64)
        if _native.span_codes(text, num_codebooks, codes):
            return codes
    codes, fault = _span_codes(text, num_codebooks)
    if fault is not None:
        raise ValueError(f"malformed audio span: {fault[1]}")
    return codes


def parse_codebooks(value: str) -> int:
    """``--codebooks``: an integer in 1..8, else ``ValueError`` with one line."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= NUM_CODEBOOKS:
        raise ValueError(f"--codebooks must be an integer from 1 to {NUM_CODEBOOKS} (the first N of Mimi's "
                         f"codebooks), got {value!r}")
    return n


def is_audio_char(ch: str) -> bool:
    return AUDIO_BASE <= ord(ch) < AUDIO_END_CODEPOINT


def frames_for_samples(n_samples: int) -> int:
    """Frames Mimi yields for ``n_samples`` at 24 kHz: ``ceil(n / 1920)``."""
    return -(-int(n_samples) // SAMPLES_PER_FRAME)
