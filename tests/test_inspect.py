"""``sodadata inspect`` (issue 9): the static HTML report, checked from its files and in headless Chromium.

The output directory is synthetic (tests/synthetic.py: random well-formed codes, 4 components) and decoded with
the tiny-random Mimi, whose codes are NOT real Mimi codes: the players play noise. What is checked is that every
component is there, every player's file loads, and the page shows the rows' own transcripts and counts.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from synthetic import ComponentSpec, make_output_dir

from sodadata.cli import main as cli
from sodadata.tools.decode import can_write, string_to_audio
from sodadata.tools.listening_report import sample_ids
from sodadata.write.outputs import find_shards

REPO = Path(__file__).resolve().parent.parent
TINY = "tiny-random"
SPECS = (
    ComponentSpec("yodas2/en", shards=2, docs_per_shard=2, utterances=(3, 5), seconds=(0.4, 1.2)),
    ComponentSpec("emilia-yodas/en", shards=1, docs_per_shard=3, utterances=(1, 3), seconds=(0.4, 1.2)),
    ComponentSpec("emilia/en", shards=2, docs_per_shard=2, utterances=(1, 3), seconds=(0.4, 1.2)),
    ComponentSpec("nemotron-cc/hq-actual", shards=1, docs_per_shard=5, text_only=True),
)
PER_COMPONENT = 2
_TEXT = re.compile(r"<\|text_start\|>(.*?)<\|text_end\|>", re.S)
_AUDIO = re.compile(r"<\|audio_start\|>(.*?)<\|audio_end\|>", re.S)


def all_rows(out: Path) -> dict[str, dict]:
    rows = {}
    for shard in find_shards(out).shards:
        for r in pq.read_table(shard.parquet).to_pylist():
            rows[r["id"]] = r
    return rows


def transcripts(text: str) -> list[str]:
    """The row's transcripts by a plain regex: independent of sodadata.tools.decode.parse_row."""
    return _TEXT.findall(text)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    from synthetic import WORDS

    from sodadata.mix.tokenizer import build_tokenizer, save_tokenizer, train_small_base

    base = train_small_base([" ".join(WORDS).capitalize() + "."] * 20, vocab_size=300)
    out = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(build_tokenizer(base), out)
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory, tokenizer_dir):
    """An output directory with a `sodadata stats` output, and its report (MP3 when libsndfile writes it)."""
    from sodadata.tools.stats import main as stats_main

    root = tmp_path_factory.mktemp("inspect")
    out = root / "out"
    make_output_dir(out, SPECS, seed=1)
    assert stats_main([str(out)]) == 0
    html_dir = root / "report"
    rc = cli(["inspect", str(out), "--html", str(html_dir), "--per-component", str(PER_COMPONENT), "--seed", "3",
              "--codec", TINY, "--tokenizer", str(tokenizer_dir)])
    assert rc == 0
    return out, html_dir, json.loads((html_dir / "report.json").read_text())


def test_sampling_is_seeded_per_component_and_one_row_per_document(tmp_path):
    out = tmp_path / "out"
    make_output_dir(out, SPECS, seed=2)
    files = {}
    for shard in find_shards(out).shards:
        files.setdefault(shard.component, []).append(shard.parquet)
    rows = all_rows(out)
    for comp, fs in files.items():
        ids, n = sample_ids(fs, 2, seed=0, component=comp)
        assert n == sum(1 for r in rows.values() if r["corpus"] == comp and r["format"] in ("text_first", "text"))
        assert len(ids) == 2 == len(set(ids))
        assert all(rows[i]["format"] in ("text_first", "text") for i in ids)  # one row of each document
        assert ids == sample_ids(fs, 2, seed=0, component=comp)[0]  # same seed, same documents
        draws = {tuple(sample_ids(fs, 2, seed=s, component=comp)[0]) for s in range(8)}
        assert len(draws) > 1  # the seed matters
        everything, _ = sample_ids(fs, 100, seed=0, component=comp)
        assert len(everything) == n
    # a component's sample does not depend on which other components are there
    only = sample_ids(files["emilia/en"], 2, seed=0, component="emilia/en")[0]
    shutil.rmtree(out / "yodas2")
    assert sample_ids(files["emilia/en"], 2, seed=0, component="emilia/en")[0] == only


def test_report_holds_every_component_with_the_rows_transcripts_audio_and_counts(report, tokenizer_dir):
    from sodadata.mix.tokenizer import load_tokenizer

    out, html_dir, rep = report
    rows = all_rows(out)
    tok = load_tokenizer(tokenizer_dir)
    stats = {c["component"]: c for c in json.loads((out / "_stats" / "stats.json").read_text())["components"]}
    assert [c["name"] for c in rep["components"]] == sorted(s.name for s in SPECS)
    assert rep["random_codecs"] == [TINY] and rep["audio_format"] == ("mp3" if can_write("mp3") else "opus")
    for comp in rep["components"]:
        assert len(comp["documents"]) == PER_COMPONENT
        assert comp["stats"]["total_tokens"] == stats[comp["name"]]["total_tokens"]
        for doc in comp["documents"]:
            row = rows[doc["row_id"]]
            assert row["corpus"] == comp["name"]
            assert doc["audio_seconds"] == pytest.approx(row["audio_seconds"])
            assert doc["n_audio_tokens"] == row["n_audio_tokens"]
            texts = transcripts(row["text"])
            if row["format"] == "text":
                assert doc["body"] == row["text"].removeprefix("<|begin_of_text|>").removesuffix("<|end_of_text|>")
                texts = [doc["body"]]
                assert doc["marker_tokens"] == 2
            else:
                spans = _AUDIO.findall(row["text"])
                assert [u["text"] for u in doc["utterances"]] == texts
                assert [u["frames"] for u in doc["utterances"]] == [len(s) // 8 for s in spans]
                assert sum(len(s) for s in spans) == doc["n_audio_tokens"]
                assert doc["marker_tokens"] == 2 + 4 * len(spans)
                for u in doc["utterances"]:
                    info = sf.info(html_dir / u["audio"])
                    assert info.samplerate == 24_000
                    assert info.duration == pytest.approx(u["frames"] * 0.08, abs=0.1)  # MP3/Opus pad a little
                assert sf.info(html_dir / doc["audio"]).duration == pytest.approx(
                    sum(u["frames"] for u in doc["utterances"]) * 0.08, abs=0.1)
            # exact text tokens: the tokenizer run on each transcript alone (markers split the row)
            assert doc["text_tokens_exact"]
            assert doc["text_tokens"] == sum(len(tok.encode(t, add_special_tokens=False).ids) for t in texts)
            assert doc["total_tokens"] == doc["text_tokens"] + doc["n_audio_tokens"] + doc["marker_tokens"]
    assert sorted(p.name for p in (html_dir / "stats").iterdir()) == sorted(
        p.name for p in (out / "_stats").glob("*.png"))
    page = (html_dir / "index.html").read_text()
    assert "NOT real Mimi codes" in page and page.count("<audio ") == sum(
        1 + len(d["utterances"]) for c in rep["components"] for d in c["documents"] if d["format"] != "text")


def test_wav_report_plays_exactly_the_decoded_utterances(tmp_path):
    """WAV is lossless: each player's samples are string_to_audio of that utterance's span (scaled if > 0 dBFS).
    Also: --max-seconds stops decoding a long document, --with-stats runs the stats command first."""
    out = tmp_path / "out"
    make_output_dir(out, SPECS[:1], seed=4)
    html_dir = tmp_path / "report"
    assert cli(["inspect", str(out), "--html", str(html_dir), "--per-component", "1", "--codec", TINY,
                "--audio-format", "wav", "--max-seconds", "1.0", "--with-stats"]) == 0
    rep = json.loads((html_dir / "report.json").read_text())
    (doc,) = rep["components"][0]["documents"]
    row = all_rows(out)[doc["row_id"]]
    spans = _AUDIO.findall(row["text"])
    decoded = [u for u in doc["utterances"] if u["audio"]]
    # the leading utterances that fit in 1 s (at least one) have players; every transcript is still shown
    fit = max(1, int(np.sum(np.cumsum([len(s) / 100 for s in spans]) <= 1.0 + 1e-9)))
    assert [u["index"] for u in decoded] == list(range(fit))
    assert fit < len(spans) == len(doc["utterances"])
    for u in decoded:
        got, _ = sf.read(html_dir / u["audio"], dtype="float32")
        want = string_to_audio(spans[u["index"]], codec=TINY)
        assert got.size == want.size == u["frames"] * 1920
        want = want * min(1.0, 0.99 / np.abs(want).max())
        np.testing.assert_allclose(got, want, atol=2 / 32767)
    assert "not decoded (past --max-seconds)" in (html_dir / "index.html").read_text()
    assert (out / "_stats" / "stats.json").exists() and rep["stats"]["plots"]


def test_cli_errors_say_what_to_do(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(["inspect", str(empty), "--html", str(tmp_path / "r")]) == 1
    assert "no finished shards" in capsys.readouterr().err
    out = tmp_path / "out"
    make_output_dir(out, SPECS[3:], seed=0)
    assert cli(["inspect", str(out), "--html", str(tmp_path / "r"), "--component", "emilia/en"]) == 1
    assert "found: nemotron-cc/hq-actual" in capsys.readouterr().err
    # text only: nothing to decode, no codec needed, no stats yet: the page says how to get them
    assert cli(["inspect", str(out), "--html", str(tmp_path / "r")]) == 0
    page = (tmp_path / "r" / "index.html").read_text()
    assert 'data-component="nemotron-cc/hq-actual"' in page and "No <code>sodadata stats</code>" in page


def test_a_malformed_row_is_shown_as_such_and_the_rest_still_reported(tmp_path):
    from sodadata.locations import write_json_atomic
    from sodadata.write.shards import ShardPaths, ShardWriter

    out = tmp_path / "out"
    make_output_dir(out, SPECS[2:3], seed=5)
    rec_path = next((out / "emilia" / "en").glob("shard-*.json"))
    table = pq.read_table(rec_path.with_suffix(".parquet")).to_pylist()
    bad = next(r for r in table if r["format"] == "text_first")
    bad["text"] = bad["text"].replace("<|audio_end|>", "", 1)  # a span never closed
    paths = ShardPaths(out, "emilia/en", "shard-bad")
    with ShardWriter(paths.parquet) as w:
        w.write_all([bad | {"id": "broken_type1"}])
        w.commit()
    write_json_atomic(paths.record, json.loads(rec_path.read_text()) | {"shard": "shard-bad", "rows": 1})
    html_dir = tmp_path / "report"
    assert cli(["inspect", str(out), "--html", str(html_dir), "--per-component", "10", "--codec", TINY]) == 0
    docs = {d["row_id"]: d for d in json.loads((html_dir / "report.json").read_text())["components"][0]["documents"]}
    assert "never completed: no <|audio_end|> after the <|audio_start|>" in docs["broken_type1"]["error"]
    assert not docs["broken_type1"]["utterances"]
    assert all(d["error"] is None and d["audio"] for i, d in docs.items() if i != "broken_type1")
    assert len(docs) == 5
    assert "malformed row: offset 17: utterance opened by &lt;|text_start|&gt;" in (html_dir / "index.html").read_text()


# ---------------------------------------------------------------------------------------------------- the browser

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser")
                             or "") if p and Path(p).exists()), None)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ALL_LOADED = """() => Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1 || a.error)"""
PAGE_STATE = """() => ({
  sections: Array.from(document.querySelectorAll('section.component')).map(s => s.dataset.component),
  audio: Array.from(document.querySelectorAll('audio')).map(a => ({
    src: a.getAttribute('src'), ready: a.readyState, duration: a.duration, error: a.error ? a.error.code : null,
    broken: a.classList.contains('broken')})),
  documents: Array.from(document.querySelectorAll('article.document')).map(d => ({
    id: d.dataset.rowId,
    transcripts: Array.from(d.querySelectorAll('.transcript')).map(t => t.textContent),
    body: d.querySelector('.text-body') ? d.querySelector('.text-body').textContent : null})),
  images: Array.from(document.querySelectorAll('img')).map(i => i.complete && i.naturalWidth > 0),
  warning: !!document.querySelector('.random-codec-warning'),
})"""


def _open(browser, page_path: Path) -> dict:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(page_path.resolve().as_uri())  # from disk: no server
    page.wait_for_function(ALL_LOADED, timeout=30_000)
    return page


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does)")
def test_page_in_headless_chromium_loads_every_player_and_shows_the_rows_transcripts(report):
    from playwright.sync_api import sync_playwright

    out, html_dir, rep = report
    rows = all_rows(out)
    expected_media = {u["audio"]: u["frames"] * 0.08 for c in rep["components"] for d in c["documents"]
                      for u in d["utterances"] if u["audio"]}
    expected_media |= {d["audio"]: d["decoded_seconds"] for c in rep["components"] for d in c["documents"]
                       if d["audio"]}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = _open(browser, html_dir / "index.html")
            state = page.evaluate(PAGE_STATE)
            shot = REPO / "artifacts" / "inspect" / "report.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")

            assert sorted(state["sections"]) == sorted({r["corpus"] for r in rows.values()})
            assert len(state["audio"]) == len(expected_media) > 0
            for a in state["audio"]:
                assert a["error"] is None and not a["broken"] and a["ready"] >= 1, a
                assert a["duration"] == pytest.approx(expected_media[a["src"]], abs=0.1), a
            assert len(state["documents"]) == PER_COMPONENT * len(SPECS)
            for d in state["documents"]:
                row = rows[d["id"]]
                if row["format"] == "text":
                    assert d["body"] == row["text"][len("<|begin_of_text|>"):-len("<|end_of_text|>")]
                else:
                    assert d["transcripts"] == transcripts(row["text"]) and d["transcripts"]
            assert state["images"] and all(state["images"])  # the stats plots
            assert state["warning"]
            page.close()

            # the check catches a broken player: the same page with one audio file missing
            broken_dir = html_dir.parent / "report-broken"
            shutil.copytree(html_dir, broken_dir)
            victim = next(iter(expected_media))
            (broken_dir / victim).unlink()
            state = _open(browser, broken_dir / "index.html").evaluate(PAGE_STATE)
            bad = [a["src"] for a in state["audio"] if a["error"] is not None]
            assert bad == [victim]
            assert [a["src"] for a in state["audio"] if a["broken"]] == [victim]  # the page marks it, too
        finally:
            browser.close()
