"""Documents and rows (SPEC.md §2).

A document is the ordered run of utterances from one source recording. Every speech document yields two rows,
text-first (``_type1``) and audio-first (``_type2``); pieces are joined with nothing between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sodadata.codes import first_audio_char

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
TEXT_START = "<|text_start|>"
TEXT_END = "<|text_end|>"
AUDIO_START = "<|audio_start|>"
AUDIO_END = "<|audio_end|>"
MARKERS = (BOS, EOS, TEXT_START, TEXT_END, AUDIO_START, AUDIO_END)

TEXT_FIRST = "text_first"
AUDIO_FIRST = "audio_first"
TEXT_ONLY = "text"
ROW_SUFFIX = {TEXT_FIRST: "_type1", AUDIO_FIRST: "_type2"}
# Version of the rule that decides what a transcript or web text becomes (SPEC §2: what is rejected, what is
# folded out of the audio range). Recorded in every shard's ``made_by``: a change of rule changes rows, so a new
# version keeps a rerun from mixing shards made under the old rule with new ones.
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


def transcript_error(text: str) -> str | None:
    """Reason code if ``text`` cannot be written as a transcript, else ``None``.

    A transcript holding an audio-range character or a marker string would be read back as audio or structure.
    """
    if not text:
        return "empty_transcript"
    pos = first_audio_char(text)
    if pos >= 0:
        return "transcript_has_audio_char"
    if any(m in text for m in MARKERS):
        return "transcript_has_marker"
    return None


def clean_transcript(text: str) -> str:
    """The one change made to a source transcript: surrounding whitespace stripped (Emilia's start with a space)."""
    return text.strip()


def format_speech_row(utterances: Sequence[EncodedUtterance], fmt: str) -> str:
    """The row text of one document in ``fmt`` (``text_first`` or ``audio_first``)."""
    parts = [BOS]
    for u in utterances:
        text = TEXT_START + u.text + TEXT_END
        audio = AUDIO_START + u.audio + AUDIO_END
        if fmt == TEXT_FIRST:
            parts += (text, audio)
        elif fmt == AUDIO_FIRST:
            parts += (audio, text)
        else:
            raise ValueError(f"unknown speech row format {fmt!r}")
    parts.append(EOS)
    return "".join(parts)


def format_text_row(text: str) -> str:
    return BOS + text + EOS
