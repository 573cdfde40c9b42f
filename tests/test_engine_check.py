"""The chunked engine's check, cached per machine, model and software (sodadata.encode.engine_check): found again by the
next process, never trusted blindly, and the codes stay MimiModel.encode's whatever the cache holds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures import speechlike

from sodadata.encode.codec import CodecConfig, MimiEncoder, build_random_mimi, reference_encode
from sodadata.encode.engine_check import architecture_digest, cache_dir

# The tiny model passes the bit check on 2 s chunks with 1 thread (tests/test_performance_paths.py).
CONFIG = CodecConfig(codec="tiny-random", chunk_seconds=2.0)
C = CONFIG.effective_chunk_samples()
LENGTHS = [C // 2 + 17, 2 * C + 100, 5 * C - 7]  # width classes 0, 2 and 3


@pytest.fixture(scope="module")
def tiny():
    return build_random_mimi("tiny-random", encoder_only=True)


@pytest.fixture(scope="module")
def expected():
    """MimiModel.encode's codes, one utterance at a time, from a second copy of the model (the hook below counts
    only the reference runs of the check)."""
    model = build_random_mimi("tiny-random", encoder_only=True)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [reference_encode(model, w) for w in waves()]
    finally:
        torch.set_num_threads(before)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def reference_runs(tiny):
    """How many times the reference encoder (MimiModel.encoder, which only the check calls) ran."""
    calls = []
    handle = tiny.encoder.register_forward_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()


def waves(seed=0):
    return [speechlike(n / 24000, seed + i) for i, n in enumerate(LENGTHS)]


@pytest.fixture
def encode(tiny, expected):
    def run(config=CONFIG, patch=None):
        enc = MimiEncoder(config, model=tiny)
        if patch:
            patch(enc)
        for c, e in zip(enc.encode(waves()), expected, strict=True):  # whatever the cache held
            np.testing.assert_array_equal(c, e)
        return enc

    return run


def as_if_another_kernel(enc):
    """As in tests/test_performance_paths.py: the chunked engine's latents differ, as if oneDNN chose another kernel."""
    real = enc._fast.latents
    enc._fast.latents = lambda x, lengths=None: real(x, lengths) + 1e-3


def entries(cache):
    return sorted((cache / "engine-check").glob("*.json"))


def rewrite(path, change):
    """Edit an entry and give it a valid checksum again (a forged or stale entry, not a corrupt one)."""
    import hashlib

    entry = json.loads(path.read_text())
    del entry["checksum"]
    change(entry)
    canonical = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
    entry["checksum"] = hashlib.sha256(canonical).hexdigest()
    path.write_text(json.dumps(entry))


def test_a_miss_checks_and_records_then_the_next_process_finds_it(encode, sodadata_cache, reference_runs):
    assert cache_dir() == sodadata_cache
    first = encode()
    assert first.check.source == "miss" and first.stats.engine == "chunked"
    # the probe's reference is computed once, when the entry is first written; plus one reference per class
    (path,) = entries(sodadata_cache)
    entry = json.loads(path.read_text())
    assert entry["classes"] == {"0": True, "2": True, "3": True}
    assert len(reference_runs) == 3 + 1 and first.stats.check_seconds > 0
    assert not list(path.parent.glob("*.tmp")), "written atomically: no temporary file left"
    reference_runs.clear()

    second = encode()  # another process of the same machine: a fresh encoder
    assert second.check.source == "hit" and second.stats.engine == "chunked"
    assert reference_runs == [], "a confirmed entry saves every reference encode"
    assert second._verified == {0, 2, 3}


@pytest.mark.parametrize("damage", [
    lambda p: p.write_text(p.read_text()[:40]),  # cut short
    lambda p: p.write_text(p.read_text().replace('"0": true', '"0": false')),  # edited without its checksum
    lambda p: p.write_text("[]"),
])
def test_a_corrupt_entry_is_ignored_and_checked_again(encode, sodadata_cache, reference_runs, damage):
    encode()
    (path,) = entries(sodadata_cache)
    damage(path)
    reference_runs.clear()
    enc = encode()
    assert enc.check.source == "corrupt" and enc.stats.engine == "chunked"
    assert len(reference_runs) >= 3, "every class checked again"
    assert json.loads(path.read_text())["classes"] == {"0": True, "2": True, "3": True}, "and the entry rewritten"


def test_an_entry_that_does_not_hold_here_is_not_trusted(encode, sodadata_cache, reference_runs):
    """An intact entry saying 'the chunked engine agrees' for an engine that does not: the probe catches it, the
    classes are checked again, the engine falls back, and the codes are still MimiModel.encode's."""
    encode()
    (path,) = entries(sodadata_cache)
    reference_runs.clear()
    enc = encode(patch=as_if_another_kernel)
    assert enc.check.source == "wrong" and enc.stats.engine == "reference" and reference_runs
    # the verdict now recorded is the truth of this (patched) engine, and a forged probe digest is caught too
    rewrite(path, lambda e: e.update(probe="0" * 64, classes={"0": True, "2": True, "3": True}))
    assert encode().check.source == "wrong"


def test_a_known_mismatch_sends_the_next_process_to_the_reference_at_once(encode, sodadata_cache, reference_runs):
    encode(patch=as_if_another_kernel)
    (path,) = entries(sodadata_cache)
    assert False in json.loads(path.read_text())["classes"].values()
    chunked_calls = []
    enc = encode(patch=lambda e: setattr(e._fast, "latents", lambda *a, **k: chunked_calls.append(1)))
    assert enc.check.source == "hit" and enc.stats.engine == "reference" and chunked_calls == []


def test_the_key_holds_what_could_change_the_verdict(encode, sodadata_cache):
    encode()
    torch.set_num_threads(2)
    encode()  # another thread count: another entry (its own verdicts)
    encode(CodecConfig(codec="tiny-random", chunk_seconds=4.0))  # another chunk
    keys = [json.loads(p.read_text())["key"] for p in entries(sodadata_cache)]
    assert len(keys) == 3 and {k["threads"] for k in keys} == {1, 2} and {k["chunk"] for k in keys} == {48000, 96000}
    for field in ("engine", "torch", "torch_build", "cpu_capability", "transformers", "cpu", "host", "codec", "dtype"):
        assert field in keys[0]
    # an entry under another key's name (copied from another machine, say) is not this key's
    by_key = {(k["threads"], k["chunk"]): p for p in entries(sodadata_cache)
              for k in [json.loads(p.read_text())["key"]]}
    by_key[(2, C)].write_text(by_key[(1, C)].read_text())
    assert encode().check.source == "wrong"  # still 2 threads


def test_the_same_model_saved_and_loaded_again_finds_the_same_entry(encode, expected, sodadata_cache, tmp_path):
    """Where a config was loaded from is not its architecture: full-random drawn in one process and loaded from the
    cache in the next, or kyutai/mimi from the Hub cache and from a copy, must not miss (a 7-reference recheck)."""
    from transformers import MimiModel

    first = encode()
    assert first.check.source == "miss"
    build_random_mimi("tiny-random").save_pretrained(tmp_path / "copy")
    loaded = MimiModel.from_pretrained(tmp_path / "copy").eval()
    loaded.decoder = None
    again = MimiEncoder(CONFIG, model=loaded)
    for c, e in zip(again.encode(waves()), expected, strict=True):
        np.testing.assert_array_equal(c, e)
    assert again.check.source == "hit" and len(entries(sodadata_cache)) == 1
    before = architecture_digest(loaded.config)
    loaded.config.num_hidden_layers += 1  # the architecture does count
    assert architecture_digest(loaded.config) != before


def test_the_cache_can_be_turned_off(encode, sodadata_cache, monkeypatch, reference_runs):
    monkeypatch.setenv("SODADATA_CACHE", "off")
    assert cache_dir() is None
    enc = encode()
    assert enc.check.source == "none" and len(reference_runs) == 3
    assert not (sodadata_cache / "engine-check").exists()


def test_an_unwritable_cache_leaves_the_check_to_each_process(encode, tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("SODADATA_CACHE", str(blocked))
    enc = encode()
    assert enc.stats.engine == "chunked" and enc.check.path is None
