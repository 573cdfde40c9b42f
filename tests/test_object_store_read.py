"""Readers of a bucket (issue 15, SPEC §6): the mixture stream and ``train --data`` read ``s3://`` on moto's S3
server (tests/object_store.py) and give what they give from the local disk; a ``gs://`` URL without gcsfs is one
line before any work; the store's secret appears nowhere in what they print."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from object_store import SECRET
from synthetic import WORDS, make_output_dir
from test_mixture import COMPONENTS, assert_same, soda, take
from test_train import REPO, records, train_cli, work  # noqa: F401  (work: the fixture train_cli runs on)
from tokenizers import Tokenizer

from sodadata.mix.packing import MixtureStream
from sodadata.mix.streaming import list_shards
from sodadata.mix.tokenizer import build_tokenizer, train_small_base
from sodadata.read.recipe import ConfigError


def upload(store, local: Path, prefix: str) -> str:
    fs = store.fs()
    for p in sorted(local.rglob("*")):
        if p.is_file():
            fs.put_file(str(p), f"{store.bucket}/{prefix}/{p.relative_to(local).as_posix()}")
    return store.url(prefix)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:  # test_mixture's
    corpus = [" ".join(WORDS[i:] + WORDS[:i]).capitalize() + "." for i in range(len(WORDS))] * 4
    return build_tokenizer(train_small_base(corpus, vocab_size=500))


def test_the_stream_from_a_bucket_is_the_stream_from_disk_and_resumes(s3_store, tmp_path: Path, tok) -> None:
    data = tmp_path / "data"
    make_output_dir(data, components=COMPONENTS, seed=7, record_files=True)
    url = upload(s3_store, data, "soda")
    local = soda(data, seq_len=100)
    remote = dataclasses.replace(local, root=url)
    stream = MixtureStream(remote, tok)
    assert [r._prefetch is not None for lane in [stream._lane(0)] for r in lane.readers] == [True] * 4
    full_local = take(MixtureStream(local, tok), 8, 40)
    first = take(stream, 8, 17)
    assert_same(first, full_local[:17])
    # a position saved while the next row groups were being read ahead resumes exactly, from the bucket
    state = json.loads(json.dumps(stream.state_dict()))
    resumed = MixtureStream(remote, tok)
    resumed.load_state_dict(state)
    assert_same(take(resumed, 8, 23), full_local[17:])
    assert_same(take(stream, 8, 23), full_local[17:])


def test_a_location_with_nothing_there_or_no_backend_is_one_line(s3_store) -> None:
    with pytest.raises(ConfigError, match=r"^s3://sodadata-test/nowhere does not exist$"):
        list_shards(s3_store.url("nowhere"))
    with pytest.raises(ConfigError, match=r"^gs://b/soda: the gs:// backend is not installed: pip install "
                                          r"'sodadata\[gcs\]'$"):
        list_shards("gs://b/soda/*/*.parquet")


@pytest.mark.slow
def test_train_reads_its_data_from_a_bucket(s3_store, work, tmp_path: Path) -> None:  # noqa: F811
    """Two steps of ``python -m train --data s3://...`` see the batches two steps from the local shards see."""
    from test_train import COMPONENTS as TRAIN_COMPONENTS

    local = tmp_path / "data"
    make_output_dir(local, TRAIN_COMPONENTS, seed=3, record_files=True)
    url = upload(s3_store, local, "train-data")
    batches = {}
    for name, data in (("local", str(local)), ("bucket", url)):
        metrics = tmp_path / f"{name}.jsonl"
        proc = train_cli(work, "--steps", "2", "--metrics", str(metrics), "--data", data, devices=1)
        assert SECRET not in proc.stdout + proc.stderr + metrics.read_text()
        batches[name] = [(r["step"], r["batch_sha1"], r["loss"]) for r in records(metrics)[1]]
    assert batches["bucket"] == batches["local"] and len(batches["local"]) == 2


def test_train_with_a_gs_url_and_no_gcsfs_is_one_line_before_jax(work) -> None:  # noqa: F811
    proc = train_cli(work, "--steps", "1", "--data", "gs://bucket/soda", check=False, devices=1)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "gs://bucket/soda: the gs:// backend is not installed: pip install 'sodadata[gcs]'"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not Path("gs:").exists()


def test_no_local_folder_named_after_the_url(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError):
        list_shards("gs://bucket/soda")
    assert list(tmp_path.iterdir()) == []



def test_validate_reads_a_bucket(s3_store, tmp_path: Path) -> None:
    """``sodadata validate s3://...`` checks the shards in the bucket as it checks them on disk: clean, then the
    violation of a damaged row named by its URL; a bucket prefix with nothing there is one line."""
    from test_validate import COMPONENTS as VALIDATE_COMPONENTS
    from test_validate import SHARD, rewrite, set_text

    out = tmp_path / "out"
    make_output_dir(out, components=VALIDATE_COMPONENTS, seed=11, record_files=True)
    url = upload(s3_store, out, "clean")
    done = _cli("validate", url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1].endswith(": clean")
    rewrite(out, SHARD, lambda rows: set_text(rows, 0, rows[0]["text"][:-1]))
    url = upload(s3_store, out, "damaged")
    done = _cli("validate", url)
    assert done.returncode == 1
    assert f"{url}/{SHARD}.parquet" in done.stdout
    missing = _cli("validate", s3_store.url("nowhere"))
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: {s3_store.url('nowhere')} does not exist"
    gs = _cli("validate", "gs://bucket/out")
    assert gs.returncode == 2 and gs.stderr.strip().splitlines() == [
        "error: gs://bucket/out: the gs:// backend is not installed: pip install 'sodadata[gcs]'"]
    for proc in (done, missing, gs):
        assert SECRET not in proc.stdout + proc.stderr


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``sodadata ARGS`` in a subprocess, with the store's environment the fixture set."""
    return subprocess.run([sys.executable, "-m", "sodadata.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


def test_stats_reads_a_bucket_and_writes_its_report_there(s3_store, tmp_path: Path) -> None:
    """``sodadata stats s3://.../out`` gives the numbers stats gives on the local copy, and writes OUT/_stats/ in
    the bucket (stats.json, stats.md, the PNGs); nothing local is made; the secret is in none of it."""
    out = tmp_path / "out"
    make_output_dir(out, components=COMPONENTS, seed=7, record_files=True)
    url = upload(s3_store, out, "stats-out")
    local = _cli("stats", str(out), "--output", str(tmp_path / "local-stats"))
    assert local.returncode == 0, local.stderr
    work_dir = tmp_path / "cwd"
    work_dir.mkdir()
    remote = subprocess.run([sys.executable, "-m", "sodadata.cli", "stats", url], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300, cwd=work_dir)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout  # the printed table: the same numbers
    fs = s3_store.fs()
    written = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3_store.bucket}/stats-out/_stats"))
    assert written == sorted(p.name for p in (tmp_path / "local-stats").iterdir())
    saved = json.loads(fs.cat_file(f"{s3_store.bucket}/stats-out/_stats/stats.json"))
    expected = json.loads((tmp_path / "local-stats" / "stats.json").read_text())["components"]
    for got, want in zip(saved["components"], expected, strict=True):  # float sums in another order
        assert got.keys() == want.keys()
        for key, value in want.items():
            numeric = isinstance(value, float) or (isinstance(value, dict) and key.endswith("_summary"))
            assert got[key] == (pytest.approx(value, rel=1e-9) if numeric else value), key
    assert list(work_dir.iterdir()) == []
    for name in written:
        assert SECRET.encode() not in fs.cat_file(f"{s3_store.bucket}/stats-out/_stats/{name}")
    assert SECRET not in remote.stdout + remote.stderr
    gs = _cli("stats", "gs://bucket/out")
    assert gs.returncode == 2 and gs.stderr.strip().splitlines()[-1].endswith(
        "gs://bucket/out: the gs:// backend is not installed: pip install 'sodadata[gcs]'")
