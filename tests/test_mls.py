"""The MLS English recipe on Parquet files in the real layout: metadata pass, documents, codes, rejects, CLI."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from fixtures_mls import corrupt_column, make_mls_source
from fixtures_yodas2 import parse_text_first, read_rows

from sodadata import chars_to_codes
from sodadata.encode.audio import to_mono_24k
from sodadata.encode.codec import CodecConfig, build_random_mimi, reference_encode
from sodadata.read import sources
from sodadata.read.recipe import ShardError
from sodadata.recipes import mls
from sodadata.recipes.mls import MLSRecipe
from sodadata.run.pipeline import PipelineConfig
from sodadata.run.runner import RunnerConfig, run_recipe

CODEC = CodecConfig(codec="tiny-random", threads=1)  # one thread, like test_yodas2 (codes depend on it bitwise)
COMPONENT = "mls/en"


# encoding in this process (the codec, the serial runner) sets torch's thread count: give it back after the module
pytestmark = pytest.mark.usefixtures("restore_torch_threads")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("mls-src")
    return root, make_mls_source(root)


@pytest.fixture(scope="module")
def serial_out(source, tmp_path_factory):
    """The train split in shards of ~5 s of audio: several tasks, each with whole documents."""
    root, _ = source
    out = tmp_path_factory.mktemp("mls-out")
    recipe = MLSRecipe(source=str(root), shard_hours=5 / 3600)
    result = run_recipe(recipe, PipelineConfig(out=str(out), codec=CODEC), RunnerConfig(serial=True, progress=False))
    assert result.ok, result.failures
    return out


def _all_rows(tasks) -> list[tuple[str, int, int]]:
    """(file name, row, document index or -reason) of every row of every task."""
    out = []
    for t in tasks:
        rows = np.frombuffer(t.param("rows"), dtype=np.int32).reshape(-1, 4)
        out += [(Path(t.inputs[i].url).name, r, d) for i, r, d, _ in rows.tolist()]
    return out


def test_the_metadata_pass_builds_whole_documents_and_places_every_row_once(source):
    root, exp = source
    one = MLSRecipe(source=str(root)).tasks()
    assert [t.stem for t in one] == ["train-00000"] and one[0].split == "train/00000"
    assert [Path(f.url).name for f in one[0].inputs] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert sorted(d for d, _ in one[0].param("docs")) == sorted(exp.documents)

    many = MLSRecipe(source=str(root), shard_hours=5 / 3600).tasks()
    assert len(many) > 2 and [t.stem for t in many] == [f"train-{k:05d}" for k in range(len(many))]
    rows = _all_rows(many)
    n0 = pq.ParquetFile(root / "data/train-00000-of-00002.parquet").metadata.num_rows
    n1 = pq.ParquetFile(root / "data/train-00001-of-00002.parquet").metadata.num_rows
    assert sorted((f, r) for f, r, _ in rows) == sorted(
        [("train-00000-of-00002.parquet", r) for r in range(n0)] + [("train-00001-of-00002.parquet", r) for r in range(n1)])
    assert n0 + n1 == exp.read
    # every document is in exactly one task, whole: its rows all point at it, in that task only
    doc_tasks: dict[str, set[int]] = {}
    for k, t in enumerate(many):
        for doc, _ in t.param("docs"):
            doc_tasks.setdefault(doc, set()).add(k)
        used = {int(d) for d in np.frombuffer(t.param("rows"), dtype=np.int32).reshape(-1, 4)[:, 2] if d >= 0}
        assert used == set(range(len(t.param("docs"))))
        assert {Path(f.url).name for f in t.inputs} == {f for f, _, _ in _all_rows([t])}
    assert set(doc_tasks) == set(exp.documents) and all(len(v) == 1 for v in doc_tasks.values())
    assert sorted(-d for _, _, d in rows if d < 0) == [1, 2, 3]
    # tasks travel to Dask workers: picklable and hashable
    assert pickle.loads(pickle.dumps(many[0])) == many[0] and hash(many[0]) == hash(pickle.loads(pickle.dumps(many[0])))


def test_documents_follow_recordings_and_gaps(source, serial_out):
    _, exp = source
    rows = read_rows(serial_out)
    assert set(rows) == {f"{d}_type{k}" for d in exp.documents for k in (1, 2)}
    for doc, seg_ids in exp.documents.items():
        r1, r2 = rows[f"{doc}_type1"], rows[f"{doc}_type2"]
        pairs = parse_text_first(r1["text"])
        assert [t for t, _ in pairs] == [exp.transcripts[s] for s in seg_ids]  # sorted by begin_time
        meta = json.loads(r1["metadata"])["utterances"]
        assert [u["id"] for u in meta] == seg_ids
        assert [u["begin_time"] for u in meta] == sorted(u["begin_time"] for u in meta)
        assert r1["n_utterances"] == r2["n_utterances"] == len(seg_ids)
        assert r1["corpus"] == COMPONENT and r1["split"].startswith("train/")
    # recording a: the 0.6 s gap splits it in two documents, the 0.2 s gap does not
    a = sorted(d for d in exp.documents if d.startswith("4800-10003-7737"))
    assert [len(exp.documents[d]) for d in a] == [3, 3]


def test_every_fault_is_rejected_with_its_reason_and_counts_balance(source, serial_out):
    _, exp = source
    got = {}
    for p in sorted((serial_out / COMPONENT / "rejects").glob("*.parquet")):
        for r in pq.read_table(p).to_pylist():
            assert r["detail"], r
            got[r["id"]] = r["reason"]
    assert got == exp.rejects
    records = [json.loads(p.read_text()) for p in sorted((serial_out / COMPONENT).glob("*.json"))]
    assert sum(r["read"] for r in records) == exp.read
    assert sum(r["written"] for r in records) == sum(len(v) for v in exp.documents.values())
    for rec in records:
        assert rec["read"] == rec["written"] + rec["rejected"] and rec["rejected"] == sum(rec["rejects"].values())


def test_written_codes_are_mimi_codes_of_the_resampled_segment(source, serial_out):
    """FLAC is lossless: each segment's codes are MimiModel.encode of its 16 kHz audio resampled to 24 kHz."""
    root, exp = source
    model = build_random_mimi("tiny-random")
    flac = {}
    for p in sorted((root / "data").glob("train-*.parquet")):
        for r in pq.read_table(p).to_pylist():
            flac[(r["original_path"], r["begin_time"])] = r["audio"]["bytes"]
    rows = read_rows(serial_out)
    checked = 0
    for doc in exp.documents:
        meta = json.loads(rows[f"{doc}_type1"]["metadata"])["utterances"]
        for u, (_, audio) in zip(meta, parse_text_first(rows[f"{doc}_type1"]["text"]), strict=True):
            samples, rate = sf.read(io.BytesIO(flac[(u["original_path"], u["begin_time"])]), dtype="float32")
            assert rate == 16_000
            np.testing.assert_allclose(samples, exp.waves[u["id"]], atol=1 / 32768)  # the fixture's audio
            np.testing.assert_array_equal(chars_to_codes(audio), reference_encode(model, to_mono_24k(samples, rate)))
            checked += 1
    assert checked == sum(len(v) for v in exp.documents.values()) == 11


def test_the_metadata_pass_never_reads_the_audio_column(tmp_path):
    root = tmp_path / "src"
    exp = make_mls_source(root, seed=1)
    for p in (root / "data").glob("train-*.parquet"):
        assert corrupt_column(p, "audio") > 10_000
    recipe = MLSRecipe(source=str(root))
    (task,) = recipe.tasks()  # reads every file's metadata columns: works, the audio is never touched
    assert sorted(d for d, _ in task.param("docs")) == sorted(exp.documents)
    with pytest.raises(ShardError, match="cannot read"):  # control: reading the audio does fail
        list(recipe.read(task))


def test_cli_prepares_the_dev_split_and_a_rerun_skips_it(source, tmp_path, capsys):
    root, _ = source
    argv = ["--lang", "en", "--split", "dev", "--source", str(root), "--out", str(tmp_path), "--codec", "tiny-random",
            "--serial", "--no-progress", "--limit-shards", "1", "--workers", "1"]
    assert mls.main(argv) == 0
    assert "mls/en" in capsys.readouterr().out
    rec = json.loads((tmp_path / COMPONENT / "dev-00000.json").read_text())
    assert (rec["read"], rec["written"], rec["documents"], rec["split"]) == (2, 2, 1, "dev/00000")
    rows = read_rows(tmp_path)
    assert set(rows) == {"9-10-" + mls.path_hash("http://www.archive.org/download/dev/dev.mp3") + f"-00000000_type{k}"
                         for k in (1, 2)}
    assert mls.main(argv) == 0
    assert "1 already finished" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        mls.main([*argv, "--lang", "de"])


def test_hub_source_reads_pinned_hf_urls(source, monkeypatch):
    """No network here: the Hub calls are replaced; the URLs the recipe gives polars and the tasks are checked."""
    root, _ = source
    sha = "89abcdef0123456789abcdef0123456789abcdef"
    local = sorted((root / "data").glob("train-*.parquet"))
    resolved, scanned = [], []
    monkeypatch.setattr(sources, "resolve_hf_revision", lambda repo, rev, **kw: resolved.append((repo, rev)) or sha)
    monkeypatch.setattr(sources, "list_files", lambda base, pattern: [
        sources.SourceFile(f"{base}/{p.name}", p.stat().st_size) for p in local] if pattern == "train-*-of-*.parquet" else [])
    real_scan = mls.scan_metadata

    def scan(urls):
        scanned.extend(urls)
        return real_scan([str(root / "data" / Path(u).name) for u in urls])

    monkeypatch.setattr(mls, "scan_metadata", scan)
    (task,) = MLSRecipe().tasks()
    assert resolved == [("parler-tts/mls_eng", "main")]
    assert scanned == [f"hf://datasets/parler-tts/mls_eng@{sha}/data/{p.name}" for p in local]
    assert [f.url for f in task.inputs] == scanned and task.revision == sha
