import numpy as np
import pytest

from sodadata import chars_to_codes, check_audio_span, codes_to_chars
from sodadata.codes import span_error


def reference_chars(codes: np.ndarray) -> str:
    """SPEC.md §1, literally: frame-major, chr(0xE000 + i*2048 + code[i, t])."""
    return "".join(chr(0xE000 + i * 2048 + int(codes[i, t])) for t in range(codes.shape[1]) for i in range(codes.shape[0]))


def test_every_one_of_the_16384_characters_matches_the_reference():
    codes = np.tile(np.arange(2048), (8, 1))  # frame t holds code t in every codebook
    text = codes_to_chars(codes)
    assert text == reference_chars(codes)
    assert len(set(text)) == 16384
    assert {ord(c) for c in text} == set(range(0xE000, 0x12000))
    np.testing.assert_array_equal(chars_to_codes(text), codes)


def test_random_codes_round_trip_and_match_reference():
    rng = np.random.default_rng(1)
    for frames in (0, 1, 7, 1000):
        codes = rng.integers(0, 2048, size=(8, frames))
        text = codes_to_chars(codes)
        assert text == reference_chars(codes)
        assert len(text) == 8 * frames
        np.testing.assert_array_equal(chars_to_codes(text), codes.reshape(8, frames))


def test_fewer_codebooks_round_trip():
    codes = np.random.default_rng(2).integers(0, 2048, size=(4, 50))
    text = codes_to_chars(codes)
    assert text == reference_chars(codes)
    np.testing.assert_array_equal(chars_to_codes(text, num_codebooks=4), codes)


@pytest.mark.parametrize(
    "codes, match",
    [
        (np.array([[2048]] * 8), "outside"),
        (np.array([[-1]] * 8), "outside"),
        (np.zeros((8,), dtype=int), "2-D"),
        (np.zeros((9, 3), dtype=int), "codebooks"),
        (np.zeros((8, 3), dtype=float), "integers"),
    ],
)
def test_bad_codes_raise_value_error(codes, match):
    with pytest.raises(ValueError, match=match):
        codes_to_chars(codes)


def test_malformed_spans_are_named():
    good = codes_to_chars(np.random.default_rng(3).integers(0, 2048, size=(8, 4)))
    assert span_error(good) is None
    check_audio_span(good)
    with pytest.raises(ValueError, match="multiple of 8"):
        chars_to_codes(good[:-1])
    with pytest.raises(ValueError, match="codebook 0"):
        check_audio_span(good[1:] + good[0])  # shifted by one: character 0 belongs to codebook 1
    with pytest.raises(ValueError, match="character 3"):
        check_audio_span(good[:3] + "a" + good[4:])
    with pytest.raises(ValueError, match="codebook 5"):
        check_audio_span(good[:5] + chr(0xE000) + good[6:])


def test_characters_that_unicode_normalization_changes_survive():
    """Codebook 3 holds U+F900 compatibility ideographs, U+FEFF and the noncharacters U+FFFE/U+FFFF."""
    import unicodedata

    codes = np.zeros((8, 2048), dtype=int)
    codes[3] = np.arange(2048)
    text = codes_to_chars(codes)
    assert "\ufeff" in text and "\uffff" in text and "\uf900" in text
    assert unicodedata.normalize("NFC", text) != text  # proof that normalizing would corrupt it
    np.testing.assert_array_equal(chars_to_codes(text), codes)
