import numpy as np
import pyarrow.parquet as pq
import pytest

from sodadata import codes_to_chars
from sodadata.write.shards import ROW_SCHEMA, ShardWriter


def _row(i: int, text: str) -> dict:
    return dict(id=f"r{i}", split="s", text=text, corpus="c/x", format="text_first", n_utterances=1,
                audio_seconds=1.0, n_audio_tokens=len(text), metadata=None)


def test_row_groups_are_bounded_by_utf8_bytes_not_characters(tmp_path):
    text = codes_to_chars(np.random.default_rng(0).integers(0, 2048, (8, 5000)))  # 40,000 chars, ~140 kB UTF-8
    nbytes = len(text.encode("utf-8"))
    assert nbytes > 3 * len(text)
    target = 500_000
    with ShardWriter(tmp_path / "x.parquet", row_group_bytes=target) as w:
        for i in range(20):
            w.write(_row(i, text))
        w.commit()
    pf = pq.ParquetFile(tmp_path / "x.parquet")
    sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
    assert sum(sizes) == 20
    # a group closes once it holds >= target bytes: at most ceil(target / row bytes) rows
    assert max(sizes) == -(-target // nbytes) == 4
    assert pf.read().column("text").to_pylist()[7] == text


def test_commit_is_atomic_and_abort_leaves_nothing(tmp_path):
    with ShardWriter(tmp_path / "a.parquet") as w:
        w.write(_row(0, "hello"))
        assert not (tmp_path / "a.parquet").exists()
        assert len(list(tmp_path.glob(".a.parquet.tmp-*"))) == 1
        w.commit()
    assert (tmp_path / "a.parquet").exists() and not list(tmp_path.glob(".*tmp-*"))
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "b.parquet") as w:
            w.write(_row(0, "x"))
            raise RuntimeError("task failed")
    assert not list(tmp_path.glob("b.parquet")) and not list(tmp_path.glob(".*tmp-*"))


def test_files_have_the_schema_zstd_and_a_page_index(tmp_path):
    with ShardWriter(tmp_path / "c.parquet") as w:
        w.write(_row(0, "hello"))
        w.commit()
    pf = pq.ParquetFile(tmp_path / "c.parquet")
    assert pf.schema_arrow.equals(ROW_SCHEMA)
    ids, text = pf.metadata.row_group(0).column(0), pf.metadata.row_group(0).column(2)
    assert text.compression == "ZSTD"
    assert ids.has_offset_index and ids.has_column_index  # page index with min/max: fast id lookups
    assert text.has_offset_index and not text.has_column_index  # no statistics over MB-long texts
