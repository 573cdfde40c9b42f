import numpy as np
import pytest

import sodadata.encode.codes
from sodadata import chars_to_codes, check_audio_span, codes_to_chars
from sodadata.encode.codes import span_error


@pytest.fixture(autouse=True, params=["native", "numpy"])
def conversion_path(request, monkeypatch):
    """Every test here runs on both implementations: the C loop (when built) and the NumPy path."""
    if request.param == "native" and sodadata.encode.codes._native is None:
        pytest.skip("sodadata.encode._codes was not built (no C compiler at install); test_native_module_is_built says so")
    if request.param == "numpy":
        monkeypatch.setattr(sodadata.encode.codes, "_native", None)
    return request.param


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


def test_strided_and_narrow_dtypes_and_fewer_codebooks(conversion_path):
    """What the C loop reads straight from the buffer: transposed and sliced views, every integer width."""
    rng = np.random.default_rng(4)
    base = rng.integers(0, 2048, size=(8, 60))
    views = [base[:, ::3], base.T.copy().T, base[::-1], base[2:7], base[:1], np.asfortranarray(base)]
    for dtype in (np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.intc, np.uint):
        views.append(base.astype(dtype))
    views.append(np.minimum(base, 255).astype(np.uint8))
    views.append(base.astype(">i4"))  # big-endian: declined by the C loop, converted by NumPy
    for v in views:
        text = codes_to_chars(v)
        assert text == reference_chars(np.asarray(v)), (v.dtype, v.strides)
        np.testing.assert_array_equal(chars_to_codes(text, v.shape[0]), v)
    assert codes_to_chars([[1, 2], [3, 4]]) == reference_chars(np.array([[1, 2], [3, 4]]))  # not an array at all


def test_wide_values_that_would_wrap_are_rejected(conversion_path):
    """2**32 + 5 must not wrap to 5; 2**64 - 1 as uint64 must not read as -1 and pass either."""
    for bad, dtype in ((2**32 + 5, np.int64), (2**64 - 1, np.uint64), (-2048, np.int16), (2**16 - 1, np.uint16),
                       (200, np.int8), (-1, np.int8)):
        codes = np.zeros((8, 3), dtype=dtype)
        codes[5, 2] = np.array(bad).astype(dtype)
        if int(codes[5, 2]) in range(2048):
            continue  # int8 200 wraps to -56: covered by -1
        with pytest.raises(ValueError, match="codebook 5, frame 2 is outside"):
            codes_to_chars(codes)


def test_spans_of_every_width_and_what_is_not_a_span(conversion_path):
    assert chars_to_codes("").shape == (8, 0)
    assert span_error("") is None
    narrow = codes_to_chars(np.full((4, 3), 7))  # codebooks 0-3: a 2-byte string in CPython
    np.testing.assert_array_equal(chars_to_codes(narrow, 4), np.full((4, 3), 7))
    assert span_error(narrow, 4) is None and span_error(narrow, 8) is not None
    for text in ("abcdefgh", "é" * 8, "\U00011fff" * 8):  # 1-byte, 1-byte, 4-byte kinds
        assert span_error(text) is not None
        with pytest.raises(ValueError, match="malformed audio span: character 0"):
            chars_to_codes(text)
    with pytest.raises(ValueError, match=r"num_codebooks must be in 1\.\.8"):
        chars_to_codes(narrow, 0)
