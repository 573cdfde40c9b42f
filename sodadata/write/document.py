"""Documents and rows (SPEC.md §2): the writer of rows and their one reader.

A document is the ordered run of utterances from one source recording. Every speech document yields one row per
format of the run: text-first (``_type1``) and audio-first (``_type2``) by default, audio-only (``_type3``, the
paper's S and S+A ablations) when asked for; pieces are joined with nothing between them.
:func:`format_speech_row` / :func:`format_text_row` write rows; :func:`parse_row` reads them back (used by
``validate``, ``decode``, ``stats``, ``inspect``, the benches and the tests) and :func:`audio_spans` finds the audio
in any string (a bare span, one utterance, a row).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from sodadata.encode.codes import (
    AUDIO_BASE,
    AUDIO_END_CODEPOINT,
    NUM_CODEBOOKS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    span_fault,
)

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
_AUDIO_CHAR_RE = re.compile(f"[{chr(AUDIO_BASE)}-{chr(AUDIO_END_CODEPOINT - 1)}]")  # one audio-range character
_RANGE_RUN_RE = re.compile(_AUDIO_CHAR_RE.pattern + "+")


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


# --------------------------------------------------------------------------------------------------------------
# Reading rows back: the inverse of format_speech_row / format_text_row

# What a fault of a row's text breaks (the names are validate's checks): its structure (markers missing, out of
# order, or characters between pieces: what follows cannot be read), an audio span (not well-formed, SPEC §1), or
# a transcript (the row reads, but the pipeline never writes such a text).
STRUCTURE = "structure"
AUDIO_SPAN = "audio_span"
TRANSCRIPT = "transcript"
_MARKER_RE = re.compile("|".join(re.escape(m) for m in MARKERS))
_CYCLE = {  # the markers of one utterance, in the order of each speech format
    TEXT_FIRST: (TEXT_START, TEXT_END, AUDIO_START, AUDIO_END),
    AUDIO_FIRST: (AUDIO_START, AUDIO_END, TEXT_START, TEXT_END),
    AUDIO_ONLY: (AUDIO_START, AUDIO_END),
}


@dataclass(frozen=True)
class RowProblem:
    """One fault found in a row's text: what it breaks (``STRUCTURE``, ``AUDIO_SPAN``, ``TRANSCRIPT``), where
    (a character offset into the text), what."""

    check: str
    offset: int
    what: str


@dataclass(frozen=True)
class Utterance:
    """One utterance of a speech row: its transcript (empty in an audio_only row) and its audio span of
    ``codebooks`` characters per frame (in row order)."""

    index: int
    text: str
    audio: str
    codebooks: int = NUM_CODEBOOKS

    @property
    def frames(self) -> int:
        return len(self.audio) // self.codebooks

    @property
    def seconds(self) -> float:
        return self.frames * SAMPLES_PER_FRAME / SAMPLE_RATE

    @property
    def n_audio_tokens(self) -> int:
        return len(self.audio)


@dataclass(frozen=True)
class ParsedRow:
    """A row read back: speech rows have utterances, text rows (Nemotron-CC) a ``body``. ``problems``: every fault
    found, in text order (with ``strict=False``; a strict read raises on any but a transcript's)."""

    format: str
    utterances: tuple[Utterance, ...] = ()
    body: str = ""
    problems: tuple[RowProblem, ...] = ()

    @property
    def audio_frames(self) -> int:
        return sum(u.frames for u in self.utterances)

    @property
    def transcripts(self) -> list[str]:
        return [u.text for u in self.utterances]

    @property
    def structural(self) -> bool:
        """Whether the markers could not be read to the end (the utterances are then only those before the fault)."""
        return any(p.check == STRUCTURE for p in self.problems)


def _transcript_problem(text: str) -> tuple[int, str] | None:
    if not text:
        return 0, "empty transcript"
    m = _AUDIO_CHAR_RE.search(text)
    if m:
        return m.start(), f"audio-range character U+{ord(m.group()):04X} in a transcript"
    if text != text.strip():
        return 0, "transcript has surrounding whitespace (the pipeline strips it)"
    return None


def _audio_problem(span: str, num_codebooks: int) -> tuple[int, str] | None:
    # a span may not be empty (every utterance has audio); beyond that, SPEC §1's check
    return (0, "empty audio span") if not span else span_fault(span, num_codebooks)


def _inferred_format(text: str, body_start: int, inner: list[tuple[int, str]]) -> str:
    """The format a row's pieces show: text when it holds no marker or starts with plain text, else by its first
    marker (and, for an audio-first start, whether any transcript follows)."""
    if not inner or inner[0][0] > body_start:
        return TEXT_ONLY
    if inner[0][1] == TEXT_START:
        return TEXT_FIRST
    return AUDIO_FIRST if any(name == TEXT_START for _, name in inner) else AUDIO_ONLY


def parse_row(text: str, fmt: str | None = None, num_codebooks: int = NUM_CODEBOOKS, *,
              strict: bool = True) -> ParsedRow:
    """Read a row (SPEC.md §2) back into its utterances, or its body for a text row.

    ``fmt``: the row's ``format`` column (``text_first``, ``audio_first``, ``audio_only``, ``text``); ``None`` infers
    it from the pieces. Audio spans are spans of ``num_codebooks`` codebooks (the record's ``made_by.codebooks``).
    Reading stops at the first structural fault (markers out of order), since what follows cannot be read.
    ``strict`` (the default) raises ``ValueError`` naming the first fault that keeps the row from being read
    (structure, or an audio span not well-formed); ``strict=False`` returns every fault in ``problems`` (what
    ``sodadata validate`` reports). Transcript faults (empty, unstripped, holding an audio character) never raise:
    the row still reads. An unknown ``fmt`` raises ``ValueError`` either way.
    """
    if fmt is not None and fmt != TEXT_ONLY and fmt not in _CYCLE:
        raise ValueError(f"unknown row format {fmt!r}")
    problems: list[RowProblem] = []
    if not text.startswith(BOS):
        problems.append(RowProblem(STRUCTURE, 0, f"row does not start with {BOS}"))
    if not text.endswith(EOS):
        problems.append(RowProblem(STRUCTURE, len(text), f"row does not end with {EOS}"))
    markers = [(m.start(), m.group()) for m in _MARKER_RE.finditer(text)]
    for pos, name in markers:
        if name == BOS and pos != 0:
            problems.append(RowProblem(STRUCTURE, pos, f"{BOS} inside the row (it must appear once, first)"))
        if name == EOS and pos != len(text) - len(EOS):
            problems.append(RowProblem(STRUCTURE, pos, f"{EOS} inside the row (it must appear once, last)"))
    inner = [(p, n) for p, n in markers if n not in (BOS, EOS)]
    body_start = len(BOS) if text.startswith(BOS) else 0
    body_end = len(text) - len(EOS) if text.endswith(EOS) else len(text)
    if fmt is None:
        fmt = _inferred_format(text, body_start, inner)
    if fmt == TEXT_ONLY:
        for pos, name in inner:
            problems.append(RowProblem(STRUCTURE, pos, f"marker {name} in a text row"))
        m = _AUDIO_CHAR_RE.search(text, body_start, body_end)
        if m:
            problems.append(RowProblem(TRANSCRIPT, m.start(),
                                       f"audio-range character U+{ord(m.group()):04X} in a text row"))
        if body_end <= body_start or not text[body_start:body_end].strip():
            problems.append(RowProblem(TRANSCRIPT, body_start, "empty text row"))
        return _finished(ParsedRow(TEXT_ONLY, body=text[body_start:body_end], problems=tuple(problems)), strict)
    cycle = _CYCLE[fmt]
    if not inner:
        problems.append(RowProblem(STRUCTURE, body_start, "speech row holds no utterance"))
        return _finished(ParsedRow(fmt, problems=tuple(problems)), strict)
    utterances: list[Utterance] = []
    prev_end = body_start
    transcript = ""
    per_utterance = len(cycle)  # 4 markers (text and audio), 2 for audio_only
    for i, (pos, name) in enumerate(inner):
        expected = cycle[i % per_utterance]
        if name != expected:
            problems.append(RowProblem(STRUCTURE, pos, f"expected {expected}, found {name} ({fmt} order is "
                                                       f"{''.join(cycle)} per utterance)"))
            return _finished(ParsedRow(fmt, tuple(utterances), problems=tuple(problems)), strict)
        content = text[prev_end:pos]
        if i % 2 == 0:  # an opening marker: nothing may stand between pieces
            if content:
                problems.append(RowProblem(STRUCTURE, prev_end, f"{len(content)} characters between pieces, "
                                                                f"before {name} (pieces are joined with nothing)"))
        elif name == TEXT_END:
            transcript = content
            bad = _transcript_problem(content)
            if bad:
                problems.append(RowProblem(TRANSCRIPT, prev_end + bad[0], bad[1]))
        else:  # AUDIO_END
            audio = content
            bad = _audio_problem(content, num_codebooks)
            if bad:
                problems.append(RowProblem(AUDIO_SPAN, prev_end + bad[0], bad[1]))
        if i % per_utterance == per_utterance - 1:
            utterances.append(Utterance(len(utterances), transcript, audio, num_codebooks))
            transcript = ""
        prev_end = pos + len(name)
    if len(inner) % per_utterance:
        opened = inner[len(inner) - len(inner) % per_utterance]
        last_at, last = inner[-1]
        problems.append(RowProblem(STRUCTURE, opened[0], f"utterance opened by {opened[1]} is never completed: "
                                                         f"no {cycle[len(inner) % per_utterance]} after the {last} "
                                                         f"at offset {last_at}"))
    elif text[prev_end:body_end]:
        problems.append(RowProblem(STRUCTURE, prev_end, f"{body_end - prev_end} characters between the last piece "
                                                        f"and {EOS}"))
    return _finished(ParsedRow(fmt, tuple(utterances), problems=tuple(problems)), strict)


def _finished(row: ParsedRow, strict: bool) -> ParsedRow:
    if strict:
        fault = next((p for p in row.problems if p.check != TRANSCRIPT), None)
        if fault is not None:
            raise ValueError(f"offset {fault.offset}: {fault.what}")
    return row


def audio_spans(text: str, num_codebooks: int = NUM_CODEBOOKS) -> list[str]:
    """The audio spans in ``text``: a bare span (no markers) is one span; otherwise every
    ``<|audio_start|>…<|audio_end|>`` span in order (a whole row, one utterance, or any marked fragment).

    ``ValueError`` when a marked string holds no audio span, an ``<|audio_start|>`` is not closed by the next
    marker, or a span is not well-formed."""
    markers = [(m.start(), m.group()) for m in _MARKER_RE.finditer(text)]
    if not markers:
        spans = [text]
    else:
        spans = []
        prev, start = None, 0
        for pos, name in markers:
            if prev == AUDIO_START and name != AUDIO_END:
                raise ValueError(f"{AUDIO_START} at offset {start - len(AUDIO_START)} is not closed by {AUDIO_END} "
                                 f"(found {name} at offset {pos})")
            if name == AUDIO_END:
                if prev != AUDIO_START:
                    raise ValueError(f"{AUDIO_END} at offset {pos} closes no open audio span")
                spans.append(text[start:pos])
            prev, start = name, pos + len(name)
        if prev == AUDIO_START:
            raise ValueError(f"{AUDIO_START} at offset {start - len(AUDIO_START)} is never closed")
        if not spans:
            raise ValueError("no <|audio_start|>…<|audio_end|> span in the string: nothing to decode")
    for i, s in enumerate(spans):
        fault = span_fault(s, num_codebooks)
        if fault is not None:
            raise ValueError(f"audio span {i}: malformed: {fault[1]}")
    return spans
