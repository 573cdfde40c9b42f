"""``--codebooks N`` and ``--formats`` (issue 16, points 1-2; SPEC §1-2): rows, records and validate follow them.

The bundled ``sample/emilia`` and a Yodas2 fixture are run through the recipes' command lines with the tiny random
codec; the codes of an N-codebook run are the first N codebooks of the default run's, which are
``MimiModel.encode``'s (tests/test_codec.py), and here directly against ``MimiModel.encode`` too.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from fixtures import speechlike
from fixtures_yodas2 import make_yodas2_source, read_rows

from sodadata.encode import codes as codes_module
from sodadata.encode.codec import CodecConfig, MimiEncoder, build_random_mimi, reference_encode
from sodadata.encode.codes import chars_to_codes, codes_to_chars, span_error
from sodadata.recipes import emilia, yodas2
from sodadata.tools.validate import validate
from sodadata.write.document import AUDIO_END, AUDIO_START, BOS, EOS, parse_formats, parse_row

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample" / "emilia"


def run_emilia(out: Path, *extra: str) -> int:
    return emilia.main(["--lang", "en", "--source", str(SAMPLE), "--codec", "tiny-random", "--out", str(out),
                        "--no-progress", "--torch-threads", "1", "--serial", *extra])


def spans(text: str) -> list[str]:
    """The row's audio spans as written, whatever their codebooks (the tests check the ranges themselves)."""
    parsed = parse_row(text, strict=False)
    assert not parsed.structural, parsed.problems
    return [u.audio for u in parsed.utterances]


def in_codebook_ranges(span: str, n: int) -> bool:
    """SPEC §1 written out: character k lies in codebook k mod n's range."""
    return len(span) % n == 0 and all(0xE000 + (k % n) * 2048 <= ord(c) < 0xE000 + (k % n + 1) * 2048
                                      for k, c in enumerate(span))


def validate_lines(out: Path) -> tuple[list[str], int]:
    buf = io.StringIO()
    report = validate(out, stream=buf)
    return buf.getvalue().splitlines(), report.violations


@pytest.fixture(scope="module")
def emilia_runs(tmp_path_factory) -> dict[str, Path]:
    """The sample three ways: SODA's default (8, the pair), S (1, audio_only), and 3 codebooks in every format."""
    base = tmp_path_factory.mktemp("codebooks")
    runs = {"default": (), "S": ("--codebooks", "1", "--formats", "audio_only"),
            "three": ("--codebooks", "3", "--formats", "audio_only,text_first,audio_first")}
    outs = {}
    for name, extra in runs.items():
        outs[name] = base / name
        assert run_emilia(outs[name], *extra) == 0
    return outs


def test_encoder_codes_are_the_first_n_codebooks_of_mimimodel_encode():
    model = build_random_mimi("tiny-random")
    waves = [speechlike(s, i) for i, s in enumerate((0.5, 1.3))]
    for n in (1, 3, 8):
        # batch 2: padded batches are exact for every N, not only for 8
        got = MimiEncoder(CodecConfig(codec="tiny-random", num_codebooks=n, batch_size=2, threads=1)).encode(waves)
        for w, c in zip(waves, got, strict=True):
            full = reference_encode(model, w)  # MimiModel.encode with SODA's 8
            assert c.shape == (n, full.shape[1])
            np.testing.assert_array_equal(c, full[:n])


@pytest.mark.parametrize("native", [True, False], ids=["C", "numpy"])
@pytest.mark.parametrize("n", range(1, 9))
def test_both_span_paths_handle_every_codebook_count(n, native, monkeypatch):
    if native and not codes_module.NATIVE:
        pytest.skip("the C extension is not built here")
    if not native:
        monkeypatch.setattr(codes_module, "_native", None)
    codes = np.random.default_rng(n).integers(0, 2048, size=(n, 5))
    text = codes_to_chars(codes)
    assert len(text) == 5 * n and in_codebook_ranges(text, n)
    np.testing.assert_array_equal(chars_to_codes(text, n), codes)
    assert span_error(text, n) is None
    if n < 8:  # the same characters read with one codebook more are misplaced from the frame's last one on
        assert span_error(text[: n + 1] * (n + 1), n + 1) is not None


@pytest.mark.parametrize("value", ["0", "9", "-1", "two", ""])
def test_codebooks_outside_1_to_8_is_one_line_before_any_work(value, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_emilia(out, "--codebooks", value) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --codebooks must be an integer from 1 to 8 (the first N of Mimi's codebooks), got {value!r}"]
    assert not out.exists()


@pytest.mark.parametrize("value, what", [
    ("audio", "expected a comma list of text_first, audio_first, audio_only"),
    ("", "expected a comma list"),
    ("text_first,text_first", "text_first named twice"),
    ("text_first,,audio_first", "expected a comma list"),
])
def test_bad_formats_is_one_line_before_any_work(value, what, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_emilia(out, "--formats", value) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --formats {value!r}: ") and what in err[0]
    assert not out.exists()


def test_formats_come_back_in_row_order():
    assert parse_formats("audio_only, text_first") == ("text_first", "audio_only")
    assert parse_formats("audio_first") == ("audio_first",)


def test_rows_records_and_codes_follow_codebooks_and_formats(emilia_runs):
    default, s, three = (read_rows(emilia_runs[k]) for k in ("default", "S", "three"))
    docs = sorted(i.removesuffix("_type1") for i in default if i.endswith("_type1"))
    assert docs and sorted(default) == sorted(d + sfx for d in docs for sfx in ("_type1", "_type2"))
    assert sorted(s) == sorted(d + "_type3" for d in docs)
    assert sorted(three) == sorted(d + sfx for d in docs for sfx in ("_type1", "_type2", "_type3"))
    for d in docs:
        full = spans(default[d + "_type1"]["text"])
        for rows, n in ((s, 1), (three, 3)):
            row = rows[d + "_type3"]
            assert row["format"] == "audio_only"
            got = spans(row["text"])
            # SPEC §2 exactly: BOS, then each utterance's audio span, EOS; no text at all
            assert row["text"] == BOS + "".join(AUDIO_START + a + AUDIO_END for a in got) + EOS
            assert len(got) == len(full) == row["n_utterances"]
            assert row["n_audio_tokens"] == sum(map(len, got)) == n * sum(map(len, full)) // 8
            assert row["audio_seconds"] == default[d + "_type1"]["audio_seconds"]
            for span, span8 in zip(got, full, strict=True):
                assert in_codebook_ranges(span, n)
                # the mapping is unchanged: the same code points as the first n of each frame's 8
                assert span == "".join(span8[f * 8: f * 8 + n] for f in range(len(span8) // 8))
                np.testing.assert_array_equal(chars_to_codes(span, n), chars_to_codes(span8, 8)[:n])
        # the interleaved rows of the 3-codebook run hold the same transcripts, the same 3-codebook spans
        assert spans(three[d + "_type1"]["text"]) == spans(three[d + "_type2"]["text"]) == spans(three[d + "_type3"]["text"])
    for name, (n, formats) in {"default": (8, ["text_first", "audio_first"]), "S": (1, ["audio_only"]),
                               "three": (3, ["text_first", "audio_first", "audio_only"])}.items():
        recs = [json.loads(p.read_text()) for p in sorted(emilia_runs[name].glob("*/*/*.json"))]
        assert len(recs) == 2
        for rec in recs:
            assert (rec["made_by"]["codebooks"], rec["made_by"]["formats"]) == (n, formats)
            assert rec["rows"] == rec["documents"] * len(formats)


def test_validate_is_clean_on_every_codebook_count_and_format(emilia_runs):
    for out in emilia_runs.values():
        assert validate_lines(out) == ([], 0)


def test_validate_catches_a_span_of_the_wrong_codebook_count(emilia_runs, tmp_path):
    """A 4-codebook span in a 3-codebook shard: its character 3 is codebook 3's where codebook 0's belongs."""
    import shutil

    out = tmp_path / "three"
    shutil.copytree(emilia_runs["three"], out)
    shard = sorted(out.glob("emilia/en/*.parquet"))[0]
    table = pq.read_table(shard)
    rows = table.to_pylist()
    i = next(k for k, r in enumerate(rows) if r["format"] == "audio_only")
    text = rows[i]["text"]
    a = text.index(AUDIO_START) + len(AUDIO_START)
    b = text.index(AUDIO_END)
    four = codes_to_chars(np.zeros((4, 3), dtype=np.int16))  # 12 characters: a multiple of 3, wrong codebooks
    rows[i]["text"] = text[:a] + four + text[b:]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    lines, _ = validate_lines(out)
    assert any(re.search(rf"row {i} \(id {rows[i]['id']}\) offset {a + 3}: character 3 \(U\+F800\) is not in "
                         r"codebook 0's range U\+E000\.\.U\+E7FF", line) for line in lines), lines
    doc = rows[i]["id"].removesuffix("_type3")
    assert any(f"type1 and type3 of document {doc} hold different audio: utterance 0's audio" in line
               for line in lines), lines


def test_a_rerun_with_another_codebook_count_or_formats_is_refused(emilia_runs, tmp_path, capsys):
    import shutil

    out = tmp_path / "S"
    shutil.copytree(emilia_runs["S"], out)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert run_emilia(out, "--codebooks", "2", "--formats", "audio_only") == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "made with codebooks 1, this run uses codebooks 2" in err[0], err
    assert run_emilia(out, "--codebooks", "1") == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and 'formats ["audio_only"]' in err[0] and 'formats ["text_first", "audio_first"]' in err[0]
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


@pytest.mark.slow
def test_yodas2_rows_for_the_sa_and_s_ablations(tmp_path):
    src = tmp_path / "src"
    make_yodas2_source(src)
    outs = {}
    for name, extra in {"SAT": (), "SA": ("--formats", "audio_only"),
                        "S": ("--codebooks", "1", "--formats", "audio_only")}.items():
        outs[name] = tmp_path / name
        assert yodas2.main(["--lang", "en", "--subsets", "en100", "--source", str(src), "--out", str(outs[name]),
                            "--codec", "tiny-random", "--serial", "--no-progress", "--torch-threads", "1",
                            *extra]) == 0
        assert validate_lines(outs[name]) == ([], 0)
    sat, sa, s = (read_rows(outs[k]) for k in ("SAT", "SA", "S"))
    videos = sorted(i.removesuffix("_type1") for i in sat if i.endswith("_type1"))
    assert videos and sorted(sa) == sorted(s) == [v + "_type3" for v in videos]
    for v in videos:
        full = spans(sat[v + "_type1"]["text"])
        assert spans(sa[v + "_type3"]["text"]) == full
        assert spans(s[v + "_type3"]["text"]) == [a[::8] for a in full]  # codebook 0 of every frame


# --- the tools on N < 8 and audio_only rows -------------------------------------------------------------------


def test_decode_uses_the_records_codebooks_and_reads_audio_only_rows(emilia_runs, tmp_path, capsys, caplog):
    from sodadata.tools.decode import main as decode_main
    from sodadata.tools.mimi_decoder import get_decoder

    rows = read_rows(emilia_runs["S"])
    rid = sorted(rows)[0]
    wav = tmp_path / "s.wav"
    with caplog.at_level("WARNING"):
        assert decode_main([str(emilia_runs["S"]), "--id", rid, "--out", str(wav)]) == 0
    assert "keeps 1 of Mimi's 8 codebooks (made_by.codebooks): decoded from those alone, lossy" in caplog.text
    got, rate = sf.read(wav, dtype="float32")
    frames = [len(a) for a in spans(rows[rid]["text"])]  # one character per frame
    assert rate == 24_000 and got.size == sum(frames) * 1920
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"{wav}\t{rid}\t") and printed[0].endswith(f"\t{len(frames)} utterance(s)")
    # the same as decoding the row's 1-codebook codes directly (write_audio may scale a loud wave down only)
    decoder = get_decoder(CodecConfig(codec="tiny-random", num_codebooks=1))
    want = np.concatenate(decoder.decode([chars_to_codes(a, 1) for a in spans(rows[rid]["text"])]))
    assert np.corrcoef(got, want)[0, 1] > 0.999


def test_parse_row_reads_every_format_with_its_codebooks(emilia_runs):
    rows = read_rows(emilia_runs["three"])
    doc = sorted(i.removesuffix("_type1") for i in rows if i.endswith("_type1"))[0]
    parsed = {fmt: parse_row(rows[doc + sfx]["text"], None, 3) for fmt, sfx in
              (("text_first", "_type1"), ("audio_first", "_type2"), ("audio_only", "_type3"))}
    assert {fmt: p.format for fmt, p in parsed.items()} == {f: f for f in parsed}  # inferred from the pieces
    audio = [[u.audio for u in p.utterances] for p in parsed.values()]
    assert audio[0] == audio[1] == audio[2]
    assert [u.text for u in parsed["audio_only"].utterances] == [""] * len(audio[0])
    assert parsed["audio_only"].audio_frames == sum(len(a) for a in audio[0]) // 3
    with pytest.raises(ValueError, match=r"offset \d+: (length \d+ is not a multiple of 8|character \d+ \(U\+[0-9A-F]+\) is not in codebook)"):
        parse_row(rows[doc + "_type3"]["text"], "audio_only")  # read as 8 codebooks: it is not


def test_stats_count_documents_once_and_12_5_n_tokens_per_second(emilia_runs):
    from sodadata.tools.stats import StatsConfig, compute_stats

    got = {name: {c.component: c for c in compute_stats(StatsConfig(out=out)).components}
           for name, out in emilia_runs.items()}
    for component, d in got["default"].items():
        assert (d.codebooks, d.audio_tokens_per_second, d.formats) == (8, 100.0, ["text_first", "audio_first"])
        for name, n, formats in (("S", 1, ["audio_only"]), ("three", 3, ["text_first", "audio_first", "audio_only"])):
            c = got[name][component]
            assert (c.codebooks, c.audio_tokens_per_second, c.formats) == (n, 12.5 * n, formats)
            # one document, its utterances and hours once, whatever its rows
            assert (c.documents, c.utterances, c.audio_seconds) == (d.documents, d.utterances, d.audio_seconds)
            assert c.rows == d.documents * len(formats) and not c.warnings
            # 12.5 N tokens per second of (frame-rounded) audio in every row
            assert c.audio_tokens == len(formats) * n * d.audio_tokens // (2 * 8)
            assert c.marker_tokens == 2 * c.rows + d.utterances * (4 * (len(formats) - 1) + 2 if n == 3 else 2)
            # utterance durations measured from spans of N characters a frame: the same as with 8
            np.testing.assert_allclose(c.utterance_seconds, d.utterance_seconds)


def test_inspect_shows_audio_only_rows_of_one_codebook(emilia_runs, tmp_path):
    from sodadata.tools.listening_report import InspectOptions, build_report

    report = build_report(emilia_runs["S"], tmp_path / "html", InspectOptions(per_component=1, audio_format="wav"))
    docs = [d for c in report["components"] for d in c["documents"]]
    assert docs and all(d["format"] == "audio_only" and not d.get("error") for d in docs)
    for d in docs:
        assert d["marker_tokens"] == 2 + 2 * d["n_utterances"]
        assert d["decoded_seconds"] == pytest.approx(d["n_audio_tokens"] * 0.08)  # one character a frame
        assert (tmp_path / "html" / d["audio"]).is_file()


# --- the tokenizer and the stream -----------------------------------------------------------------------------


def test_tokenizer_of_n_codebooks_has_only_their_tokens_at_the_spec_ids(tmp_path, capsys):
    from sodadata.mix.tokenizer import RowEncoder, TokenizerLayout, load_tokenizer
    from sodadata.mix.tokenizer import main as tokenizer_main

    assert tokenizer_main(["build", "--base", "bytes", "--codebooks", "2", "--out", str(tmp_path / "tok2")]) == 0
    assert tokenizer_main(["build", "--base", "bytes", "--out", str(tmp_path / "tok8")]) == 0
    assert "(2 codebooks)" in capsys.readouterr().out
    tok2, tok8 = (load_tokenizer(tmp_path / t) for t in ("tok2", "tok8"))
    l2, l8 = TokenizerLayout.of(tok2), TokenizerLayout.of(tok8)
    assert (l2.codebooks, l8.codebooks) == (2, 8)
    assert l8.vocab_size - l2.vocab_size == 6 * 2048
    assert l2.audio_base == l8.audio_base == 128_260 and l2.marker_ids == l8.marker_ids
    for k in (0, 2047, 2048, 4095):  # the same id for every character both have
        assert tok2.token_to_id(chr(0xE000 + k)) == tok8.token_to_id(chr(0xE000 + k)) == 128_260 + k
    assert tok2.token_to_id(chr(0xE000 + 4096)) is None
    config = json.loads((tmp_path / "tok2" / "tokenizer_config.json").read_text())["sodadata"]
    assert config["codebooks"] == 2 and config["matches_spec"] is False
    two = BOS + AUDIO_START + codes_to_chars(np.arange(6).reshape(2, 3)) + AUDIO_END + EOS
    assert RowEncoder(tok2).encode(two).tolist() == tok8.encode(two, add_special_tokens=False).ids
    three = BOS + AUDIO_START + codes_to_chars(np.zeros((3, 2), dtype=np.int16)) + AUDIO_END + EOS
    with pytest.raises(ValueError, match=r"a row holds audio of 3 codebooks but the tokenizer has 2 \(built with "
                                         r"--codebooks 2\): rebuild it with `sodadata tokenizer build --codebooks 3`"):
        RowEncoder(tok2).encode(three)
    assert tokenizer_main(["build", "--base", "bytes", "--codebooks", "9", "--out", str(tmp_path / "bad")]) == 1
    assert "--codebooks must be an integer from 1 to 8" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_the_stream_follows_n_and_refuses_a_component_the_tokenizer_lacks(emilia_runs, tmp_path):
    from sodadata.mix.mixture import MixtureConfig
    from sodadata.mix.packing import MixtureStream
    from sodadata.mix.tokenizer import build_tokenizer

    def config(run: str) -> MixtureConfig:
        return MixtureConfig.from_dict({"seq_len": 64, "lanes": 1, "block_size": 10, "components": [
            {"name": "emilia/en", "path": str(emilia_runs[run] / "emilia" / "en"), "weight": 1}]})

    tok1, tok3 = build_tokenizer("bytes", codebooks=1), build_tokenizer("bytes", codebooks=3)
    with pytest.raises(ValueError, match=r"component emilia/en holds audio of 3 codebooks but the tokenizer has 1"):
        MixtureStream(config("three"), tok1)
    batch = next(MixtureStream(config("S"), tok1).batches(2))
    ids = batch["input_ids"]
    audio = ids[(ids >= 128_260)]
    assert audio.size and audio.max() < 128_260 + 2048  # codebook 0's tokens only
    assert next(MixtureStream(config("three"), tok3).batches(2))["input_ids"].max() < 128_260 + 3 * 2048


@pytest.mark.parametrize("name, codebooks, formats", [
    ("yodas2-S", "1", "audio_only"), ("yodas2-SA", "8", "audio_only"), ("yodas2-SAT", "8", "text_first,audio_first"),
])
def test_the_ablation_mixtures_load_and_name_their_commands(name, codebooks, formats):
    from sodadata.mix.mixture import MIXTURE_DIR, MixtureConfig

    config = MixtureConfig.load(f"recipes/{name}.yaml")  # the strict parser, through the recipes/ link
    assert config.names == ["yodas2/en"] and config.root == f"out/{name}" and config.seq_len == 4096
    text = (MIXTURE_DIR / f"{name}.yaml").read_text()
    command = (f"python -m sodadata.recipes.yodas2 --lang en --codebooks {codebooks} --formats {formats} "
               f"--out out/{name}")
    assert f"# Its data:      {command}\n" in text
    tokenizer = "tokenizer-1cb/" if codebooks == "1" else "tokenizer/"
    assert config.tokenizer == tokenizer
    assert f"sodadata tokenizer build {'--codebooks 1 ' if codebooks == '1' else ''}--out {tokenizer}\n" in text
    # the data command parses as printed, options and all (run on a fixture in test_yodas2_rows_...)
    from sodadata.recipes.yodas2 import Yodas2Recipe
    from sodadata.run.cli_recipe import build_parser

    args = build_parser(Yodas2Recipe, "yodas2", "").parse_args(command.split()[3:])
    assert (args.codebooks, args.formats) == (codebooks, formats)


def test_validate_reports_a_record_whose_codebooks_or_formats_are_not_a_shards(emilia_runs, tmp_path):
    import shutil

    out = tmp_path / "S"
    shutil.copytree(emilia_runs["S"], out)
    record_path = sorted(out.glob("emilia/en/*.json"))[0]
    record = json.loads(record_path.read_text())
    record["made_by"] = {**record["made_by"], "codebooks": 9, "formats": ["audio_only", "video"]}
    record_path.write_text(json.dumps(record))
    lines, _ = validate_lines(out)
    assert any(line.endswith("made_by.codebooks is 9, expected 1-8; spans checked as 8 codebooks") for line in lines)
    assert any("made_by.formats is ['audio_only', 'video'], expected a list of" in line for line in lines)
