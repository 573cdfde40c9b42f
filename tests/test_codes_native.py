"""The two implementations of sodadata.encode.codes, the C loop (sodadata/encode/_codes.c) and the NumPy path, give the same
strings, codes and error messages; CI requires the C loop to be built. (tests/test_codes.py runs each of its
tests on both.)"""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_codes import reference_chars

import sodadata.encode.codes
from sodadata import chars_to_codes, codes_to_chars
from sodadata.encode.codes import span_error


def test_native_module_is_built():
    """CI sets SODADATA_REQUIRE_NATIVE=1, so a broken C build fails here instead of silently running NumPy."""
    if os.environ.get("SODADATA_REQUIRE_NATIVE") == "1":
        assert sodadata.encode.codes.NATIVE, "sodadata.encode._codes did not build: is a C compiler installed? reinstall with -e ."
    elif not sodadata.encode.codes.NATIVE:
        pytest.skip("sodadata.encode._codes not built; the NumPy path is in use")


@st.composite
def code_arrays_maybe_bad(draw):
    n = draw(st.integers(1, 8))
    frames = draw(st.integers(0, 30))
    dtype = draw(st.sampled_from([np.int16, np.int32, np.int64, np.uint16, np.uint32]))
    values = st.one_of(st.integers(0, 2047), st.sampled_from([-1, 2048, 4095, -2048]))
    flat = draw(st.lists(values, min_size=n * frames, max_size=n * frames))
    arr = np.array(flat, dtype=np.int64).reshape(n, frames)
    if np.dtype(dtype).kind == "u":
        arr = np.where(arr < 0, 2048, arr)
    return arr.astype(dtype)


def _outcome(fn, *args):
    try:
        out = fn(*args)
    except ValueError as exc:
        return "error", str(exc)
    return "ok", out


@pytest.mark.skipif(not sodadata.encode.codes.NATIVE, reason="sodadata.encode._codes not built: only the NumPy path exists")
@settings(max_examples=300, deadline=None)
@given(codes=code_arrays_maybe_bad(), cut=st.integers(0, 3), junk=st.sampled_from(["", "a", "\ue000", "\U00012000"]))
def test_both_paths_agree_on_output_and_on_every_error_message(codes, cut, junk):
    """Same string or the same error from codes_to_chars; same codes or the same error from chars_to_codes and
    span_error on that string, cut short and with a stray character appended."""
    pure = sodadata.encode.codes
    got = _outcome(codes_to_chars, codes)
    assert got == _outcome(pure._numpy_codes_to_chars, codes)
    if got[0] == "ok":
        assert got[1] == reference_chars(codes)
        n = codes.shape[0]
        for text in (got[1], got[1][: max(0, len(got[1]) - cut)] + junk):
            fast = _outcome(chars_to_codes, text, n)
            native, pure._native = pure._native, None
            try:
                slow = _outcome(chars_to_codes, text, n)
                slow_err = span_error(text, n)
            finally:
                pure._native = native
            assert fast[0] == slow[0]
            if fast[0] == "ok":
                np.testing.assert_array_equal(fast[1], slow[1])
                assert fast[1].dtype == slow[1].dtype == np.int64
            else:
                assert fast[1] == slow[1]
            assert span_error(text, n) == slow_err
