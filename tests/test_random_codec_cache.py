"""full-random's weights, drawn once per machine and loaded from $SODADATA_CACHE after (sodadata.encode.codec_random):
the loaded model is the drawn one, bit for bit and code for code, and an entry that fails its checksum is drawn
again, never used."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from fixtures import speechlike

from sodadata.encode import codec_loading
from sodadata.encode.codec import reference_encode
from sodadata.encode.codec_random import (
    _VERIFIED,
    _WEIGHTS,
    _entry_intact,
    build_random_mimi,
    draw_random_mimi,
)

pytestmark = pytest.mark.slow  # full-size Mimi: a second to draw, 385 MB to save


WAVE = speechlike(1.0, seed=3)


@pytest.fixture(scope="module")
def drawn():
    model = draw_random_mimi("full-random")
    model.expected_codes = reference_encode(model, WAVE)
    assert len(np.unique(model.expected_codes)) > 10  # seeded codebooks: codes vary
    return model


def _entry(sodadata_cache):
    (entry,) = (sodadata_cache / "random-codecs").iterdir()
    return entry


def _assert_same_model(model, drawn, encoder_only: bool) -> None:
    got, want = model.state_dict(), drawn.state_dict()
    if encoder_only:
        want = {k: v for k, v in want.items() if not k.startswith("decoder.")}
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert np.array_equal(reference_encode(model, WAVE), drawn.expected_codes)


def test_the_first_process_saves_what_it_drew_and_the_next_loads_it_unless_it_fails_its_checksum(
        drawn, sodadata_cache, caplog, monkeypatch):
    first = build_random_mimi("full-random", encoder_only=True)
    entry = _entry(sodadata_cache)
    assert entry.name.startswith("full-random-seed0-")
    assert (entry / _WEIGHTS).stat().st_size > 300e6 and (entry / f"{_WEIGHTS}.sha256").is_file()
    _assert_same_model(first, drawn, encoder_only=True)
    assert first.decoder is None

    loaded = build_random_mimi("full-random")  # whole, from the entry
    assert [p.name for p in (sodadata_cache / "random-codecs").iterdir()] == [entry.name]  # nothing left beside it
    _assert_same_model(loaded, drawn, encoder_only=False)

    # hashed once per version of the file: while its stat is the stamped one, no process hashes it again
    assert (entry / _VERIFIED).is_file()
    weights = entry / _WEIGHTS
    hashed = []
    real_sha256 = codec_loading.weights_sha256
    monkeypatch.setattr(codec_loading, "weights_sha256", lambda d: hashed.append(d) or real_sha256(d))
    assert _entry_intact(entry) and hashed == []
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same mtime, but the ctime moves: hashed again
    assert _entry_intact(entry) and hashed == [entry]
    assert _entry_intact(entry) and hashed == [entry]  # and stamped again
    (entry / _VERIFIED).write_text("{not json", encoding="ascii")  # a damaged stamp costs one hash
    assert _entry_intact(entry) and hashed == [entry, entry]
    assert _entry_intact(entry) and hashed == [entry, entry]

    # weights that fail their checksum are drawn again, never used
    raw = bytearray(weights.read_bytes())
    raw[-1000] ^= 0xFF  # one bit pattern in one weight: a valid file that would give other codes
    weights.write_bytes(bytes(raw))
    with caplog.at_level(logging.INFO, logger="sodadata.encode.codec_random"):
        again = build_random_mimi("full-random", encoder_only=True)
    assert "fail their SHA-256" in caplog.text
    _assert_same_model(again, drawn, encoder_only=True)


def test_no_cache_no_entry(drawn, sodadata_cache, monkeypatch):
    monkeypatch.setenv("SODADATA_CACHE", "off")
    _assert_same_model(build_random_mimi("full-random", encoder_only=True), drawn, encoder_only=True)
    assert not (sodadata_cache / "random-codecs").exists()
    monkeypatch.setenv("SODADATA_CACHE", str(sodadata_cache))
    build_random_mimi("tiny-random")  # tiny-random is never cached
    assert not (sodadata_cache / "random-codecs").exists()
