import numpy as np
import pytest
from fixtures import encode_audio, speechlike

from sodadata.encode.audio import AudioError, decode_audio, to_mono_24k


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "MP3", "OGG"])
@pytest.mark.parametrize("rate", [16000, 24000, 44100])
def test_decode_formats_to_24k_mono(fmt, rate):
    x = speechlike(1.5, seed=1, sr=rate)
    stereo = np.stack([x, 0.5 * x], axis=1)
    y = decode_audio(encode_audio(stereo, sr=rate, fmt=fmt))
    assert y.dtype == np.float32 and y.ndim == 1
    # lossy codecs pad a little at the ends
    assert abs(y.size - 1.5 * 24000) < 0.1 * 24000
    assert np.isfinite(y).all() and 0.05 < np.abs(y).max() <= 1.0


def test_wav_is_exact_after_resampling_to_the_same_rate():
    x = speechlike(1.0, seed=2)
    y = decode_audio(encode_audio(x, fmt="FLAC"))
    np.testing.assert_allclose(y, x, atol=1 / 32767 + 1e-6)


def test_resample_keeps_a_tone():
    sr = 16000
    t = np.arange(sr) / sr
    y = to_mono_24k(np.sin(2 * np.pi * 440 * t).astype(np.float32), sr)
    assert y.size == 24000
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty_audio"),
        (b"not audio at all" * 100, "undecodable_audio"),
        (encode_audio(speechlike(1.0, 3), fmt="WAV")[:30], "undecodable_audio"),
    ],
)
def test_bad_bytes_are_rejected_with_reasons(data, reason):
    with pytest.raises(AudioError) as err:
        decode_audio(data)
    assert err.value.reason == reason


def test_bad_samples_are_rejected_with_reasons():
    x = speechlike(1.0, 4)
    x[100] = np.nan
    for samples, rate, reason in [
        (x, 24000, "nonfinite_audio"),
        (np.zeros(0, np.float32), 24000, "empty_audio"),
        (np.zeros(24000 * 11, np.float32), 24000, "too_long_audio"),
        (np.zeros((10, 2, 2), np.float32), 24000, "bad_audio_shape"),
        (np.zeros(100, np.float32), 0, "bad_sample_rate"),
    ]:
        with pytest.raises(AudioError) as err:
            to_mono_24k(samples, rate, max_seconds=10)
        assert err.value.reason == reason
    with pytest.raises(AudioError) as err:
        decode_audio(encode_audio(np.zeros(24000 * 11, np.float32), fmt="FLAC"), max_seconds=10)
    assert err.value.reason == "too_long_audio"
