"""The tools that read an output in a bucket (issue 15, SPEC §6) on moto's S3 server (tests/object_store.py):
`push` to the Hub (tests/local_hub.py) streams each shard from the bucket into the upload, with nothing of the
output on the local disk, and the store's secret appears in nothing written or printed; `decode`, `inspect` and
`export --list-shards` give from the bucket what they give from the local copy; a URL they cannot read is one line
before any work."""

from __future__ import annotations

import io
import json
import logging
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml
from local_hub import LocalHub, serving
from object_store import SECRET
from synthetic import SODA_LIKE, make_output_dir
from test_object_store_read import upload

from sodadata.cli import main as cli
from sodadata.mix.streaming import list_shards
from sodadata.tools import hub
from sodadata.tools.row_lookup import find_rows
from sodadata.write.published import DATA_DIR, shard_path

REPO_ID = "org/from-bucket"
COMPONENTS = tuple(replace(c, shards=min(c.shards, 2)) for c in SODA_LIKE)


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


def test_decode_from_a_bucket_gives_the_local_copy_s_audio(s3_store, bucket_output, tmp_path, capsys) -> None:
    local, url = bucket_output
    (row,) = [f.row for f in find_rows(local, ["emilia_en_000_0001_type1"])]
    (remote,) = find_rows(url, [row["id"]])
    assert remote.row == row and str(remote.path) == f"{url}/emilia/en/shard-00000.parquet"
    assert remote.record["files"]  # the shard's record, read from the bucket
    wavs = []
    for where in (str(local), url):
        wav = tmp_path / f"{len(wavs)}.wav"
        assert cli(["decode", where, "--id", row["id"], "--codec", "tiny-random", "--out", str(wav)]) == 0
        wavs.append(sf.read(wav, dtype="float32")[0])
    assert wavs[0].size > 0 and np.array_equal(wavs[0], wavs[1])
    capsys.readouterr()
    assert cli(["decode", url, "--id", row["id"], "--out", f"{url}/x.wav"]) == 2
    assert cli(["decode", s3_store.url("nowhere"), "--id", row["id"]]) == 2
    assert cli(["decode", "gs://b/out", "--id", row["id"]]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"sodadata decode: --out {url}/x.wav: the audio file is written on this machine: give a local path",
                   "sodadata decode: s3://sodadata-test/nowhere does not exist",
                   "sodadata decode: gs://b/out: the gs:// backend is not installed: pip install 'sodadata[gcs]'"]
    assert list(Path.cwd().glob("*.wav")) == []


def test_inspect_a_bucket_writes_the_local_copy_s_page(s3_store, bucket_output, tmp_path, capsys,
                                                       monkeypatch) -> None:
    from sodadata.tools.stats import main as stats_main

    monkeypatch.chdir(tmp_path)

    local, url = bucket_output
    reports = []
    for where in (str(local), url):
        assert stats_main([where, "--utterance-shards", "0"]) == 0  # its _stats/ (in the bucket), found by inspect
        html = tmp_path / f"report{len(reports)}"
        assert cli(["inspect", where, "--html", str(html), "--per-component", "1", "--codec", "tiny-random",
                    "--audio-format", "wav"]) == 0
        reports.append((html, json.loads((html / "report.json").read_text())))
    (a_dir, a), (b_dir, b) = reports
    assert b["out_dir"] == url and a["components"] == b["components"]
    audio = sorted(p.relative_to(a_dir) for p in (a_dir / "audio").rglob("*.wav"))
    assert audio and audio == sorted(p.relative_to(b_dir) for p in (b_dir / "audio").rglob("*.wav"))
    assert all((a_dir / p).read_bytes() == (b_dir / p).read_bytes() for p in audio)
    assert b["stats"]["plots"] and all((b_dir / p).stat().st_size > 0 for p in b["stats"]["plots"])
    capsys.readouterr()
    assert cli(["inspect", url, "--html", f"{url}/page"]) == 2
    assert cli(["inspect", "gs://b/out", "--html", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--html s3://sodadata-test/out/page: the page and its audio are written on this machine" in err
    assert "gs://b/out: the gs:// backend is not installed" in err and not (tmp_path / "x").exists()
    assert not (tmp_path / "s3:").exists()  # never a local folder named after the URL


def test_export_lists_the_bucket_s_shards_and_writes_its_config_there(s3_store, bucket_output, tmp_path,
                                                                         capsys) -> None:
    _, url = bucket_output
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "soda.yaml"
    args = ["export", "levanter", str(recipe), "--data", url, "--tokenizer", "s3://sodadata-test/tok", "--list-shards"]
    assert cli([*args, "--out", f"{url}/levanter.yaml"]) == 0
    config = yaml.safe_load(s3_store.fs().cat_file(f"{s3_store.bucket}/out/levanter.yaml"))
    for c in COMPONENTS:
        urls = config["data"]["components"][c.name]["source"]["train_urls"]
        assert urls == list_shards(f"{url}/{c.name}").urls() and len(urls) == c.shards
        assert all(u.startswith(f"{url}/{c.name}/") for u in urls)
    capsys.readouterr()
    assert cli(["export", "levanter", str(recipe), "--data", s3_store.url("nowhere"), "--tokenizer", "x",
                "--list-shards"]) == 2
    assert capsys.readouterr().err.startswith("sodadata export: s3://sodadata-test/nowhere/")


@pytest.mark.parametrize("argv", [
    ["stats", "OUT", "--recipe", "s3://b/soda.yaml"],
    ["push", "OUT", "--repo", REPO_ID, "--recipe", "s3://b/soda.yaml"],
    ["push", "OUT", "--repo", REPO_ID, "--catalogs", "s3://b/catalogs"],
    ["export", "levanter", "soda", "--tokenizer-out", "s3://b/tok"],
    ["tokenizer", "build", "--out", "s3://b/tok"],
])
def test_an_option_only_a_local_path_serves_refuses_a_url(argv, tmp_path: Path, bare_local_disk, capsys) -> None:
    """Options that name a local folder or file (a tokenizer to write, a catalog folder, a recipe YAML) refuse a
    URL on one line before any work, instead of making a local folder named `s3:`."""
    cwd, _ = bare_local_disk
    argv = [str(tmp_path) if a == "OUT" else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        cli(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "takes a local path, not a s3:// URL (s3://b/" in err[0], err
    assert list(cwd.iterdir()) == []
