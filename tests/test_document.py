import numpy as np

from sodadata import codes_to_chars
from sodadata.write.document import (
    AUDIO_FIRST,
    TEXT_FIRST,
    EncodedUtterance,
    apply_text_rule,
    format_speech_row,
    format_text_row,
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
    """The checks kept from text rule 1 (tests/test_text_rule.py covers the folds of rule 2)."""
    assert apply_text_rule("  Leading space, trailing newline\n").text == "Leading space, trailing newline"
    assert apply_text_rule(" keep\u00a0inner  spacing ").text == "keep\u00a0inner  spacing"
    assert apply_text_rule("  web text keeps its spacing ", transcript=False).text == "  web text keeps its spacing "
    assert apply_text_rule("fine").reason is None
    assert apply_text_rule("").reason == "empty_transcript"
    assert apply_text_rule(" \n", transcript=False).reason == "empty_text"
    assert apply_text_rule(None).reason == "empty_transcript"
    assert apply_text_rule("x \ue000 y").reason == "audio_range_character"
    assert apply_text_rule("x \U00011fff").reason == "audio_range_character"
    assert apply_text_rule("x \uf8ff").reason == "audio_range_character"
    for marker in ("<|text_start|>", "<|text_end|>", "<|audio_start|>", "<|audio_end|>", "<|begin_of_text|>", "<|end_of_text|>"):
        assert apply_text_rule(f"a {marker} b").reason == "transcript_has_marker"
        assert apply_text_rule(f"a {marker} b", transcript=False).reason == "text_has_marker"
    assert apply_text_rule("a <|other|> b").reason is None
