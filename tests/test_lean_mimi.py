"""sodadata.encode.lean_mimi: Mimi's encoder restated in plain torch, so that a worker whose chunked-engine check is
cached never imports transformers. Its latents and codes must be transformers' bit for bit, it must refuse a
checkpoint it does not restate, and the check must catch it if it ever computes otherwise."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from fixtures import speechlike

from sodadata.encode.codec import CodecConfig, MimiEncoder, build_random_mimi, reference_encode
from sodadata.encode.codec_loading import LEAN_ENV, lean_model
from sodadata.encode.lean_mimi import LeanMimiConfig, load_lean_mimi


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """tiny-random as a user's local save_pretrained directory (the form lean_mimi loads)."""
    path = tmp_path_factory.mktemp("tiny-mimi")
    build_random_mimi("tiny-random").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_reference(tiny_dir):
    from transformers import MimiModel

    return MimiModel.from_pretrained(tiny_dir).eval()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _assert_same_outputs(lean, reference, x):
    with torch.inference_mode():
        ours, theirs = lean.encoder(x).latents, reference.encoder(x).latents
        assert ours.shape == theirs.shape
        assert torch.equal(ours, theirs), float((ours - theirs).abs().max())
        assert torch.equal(lean.quantizer.encode(ours, None), reference.quantizer.encode(theirs, None))
        codes = lean.quantizer.encode(ours, None)
    assert len(torch.unique(codes)) > 10  # seeded codebooks: the codes vary


# Frames reach the transformer at 25 Hz and its sliding window is 250 frames: shorter than 10 s, sdpa runs causal
# without a mask; from 10 s on, with transformers' boolean sliding-window mask. Both sides of it, and a batch.
LENGTHS_S = (0.9, 9.95, 10.0, 23.3)


@pytest.mark.parametrize("seconds", LENGTHS_S)
def test_latents_and_codes_are_transformers_bit_for_bit(tiny_dir, tiny_reference, seconds):
    lean = load_lean_mimi(tiny_dir)
    x = torch.from_numpy(speechlike(seconds, 3))[None, None]
    _assert_same_outputs(lean, tiny_reference, x)
    batch = torch.from_numpy(np.stack([speechlike(seconds, 4), speechlike(seconds, 5)]))[:, None]
    _assert_same_outputs(lean, tiny_reference, batch)


def test_the_encoder_runs_it_for_a_local_directory_and_codes_equal_mimimodel_encode(tiny_dir, tiny_reference,
                                                                                   sodadata_cache):
    enc = MimiEncoder(CodecConfig(codec=str(tiny_dir), chunk_seconds=2.0, threads=1, batch_size=4))
    assert enc.lean and enc.model.lean
    waves = [speechlike(s, 10 + i) for i, s in enumerate((0.7, 4.1, 4.3, 11.0))]
    for codes, wave in zip(enc.encode(waves), waves, strict=True):
        np.testing.assert_array_equal(codes, reference_encode(tiny_reference, wave))
    assert enc.check.source == "miss" and enc.check.key["modules"] == "sodadata.encode.lean_mimi"


def test_a_checkpoint_it_does_not_restate_is_loaded_by_transformers(tiny_dir, tiny_reference, tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    for name, change in (("extra", lambda s: s.update({"encoder.layers.0.conv.weight_g": torch.ones(1)})),
                         ("missing", lambda s: s.pop("downsample.conv.weight"))):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text((tiny_dir / "config.json").read_text())
        state = load_file(tiny_dir / "model.safetensors")
        change(state)
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        with pytest.raises(ValueError, match=r"unexpected weight|missing"):
            load_lean_mimi(folder)
        with caplog.at_level(logging.INFO, logger="sodadata.encode.codec_loading"):
            assert lean_model(CodecConfig(codec=str(folder))) is None
        assert "loading it with transformers" in caplog.text
    config = json.loads((tiny_dir / "config.json").read_text())
    with pytest.raises(ValueError, match="mimi"):
        LeanMimiConfig({**config, "model_type": "encodec"})


def test_it_is_used_only_where_the_chunked_engine_runs_it(tiny_dir, monkeypatch):
    assert lean_model(CodecConfig(codec=str(tiny_dir))) is not None
    for config in (CodecConfig(codec=str(tiny_dir), dtype="bfloat16"), CodecConfig(codec=str(tiny_dir),
                                                                                   engine="reference"),
                   CodecConfig(codec="tiny-random")):  # tiny-random is drawn, never saved: no folder to load
        assert lean_model(config) is None
    monkeypatch.setenv(LEAN_ENV, "0")
    assert lean_model(CodecConfig(codec=str(tiny_dir))) is None
    assert not MimiEncoder(CodecConfig(codec=str(tiny_dir))).lean


def test_a_lean_quantizer_that_computed_otherwise_would_be_caught(tiny_dir, tiny_reference, sodadata_cache):
    """The check compares codes too when the engine runs lean_mimi's modules: latents alone would not see this."""
    enc = MimiEncoder(CodecConfig(codec=str(tiny_dir), chunk_seconds=2.0, threads=1))
    real = enc.model.quantizer.encode
    enc.model.quantizer.encode = lambda latents, n=None: (real(latents, n) + 1) % 2048
    wave = speechlike(3.0, 21)
    (codes,) = enc.encode([wave])
    np.testing.assert_array_equal(codes, reference_encode(tiny_reference, wave))
    assert enc._fast is None and enc.check.classes == {1: False}


WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from sodadata.encode.codec import CodecConfig, get_encoder
    enc = get_encoder(CodecConfig(codec=sys.argv[1], chunk_seconds=2.0, threads=1))
    rng = np.random.default_rng(7)
    codes = enc.encode([(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (30_000, 100_000)])
    print(json.dumps({"lean": enc.lean, "engine": enc.stats.engine, "check": enc.check.source,
                      "transformers": "transformers" in sys.modules, "codes": [c.tolist() for c in codes]}))
""")


def test_a_worker_whose_check_is_cached_never_imports_transformers(tiny_dir, tiny_reference, sodadata_cache):
    env = {**os.environ, "SODADATA_CACHE": str(sodadata_cache)}

    def worker() -> dict:
        out = subprocess.run([sys.executable, "-c", WORKER, str(tiny_dir)], capture_output=True, text=True, env=env,
                             check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    first, second = worker(), worker()
    assert (first["lean"], first["check"], first["transformers"]) == (True, "miss", True)  # it checked against it
    assert (second["lean"], second["check"], second["engine"], second["transformers"]) == (True, "hit", "chunked",
                                                                                          False)
    rng = np.random.default_rng(7)
    for codes, n in zip(second["codes"], (30_000, 100_000), strict=True):
        wave = (0.1 * rng.standard_normal(n)).astype(np.float32)
        np.testing.assert_array_equal(np.array(codes), reference_encode(tiny_reference, wave))


@pytest.mark.slow
def test_a_machines_first_full_random_run_checks_the_modules_later_runs_use(sodadata_cache):
    """Full size: the lean modules compute transformers' latents and codes bit for bit. full-random's first process
    draws the weights with transformers and saves them; it then runs the lean modules on them too, so the verdict it
    records is the one later processes (which load them lean) look for."""
    config = CodecConfig(codec="full-random", threads=1)
    wave = speechlike(3.0, 31)
    first = MimiEncoder(config)
    assert first.lean and first._reference_model is not None  # drawn by transformers, saved, loaded lean
    lean, reference = first.model, first._reference_model
    assert sum(p.numel() for p in lean.parameters()) == sum(p.numel() for p in reference.encoder.parameters()) + sum(
        p.numel() for p in reference.quantizer.parameters())
    for seconds in (4.0, 12.5):  # full size, both sides of the sliding window, whole-signal calls
        _assert_same_outputs(lean, reference, torch.from_numpy(speechlike(seconds, 6))[None, None])
    (codes,) = first.encode([wave])
    assert first.check.source == "miss" and first.stats.engine == "chunked"
    second = MimiEncoder(config)
    (again,) = second.encode([wave])
    assert second.lean and second.check.source == "hit" and second._reference_model is None
    np.testing.assert_array_equal(codes, again)
    np.testing.assert_array_equal(codes, reference_encode(first._reference_model, wave))
