import numpy as np
import pytest
import torch
from fixtures import speechlike

from sodadata.encode.codec import (
    MAX_PIECE_SAMPLES,
    CodecConfig,
    MimiEncoder,
    build_random_mimi,
    get_encoder,
    reference_encode,
)
from sodadata.read.recipe import ConfigError


@pytest.fixture(scope="module")
def reference_model():
    return build_random_mimi("tiny-random")


# lengths straddle frame boundaries (1920 samples) so the padding of the last frame matters
LENGTHS = [1919, 1920, 1921, 24000 * 2 + 17, 24000 * 3, 24000 * 5 + 1000, 24000 * 4 + 1919]


def _waves(seed=0):
    return [speechlike(n / 24000, seed + i) for i, n in enumerate(LENGTHS)]


def test_batched_codes_equal_one_at_a_time_encode(reference_model):
    waves = _waves()
    enc = MimiEncoder(CodecConfig(codec="tiny-random", batch_size=8))
    batched = enc.encode(waves)
    assert max(enc.stats.by_batch_size) > 1, "the test must exercise real (padded) batches"
    for w, c in zip(waves, batched):
        ref = reference_encode(reference_model, w)
        assert c.shape == (8, -(-len(w) // 1920))
        np.testing.assert_array_equal(c, ref)


def test_without_padding_repair_batches_would_differ(reference_model):
    """The masking hooks are what make batches exact: disable them and the last frames change."""
    waves = _waves(seed=10)
    enc = MimiEncoder(CodecConfig(codec="tiny-random", batch_size=8))
    for h in enc._repair.handles:
        h.remove()
    diffs = sum(int((c != reference_encode(reference_model, w)).sum()) for w, c in zip(waves, enc.encode(waves)))
    assert diffs > 0


def test_codes_vary_and_stay_in_range():
    (codes,) = MimiEncoder(CodecConfig(codec="tiny-random")).encode([speechlike(6.0, 5)])
    assert codes.dtype == np.int16 and codes.min() >= 0 and codes.max() < 2048
    for cb in range(8):
        assert len(np.unique(codes[cb])) > 5, f"codebook {cb} is (nearly) constant: codebooks not filled?"


def test_long_utterances_are_encoded_in_60_second_pieces(reference_model):
    wave = speechlike(61.3, 6)
    enc = MimiEncoder(CodecConfig(codec="tiny-random", batch_size=4))
    (codes,) = enc.encode([wave])
    assert codes.shape == (8, -(-len(wave) // 1920))
    head = reference_encode(reference_model, wave[:MAX_PIECE_SAMPLES])
    tail = reference_encode(reference_model, wave[MAX_PIECE_SAMPLES:])
    np.testing.assert_array_equal(codes, np.concatenate([head, tail], axis=1))


def test_local_save_pretrained_directory_loads_the_same_model(tmp_path):
    model = build_random_mimi("tiny-random")
    model.save_pretrained(tmp_path / "mimi")
    wave = speechlike(2.5, 7)
    from_dir = MimiEncoder(CodecConfig(codec=str(tmp_path / "mimi"))).encode([wave])[0]
    np.testing.assert_array_equal(from_dir, reference_encode(model, wave))


def test_dtype_and_threads_are_honoured():
    before = torch.get_num_threads()
    try:
        enc = MimiEncoder(CodecConfig(codec="tiny-random", dtype="bfloat16", threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert enc.dtype == torch.bfloat16 and enc.device.type == "cpu"
    (codes,) = enc.encode([speechlike(2.0, 8)])
    assert codes.shape == (8, 25)


def test_encoder_is_loaded_once_per_process():
    cfg = CodecConfig(codec="tiny-random")
    assert get_encoder(cfg) is get_encoder(cfg)


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="dtype"):
        CodecConfig(dtype="int8")
    with pytest.raises(ValueError, match="device"):
        CodecConfig(device="tpu")
    # a fault no retry fixes (the runner stops the run on it; see sodadata.read.recipe.ConfigError)
    with pytest.raises(ConfigError, match="'/nonexistent/dir/for/mimi': no such directory"):
        MimiEncoder(CodecConfig(codec="/nonexistent/dir/for/mimi"))
    with pytest.raises(ValueError, match="--batch-size must be at least 1, got 0"):
        CodecConfig(batch_size=0)
