"""Completeness (issue 13 point 4): what a recipe found against what was asked and what its catalog lists.

Sources are generated in the real layouts (tests/fixtures*.py). A partial mirror is compared with the real
catalogs (1,140 Emilia tars, 1,416 MLS files ...); to show that a mirror matching the catalog passes and one shard
fewer does not, a copy of the real catalog with its counts set to the fixture's is put where the catalogs are
read from (``sodadata.read.catalog.CATALOG_DIR``): the code path is the real one, only the numbers are the fixture's.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from pathlib import Path

import pytest
import yaml
from fixtures import make_emilia_source
from fixtures_mls import make_mls_source
from fixtures_nemotron import KEPT, make_nemotron_source, serve
from fixtures_yodas2 import make_uniform_shard

from sodadata.encode.codec import CodecConfig
from sodadata.read import catalog
from sodadata.read.completeness import SAMPLE_MARKER, IncompleteSource, sample_of, write_sample_marker
from sodadata.recipes import emilia, mls, nemotron_cc, yodas2
from sodadata.recipes.emilia import EmiliaRecipe
from sodadata.run.pipeline import PipelineConfig
from sodadata.run.runner import RunnerConfig, run_recipe

QUICK = ["--serial", "--no-progress", "--retries", "0"]


def _error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture
def test_catalogs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Copies of the real catalogs in a folder the tests may edit; ``edit(corpus, fn)`` changes one."""
    folder = tmp_path / "catalogs"
    folder.mkdir()
    for path in catalog.CATALOG_DIR.glob("*.yaml"):
        (folder / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(catalog, "CATALOG_DIR", folder)
    catalog.load_catalog.cache_clear()

    def edit(corpus: str, fn) -> None:
        path = folder / f"{corpus}.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        fn(data)
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        catalog.load_catalog.cache_clear()

    yield edit
    catalog.load_catalog.cache_clear()


def test_yodas2_a_subset_that_is_not_there_stops_before_any_work(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    make_uniform_shard(src, 1, 2.0, 1.0, subset="en000")
    rc = yodas2.main(["--subsets", "en000,en001", "--source", str(src), "--out", str(out), "--codec", "tiny-random",
                      *QUICK])
    assert rc == 2
    line = _error_line(capsys)
    assert "subset en001: not in the source (no shards in data/en001/)" in line
    assert "en000" not in line.replace("en000,", "")  # only what is missing is named
    assert "--allow-missing" in line
    assert not out.exists()  # nothing was written, not even a run summary


def test_yodas2_allow_missing_runs_the_rest_and_records_what_was_missing(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    make_uniform_shard(src, 1, 2.0, 1.0, subset="en000")
    rc = yodas2.main(["--subsets", "en000,en001", "--source", str(src), "--out", str(out), "--codec", "tiny-random",
                      "--allow-missing", *QUICK])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "INCOMPLETE (--allow-missing): 1 missing from the source: subset en001: not in the source" in stdout
    assert (out / "yodas2/en/en000-00000000.json").exists()
    (summary,) = (out / "_runs").glob("*.json")
    report = json.loads(summary.read_text())["completeness"]
    assert report["missing"] == ["subset en001: not in the source (no shards in data/en001/)"]
    assert report["compared_with"].startswith("the asked subsets only (the source is a sample: ")


def test_yodas2_full_run_of_a_partial_mirror_is_compared_with_the_catalog(tmp_path, capsys, test_catalogs):
    src = tmp_path / "src"
    make_uniform_shard(src, 1, 2.0, 1.0, subset="en000", shard="00000000")
    make_uniform_shard(src, 1, 2.0, 1.0, subset="en000", shard="00000001")
    (src / SAMPLE_MARKER).unlink()  # a mirror, not a declared sample
    # the real catalog: 38 subsets, en000 of 500 shards
    assert yodas2.main(["--source", str(src), "--out", str(tmp_path / "a"), "--codec", "tiny-random", *QUICK]) == 2
    line = _error_line(capsys)
    assert "compared with catalogs/yodas2.yaml" in line
    assert "subset en000: 2 of the 500 shards catalogs/yodas2.yaml lists" in line
    assert "subset en001: not in the source" in line and "(and 33 more, listed in the run summary)" in line
    # a catalog listing exactly what the mirror holds: complete
    test_catalogs("yodas2", lambda c: c["languages"]["en"].update(subsets={"en000": 2}))
    recipe = yodas2.Yodas2Recipe(source=str(src))
    assert recipe.completeness(recipe.tasks(), full=True).missing == []
    # one shard fewer than the catalog lists is missing; --limit-shards makes the run partial: not compared
    test_catalogs("yodas2", lambda c: c["languages"]["en"].update(subsets={"en000": 3}))
    assert recipe.completeness(recipe.tasks(), full=True).missing == [
        "subset en000: 2 of the 3 shards catalogs/yodas2.yaml lists"]
    assert recipe.completeness(recipe.tasks(), full=False).missing == []


def test_emilia_partial_mirror_stops_a_full_run_and_is_recorded_with_allow_missing(tmp_path, capsys):
    src = tmp_path / "src"
    make_emilia_source(src, tars_per_subset=1, docs_per_tar=1, utts_per_doc=1, quirks=False, sample=False)
    out = tmp_path / "out"
    rc = emilia.main(["--lang", "en", "--source", str(src), "--out", str(out), "--codec", "tiny-random", *QUICK])
    assert rc == 2
    line = _error_line(capsys)
    assert ("subset emilia/en: 1 of the 1140 shards catalogs/emilia.yaml lists; "
            "subset emilia-yodas/en: 1 of the 1362 shards catalogs/emilia.yaml lists") in line
    assert not out.exists()
    # the same mirror with --allow-missing: run, and the summary says what was missing
    rc = emilia.main(["--lang", "en", "--source", str(src), "--out", str(out), "--codec", "tiny-random",
                      "--allow-missing", *QUICK])
    assert rc == 0
    assert "INCOMPLETE (--allow-missing): 2 missing from the source" in capsys.readouterr().out
    (summary,) = (out / "_runs").glob("*.json")
    assert json.loads(summary.read_text())["completeness"] == {
        "missing": ["subset emilia/en: 1 of the 1140 shards catalogs/emilia.yaml lists",
                    "subset emilia-yodas/en: 1 of the 1362 shards catalogs/emilia.yaml lists"],
        "compared_with": "catalogs/emilia.yaml",
    }


def test_emilia_counts_against_a_catalog_that_matches_or_not(tmp_path, test_catalogs):
    src = tmp_path / "src"
    make_emilia_source(src, tars_per_subset=2, docs_per_tar=1, utts_per_doc=1, quirks=False, sample=False)
    recipe = EmiliaRecipe(lang="en", source=str(src))

    def counts(emilia_en: int, yodas_en: int):
        def fn(c):
            c["subsets"]["emilia"]["shards"] = {"EN": emilia_en}
            c["subsets"]["emilia-yodas"]["shards"] = {"EN": yodas_en}
        return fn

    test_catalogs("emilia", counts(2, 2))
    assert recipe.completeness(recipe.tasks(), full=True).missing == []
    test_catalogs("emilia", counts(2, 3))
    assert recipe.completeness(recipe.tasks(), full=True).missing == [
        "subset emilia-yodas/en: 2 of the 3 shards catalogs/emilia.yaml lists"]
    # narrowing to the complete subset is a complete run
    assert EmiliaRecipe(lang="en", subsets=("emilia",), source=str(src)).completeness(recipe.tasks(), True).missing == []
    # the runner stops before reading anything
    out = tmp_path / "out"
    with pytest.raises(IncompleteSource, match=r"^missing from the source \(compared with catalogs/emilia\.yaml\)"):
        run_recipe(recipe, PipelineConfig(out=str(out), codec=CodecConfig(codec="tiny-random")),
                   RunnerConfig(serial=True, progress=False))
    assert not out.exists()


def test_emilia_a_language_the_source_lacks_is_named_even_in_a_sample(tmp_path, capsys):
    src = tmp_path / "src"
    make_emilia_source(src, tars_per_subset=1, docs_per_tar=1, utts_per_doc=1, quirks=False)  # a sample, EN only
    rc = emilia.main(["--lang", "de", "--source", str(src), "--out", str(tmp_path / "out"), "--limit-shards", "1",
                      "--codec", "tiny-random", *QUICK])
    assert rc == 2
    line = _error_line(capsys)
    assert ("subset emilia/de: not in the source (no DE-B*.tar in Emilia/DE/); "
            "subset emilia-yodas/de: not in the source (no DE-B*.tar in Emilia-YODAS/DE/)") in line


def test_the_bundled_sample_declares_itself_and_a_wrong_corpus_marker_is_refused(tmp_path, capsys):
    sample = Path(__file__).resolve().parent.parent / "sample" / "emilia"
    recipe = EmiliaRecipe(lang="en", source=str(sample))
    report = recipe.completeness(recipe.tasks(), full=True)
    assert report.missing == []
    assert report.compared_with == f"the asked subsets only (the source is a sample: {sample / SAMPLE_MARKER})"
    src = tmp_path / "src"
    make_emilia_source(src, tars_per_subset=1, docs_per_tar=1, utts_per_doc=1, quirks=False)
    write_sample_marker(src, "yodas2")
    assert emilia.main(["--source", str(src), "--out", str(tmp_path / "out"), "--codec", "tiny-random", *QUICK]) == 2
    assert f"{src / SAMPLE_MARKER} declares a sample of 'yodas2', not of 'emilia': check --source" in _error_line(capsys)


def test_mls_a_file_missing_from_the_split_is_named(tmp_path, capsys):
    src = tmp_path / "src"
    make_mls_source(src)  # a sample: train-00000-of-00002, train-00001-of-00002
    (src / "data/train-00001-of-00002.parquet").unlink()
    rc = mls.main(["--split", "train", "--source", str(src), "--out", str(tmp_path / "out"), "--codec", "tiny-random",
                   *QUICK])
    assert rc == 2
    assert "file data/train-00001-of-00002.parquet: not in the source" in _error_line(capsys)


def test_mls_full_run_of_a_mirror_is_compared_with_the_catalog(tmp_path, test_catalogs):
    src = tmp_path / "src"
    make_mls_source(src, sample=False)
    recipe = mls.MLSRecipe(split="train", source=str(src))
    tasks = recipe.tasks()
    assert recipe.completeness(tasks, full=True).missing == ["split train: 2 of the 1416 files catalogs/mls.yaml lists"]
    assert recipe.completeness(tasks, full=False).missing == []
    test_catalogs("mls", lambda c: c["splits"]["train"].update(files=2))
    assert recipe.completeness(tasks, full=True).missing == []


def test_nemotron_listed_file_missing_from_the_mirror_and_catalog_count(tmp_path, capsys, test_catalogs):
    src = tmp_path / "src"
    exp = make_nemotron_source(src, sample=False)
    recipe = nemotron_cc.NemotronCCRecipe(source=str(src))
    tasks = recipe.tasks()
    n = len(exp.stems)
    assert recipe.completeness(tasks, full=True).missing == [
        f"partition {KEPT}: {n} of the 2755 files catalogs/nemotron_cc.yaml lists"]
    test_catalogs("nemotron_cc", lambda c: c["size"].update(shards=n))
    assert recipe.completeness(tasks, full=True).missing == []
    # a listed file the mirror lacks is named whatever the run (it would fail only when its turn came)
    gone = exp.paths[exp.stems[1]]
    gone.unlink()
    rc = nemotron_cc.main(["--source", str(src), "--out", str(tmp_path / "out"), "--limit-shards", "1", *QUICK])
    assert rc == 2
    assert f"file {gone}: listed, not in the mirror" in _error_line(capsys)


def test_the_sample_marker_over_http_and_a_malformed_one(tmp_path) -> None:
    src = tmp_path / "src"
    write_sample_marker(src, "nemotron-cc")
    with serve(src) as url:
        assert sample_of(url, "nemotron-cc") == f"{url.rstrip('/')}/{SAMPLE_MARKER}"
    (tmp_path / "mirror").mkdir()
    with serve(tmp_path / "mirror") as url:  # 404: no marker, a mirror
        assert sample_of(url, "nemotron-cc") is None

    class Forbidden(http.server.BaseHTTPRequestHandler):  # a bucket behind a CDN: 403 for a key it lacks
        def do_HEAD(self) -> None:
            self.send_response(403)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert sample_of(f"http://127.0.0.1:{server.server_address[1]}/base", "nemotron-cc") is None
    finally:
        server.shutdown()
    (src / SAMPLE_MARKER).write_text("sample_of: [unclosed\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(src / SAMPLE_MARKER))} is not YAML: "):
        sample_of(str(src), "nemotron-cc")
