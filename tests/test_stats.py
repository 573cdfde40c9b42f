"""`sodadata stats`: numbers checked against counts parsed independently from the rows' text and reject files."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from synthetic import SODA_LIKE, make_output_dir

from sodadata.tools import stats as st
from sodadata.tools import stats_numbers as numbers
from sodadata.tools.stats_markdown import format_table
from sodadata.tools.stats_plots import PLOTS
from sodadata.write.document import AUDIO_END, AUDIO_START, BOS, EOS, MARKERS, TEXT_END, TEXT_START

AUDIO_SPAN = re.compile(re.escape(AUDIO_START) + "(.*?)" + re.escape(AUDIO_END), re.S)
TRANSCRIPT = re.compile(re.escape(TEXT_START) + "(.*?)" + re.escape(TEXT_END), re.S)
WORD_PIECES = re.compile(r"\w+|[^\w\s]+")  # what the test tokenizer's Whitespace pre-tokenizer splits into


def _independent_counts(out: Path) -> dict[str, dict]:
    """Counts parsed from the `text` of every row and from the reject files: no metadata column, no record."""
    counts: dict[str, dict] = {}
    for spec in SODA_LIKE:
        c = counts.setdefault(spec.name, {"doc_ids": set(), "rows": 0, "utterances": 0, "audio_chars": 0,
                                          "text_chars": 0, "word_pieces": 0, "utt_chars": [], "rejects": {},
                                          "shard_utts": []})
        for path in sorted((out / spec.name).glob("*.parquet")):
            table = pq.read_table(path, columns=["id", "text"])
            shard_utts = 0
            for rid, text in zip(table.column("id").to_pylist(), table.column("text").to_pylist()):
                c["rows"] += 1
                c["doc_ids"].add(re.sub(r"_type[12]$", "", rid))
                spans = AUDIO_SPAN.findall(text)
                c["audio_chars"] += sum(len(s) for s in spans)
                if spans:
                    transcripts = TRANSCRIPT.findall(text)
                    c["text_chars"] += sum(len(t) for t in transcripts)
                    c["word_pieces"] += sum(len(WORD_PIECES.findall(t)) for t in transcripts)
                    if rid.endswith("_type1"):
                        c["utterances"] += len(spans)
                        c["utt_chars"] += [len(s) for s in spans]
                        shard_utts += len(spans)
                else:
                    body = text[len(BOS) : -len(EOS)]
                    c["text_chars"] += len(body)
                    c["word_pieces"] += len(WORD_PIECES.findall(body))
            c["shard_utts"].append(shard_utts)
        for path in sorted((out / spec.name / "rejects").glob("*.parquet")):
            for reason in pq.read_table(path, columns=["reason"]).column("reason").to_pylist():
                c["rejects"][reason] = c["rejects"].get(reason, 0) + 1
    return counts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    expected = make_output_dir(out, rejects_per_shard=3, seed=7)
    return out, expected, _independent_counts(out)


def _test_tokenizer(path: Path) -> Path:
    """A word-level tokenizer with the SODA markers and the 16,384 audio characters as single added tokens."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = [*MARKERS, *(chr(0xE000 + i) for i in range(16384))]
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    return path


def test_stats_match_independent_counts(corpus, tmp_path, capsys):
    out, expected, counts = corpus
    report = tmp_path / "report"
    assert st.main([str(out), "--output", str(report)]) == 0
    data = json.loads((report / "stats.json").read_text())
    comps = {c["component"]: c for c in data["components"]}
    assert set(comps) == {s.name for s in SODA_LIKE}
    for spec in SODA_LIKE:
        c, ind, exp = comps[spec.name], counts[spec.name], expected[spec.name]
        assert c["shards"] == spec.shards
        assert c["documents"] == len(ind["doc_ids"]) == spec.shards * spec.docs_per_shard
        assert c["rows"] == ind["rows"]
        assert c["utterances"] == ind["utterances"]
        assert c["audio_tokens"] == ind["audio_chars"]
        assert c["text_chars"] == ind["text_chars"]
        assert c["rejects"] == ind["rejects"]
        assert sum(c["rejects"].values()) == 3 * spec.shards
        # hours: the exact utterance durations the generator drew (not the frame-rounded audio length)
        assert math.isclose(c["hours"] * 3600, sum(exp["utterance_seconds"]), abs_tol=1e-6)
        rows, utts = ind["rows"], ind["utterances"] * 2  # markers: BOS+EOS per row, 4 per utterance per row
        assert c["marker_tokens"] == 2 * rows + 4 * utts
        assert c["text_tokens_exact"] is False
        assert c["text_tokens"] == round(ind["text_chars"] / numbers.CHARS_PER_TEXT_TOKEN)
        assert c["total_tokens"] == c["audio_tokens"] + c["marker_tokens"] + c["text_tokens"]
        assert c["warnings"] == []
        if spec.text_only:
            assert c["utterances"] == 0 and c["audio_tokens"] == 0 and c["utterance_seconds_summary"] is None
        else:
            assert c["document_seconds_summary"]["count"] == len(ind["doc_ids"])
            assert c["utterance_seconds_summary"]["count"] == ind["utterances"]
    total = sum(c["total_tokens"] for c in comps.values())
    assert data["total_tokens"] == total
    assert math.isclose(sum(c["token_share"] for c in comps.values()), 1.0)

    printed = capsys.readouterr().out
    for spec in SODA_LIKE:
        assert spec.name in printed
    assert "~" in printed and "estimates" in printed  # text tokens are labelled as estimated
    md = (report / "stats.md").read_text()
    assert md.count("| `") >= len(SODA_LIKE) and "undecodable_audio" in md and "missing_json" in md
    for name in PLOTS.values():
        png = report / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        import matplotlib.image

        pixels = matplotlib.image.imread(png)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and float(pixels.std()) > 0.01  # not blank
        assert f"]({name})" in md


def test_duration_distributions(corpus):
    out, expected, counts = corpus
    result = st.compute_stats(st.StatsConfig(out=out))
    for c in result.components:
        exp = expected[c.component]
        if not c.is_speech:
            assert c.utterance_seconds is None
            continue
        # documents: exact seconds from the audio_seconds column
        assert np.allclose(np.sort(c.document_seconds), np.sort(exp["document_seconds"]))
        # utterances: audio span length / 100, i.e. the drawn duration rounded up to whole 80 ms frames
        frames = np.ceil(np.asarray(exp["utterance_seconds"]) * 24000 / 1920)
        assert np.allclose(np.sort(c.utterance_seconds), np.sort(frames * 0.08))
        assert sorted(np.round(c.utterance_seconds * 100).astype(int)) == sorted(counts[c.component]["utt_chars"])


def test_utterance_shards_bounds_the_text_read(corpus):
    out, _, counts = corpus
    none = st.compute_stats(st.StatsConfig(out=out, utterance_shards=0))
    one = st.compute_stats(st.StatsConfig(out=out, utterance_shards=1))
    for c0, c1 in zip(none.components, one.components):
        assert c0.utterances == c1.utterances  # counts never depend on reading text
        if c0.is_speech:
            assert c0.utterance_seconds is None and c0.utterance_shards_read == 0
            assert c1.utterance_shards_read == 1
            assert c1.utterance_seconds.size == counts[c1.component]["shard_utts"][0]


def test_exact_text_tokens_with_tokenizer(corpus, tmp_path, capsys):
    out, _, counts = corpus
    tok_dir = _test_tokenizer(tmp_path / "tok")
    report = tmp_path / "report"
    assert st.main([str(out), "--output", str(report), "--tokenizer", str(tok_dir), "--utterance-shards", "0"]) == 0
    data = json.loads((report / "stats.json").read_text())
    for c in data["components"]:
        ind = counts[c["component"]]
        assert c["text_tokens_exact"] is True
        assert c["text_tokens"] == ind["word_pieces"]
        assert c["total_tokens"] == ind["word_pieces"] + ind["audio_chars"] + c["marker_tokens"]
        assert c["warnings"] == []
    assert data["chars_per_text_token_estimate"] is None
    table = capsys.readouterr().out
    assert "~" not in table.split("\n\n")[0] and "Text tokens are exact" in table


def test_exact_tokens_with_a_built_sodadata_tokenizer(corpus, tmp_path):
    """The tokenizer `sodadata tokenizer build` writes (small BPE base): counts equal plain `encode` of every row."""
    from synthetic import WORDS

    from sodadata.mix.tokenizer import build_tokenizer, save_tokenizer, train_small_base

    out, _, counts = corpus
    tok = build_tokenizer(train_small_base([" ".join(WORDS)] * 50, vocab_size=300))
    save_tokenizer(tok, tmp_path / "tok")
    result = st.compute_stats(st.StatsConfig(out=out, tokenizer=tmp_path / "tok", utterance_shards=0))
    for c in result.components:
        total = markers = 0
        for path in sorted((out / c.component).glob("*.parquet")):
            for text in pq.read_table(path, columns=["text"]).column("text").to_pylist():
                total += len(tok.encode(text, add_special_tokens=False).ids)
                markers += sum(text.count(m) for m in MARKERS)
        assert c.text_tokens_exact and c.marker_tokens == markers
        assert c.total_tokens == total
        assert c.text_tokens == total - counts[c.component]["audio_chars"] - markers


def test_tokenizer_without_audio_tokens_is_refused(corpus, tmp_path):
    from tokenizers import Tokenizer, models

    out, _, _ = corpus
    (tmp_path / "tok").mkdir()
    Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save(str(tmp_path / "tok" / "tokenizer.json"))
    assert st.main([str(out), "--output", str(tmp_path / "r"), "--tokenizer", str(tmp_path / "tok")]) == 2
    assert st.main([str(out), "--output", str(tmp_path / "r"), "--tokenizer", str(tmp_path / "missing")]) == 2


def test_recipe_weights(corpus, tmp_path):
    """Weights come from a mixture recipe read by MixtureConfig (the one, strict parser), normalized; by default
    from the packaged soda.yaml (SPEC §4)."""
    out, _, _ = corpus
    recipe = tmp_path / "soda.yaml"
    recipe.write_text(
        "components:\n"
        "  - {name: yodas2/en, path: /data/out/yodas2/en, weight: 3}\n"
        "  - {name: emilia/en, path: /data/out/emilia/en, weight: 1}\n"
    )
    result = st.compute_stats(st.StatsConfig(out=out, recipe=recipe, utterance_shards=0))
    assert result.weights == {"yodas2/en": 0.75, "emilia/en": 0.25}
    assert result.weights_source == str(recipe)
    default = st.compute_stats(st.StatsConfig(out=out, utterance_shards=0))
    spec = {"yodas2/en": 0.95 * 131 / 241, "emilia-yodas/en": 0.95 * 73 / 241, "emilia/en": 0.95 * 37 / 241,
            "nemotron-cc/hq-actual": 0.05}
    assert default.weights == pytest.approx(spec, rel=1e-6)
    assert default.weights_source == str(numbers.DEFAULT_RECIPE)
    # what the mixture parser refuses, stats refuses too (it once guessed a missing name from the path)
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text("components:\n  - {path: /data/out/emilia/en, weight: 1}\n")
    with pytest.raises(numbers.StatsError, match="name, path and weight"):
        numbers.load_weights(lenient)
    for bad in (lenient, tmp_path / "nope.yaml"):
        assert st.main([str(out), "--output", str(tmp_path / "r"), "--recipe", str(bad)]) == 2


def test_inconsistent_record_is_reported(tmp_path):
    out = tmp_path / "out"
    make_output_dir(out, components=SODA_LIKE[2:3], seed=1)
    rec_path = sorted((out / "emilia" / "en").glob("*.json"))[0]
    rec = json.loads(rec_path.read_text())
    rec["rows"] += 5
    rec_path.write_text(json.dumps(rec))
    result = st.compute_stats(st.StatsConfig(out=out, utterance_shards=0))
    assert any("rows" in w and "records" in w for w in result.components[0].warnings)
    assert "WARNING emilia/en" in format_table(result)


def test_empty_output_is_a_user_error(tmp_path):
    assert st.main([str(tmp_path), "--output", str(tmp_path / "r")]) == 2
