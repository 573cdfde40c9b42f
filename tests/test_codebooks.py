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
from fixtures import speechlike
from fixtures_yodas2 import make_yodas2_source, read_rows

from sodadata import codes as codes_module
from sodadata.codec import CodecConfig, MimiEncoder, build_random_mimi, reference_encode
from sodadata.codes import chars_to_codes, codes_to_chars, span_error
from sodadata.decode import segments
from sodadata.document import AUDIO_END, AUDIO_START, BOS, EOS, parse_formats
from sodadata.recipes import emilia, yodas2
from sodadata.validate import validate

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample" / "emilia"


def run_emilia(out: Path, *extra: str) -> int:
    return emilia.main(["--lang", "en", "--source", str(SAMPLE), "--codec", "tiny-random", "--out", str(out),
                        "--no-progress", "--torch-threads", "1", "--serial", *extra])


def spans(text: str) -> list[str]:
    return [content for kind, content in segments(text) if kind == "audio"]


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
