"""The tools that read an output in a bucket (issue 15, SPEC §6) on moto's S3 server (tests/object_store.py):
`push` to the Hub (tests/local_hub.py) streams each shard from the bucket into the upload, with nothing of the
output on the local disk, and the store's secret appears in nothing written or printed."""

from __future__ import annotations

import io
import logging
import tempfile
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from local_hub import LocalHub, serving
from object_store import SECRET
from synthetic import SODA_LIKE, make_output_dir
from test_object_store_read import upload

from sodadata import hub
from sodadata.published import DATA_DIR, shard_path

REPO_ID = "org/from-bucket"
COMPONENTS = tuple(replace(c, shards=min(c.shards, 2)) for c in SODA_LIKE[1:])


@pytest.fixture
def bucket_output(s3_store, tmp_path: Path):
    local = tmp_path / "made"
    make_output_dir(local, COMPONENTS, seed=11, record_files=True)
    return local, upload(s3_store, local, "out")


@pytest.fixture
def bare_local_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An empty working directory and an empty temporary folder: what the command leaves there is looked at."""
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return cwd, tmp


def test_push_from_a_bucket_streams_each_shard_and_resumes(s3_store, bucket_output, bare_local_disk, monkeypatch,
                                                           capfd, caplog) -> None:
    local, url = bucket_output
    local_hub = LocalHub()
    monkeypatch.setenv("HF_TOKEN", "hf_local_stand_in")  # HfApi wants a token for writes; the stand-in checks none
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    argv = [url, "--repo", REPO_ID, "--utterance-shards", "0", "--files-per-commit", "2", "--max-attempts", "1"]
    caplog.set_level(logging.INFO)
    with serving(local_hub):
        assert hub.main(argv) == 0
        commits = len(local_hub.repos[REPO_ID].log)
        assert hub.main(argv) == 0  # a rerun finds everything on the Hub: no commit
    assert len(local_hub.repos[REPO_ID].log) == commits
    assert "0 to upload in 0 commits" in caplog.text

    tree = local_hub.tree(REPO_ID)
    fs = s3_store.fs()
    for c in COMPONENTS:
        stems = sorted(p.stem for p in (local / c.name).glob("*.parquet"))
        assert len(stems) == c.shards
        for stem in stems:
            published = tree[shard_path(c.name, stem, bucketed=False)]
            in_bucket = fs.cat_file(f"{s3_store.bucket}/out/{c.name}/{stem}.parquet")
            assert published == in_bucket  # the shard itself, read from the bucket
            assert pq.read_table(io.BytesIO(published)).equals(pq.read_table(io.BytesIO(in_bucket)))
    assert {p for p in tree if p.startswith(f"{DATA_DIR}/")} == {
        shard_path(c.name, p.stem, False) for c in COMPONENTS for p in (local / c.name).glob("*.parquet")}
    assert "records/emilia/en/records.jsonl" in tree and "stats/stats.json" in tree
    card = tree["README.md"].decode()
    assert "emilia/en" in card
    # the stage is in the bucket beside the output, and holds no copy of the shards
    staged = fs.find(f"{s3_store.bucket}/out/_hub/")
    assert f"{s3_store.bucket}/out/_hub/org--from-bucket/README.md" in staged
    assert not [k for k in staged if k.endswith(".parquet") and "/data/" in k]
    # nothing of the output on the local disk
    cwd, tmp = bare_local_disk
    assert list(cwd.rglob("*")) == [] and list(tmp.rglob("*")) == []
    # the secret nowhere: card, commit messages, the bucket's new files, what was printed and logged
    captured = capfd.readouterr()
    messages = "\n".join(entry["message"] for entry in local_hub.repos[REPO_ID].log)
    written = b"".join(fs.cat_file(k) for k in staged)
    for text in (card, messages, captured.out + captured.err, caplog.text):
        assert SECRET not in text
    assert SECRET.encode() not in written


def test_push_library_method_refuses_a_bucket_in_one_line(s3_store, bucket_output, caplog) -> None:
    _, url = bucket_output
    assert hub.main([url, "--repo", REPO_ID, "--method", "library", "--dry-run"]) == 2
    assert "--method library uploads a local folder" in caplog.text
    assert hub.main(["gs://b/out", "--repo", REPO_ID]) == 2
    assert "the gs:// backend is not installed" in caplog.text
