"""Documents and rows (SPEC.md §2).

A document is the ordered run of utterances from one source recording. Every speech document yields one row per
format of the run: text-first (``_type1``) and audio-first (``_type2``) by default, audio-only (``_type3``, the
paper's S and S+A ablations) when asked for; pieces are joined with nothing between them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from sodadata.codes import AUDIO_BASE, AUDIO_END_CODEPOINT

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
TEXT_START = "<|text_start|>"
TEXT_END = "<|text_end|>"
AUDIO_START = "<|audio_start|>"
AUDIO_END = "<|audio_end|>"
MARKERS = (BOS, EOS, TEXT_START, TEXT_END, AUDIO_START, AUDIO_END)

TEXT_FIRST = "text_first"
AUDIO_FIRST = "audio_first"
AUDIO_ONLY = "audio_only"  # SPEC §2: {doc}_type3, the document's audio spans in order, no text
TEXT_ONLY = "text"
ROW_SUFFIX = {TEXT_FIRST: "_type1", AUDIO_FIRST: "_type2", AUDIO_ONLY: "_type3"}
SPEECH_FORMATS = (TEXT_FIRST, AUDIO_FIRST, AUDIO_ONLY)  # the order rows of a document are written in
DEFAULT_FORMATS = (TEXT_FIRST, AUDIO_FIRST)  # SODA's pair (SPEC §2); audio_only is off by default
# Version of the rule that decides what a transcript or web text becomes (SPEC §2: what is rejected, what is
# folded out of the audio range). Recorded in every shard's ``made_by``: a change of rule changes rows, so a new
# version keeps a rerun from mixing shards made under the old rule with new ones. 1: any audio-range character
# rejected the text. 2 (``apply_text_rule``): audio-range characters folded one by one by NFKC where that leaves the
# range, U+FEFF and the variation selectors dropped, invalid Unicode rejected as ``invalid_unicode``.
TEXT_RULE_VERSION = 2


@dataclass(frozen=True)
class EncodedUtterance:
    """One utterance after encoding: what a document is made of."""

    id: str
    doc_id: str
    order: tuple  # sort key inside the document (W index, segment index, begin time, ...)
    text: str
    audio: str  # well-formed audio span (codes_to_chars)
    seconds: float


INVALID_UNICODE = "invalid_unicode"
AUDIO_RANGE_CHARACTER = "audio_range_character"
# Dropped, not folded: the BOM (zero width no-break space) and the variation selectors carry no text of their own.
DROPPED_CHARACTERS = frozenset([0xFEFF, *range(0xFE00, 0xFE10)])


def _in_range(s: str) -> bool:
    return any(AUDIO_BASE <= ord(c) < AUDIO_END_CODEPOINT for c in s)


def _fold_table() -> dict[int, str]:
    """``str.translate`` table over the 16,384 audio-range characters: each one that the rule changes.

    A character maps to its NFKC form (of the character alone) when that form lies wholly outside the range, or to
    ``""`` when it is dropped. Characters absent from the table stay and make the text rejected.
    """
    table: dict[int, str] = {}
    for cp in range(AUDIO_BASE, AUDIO_END_CODEPOINT):
        if cp in DROPPED_CHARACTERS:
            table[cp] = ""
            continue
        form = unicodedata.normalize("NFKC", chr(cp))
        if form != chr(cp) and not _in_range(form):
            table[cp] = form
    return table


# Built once at import (about 3 ms). 1,612 entries: the 1,595 range characters NFKC changes (every such form lies
# outside the range) and the 17 dropped; tests/test_text_rule.py checks it against unicodedata.
FOLD_TABLE = _fold_table()
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_RANGE_RUN_RE = re.compile("[\ue000-\U00011fff]+")


@dataclass(frozen=True)
class TextVerdict:
    """What the text rule makes of one text: the text to write, or the reason it is rejected."""

    text: str  # as written: folded (and stripped, for a transcript); meaningless when rejected
    reason: str | None = None  # reject reason, None when the text is kept
    detail: str = ""
    folded: int = 0  # audio-range characters replaced by their NFKC form
    dropped: int = 0  # U+FEFF and variation selectors removed


def _char_name(c: str) -> str:
    fallback = {"Co": "(private use)", "Cn": "(unassigned or noncharacter)"}.get(unicodedata.category(c), "")
    return f"U+{ord(c):04X} {unicodedata.name(c, fallback)}".rstrip()


def surrogate_detail(text: str, what: str = "text") -> str | None:
    """Where ``text`` holds a lone surrogate (not valid Unicode, not storable as UTF-8), or ``None``."""
    if text.isascii():
        return None
    m = _SURROGATE_RE.search(text)
    if m is None:
        return None
    n = len(_SURROGATE_RE.findall(text))
    context = text[max(0, m.start() - 20):m.start() + 20]
    return (f"{what}: lone surrogate U+{ord(m[0]):04X} at character {m.start()} of {len(text)}"
            f"{f' ({n} in all)' if n > 1 else ''}, near {context!r}")


def invalid_unicode(value: object, what: str = "") -> str | None:
    """Where a value read from a source (str, or dict/list of them, e.g. a row's metadata) holds invalid Unicode.

    Returns a one-line detail naming the first place (``metadata['speaker']: lone surrogate U+D800 …``), else None.
    """
    if isinstance(value, str):
        return surrogate_detail(value, what or "text")
    if isinstance(value, dict):
        for k, v in value.items():
            where = f"{what}[{k!r}]"
            bad = (surrogate_detail(k, f"{what} key {k!r}") if isinstance(k, str) else None) or invalid_unicode(v, where)
            if bad:
                return bad
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            bad = invalid_unicode(v, f"{what}[{i}]")
            if bad:
                return bad
    return None


def storable(text: str) -> str:
    """``text`` with any lone surrogate written as ``\\udXXX``: for reject lists, which must always be writable."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _fold(text: str) -> tuple[str, int, int]:
    """(folded text, characters folded, characters dropped); only the runs of audio-range characters are touched."""
    folded = dropped = 0

    def run(m: re.Match) -> str:
        nonlocal folded, dropped
        s = m[0]
        for c in s:
            form = FOLD_TABLE.get(ord(c))
            if form == "":
                dropped += 1
            elif form is not None:
                folded += 1
        return s.translate(FOLD_TABLE)

    return _RANGE_RUN_RE.sub(run, text), folded, dropped


def _may_need_rule(text: str) -> bool:
    """Whether a non-ASCII text holds a surrogate or an audio-range character: the fast path's test.

    UTF-8 encoding fails on a surrogate (a str only holds one when it came from a JSON \\ud800 escape or a
    surrogateescape decode). Otherwise the range shows in the bytes: U+E000..U+FFFF are exactly the characters
    whose lead byte is EE or EF, U+10000..U+11FFF those starting F0 90 or F0 91 (lead bytes never occur inside
    another character). A few memchr scans: cheaper than a regex or a code-point array over the text.
    """
    try:
        b = text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    # one-byte needles are memchr scans; two-byte ones are far slower, so only when an F0 is there at all
    return b"\xee" in b or b"\xef" in b or (b"\xf0" in b and (b"\xf0\x90" in b or b"\xf0\x91" in b))


def apply_text_rule(text: object, *, transcript: bool = True) -> TextVerdict:
    """The text rule of SPEC §2 (version ``TEXT_RULE_VERSION``), for transcripts and web text alike.

    Order: invalid Unicode is rejected; audio-range characters are folded or dropped; a transcript is stripped of
    surrounding whitespace (web text is kept as given); an empty text, a text that still holds an audio-range
    character, or one holding a marker string (checked after folding: ``＜|text_end|＞`` folds into a marker) is
    rejected. Nothing else changes. Texts with no audio-range character and no surrogate (nearly all) take a
    fast path: for ASCII one flag test, else one UTF-8 encode and a few byte scans (``_may_need_rule``).
    """
    empty = "empty_transcript" if transcript else "empty_text"
    if not isinstance(text, str):
        return TextVerdict("", empty, f"not a string: {type(text).__name__}")
    folded = dropped = 0
    if not text.isascii() and _may_need_rule(text):
        bad = surrogate_detail(text)
        if bad is not None:
            return TextVerdict(text, INVALID_UNICODE, bad)
        text, folded, dropped = _fold(text)
        left = [m.start() for m in _RANGE_RUN_RE.finditer(text)]
        if left:
            chars = sorted({c for c in text if AUDIO_BASE <= ord(c) < AUDIO_END_CODEPOINT})
            names = ", ".join(_char_name(c) for c in chars[:5]) + (f" and {len(chars) - 5} more" if len(chars) > 5 else "")
            return TextVerdict(text, AUDIO_RANGE_CHARACTER,
                               f"{names} at character {left[0]}: would read back as audio; near "
                               f"{text[max(0, left[0] - 20):left[0] + 20]!r}", folded, dropped)
    if transcript:
        text = text.strip()
    if not text.strip():
        return TextVerdict(text, empty, repr(text[:200]), folded, dropped)
    # "<" alone is a memchr scan; "<|" and the six markers are slower searches, needed only where "<" occurs
    if "<" in text and "<|" in text and any(m in text for m in MARKERS):
        marker = next(m for m in MARKERS if m in text)
        return TextVerdict(text, "transcript_has_marker" if transcript else "text_has_marker",
                           f"{marker} at character {text.index(marker)}: {text[:200]!r}", folded, dropped)
    return TextVerdict(text, None, "", folded, dropped)


def parse_formats(value: str) -> tuple[str, ...]:
    """``--formats``: a comma list of speech formats, returned in row order (``text_first,audio_first,audio_only``).

    Raises ``ValueError`` with one line for an unknown, repeated or missing format."""
    names = [v.strip() for v in value.split(",")]
    unknown = [n for n in names if n not in SPEECH_FORMATS]
    if unknown or not value.strip():
        raise ValueError(f"--formats {value!r}: expected a comma list of {', '.join(SPEECH_FORMATS)} "
                         f"(default {','.join(DEFAULT_FORMATS)})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"--formats {value!r}: {', '.join(repeated)} named twice")
    return tuple(f for f in SPEECH_FORMATS if f in names)


def format_speech_row(utterances: Sequence[EncodedUtterance], fmt: str) -> str:
    """The row text of one document in ``fmt`` (``text_first``, ``audio_first`` or ``audio_only``)."""
    parts = [BOS]
    for u in utterances:
        text = TEXT_START + u.text + TEXT_END
        audio = AUDIO_START + u.audio + AUDIO_END
        if fmt == TEXT_FIRST:
            parts += (text, audio)
        elif fmt == AUDIO_FIRST:
            parts += (audio, text)
        elif fmt == AUDIO_ONLY:
            parts.append(audio)
        else:
            raise ValueError(f"unknown speech row format {fmt!r}")
    parts.append(EOS)
    return "".join(parts)


def format_text_row(text: str) -> str:
    return BOS + text + EOS
