"""The optimized paths give exactly what the plain ones give (issue 8). Speed is measured in bench/, never here."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from fixtures import speechlike

from sodadata.encode.codec import (
    MAX_PIECE_SAMPLES,
    CodecConfig,
    MimiEncoder,
    build_random_mimi,
    reference_encode,
)

# Lengths around chunk boundaries: shorter than a chunk, exactly whole chunks, and narrow tails (1, 100, 961
# samples) that the last chunk must absorb; 1919/1921 straddle a frame.
# The tiny model fails the per-process bit check on the default 1 s chunks (its narrow stages get other oneDNN
# kernels there) and would run the reference path; on 2 s chunks it passes, so its tests of the chunked path use
# those. The full-size architecture is tested on the default.
TINY_CHUNK_SECONDS = 2.0
C = CodecConfig(chunk_seconds=TINY_CHUNK_SECONDS).effective_chunk_samples()
C_FULL = CodecConfig().effective_chunk_samples()
LENGTHS = [1919, 1921, C - 1, C, 2 * C, 2 * C + 1, 2 * C + 100, 3 * C + 961, 5 * C - 7]


@pytest.fixture(scope="module")
def tiny():
    return build_random_mimi("tiny-random", encoder_only=True)


def tiny_config(**kw) -> CodecConfig:
    return CodecConfig(codec="tiny-random", chunk_seconds=TINY_CHUNK_SECONDS, **kw)


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
    enc = MimiEncoder(tiny_config(batch_size=batch_size), model=tiny)
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
    enc = MimiEncoder(tiny_config(), model=tiny)
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
    waves = _waves([2 * C_FULL + 961, C_FULL // 2 + 17], seed=11)
    for w, c in zip(waves, enc.encode(waves)):
        np.testing.assert_array_equal(c, reference_encode(model, w))
    assert enc.stats.engine == "chunked" and enc._verified == {0, 2}


def test_sixty_second_pieces_still_apply(tiny, threads):
    threads(1)
    wave = speechlike((MAX_PIECE_SAMPLES + 3 * C + 5) / 24000, 21)
    (codes,) = MimiEncoder(tiny_config(), model=tiny).encode([wave])
    ref = np.concatenate([reference_encode(tiny, wave[:MAX_PIECE_SAMPLES]),
                          reference_encode(tiny, wave[MAX_PIECE_SAMPLES:])], axis=1)
    np.testing.assert_array_equal(codes, ref)


def test_a_chunked_path_that_differs_falls_back_to_the_reference(tiny, caplog, threads):
    threads(1)
    enc = MimiEncoder(tiny_config(), model=tiny)
    real = enc._fast.latents
    enc._fast.latents = lambda x, lengths=None: real(x, lengths) + 1e-3  # as if oneDNN chose another kernel
    waves = _waves([2 * C + 100], seed=5)
    with caplog.at_level(logging.INFO, logger="sodadata.encode.codec"):  # INFO: same codes, nothing for a user to do
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
        "import sodadata.encode.codec as c, sodadata.encode.malloc_tuning as m\n"
        "enc = c.MimiEncoder(c.CodecConfig(codec='tiny-random', chunk_seconds=2.0), model=c.build_random_mimi('tiny-random'))\n"
        "(codes,) = enc.encode([speechlike(4.2, 3)])\n"
        "print(json.dumps({'tuned': m._MALLOC_TUNED, 'codes': codes.tolist()}))\n"
    )
    outs = {}
    for name, extra in (("plain", {}), ("dask", {"MALLOC_TRIM_THRESHOLD_": "65536"})):
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"} | extra
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
        outs[name] = json.loads(done.stdout.strip().splitlines()[-1])
    assert outs["dask"]["tuned"] and not outs["plain"]["tuned"]
    assert outs["dask"]["codes"] == outs["plain"]["codes"]


# --- the GPU path's logic, on CPU -------------------------------------------------------------------------------


def test_cuda_config_sizes_batches_and_buckets_for_a_gpu():
    from sodadata.run.pipeline import PipelineConfig

    gpu = CodecConfig(codec="tiny-random", device="cuda")
    assert gpu.effective_batch_size() == 64 and gpu.effective_max_batch_samples() == 1920 * 24000
    cpu = CodecConfig(codec="tiny-random")
    assert cpu.effective_batch_size() == 1
    p_gpu = PipelineConfig(out="x", codec=gpu, bucket_seconds=None)
    assert p_gpu.effective_bucket_seconds() == 3840.0  # a bucket fills whole GPU batches
    assert p_gpu.effective_decode_threads() >= 1 and PipelineConfig(out="x", codec=cpu).effective_decode_threads() == 1
    assert PipelineConfig(out="x", codec=cpu, bucket_seconds=None).effective_bucket_seconds() == 600.0


def test_gpu_batching_respects_its_limits_and_keeps_codes(tiny):
    """What runs on a GPU (the reference path with padding repair, large length-sorted batches), run on CPU with
    the CUDA configuration's batch limits."""
    cfg = CodecConfig(codec="tiny-random", device="cuda", engine="reference", batch_size=6, max_batch_seconds=20.0)
    enc = MimiEncoder(cfg, model=tiny)  # the model stays on CPU; batch sizing comes from the config
    assert enc._fast is None and enc.batch_size == 6
    rng = np.random.default_rng(0)
    waves = [speechlike(float(s), i) for i, s in enumerate(rng.uniform(0.3, 7.0, size=23))]
    seen = []
    real = enc._encode_batch

    def spy(batch):
        seen.append([len(w) for w in batch])
        return real(batch)

    enc._encode_batch = spy
    codes = enc.encode(waves)
    assert max(len(b) for b in seen) == 6 and sum(len(b) for b in seen) == len(waves)
    assert all(max(b) * len(b) <= 20 * 24000 for b in seen if len(b) > 1)
    assert all(b == sorted(b, reverse=True) for b in seen)  # sorted by length: little padding
    for w, c in zip(waves, codes):
        np.testing.assert_array_equal(c, reference_encode(tiny, w))


def test_dtype_agreement_is_computed_on_cpu_for_bfloat16(tiny):
    """bench/gpu.py's agreement measure, run on CPU: float32 against itself is 1, bfloat16 is measured."""
    import copy
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.gpu import code_agreement

    waves = _waves([24000 * 3, 24000 * 2 + 500], seed=31)
    fp32 = MimiEncoder(tiny_config(), model=tiny).encode(waves)
    bf16_model = copy.deepcopy(tiny).to(torch.bfloat16)
    bf16 = MimiEncoder(tiny_config(dtype="bfloat16"), model=bf16_model).encode(waves)
    same = code_agreement(fp32, fp32)
    assert same["all"] == 1.0 and same["codebook0"] == 1.0 and same["frames"] == 1.0
    got = code_agreement(bf16, fp32)
    assert 0.0 < got["all"] <= 1.0 and 0.0 <= got["frames"] <= got["codebook0"] <= 1.0


# --- parallel decoding (feeds a GPU) ------------------------------------------------------------------------------


def test_decode_threads_give_the_same_shard_rejects_and_record(tmp_path):
    import json

    import pyarrow.parquet as pq
    from fixtures import make_emilia_source

    from sodadata.recipes.emilia import EmiliaRecipe
    from sodadata.run.pipeline import PipelineConfig
    from sodadata.run.runner import RunnerConfig, run_recipe

    root = tmp_path / "src"
    make_emilia_source(root, seed=4, quirks=True, tars_per_subset=1, docs_per_tar=3, utts_per_doc=3)
    outs = {}
    for threads in (1, 4):
        out = tmp_path / f"out{threads}"
        result = run_recipe(EmiliaRecipe(source=str(root)),
                            PipelineConfig(out=str(out), codec=tiny_config(), decode_threads=threads,
                                           prefetch_items=2),
                            RunnerConfig(serial=True, progress=False))
        assert result.ok
        outs[threads] = {
            p.relative_to(out).as_posix(): pq.read_table(p).to_pylist() for p in sorted(out.rglob("*.parquet"))
        }
        recs = {p.relative_to(out).as_posix(): json.loads(p.read_text()) for p in sorted(out.glob("*/*/*.json"))}
        outs[threads]["records"] = {k: {f: v[f] for f in ("read", "written", "rejected", "rejects", "rows")}
                                    for k, v in recs.items()}
    assert outs[1] == outs[4]  # rows, rejects (in order) and counts
    assert any("rejects" in k and rows for k, rows in outs[1].items() if k != "records")


def test_torch_threads_are_applied_in_the_thread_that_encodes(tiny, threads):
    """torch's thread count is per OpenMP thread: a Dask task thread must get the configured count even when the
    model was loaded in another thread."""
    import threading

    threads(1)
    enc = MimiEncoder(CodecConfig(codec="tiny-random", threads=2), model=tiny)
    seen = []

    def work() -> None:
        torch.set_num_threads(1)
        enc.encode(_waves([24000]))
        seen.append(torch.get_num_threads())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [2]
