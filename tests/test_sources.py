"""Sources: local paths, hf:// (through an in-memory stand-in for HfFileSystem), HTTP on loopback."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
from fixtures import make_emilia_source

from sodadata.encode.codec import CodecConfig
from sodadata.read import sources
from sodadata.recipes.emilia import EmiliaRecipe
from sodadata.run.pipeline import PipelineConfig
from sodadata.run.runner import RunnerConfig, run_recipe

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_hf_urls_round_trip():
    url = sources.hf_url("amphion/Emilia-Dataset", "Emilia/EN", "main")
    assert url == "hf://datasets/amphion/Emilia-Dataset@main/Emilia/EN"
    assert sources.parse_hf_url(url) == ("datasets", "amphion/Emilia-Dataset", "main", "Emilia/EN")
    assert sources.with_revision("hf://datasets/espnet/yodas2/data/en000", SHA) == f"hf://datasets/espnet/yodas2@{SHA}/data/en000"
    assert sources._hf_fs_path(f"hf://datasets/a/b@{SHA}/x/y.tar") == f"datasets/a/b@{SHA}/x/y.tar"
    with pytest.raises(ValueError, match="hf://"):
        sources.parse_hf_url("hf://nope")


def test_a_commit_is_used_as_is_and_an_unreachable_hub_gives_a_clear_error(monkeypatch):
    assert sources.resolve_hf_revision("org/name", SHA) == SHA
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_FAKEtokenSHOULDneverLEAK123")
    with pytest.raises(RuntimeError) as err:
        sources.resolve_hf_revision("amphion/Emilia-Dataset", "main")
    msg = str(err.value)
    assert "HF_TOKEN" in msg and "--source" in msg and "hf_FAKE" not in msg
    assert err.value.__cause__ is None


def test_local_listing_and_missing_source(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("EN-B000001.tar", "EN-B000000.tar", "other.txt"):
        (tmp_path / "a" / name).write_bytes(b"x" * 3)
    files = sources.list_files(str(tmp_path / "a"), "EN-B*.tar")
    assert [f.url.rsplit("/", 1)[1] for f in files] == ["EN-B000000.tar", "EN-B000001.tar"]
    assert all(f.size == 3 for f in files)
    with pytest.raises(FileNotFoundError):
        sources.list_files(str(tmp_path / "missing"), "*")
    with pytest.raises(FileNotFoundError):
        sources.open_binary(str(tmp_path / "missing.tar"))


def test_http_sources_stream_from_a_loopback_server(tmp_path):
    (tmp_path / "f.bin").write_bytes(bytes(range(256)) * 100)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with sources.open_binary(f"{base}/f.bin") as f:
            assert f.read() == bytes(range(256)) * 100
        assert sources.exists(f"{base}/f.bin") and not sources.exists(f"{base}/nope.bin")
    finally:
        server.shutdown()


def test_emilia_from_the_hub_path_with_a_resolved_revision(tmp_path, monkeypatch):
    """The recipe's hf:// code path, with an in-memory filesystem where HfFileSystem would be."""
    fsspec = pytest.importorskip("fsspec")
    local = tmp_path / "src"
    make_emilia_source(local, seed=5, quirks=False, tars_per_subset=1, docs_per_tar=1, utts_per_doc=2)
    mem = fsspec.filesystem("memory")
    root = f"/datasets/amphion/Emilia-Dataset@{SHA}"
    for p in local.rglob("*.tar"):
        mem.pipe(f"{root}/{p.relative_to(local).as_posix()}", p.read_bytes())
    monkeypatch.setattr(sources, "_hf_fs", lambda: mem)
    hf_fs_path = sources._hf_fs_path
    monkeypatch.setattr(sources, "_hf_fs_path", lambda url: "/" + hf_fs_path(url))
    asked = []

    def fake_resolve(repo, revision, repo_type="dataset"):
        asked.append((repo, revision))
        return SHA

    monkeypatch.setattr(sources, "resolve_hf_revision", fake_resolve)
    recipe = EmiliaRecipe()  # default source: the catalog's Hub repo
    tasks = recipe.tasks()
    assert asked == [("amphion/Emilia-Dataset", "main")]
    assert [t.inputs[0].url for t in tasks] == [
        f"hf://datasets/amphion/Emilia-Dataset@{SHA}/Emilia/EN/EN-B000000.tar",
        f"hf://datasets/amphion/Emilia-Dataset@{SHA}/Emilia-YODAS/EN/EN-B000000.tar",
    ]
    # the Hub repo holds one tar of each subset here, not the catalog's 1,140 + 1,362: a full run says so
    result = run_recipe(recipe, PipelineConfig(out=str(tmp_path / "out"), codec=CodecConfig(codec="tiny-random")),
                        RunnerConfig(serial=True, progress=False), allow_missing=True)
    assert result.completeness.missing == ["subset emilia/en: 1 of the 1140 shards catalogs/emilia.yaml lists",
                                           "subset emilia-yodas/en: 1 of the 1362 shards catalogs/emilia.yaml lists"]
    assert result.ok and result.done == 2
    rec = result.records["emilia/en/EN-B000000"]
    assert rec["source"]["revision"] == SHA and rec["written"] == 2
