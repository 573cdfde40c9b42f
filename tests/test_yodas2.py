"""The Yodas2 recipe on shards in the real layout: documents, exact codes, rejects, counts, memory, CLI, Hub paths."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from fixtures_yodas2 import make_uniform_shard, make_yodas2_source, parse_text_first, read_rows

from sodadata import chars_to_codes
from sodadata.encode.audio import to_mono_24k
from sodadata.encode.codec import CodecConfig, build_random_mimi, reference_encode
from sodadata.read import sources
from sodadata.read.completeness import IncompleteSource
from sodadata.read.recipe import ShardError
from sodadata.recipes import yodas2
from sodadata.recipes.yodas2 import Yodas2Recipe
from sodadata.run.pipeline import PipelineConfig
from sodadata.run.runner import RunnerConfig, run_recipe

REPO = Path(__file__).resolve().parent.parent
# One torch thread, like a Dask worker (its nanny sets OMP_NUM_THREADS=1): codes are bitwise equal only at the
# same thread count (float sums in another order can move a residual codebook's choice).
CODEC = CodecConfig(codec="tiny-random", threads=1)
COMPONENT = "yodas2/en"


# encoding in this process (the codec, the serial runner) sets torch's thread count: give it back after the module
pytestmark = pytest.mark.usefixtures("restore_torch_threads")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("yodas2-src")
    return root, make_yodas2_source(root)


@pytest.fixture(scope="module")
def serial_out(source, tmp_path_factory):
    root, _ = source
    out = tmp_path_factory.mktemp("yodas2-out")
    recipe = Yodas2Recipe(source=str(root), subsets=("en000", "en100"))
    result = run_recipe(recipe, PipelineConfig(out=str(out), codec=CODEC), RunnerConfig(serial=True, progress=False))
    assert result.ok, result.failures
    return out


def test_tasks_follow_the_real_layout(source):
    root, exp = source
    tasks = Yodas2Recipe(source=str(root), subsets=("en000", "en100")).tasks()
    assert [t.stem for t in tasks] == exp.stems
    assert all(t.component == COMPONENT for t in tasks)
    assert [t.split for t in tasks] == ["en000/00000000", "en000/00000001", "en100/00000000"]
    first = tasks[0]
    assert [Path(f.url).relative_to(root).as_posix() for f in first.inputs] == [
        "data/en000/text/00000000.json", "data/en000/duration/00000000.txt", "data/en000/audio/00000000.tar.gz"]
    assert all(f.size and f.size > 0 for f in first.inputs)
    assert tasks[1].param("duration") is None  # that shard has no duration file
    assert [t.stem for t in Yodas2Recipe(source=str(root), subsets=("en100",)).tasks()] == ["en100-00000000"]


def test_default_subsets_are_the_38_english_subsets_of_the_catalog():
    subsets = Yodas2Recipe().selected_subsets()
    assert len(subsets) == 38 and subsets[:2] == ("en000", "en001") and subsets[-1] == "en129"
    assert "en008" not in subsets and "en099" not in subsets
    catalog = yodas2.load_catalog("yodas2")["languages"]["en"]
    assert sum(catalog["subsets"].values()) == catalog["shards"] == 18499
    with pytest.raises(ValueError, match="en000"):
        Yodas2Recipe(subsets=("fr000",)).selected_subsets()


def test_videos_become_documents_in_index_order(source, serial_out):
    _, exp = source
    rows = read_rows(serial_out)
    assert set(rows) == {f"{vid}_type{k}" for vid in exp.documents for k in (1, 2)}
    for vid, keys in exp.documents.items():
        r1, r2 = rows[f"{vid}_type1"], rows[f"{vid}_type2"]
        pairs = parse_text_first(r1["text"])
        # index order although the JSON's key order was shuffled; transcripts stripped, nothing else changed
        assert [t for t, _ in pairs] == [exp.transcripts[k] for k in keys]
        assert r1["n_utterances"] == r2["n_utterances"] == len(keys)
        assert r1["n_audio_tokens"] == sum(len(a) for _, a in pairs)
        assert r1["split"] == r2["split"] == exp.splits[vid]
        meta = json.loads(r1["metadata"])["utterances"]
        assert [u["id"] for u in meta] == keys
        for u in meta:
            _, _, start, end = u["id"].rsplit("-", 3)
            assert (u["start_cs"], u["end_cs"]) == (int(start), int(end))
    # the shard without a duration file has no video_seconds; the others carry the duration file's value
    assert "video_seconds" not in json.loads(rows["z_Z-z_Z-z_Z_type1"]["metadata"])["utterances"][0]
    assert json.loads(rows["-aB3_x-9Zq__type1"]["metadata"])["utterances"][0]["video_seconds"] == 8.005


def test_every_fault_is_rejected_with_its_reason_and_counts_balance(source, serial_out):
    _, exp = source
    got = {}
    for p in sorted((serial_out / COMPONENT / "rejects").glob("*.parquet")):
        for r in pq.read_table(p).to_pylist():
            assert r["detail"], r
            got[r["id"]] = r["reason"]
    assert got == exp.rejects
    for stem, n in exp.read.items():
        rec = json.loads((serial_out / COMPONENT / f"{stem}.json").read_text())
        assert rec["read"] == n
        assert rec["read"] == rec["written"] + rec["rejected"] and rec["rejected"] == sum(rec["rejects"].values())
        assert rec["written"] == sum(len(exp.documents[v]) for v in _videos_of(serial_out, stem))
        assert rec["split"] == stem.replace("-", "/") and rec["unit"] == "utterance"
        assert {Path(i["url"]).name for i in rec["source"]["inputs"]} >= {f"{stem[6:]}.json", f"{stem[6:]}.tar.gz"}


def _videos_of(out: Path, stem: str) -> set[str]:
    rows = pq.read_table(out / COMPONENT / f"{stem}.parquet").to_pylist()
    return {r["id"].rsplit("_type", 1)[0] for r in rows}


def test_written_codes_equal_mimi_encode_of_each_sliced_utterance(source, serial_out):
    """WAV decoding is exact: every utterance's codes are MimiModel.encode of its slice, one at a time."""
    root, exp = source
    model = build_random_mimi("tiny-random")
    waves = {}
    for tar_path in sorted(root.rglob("*.tar.gz")):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                try:
                    waves[m.name.removesuffix(".wav")] = sf.read(io.BytesIO(tar.extractfile(m).read()), dtype="float32")
                except sf.LibsndfileError:
                    pass  # the corrupt WAV of the fixture
    rows = read_rows(serial_out)
    checked = resampled = 0
    for vid, keys in exp.documents.items():
        samples, rate = waves[vid]
        for key, (_, audio) in zip(keys, parse_text_first(rows[f"{vid}_type1"]["text"]), strict=True):
            _, _, start, end = key.rsplit("-", 3)
            piece = samples[round(int(start) * rate / 100): round(int(end) * rate / 100)]
            codes = chars_to_codes(audio)
            np.testing.assert_array_equal(codes, reference_encode(model, to_mono_24k(piece, rate)))
            assert codes.shape[1] == -(-round(len(piece) * 24_000 / rate) // 1920)
            checked += 1
            resampled += rate != 24_000
    assert checked == sum(len(k) for k in exp.documents.values()) == 10 and resampled == 2


def test_memory_of_a_task_does_not_grow_with_the_videos_in_its_shard(tmp_path):
    """Shards of 2 and 8 videos of 8 s, measured in a fresh process (bench/memory.py): the task's traced peak
    (Python + numpy allocations) stays flat, while the control, a reader that keeps all of the shard's
    utterances, grows by the 6 extra videos: the measure does see audio that is held."""
    from bench.memory import run_measurements

    small, large = run_measurements([2, 8], 8.0, 2.0, bucket_seconds=3.0, prefetch_items=2, workdir=tmp_path,
                                    warmup=True)
    one_video_mb = 8.0 * 24_000 * 4 / 2**20
    assert (small["videos"], large["videos"]) == (2, 8) and (small["utterances"], large["utterances"]) == (8, 32)
    assert large["hold_all_traced_peak_mb"] - small["hold_all_traced_peak_mb"] > 4 * one_video_mb
    assert large["traced_peak_mb"] - small["traced_peak_mb"] < 0.5 * one_video_mb, (small, large)


def test_rerun_skips_finished_shards_and_dask_gives_the_same_rows(source, serial_out, tmp_path):
    root, _ = source
    recipe = Yodas2Recipe(source=str(root), subsets=("en000", "en100"))
    again = run_recipe(recipe, PipelineConfig(out=str(serial_out), codec=CODEC), RunnerConfig(serial=True, progress=False))
    assert (again.skipped, again.done) == (3, 0)
    # one LocalCluster worker process (Dask itself is covered by the Emilia tests): the smallest shard
    result = run_recipe(Yodas2Recipe(source=str(root), subsets=("en100",)), PipelineConfig(out=str(tmp_path), codec=CODEC),
                        RunnerConfig(workers=1, progress=False))
    assert result.ok and result.done == 1
    dask_rows = read_rows(tmp_path)
    assert dask_rows and dask_rows == {k: v for k, v in read_rows(serial_out).items() if v["split"] == "en100/00000000"}


def test_a_truncated_tar_or_missing_json_fails_only_that_shard(tmp_path):
    root = tmp_path / "src"
    make_uniform_shard(root, 2, 3.0, 1.0, shard="00000000")
    make_uniform_shard(root, 2, 3.0, 1.0, shard="00000001")
    make_uniform_shard(root, 1, 2.0, 1.0, shard="00000002")
    tar = root / "data/en000/audio/00000001.tar.gz"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    (root / "data/en000/text/00000002.json").unlink()
    recipe = Yodas2Recipe(source=str(root), subsets=("en000",))
    with pytest.raises(ShardError, match=r"00000001\.tar\.gz"):
        list(recipe.read(recipe.tasks()[1]))
    with pytest.raises(ShardError, match="no text"):
        list(recipe.read(recipe.tasks()[2]))
    out = tmp_path / "out"
    config, runner = PipelineConfig(out=str(out), codec=CODEC), RunnerConfig(serial=True, retries=0, progress=False)
    # the shard without its JSON is seen before any work: the run stops, naming it ...
    with pytest.raises(IncompleteSource, match=r"shard en000/00000002: no text file\. .*--allow-missing"):
        run_recipe(recipe, config, runner)
    assert not out.exists()
    # ... unless --allow-missing: then it fails alone (the cut tar is only found by reading it)
    result = run_recipe(recipe, config, runner, allow_missing=True)
    assert result.completeness.missing == ["shard en000/00000002: no text file"]
    assert sorted(f.task for f in result.failures) == ["yodas2/en/en000-00000001", "yodas2/en/en000-00000002"]
    assert all(f.error.startswith("ShardError") for f in result.failures)
    assert sorted(p.name for p in (out / COMPONENT).glob("*.parquet")) == ["en000-00000000.parquet"]


def test_a_json_that_is_not_one_array_of_videos_fails_the_shard(tmp_path):
    root = tmp_path / "src"
    make_uniform_shard(root, 1, 2.0, 1.0)
    (root / "data/en000/text/00000000.json").write_text('{"audio_id": "x", "text": {}}')
    recipe = Yodas2Recipe(source=str(root), subsets=("en000",))
    with pytest.raises(ShardError, match="one JSON array"):
        list(recipe.read(recipe.tasks()[0]))


def test_hub_source_resolves_the_revision_once_and_reads_pinned_hf_urls(monkeypatch):
    """No network here: the Hub calls are replaced, the URLs the recipe builds for them are checked."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    resolved, listed = [], []
    monkeypatch.setattr(sources, "resolve_hf_revision", lambda repo, rev, **kw: resolved.append((repo, rev)) or sha)

    def fake_list(base, pattern):
        listed.append((base, pattern))
        suffix = pattern.split("*")[1]
        return [sources.SourceFile(f"{base}/{pattern.split('/')[0]}/00000000{suffix}", 1)]

    monkeypatch.setattr(sources, "list_files", fake_list)
    tasks = Yodas2Recipe(subsets=("en000", "en129")).tasks()
    assert resolved == [("espnet/yodas2", "main")]
    assert {b for b, _ in listed} == {f"hf://datasets/espnet/yodas2@{sha}/data/{s}" for s in ("en000", "en129")}
    assert [t.stem for t in tasks] == ["en000-00000000", "en129-00000000"]
    assert tasks[0].revision == sha
    assert tasks[0].param("audio") == f"hf://datasets/espnet/yodas2@{sha}/data/en000/audio/00000000.tar.gz"
    assert sources.parse_hf_url(tasks[0].param("text"))[1:] == ("espnet/yodas2", sha, "data/en000/text/00000000.json")


def test_cli_runs_and_help_lists_the_shared_options(source, tmp_path, capsys):
    root, _ = source
    rc = yodas2.main(["--lang", "en", "--subsets", "en100", "--source", str(root), "--out", str(tmp_path),
                      "--codec", "tiny-random", "--serial", "--limit-shards", "1", "--no-progress"])
    assert rc == 0
    assert "yodas2/en" in capsys.readouterr().out
    assert (tmp_path / COMPONENT / "en100-00000000.json").exists()
    done = subprocess.run([sys.executable, "-m", "sodadata.cli", "yodas2", "--help"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0
    for opt in ("--lang", "--subsets", "--source", "--out", "--limit-shards", "--workers", "--scheduler", "--codec"):
        assert opt in done.stdout


def test_a_tar_cut_at_a_member_boundary_fails_the_shard_instead_of_losing_videos(tmp_path):
    """A gzip stream that ends cleanly after a whole member reads as a smaller valid tar unless the end is checked."""
    import gzip

    root = tmp_path / "src"
    make_uniform_shard(root, 3, 2.0, 1.0)
    path = root / "data/en000/audio/00000000.tar.gz"
    raw = gzip.decompress(path.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        first = tar.getmembers()[0]
    cut = first.offset_data + -(-first.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    path.write_bytes(gzip.compress(raw[:cut]))
    recipe = Yodas2Recipe(source=str(root), subsets=("en000",))
    with pytest.raises(ShardError, match=r"00000000\.tar\.gz"):
        list(recipe.read(recipe.tasks()[0]))


def test_a_wav_over_the_size_limit_is_rejected_unread_caption_by_caption(tmp_path):
    root = tmp_path / "src"
    n = make_uniform_shard(root, 2, 2.0, 1.0)
    recipe = Yodas2Recipe(source=str(root), subsets=("en000",), max_wav_bytes=1000)  # each WAV is ~96 kB
    items = list(recipe.read(recipe.tasks()[0]))
    assert len(items) == n == 4
    assert {(type(i).__name__, getattr(i, "reason", None)) for i in items} == {("Reject", "video_too_large")}
