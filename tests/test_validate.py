"""``sodadata validate``: clean outputs pass; each way of corrupting a shard is caught with a precise line.

Every corruption starts from a clean synthetic output directory (tests/synthetic.py), damages one thing and
checks (a) the exact report line (file, row, id, offset, what), (b) which checks fired, (c) the exit status.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures_mls import corrupt_column
from synthetic import SPEECH_MADE_BY, ComponentSpec, make_output_dir
from test_reliability_report import publish, table

from sodadata.encode.codes import codes_to_chars
from sodadata.locations import write_json_atomic
from sodadata.tools.validate import CHECKS, main, validate
from sodadata.write.document import (
    AUDIO_END,
    AUDIO_FIRST,
    AUDIO_START,
    BOS,
    EOS,
    TEXT_END,
    TEXT_FIRST,
    TEXT_START,
    EncodedUtterance,
    format_speech_row,
    parse_row,
)
from sodadata.write.shards import REJECT_SCHEMA, ROW_SCHEMA, ShardPaths, ShardWriter

REPO = Path(__file__).resolve().parent.parent
COMPONENTS = (
    ComponentSpec("emilia/en", shards=2, docs_per_shard=3, utterances=(2, 3)),
    ComponentSpec("nemotron-cc/hq-actual", shards=1, docs_per_shard=4, text_only=True),
)
SHARD = "emilia/en/shard-00000"
OTHER = "emilia/en/shard-00001"
TEXT_SHARD = "nemotron-cc/hq-actual/shard-00000"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    make_output_dir(tmp_path / "out", components=COMPONENTS, seed=11)
    return tmp_path / "out"


def run_validate(out: Path, **kw) -> tuple[dict[str, int], list[str]]:
    buf = io.StringIO()
    report = validate(out, stream=buf, **kw)
    return dict(+report.counts), buf.getvalue().splitlines()


def rows_of(out: Path, shard: str) -> list[dict]:
    return pq.read_table(out / f"{shard}.parquet").to_pylist()


def rewrite(out: Path, shard: str, edit: Callable[[list[dict]], list[dict]], schema: pa.Schema = ROW_SCHEMA) -> Path:
    path = out / f"{shard}.parquet"
    rows = edit(rows_of(out, shard))
    with ShardWriter(path, schema=schema) as w:
        w.write_all(rows)
        w.commit()
    return path


def edit_record(out: Path, shard_name: str, **changes) -> None:
    path = out / f"{shard_name}.json"
    rec = json.loads(path.read_text())
    for k, v in changes.items():
        rec[k] = v(rec[k]) if callable(v) else v
    write_json_atomic(path, rec)


def row_index(rows: list[dict], suffix: str, nth: int = 0) -> int:
    return [i for i, r in enumerate(rows) if r["id"].endswith(suffix)][nth]


def first_piece(text: str, start: str, end: str, nth: int = 0) -> tuple[int, int]:
    """(start, end) character offsets of the nth piece between ``start`` and ``end`` markers."""
    pos = -1
    for _ in range(nth + 1):
        pos = text.index(start, pos + 1)
    return pos + len(start), text.index(end, pos)


def set_text(rows: list[dict], i: int, text: str) -> list[dict]:
    rows[i] = {**rows[i], "text": text}
    return rows


# --- clean outputs -----------------------------------------------------------------------------------------


def test_clean_synthetic_output_passes(out: Path):
    counts, lines = run_validate(out)
    assert counts == {} and lines == []
    assert main([str(out)]) == 0


def test_every_check_is_summarised(out: Path, capsys):
    rewrite(out, SHARD, lambda rows: set_text(rows, 0, rows[0]["text"][:-1]))
    assert main([str(out)]) == 1
    printed = capsys.readouterr().out
    for name in CHECKS:
        assert re.search(rf"^{name}\s+\d+\s", printed, re.M), name
    assert "violations" in printed.splitlines()[-1]


def test_cli_entry_point_and_bad_arguments(out: Path, tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "sodadata.cli", "validate", str(out)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1].endswith(": clean")
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert main([str(tmp_path / "missing")]) == 2


def test_hidden_temporary_files_are_noted_not_violations(out: Path, capsys):
    (out / "emilia/en/.shard-00000.parquet.tmp-123-abcdef01").write_bytes(b"PAR1 partial")
    assert main([str(out)]) == 0
    assert "1 hidden temporary files" in capsys.readouterr().out


# --- corruptions, one per case ------------------------------------------------------------------------------


def _span_wrong_codebook(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    i = row_index(rows, "_type1", 1)
    text = rows[i]["text"]
    a, _ = first_piece(text, AUDIO_START, AUDIO_END)
    bad = chr(0xE000 + 4 * 2048 + 5)  # a codebook-4 character where codebook 3 belongs
    rewrite(out, SHARD, lambda rs: set_text(rs, i, text[: a + 3] + bad + text[a + 4 :]))
    return (rf"{SHARD}.parquet:row {i} \(id {rows[i]['id']}\) offset {a + 3}: character 3 \(U\+10005\) is not "
            r"in codebook 3's range U\+F800\.\.U\+FFFF", {"audio_span", "pairs"})


def _span_not_multiple_of_8(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    i = row_index(rows, "_type2")
    text = rows[i]["text"]
    a, b = first_piece(text, AUDIO_START, AUDIO_END)
    rewrite(out, SHARD, lambda rs: set_text(rs, i, text[: b - 1] + text[b:]))
    return (rf"{SHARD}.parquet:row {i} \(id {rows[i]['id']}\) offset {b - 1}: length {b - a - 1} is not a "
            r"multiple of 8", {"audio_span", "columns", "pairs", "counts"})


def _empty_audio_span(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    i = row_index(rows, "_type1")
    text = rows[i]["text"]
    a, b = first_piece(text, AUDIO_START, AUDIO_END)
    rewrite(out, SHARD, lambda rs: set_text(rs, i, text[:a] + text[b:]))
    return rf"{SHARD}.parquet:row {i} \(id .*\) offset {a}: empty audio span", {"audio_span", "columns", "pairs",
                                                                               "counts"}


def _markers_in_audio_first_order_in_a_text_first_row(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    i, j = row_index(rows, "_type1"), row_index(rows, "_type2")
    rewrite(out, SHARD, lambda rs: set_text(rs, i, rows[j]["text"]))
    return (rf"{SHARD}.parquet:row {i} \(id {rows[i]['id']}\) offset {len(BOS)}: expected <\|text_start\|>, "
            r"found <\|audio_start\|> \(text_first order is", {"structure", "columns", "counts"})


def _unbalanced_marker(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    i = row_index(rows, "_type2", 1)
    text = rows[i]["text"]
    k = text.index(AUDIO_END)
    rewrite(out, SHARD, lambda rs: set_text(rs, i, text[:k] + text[k + len(AUDIO_END) :]))
    return (rf"{SHARD}.parquet:row {i} \(id {rows[i]['id']}\) offset {k}: expected <\|audio_end\|>, found "
            r"<\|text_start\|>", {"structure", "columns", "counts"})


def _unclosed_utterance(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    i = row_index(rows, "_type1")
    text = rows[i]["text"]
    k = text.rindex(AUDIO_END)
    rewrite(out, SHARD, lambda rs: set_text(rs, i, text[:k] + EOS))
    last_open = text.rindex(TEXT_START)
    return (rf"{SHARD}.parquet:row {i} \(id .*\) offset {last_open}: utterance opened by <\|text_start\|> is never "
            "completed", {"structure", "columns", "counts"})


def _bos_twice(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    i = row_index(rows, "_type1")
    rewrite(out, SHARD, lambda rs: set_text(rs, i, BOS + rows[i]["text"]))
    return (rf"{SHARD}.parquet:row {i} \(id .*\) offset {len(BOS)}: <\|begin_of_text\|> inside the row",
            {"structure", "counts"})


def _eos_missing(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    i = row_index(rows, "_type2")
    text = rows[i]["text"].removesuffix(EOS)
    rewrite(out, SHARD, lambda rs: set_text(rs, i, text))
    return (rf"{SHARD}.parquet:row {i} \(id .*\) offset {len(text)}: row does not end with <\|end_of_text\|>",
            {"structure", "counts"})


def _eos_in_the_middle(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    i = row_index(rows, "_type2")
    text = rows[i]["text"]
    k = text.index(TEXT_START)
    rewrite(out, SHARD, lambda rs: set_text(rs, i, text[:k] + EOS + text[k:]))
    return (rf"{SHARD}.parquet:row {i} \(id .*\) offset {k}: <\|end_of_text\|> inside the row",
            {"structure", "counts"})


def _text_between_pieces(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    i = row_index(rows, "_type1")
    text = rows[i]["text"]
    k = text.index(TEXT_END) + len(TEXT_END)
    rewrite(out, SHARD, lambda rs: set_text(rs, i, text[:k] + "\n" + text[k:]))
    return (rf"{SHARD}.parquet:row {i} \(id .*\) offset {k}: 1 characters between pieces, before "
            r"<\|audio_start\|>", {"structure", "counts"})


def _audio_char_in_transcript(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    i = row_index(rows, "_type1")
    text = rows[i]["text"]
    a, _ = first_piece(text, TEXT_START, TEXT_END)
    rewrite(out, SHARD, lambda rs: set_text(rs, i, text[: a + 2] + "\ue777" + text[a + 2 :]))
    return (rf"{SHARD}.parquet:row {i} \(id .*\) offset {a + 2}: audio-range character U\+E777 in a transcript",
            {"transcript", "pairs", "counts"})


def _unstripped_transcript(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    i = row_index(rows, "_type2")
    text = rows[i]["text"]
    a, _ = first_piece(text, TEXT_START, TEXT_END)
    rewrite(out, SHARD, lambda rs: set_text(rs, i, text[:a] + " " + text[a:]))
    return (rf"{SHARD}.parquet:row {i} \(id .*\) offset {a}: transcript has surrounding whitespace",
            {"transcript", "pairs", "counts"})


def _marker_in_a_text_row(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, TEXT_SHARD)
    text = rows[2]["text"]
    k = len(BOS) + 5
    rewrite(out, TEXT_SHARD, lambda rs: set_text(rs, 2, text[:k] + AUDIO_START + text[k:]))
    return (rf"{TEXT_SHARD}.parquet:row 2 \(id .*\) offset {k}: marker <\|audio_start\|> in a text row",
            {"structure", "counts"})


def _type2_row_missing(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    j = row_index(rows, "_type2", 1)
    doc = rows[j]["id"].removesuffix("_type2")
    i = row_index(rows, "_type1", 1)
    rewrite(out, SHARD, lambda rs: rs[:j] + rs[j + 1 :])
    return (rf"{SHARD}.parquet:row {i} \(id {doc}_type1\) ?: document {doc} has no audio_first row",
            {"pairs", "counts"})


def _type2_with_another_transcript(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    j = row_index(rows, "_type2")
    i = row_index(rows, "_type1")
    text = rows[j]["text"]
    a, _ = first_piece(text, TEXT_START, TEXT_END, nth=1)
    rewrite(out, SHARD, lambda rs: set_text(rs, j, text[:a] + "X" + text[a + 1 :]))
    return (rf"{SHARD}.parquet:row {j} \(id .*_type2\): type1 and type2 of document .* hold different \(text, "
            rf"audio\) pairs: utterance 1's transcript differs from row {i}", {"pairs"})


def _type2_with_other_audio(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    j = row_index(rows, "_type2", 2)
    text = rows[j]["text"]
    a, _ = first_piece(text, AUDIO_START, AUDIO_END)
    swapped = chr(0xE000 + (ord(text[a]) - 0xE000 + 1) % 2048)  # still codebook 0: a well-formed span
    rewrite(out, SHARD, lambda rs: set_text(rs, j, text[:a] + swapped + text[a + 1 :]))
    return rf"{SHARD}.parquet:row {j} .*: utterance 0's audio differs from row \d+", {"pairs"}


def _duplicate_id_across_shards(out: Path) -> tuple[str, set[str]]:
    first = rows_of(out, SHARD)
    doc = first[0]["id"].removesuffix("_type1")
    other = rows_of(out, OTHER)
    odoc = other[0]["id"].removesuffix("_type1")
    rewrite(out, OTHER, lambda rs: [{**r, "id": r["id"].replace(odoc, doc)} for r in rs])
    return (rf"{OTHER}.parquet:row 0 \(id {doc}_type1\): id also used by .*/{SHARD}.parquet:row 0", {"ids"})


def _duplicate_id_in_a_shard(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, TEXT_SHARD)
    rewrite(out, TEXT_SHARD, lambda rs: [rs[0], {**rs[1], "id": rs[0]["id"]}, *rs[2:]])
    return rf"{TEXT_SHARD}.parquet:row 1 \(id {re.escape(rows[0]['id'])}\): id appears twice in this shard", {"ids"}


def _id_suffix_does_not_match_format(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    i = row_index(rows, "_type1")
    rewrite(out, SHARD, lambda rs: [{**r, "format": AUDIO_FIRST} if k == i else r for k, r in enumerate(rs)])
    return (rf"{SHARD}.parquet:row {i} \(id .*_type1\) offset {len(BOS)}: expected <\|audio_start\|>",
            {"structure", "ids", "counts", "columns", "pairs"})


def _unknown_format(out: Path) -> tuple[str, set[str]]:
    rewrite(out, SHARD, lambda rs: [{**rs[0], "format": "text_last"}, *rs[1:]])
    return rf"{SHARD}.parquet:row 0 \(id .*\): format is 'text_last', expected", {"columns", "counts", "pairs"}


def _n_audio_tokens_wrong(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    n = rows[1]["n_audio_tokens"]
    rewrite(out, SHARD, lambda rs: [{**r, "n_audio_tokens": n + 8} if k == 1 else r for k, r in enumerate(rs)])
    return (rf"{SHARD}.parquet:row 1 \(id .*\): n_audio_tokens is {n + 8}, the text holds {n} audio characters",
            {"columns", "counts"})


def _n_utterances_wrong(out: Path) -> tuple[str, set[str]]:
    rows = rows_of(out, SHARD)
    n = rows[0]["n_utterances"]
    rewrite(out, SHARD, lambda rs: [{**r, "n_utterances": n - 1} if k == 0 else r for k, r in enumerate(rs)])
    return rf"{SHARD}.parquet:row 0 \(id .*\): n_utterances is {n - 1}, the text holds {n}", {"columns", "counts"}


def _audio_seconds_implausible(out: Path) -> tuple[str, set[str]]:
    rewrite(out, SHARD, lambda rs: [{**r, "audio_seconds": r["audio_seconds"] * 2} if k == 0 else r
                                    for k, r in enumerate(rs)])
    return rf"{SHARD}.parquet:row 0 \(id .*\): audio_seconds is .* audio characters of 8 codebooks cover", {"columns", "counts", "pairs"}


def _corpus_not_its_folder(out: Path) -> tuple[str, set[str]]:
    rewrite(out, SHARD, lambda rs: [{**r, "corpus": "emilia-yodas/en"} for r in rs])
    return rf"{SHARD}.parquet:row 0 \(id .*\): corpus is 'emilia-yodas/en', expected 'emilia/en'", {"columns"}


def _split_not_the_records(out: Path) -> tuple[str, set[str]]:
    rewrite(out, SHARD, lambda rs: [{**r, "split": "elsewhere"} if k == 3 else r for k, r in enumerate(rs)])
    return rf"{SHARD}.parquet:row 3 \(id .*\): split is 'elsewhere', the record says", {"columns"}


def _metadata_not_json(out: Path) -> tuple[str, set[str]]:
    rewrite(out, TEXT_SHARD, lambda rs: [{**rs[0], "metadata": "{not json"}, *rs[1:]])
    return rf"{TEXT_SHARD}.parquet:row 0 \(id .*\): metadata is not JSON", {"columns"}


def _column_missing(out: Path) -> tuple[str, set[str]]:
    schema = pa.schema([f for f in ROW_SCHEMA if f.name != "n_audio_tokens"])
    rewrite(out, SHARD, lambda rs: [{k: v for k, v in r.items() if k != "n_audio_tokens"} for r in rs], schema)
    return rf"{SHARD}.parquet: column 'n_audio_tokens' is missing", {"schema"}


def _column_wrong_type(out: Path) -> tuple[str, set[str]]:
    schema = pa.schema([pa.field("audio_seconds", pa.string()) if f.name == "audio_seconds" else f
                        for f in ROW_SCHEMA])
    rewrite(out, SHARD, lambda rs: [{**r, "audio_seconds": str(r["audio_seconds"])} for r in rs], schema)
    return rf"{SHARD}.parquet: column 'audio_seconds' has type string, expected double", {"schema"}


def _null_id(out: Path) -> tuple[str, set[str]]:
    schema = pa.schema([f.with_nullable(True) for f in ROW_SCHEMA])
    rewrite(out, TEXT_SHARD, lambda rs: [{**rs[0], "id": None}, *rs[1:]], schema)
    return rf"{TEXT_SHARD}.parquet:row 0: id is null", {"schema", "ids"}


def _extra_column(out: Path) -> tuple[str, set[str]]:
    schema = ROW_SCHEMA.append(pa.field("speaker", pa.string()))
    rewrite(out, SHARD, lambda rs: [{**r, "speaker": "x"} for r in rs], schema)
    return rf"{SHARD}.parquet: unexpected column 'speaker'", {"schema"}


def _record_rows_wrong(out: Path) -> tuple[str, set[str]]:
    edit_record(out, SHARD, rows=lambda v: v + 2)
    return rf"{SHARD}.json: rows is \d+ in the record, \d+ in the shard", {"counts"}


def _record_documents_wrong(out: Path) -> tuple[str, set[str]]:
    edit_record(out, OTHER, documents=lambda v: v - 1)
    return rf"{OTHER}.json: documents is \d+ in the record, \d+ in the shard", {"counts"}


def _record_audio_tokens_wrong(out: Path) -> tuple[str, set[str]]:
    edit_record(out, SHARD, audio_tokens=lambda v: v // 2)
    return rf"{SHARD}.json: audio_tokens is \d+ in the record, \d+ in the shard", {"counts"}


def _record_written_wrong(out: Path) -> tuple[str, set[str]]:
    edit_record(out, SHARD, written=lambda v: v + 1, read=lambda v: v + 1)
    return rf"{SHARD}.json: written is \d+ in the record, \d+ in the shard", {"counts"}


def _record_audio_seconds_wrong(out: Path) -> tuple[str, set[str]]:
    edit_record(out, SHARD, audio_seconds=lambda v: v + 1.0)
    return rf"{SHARD}.json: audio_seconds is .* in the record", {"counts"}


def _record_unbalanced(out: Path) -> tuple[str, set[str]]:
    edit_record(out, SHARD, read=lambda v: v + 3)
    return rf"{SHARD}.json: read \d+ != written \d+ \+ rejected \d+", {"record"}


def _record_not_json(out: Path) -> tuple[str, set[str]]:
    path = out / f"{SHARD}.json"
    path.write_text(path.read_text()[:40])
    return rf"{SHARD}.json: record does not parse: JSONDecodeError", {"record"}


def _record_of_another_shard(out: Path) -> tuple[str, set[str]]:
    edit_record(out, SHARD, shard="shard-00009")
    return rf"{SHARD}.json: shard is 'shard-00009', expected 'shard-00000'", {"record"}


def _record_url_with_credentials(out: Path) -> tuple[str, set[str]]:
    edit_record(out, SHARD, source={"inputs": [{"url": "https://user:s3cret@mirror.example/x.tar", "size": 1}]})
    return rf"{SHARD}.json: a source URL carries credentials \(user info", {"record"}


def _made_by_differs(out: Path) -> tuple[str, set[str]]:
    edit_record(out, OTHER, made_by=lambda m: {**m, "dtype": "bfloat16", "codec": {**m["codec"], "revision": "b" * 40}})
    return (r"emilia/en: shards differ in made_by: codec\.revision: b{12}… != 0123456789ab…; "
            r"dtype: bfloat16 != float32 \(2 kinds among 2 shards, e\.g\. shard-00001 and shard-00000\)$", {"made_by"})


def _made_by_missing(out: Path) -> tuple[str, set[str]]:
    path = out / f"{OTHER}.json"
    rec = json.loads(path.read_text())
    del rec["made_by"]
    write_json_atomic(path, rec)
    return r"emilia/en: 1 of 2 shards have no made_by \(made before format 2, e\.g\. shard-00001\)$", {"made_by"}


def _rejects_missing(out: Path) -> tuple[str, set[str]]:
    (out / "emilia/en/rejects/shard-00001.parquet").unlink()
    return r"emilia/en/rejects/shard-00001.parquet: reject list is missing \(the record counts 1 rejects\)", {
        "rejects"}


def _rejects_fewer_than_the_record(out: Path) -> tuple[str, set[str]]:
    edit_record(out, SHARD, rejected=2, read=lambda v: v + 1, rejects={"undecodable_audio": 2})
    return r"emilia/en/rejects/shard-00000.parquet: 1 rows, the record counts 2 rejects", {"rejects"}


def _rejects_other_reasons(out: Path) -> tuple[str, set[str]]:
    edit_record(out, SHARD, rejects={"missing_json": 1})
    return r"emilia/en/rejects/shard-00000.parquet: rejects by reason \{'undecodable_audio': 1\}, the record says", {
        "rejects"}


def _shard_without_record(out: Path) -> tuple[str, set[str]]:
    (out / f"{OTHER}.json").unlink()
    return rf"{OTHER}.parquet: shard has no record: it is unfinished", {"files"}


def _record_without_shard(out: Path) -> tuple[str, set[str]]:
    (out / f"{OTHER}.parquet").unlink()
    return rf"{OTHER}.json: record without its shard", {"files"}


def _partial_file_under_a_visible_name(out: Path) -> tuple[str, set[str]]:
    data = (out / f"{SHARD}.parquet").read_bytes()
    (out / "emilia/en/shard-00002.parquet.tmp").write_bytes(data[: len(data) // 2])
    return r"emilia/en/shard-00002.parquet.tmp: unexpected file in a shard folder", {"files"}


def _truncated_shard(out: Path) -> tuple[str, set[str]]:
    path = out / f"{SHARD}.parquet"
    path.write_bytes(path.read_bytes()[:-100])
    return rf"{SHARD}.parquet: cannot open as Parquet", {"schema"}


def _corrupt_data_pages(out: Path) -> tuple[str, set[str]]:
    corrupt_column(out / f"{SHARD}.parquet", "text")  # the footer still opens; the text pages do not decode
    return rf"{SHARD}.parquet: rows cannot be read: OSError", {"schema", "ids"}


CORRUPTIONS: dict[str, Callable[[Path], tuple[str, set[str]]]] = {
    f.__name__.lstrip("_"): f
    for f in (
        _span_wrong_codebook, _span_not_multiple_of_8, _empty_audio_span,
        _markers_in_audio_first_order_in_a_text_first_row, _unbalanced_marker, _unclosed_utterance,
        _bos_twice, _eos_missing, _eos_in_the_middle, _text_between_pieces, _marker_in_a_text_row,
        _audio_char_in_transcript, _unstripped_transcript,
        _type2_row_missing, _type2_with_another_transcript, _type2_with_other_audio,
        _duplicate_id_across_shards, _duplicate_id_in_a_shard, _id_suffix_does_not_match_format,
        _unknown_format, _n_audio_tokens_wrong, _n_utterances_wrong, _audio_seconds_implausible,
        _corpus_not_its_folder, _split_not_the_records, _metadata_not_json,
        _column_missing, _column_wrong_type, _null_id, _extra_column,
        _record_rows_wrong, _record_documents_wrong, _record_audio_tokens_wrong, _record_written_wrong,
        _record_audio_seconds_wrong, _record_unbalanced, _record_not_json, _record_of_another_shard,
        _record_url_with_credentials, _made_by_differs, _made_by_missing,
        _rejects_missing, _rejects_fewer_than_the_record, _rejects_other_reasons,
        _shard_without_record, _record_without_shard, _partial_file_under_a_visible_name, _truncated_shard,
        _corrupt_data_pages,
    )
}
# The check each corruption is aimed at (the report line above belongs to it).
TARGET = {
    "span_wrong_codebook": "audio_span", "span_not_multiple_of_8": "audio_span", "empty_audio_span": "audio_span",
    "audio_char_in_transcript": "transcript", "unstripped_transcript": "transcript",
    "type2_row_missing": "pairs", "type2_with_another_transcript": "pairs", "type2_with_other_audio": "pairs",
    "duplicate_id_across_shards": "ids", "duplicate_id_in_a_shard": "ids", "id_suffix_does_not_match_format": "ids",
    "unknown_format": "columns", "n_audio_tokens_wrong": "columns", "n_utterances_wrong": "columns",
    "audio_seconds_implausible": "columns", "corpus_not_its_folder": "columns", "split_not_the_records": "columns",
    "metadata_not_json": "columns", "column_missing": "schema", "column_wrong_type": "schema", "null_id": "schema",
    "extra_column": "schema", "record_unbalanced": "record", "record_not_json": "record",
    "record_of_another_shard": "record", "record_url_with_credentials": "record",
    "shard_without_record": "files", "record_without_shard": "files", "partial_file_under_a_visible_name": "files",
    "truncated_shard": "schema", "corrupt_data_pages": "schema", "made_by_differs": "made_by",
    "made_by_missing": "made_by",
}


def test_each_corruption_is_caught_with_a_precise_line(tmp_path: Path, capsys):
    """Every corruption on a fresh copy: its exact report line, only the checks it can touch, exit status 1."""
    failures, rows = [], []
    for n, name in enumerate(sorted(CORRUPTIONS)):
        out = tmp_path / f"case-{n}"
        make_output_dir(out, components=COMPONENTS, seed=11)
        expected_line, allowed = CORRUPTIONS[name](out)
        counts, lines = run_validate(out, max_errors=0)
        target = TARGET.get(name) or ("structure" if "structure" in allowed else next(
            c for c in ("counts", "rejects") if c in allowed))
        pattern = re.compile(re.escape(str(out)) + "/" + expected_line)
        line = next((x for x in lines if pattern.match(x)), None)
        problems = []
        if counts.get(target, 0) < 1:
            problems.append(f"check {target} did not fire")
        if not set(counts) <= allowed:
            problems.append(f"unexpected checks {set(counts) - allowed}")
        if line is None:
            problems.append("the expected line is missing")
        rc = main([str(out), "--max-errors", "0"])
        summary = capsys.readouterr().out
        if rc != 1 or f": {sum(counts.values())} violations" not in summary:
            problems.append(f"exit {rc} / summary")
        if problems:
            failures.append(f"{name}: {problems}\n  " + "\n  ".join(lines))
        rows.append([name.replace("_", " "), target, ", ".join(sorted(counts)),
                     (line or "").replace(str(out) + "/", "")[:150]])
    publish("validate", f"{len(rows)} corruptions, each on a fresh copy of a clean synthetic output "
            "(tests/synthetic.py); `sodadata validate` exits 1 on each and prints the line shown.\n\n"
            + table(["corruption", "check aimed at", "checks that fired", "report line (shortened)"], rows))
    assert not failures, "\n".join(failures)


def test_max_errors_stops_the_report(out: Path, capsys):
    for shard in (SHARD, OTHER):
        rewrite(out, shard, lambda rows: [{**r, "n_audio_tokens": r["n_audio_tokens"] + 8} for r in rows])
    counts, lines = run_validate(out, max_errors=0)
    assert counts["columns"] == 12 and len(lines) == sum(counts.values())
    assert main([str(out), "--max-errors", "3"]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert sum(": n_audio_tokens is" in line for line in printed) == 3
    assert "stopped after 3 shown" in printed[-1]


# --- parsing details ----------------------------------------------------------------------------------------


def _utt(i: int, text: str, frames: int = 2) -> EncodedUtterance:
    codes = np.random.default_rng(i).integers(0, 2048, size=(8, frames))
    return EncodedUtterance(id=f"d_W{i}", doc_id="d", order=(i,), text=text, audio=codes_to_chars(codes),
                            seconds=frames * 0.08)


def test_parse_row_gives_back_the_pairs_of_both_formats():
    utts = [_utt(1, "Hello there."), _utt(2, "Bye.", frames=5)]
    for fmt in (TEXT_FIRST, AUDIO_FIRST):
        parsed = parse_row(format_speech_row(utts, fmt), fmt, strict=False)
        assert parsed.problems == ()
        assert [(u.text, u.audio) for u in parsed.utterances] == [(u.text, u.audio) for u in utts]


def test_a_large_shard_is_validated_in_bounded_memory(tmp_path: Path):
    """Rows of 1.7 MB (an 80-minute video each): validate's memory stays near a few rows, not the shard."""
    out = tmp_path / "big"
    paths = ShardPaths(out, "yodas2/en", "00000000")
    frames, docs = 60_000, 24  # 480,000 audio characters per row (80 min of audio), 48 rows
    rows = []
    with ShardWriter(paths.parquet, row_group_bytes=1) as w:  # one row per row group, as for real videos
        for d in range(docs):
            utts = [EncodedUtterance(id=f"v{d}-0", doc_id=f"v{d}", order=(0,), text="caption",
                                     audio=codes_to_chars(np.random.default_rng(d).integers(0, 2048, (8, frames))),
                                     seconds=frames * 0.08)]
            for fmt, suffix in ((TEXT_FIRST, "_type1"), (AUDIO_FIRST, "_type2")):
                row = dict(id=f"v{d}{suffix}", split="en000/00000000", text=format_speech_row(utts, fmt),
                           corpus="yodas2/en", format=fmt, n_utterances=1, audio_seconds=frames * 0.08,
                           n_audio_tokens=frames * 8, metadata=None)
                rows.append((len(row["text"]), frames * 8))
                w.write(row)
        w.commit()
    with ShardWriter(paths.rejects, schema=REJECT_SCHEMA) as w:
        w.commit()
    write_json_atomic(paths.record, {
        "record_version": 1, "component": "yodas2/en", "shard": "00000000", "split": "en000/00000000",
        "rows": 2 * docs, "documents": docs, "read": docs, "written": docs, "rejected": 0, "rejects": {},
        "audio_seconds": docs * frames * 0.08, "audio_tokens": 2 * docs * frames * 8,
        "text_chars": sum(n for n, _ in rows), "source": {"inputs": []}, "made_by": SPEECH_MADE_BY,
    })
    text_mb = sum(n for n, _ in rows) * 4 / 1e6  # as Python strings (4 bytes per character outside the BMP)
    # Peak resident memory above what the process held before the operation, sampled every 2 ms.
    probe = (
        "import sys, threading, time; from pathlib import Path\n"
        "import psutil, pyarrow.parquet as pq\n"
        "from sodadata.tools.validate import validate\n"
        "proc = psutil.Process(); base = proc.memory_info().rss; peak = [base]; done = threading.Event()\n"
        "def sample():\n"
        "    while not done.is_set():\n"
        "        peak[0] = max(peak[0], proc.memory_info().rss); time.sleep(0.002)\n"
        "threading.Thread(target=sample, daemon=True).start()\n"
        "if sys.argv[2] == 'validate':\n"
        "    assert validate(Path(sys.argv[1]), stream=open('/dev/null', 'w')).violations == 0\n"
        "else:\n"
        "    t = pq.read_table(Path(sys.argv[1]) / 'yodas2/en/00000000.parquet').column('text').to_pylist()\n"
        "done.set(); time.sleep(0.01)\n"
        "print((max(peak[0], proc.memory_info().rss) - base) / 2**20)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    grow = {}
    for mode in ("validate", "whole"):
        done = subprocess.run([sys.executable, "-c", probe, str(out), mode], capture_output=True, text=True, env=env,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        grow[mode] = float(done.stdout.strip())
    publish("validate-memory", table(
        ["shard", "text (as Python strings)", "validate: peak RSS growth", "reading the text column whole"],
        [[f"{2 * docs} rows of {frames * 8:,} audio characters (80 min of audio each), one row per row group",
          f"{text_mb:.0f} MB", f"+{grow['validate']:.0f} MiB", f"+{grow['whole']:.0f} MiB"]]))
    assert grow["validate"] < 64, grow  # a handful of rows' worth, whatever the shard's size
    assert grow["whole"] > 4 * grow["validate"], grow
