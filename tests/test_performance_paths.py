"""The optimized paths give exactly what the plain ones give (issue 8). Speed is measured in bench/, never here."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from fixtures import speechlike

from sodadata.codec import (
    CPU_CHUNK_SAMPLES,
    MAX_PIECE_SAMPLES,
    CodecConfig,
    MimiEncoder,
    build_random_mimi,
    reference_encode,
)

# Lengths around chunk boundaries: shorter than a chunk, exactly whole chunks, and narrow tails (1, 100, 961
# samples) that the last chunk must absorb; 1919/1921 straddle a frame.
C = CPU_CHUNK_SAMPLES
LENGTHS = [1919, 1921, C - 1, C, 2 * C, 2 * C + 1, 2 * C + 100, 3 * C + 961, 5 * C - 7]


@pytest.fixture(scope="module")
def tiny():
    return build_random_mimi("tiny-random", encoder_only=True)


def _waves(lengths, seed=0):
    return [speechlike(n / 24000, seed + i) for i, n in enumerate(lengths)]


@pytest.fixture
def threads():
    """Set torch's intra-op threads for one test (a model passed to MimiEncoder is not loaded, so
    ``CodecConfig.threads`` is not applied to it) and restore them after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_chunked_engine_codes_equal_mimimodel_encode(tiny, threads, n_threads, batch_size):
    threads(n_threads)
    enc = MimiEncoder(CodecConfig(codec="tiny-random", batch_size=batch_size), model=tiny)
    waves = _waves(LENGTHS)
    codes = enc.encode(waves)
    if n_threads == 1:  # the layout workers use; with 2 threads oneDNN may split the tiny model's narrow stages
        # differently on a chunk than on the whole signal, and the per-process check then falls back
        assert enc._fast is not None and enc.stats.engine == "chunked", "the chunked path must be the one tested"
        assert len(enc._verified) >= 3, "several width classes must have been verified against the reference"
    if batch_size > 1:
        assert max(enc.stats.by_batch_size) > 1, "padded batches must be exercised"
    for w, c in zip(waves, codes):
        np.testing.assert_array_equal(c, reference_encode(tiny, w))


def test_chunked_seanet_is_bit_identical_to_the_module(tiny, threads):
    threads(1)
    enc = MimiEncoder(CodecConfig(codec="tiny-random"), model=tiny)
    with torch.inference_mode():
        for w in _waves([2 * C + 100, 3 * C + 961], seed=3):
            x = torch.from_numpy(w)[None, None]
            assert torch.equal(enc._fast.latents(x), tiny.encoder(x).latents)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_full_size_mimi_chunked_codes_equal_mimimodel_encode(threads, n_threads):
    """The real architecture (random weights): oneDNN's kernels for its channel counts, not the tiny model's."""
    threads(n_threads)
    model = build_random_mimi("full-random", encoder_only=True)
    enc = MimiEncoder(CodecConfig(codec="full-random"), model=model)
    waves = _waves([2 * C + 961, 24000 + 17], seed=11)
    for w, c in zip(waves, enc.encode(waves)):
        np.testing.assert_array_equal(c, reference_encode(model, w))
    assert enc.stats.engine == "chunked" and enc._verified == {0, 2}


def test_sixty_second_pieces_still_apply(tiny, threads):
    threads(1)
    wave = speechlike((MAX_PIECE_SAMPLES + 3 * C + 5) / 24000, 21)
    (codes,) = MimiEncoder(CodecConfig(codec="tiny-random"), model=tiny).encode([wave])
    ref = np.concatenate([reference_encode(tiny, wave[:MAX_PIECE_SAMPLES]),
                          reference_encode(tiny, wave[MAX_PIECE_SAMPLES:])], axis=1)
    np.testing.assert_array_equal(codes, ref)


def test_a_chunked_path_that_differs_falls_back_to_the_reference(tiny, caplog, threads):
    threads(1)
    enc = MimiEncoder(CodecConfig(codec="tiny-random"), model=tiny)
    real = enc._fast.latents
    enc._fast.latents = lambda x, lengths=None: real(x, lengths) + 1e-3  # as if oneDNN chose another kernel
    waves = _waves([2 * C + 100], seed=5)
    with caplog.at_level(logging.WARNING, logger="sodadata.codec"):
        (codes,) = enc.encode(waves)
    assert "differ" in caplog.text
    assert enc._fast is None and enc.stats.engine == "reference"
    np.testing.assert_array_equal(codes, reference_encode(tiny, waves[0]))


def test_reference_engine_is_the_plain_path(tiny):
    enc = MimiEncoder(CodecConfig(codec="tiny-random", engine="reference"), model=tiny)
    assert enc._fast is None
    (codes,) = enc.encode(_waves([2 * C + 100]))
    assert enc.stats.engine == "reference"
    np.testing.assert_array_equal(codes, reference_encode(tiny, _waves([2 * C + 100])[0]))
    with pytest.raises(ValueError, match="engine"):
        CodecConfig(engine="onnx")


def test_codes_are_the_same_in_a_dask_worker_malloc_environment(tmp_path):
    """Dask workers run with MALLOC_TRIM_THRESHOLD_ set, which makes MimiEncoder retune glibc malloc: same codes."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "probe.py"
    script.write_text(
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import torch; torch.set_num_threads(1)\n"
        "from fixtures import speechlike\n"
        "import sodadata.codec as c\n"
        "enc = c.MimiEncoder(c.CodecConfig(codec='tiny-random'), model=c.build_random_mimi('tiny-random'))\n"
        "(codes,) = enc.encode([speechlike(4.2, 3)])\n"
        "print(json.dumps({'tuned': c._MALLOC_TUNED, 'codes': codes.tolist()}))\n"
    )
    outs = {}
    for name, extra in (("plain", {}), ("dask", {"MALLOC_TRIM_THRESHOLD_": "65536"})):
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"} | extra
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
        outs[name] = json.loads(done.stdout.strip().splitlines()[-1])
    assert outs["dask"]["tuned"] and not outs["plain"]["tuned"]
    assert outs["dask"]["codes"] == outs["plain"]["codes"]
