import numpy as np

from sodadata import codes_to_chars
from sodadata.document import (
    AUDIO_FIRST,
    TEXT_FIRST,
    EncodedUtterance,
    clean_transcript,
    format_speech_row,
    format_text_row,
    transcript_error,
)


def _utt(i: int, text: str) -> EncodedUtterance:
    codes = np.full((8, 2), i)
    return EncodedUtterance(id=f"d_W{i}", doc_id="d", order=(i,), text=text, audio=codes_to_chars(codes), seconds=0.16)


def test_rows_are_byte_exact_to_the_spec():
    a, b = _utt(1, "Hello there."), _utt(2, "Bye.")
    a1, b1 = a.audio, b.audio
    assert format_speech_row([a, b], TEXT_FIRST) == (
        "<|begin_of_text|><|text_start|>Hello there.<|text_end|><|audio_start|>" + a1 + "<|audio_end|>"
        "<|text_start|>Bye.<|text_end|><|audio_start|>" + b1 + "<|audio_end|><|end_of_text|>"
    )
    assert format_speech_row([a, b], AUDIO_FIRST) == (
        "<|begin_of_text|><|audio_start|>" + a1 + "<|audio_end|><|text_start|>Hello there.<|text_end|>"
        "<|audio_start|>" + b1 + "<|audio_end|><|text_start|>Bye.<|text_end|><|end_of_text|>"
    )
    assert format_text_row("web page") == "<|begin_of_text|>web page<|end_of_text|>"


def test_transcripts():
    assert clean_transcript("  Leading space, trailing newline\n") == "Leading space, trailing newline"
    assert clean_transcript(" keep\u00a0inner  spacing ") == "keep\u00a0inner  spacing"
    assert transcript_error("fine") is None
    assert transcript_error("") == "empty_transcript"
    assert transcript_error("x \ue000 y") == "transcript_has_audio_char"
    assert transcript_error("x \U00011fff") == "transcript_has_audio_char"
    assert transcript_error("x \uf8ff") == "transcript_has_audio_char"
    for marker in ("<|text_start|>", "<|text_end|>", "<|audio_start|>", "<|audio_end|>", "<|begin_of_text|>", "<|end_of_text|>"):
        assert transcript_error(f"a {marker} b") == "transcript_has_marker"
    assert transcript_error("a <|other|> b") is None
