"""MLS English (``parler-tts/mls_eng``) Parquet files in the real layout (SPEC.md §5), for tests/test_mls.py.

    <root>/data/train-0000N-of-00002.parquet, <root>/data/dev-00000-of-00001.parquet
    columns: audio {bytes, path} (16 kHz FLAC), original_path, begin_time, end_time, transcript, audio_duration,
             speaker_id, book_id

The quirks of the real data: two recordings' segments split across the two files, out of order; a gap > 0.2 s
inside a recording (two documents) and one of exactly 0.2 s (one document); two recordings of one speaker and
book (and a segment id they share). Plus faults: undecodable audio, null metadata, empty and reversed segments,
a row given twice.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fixtures import encode_audio, speechlike

SR = 16_000
SCHEMA = pa.schema([
    ("audio", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
    ("original_path", pa.string()),
    ("begin_time", pa.float64()),
    ("end_time", pa.float64()),
    ("transcript", pa.string()),
    ("audio_duration", pa.float64()),
    ("speaker_id", pa.string()),
    ("book_id", pa.string()),
])


def cs(x: float) -> int:
    return math.floor(x * 100 + 0.5)


def seg_id(spk: str, book: str, begin: float, end: float) -> str:
    return f"{spk}-{book}-{cs(begin):08d}-{cs(end):08d}"


def doc_id(spk: str, book: str, path: str, begin: float) -> str:
    return f"{spk}-{book}-{hashlib.sha1(path.encode()).hexdigest()[:8]}-{cs(begin):08d}"


@dataclass
class MLSExpected:
    documents: dict[str, list[str]] = field(default_factory=dict)  # doc id -> written segment ids, by begin_time
    transcripts: dict[str, str] = field(default_factory=dict)  # segment id -> transcript
    rejects: dict[str, str] = field(default_factory=dict)  # id -> reason
    waves: dict[str, np.ndarray] = field(default_factory=dict)  # segment id -> 16 kHz audio before FLAC
    read: int = 0  # rows of the train split


def _row(spk, book, path, begin, end, text, audio: bytes | None, seed: int) -> dict:
    return {"audio": {"bytes": audio, "path": f"{spk}_{book}_{seed:06d}.flac"}, "original_path": path,
            "begin_time": begin, "end_time": end, "transcript": text, "audio_duration": None if begin is None else
            round(end - begin, 3), "speaker_id": spk, "book_id": book}


def make_mls_source(root: Path, seed: int = 0, row_group_size: int = 3) -> MLSExpected:
    exp = MLSExpected()
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    counter = [0]

    def segment(spk, book, path, begin, end, text, doc=None, audio=None, reason=None, sid=None):
        counter[0] += 1
        n = seed * 1000 + counter[0]
        wave = speechlike(end - begin, n, sr=SR) if audio is None and end > begin else None
        data = audio if audio is not None else (encode_audio(wave, SR, "FLAC") if wave is not None else b"")
        rows.append(_row(spk, book, path, begin, end, text, data, n))
        sid = sid or (seg_id(spk, book, begin, end) if None not in (spk, book, begin, end) else None)
        if doc is not None:
            exp.documents.setdefault(doc, []).append(sid)
            exp.transcripts[sid] = text
            exp.waves[sid] = wave
        if reason is not None:
            exp.rejects[sid] = reason

    a = ("4800", "10003", "http://www.archive.org/download/book_a/chapter_01_64kb.mp3")
    b = ("4800", "10003", "http://www.archive.org/download/book_a/chapter_02_64kb.mp3")
    c = ("123", "456", "http://www.archive.org/download/other/part_3.mp3")
    d = ("77", "88", "http://www.archive.org/download/faulty/track_1.mp3")
    a1, a2 = doc_id(*a, 0.5), doc_id(*a, 5.0)
    hb = hashlib.sha1(b[2].encode()).hexdigest()[:8]
    ha = hashlib.sha1(a[2].encode()).hexdigest()[:8]
    # recording a: a gap of 0.6 s splits it; gaps of 0.1, 0 and exactly 0.2 s do not
    segment(*a, 0.5, 1.7, "the first words of chapter one", a1, sid=f"{seg_id(*a[:2], 0.5, 1.7)}-{ha}")
    segment(*a, 1.8, 3.1, "go on here", a1)
    segment(*a, 3.2, 4.4, "and here", a1)
    segment(*a, 5.0, 6.2, "after a pause", a2)
    segment(*a, 6.2, 7.4, "no gap at all", a2)
    segment(*a, 7.6, 8.9, "a gap of exactly a fifth of a second", a2)
    # recording b, same speaker and book: its first segment has the same times as a's first (same base id)
    b1 = doc_id(*b, 0.5)
    segment(*b, 0.5, 1.7, "chapter two begins", b1, sid=f"{seg_id(*b[:2], 0.5, 1.7)}-{hb}")
    segment(*b, 1.75, 3.0, "chapter two goes on", b1)
    # recording c: a row given twice (the second read is a duplicate_id)
    c1 = doc_id(*c, 1.0)
    segment(*c, 1.0, 2.3, "another book", c1)
    segment(*c, 2.4, 3.6, "another reader", c1)
    # recording d: undecodable audio, then a fine segment
    d1 = doc_id(*d, 0.2)
    segment(*d, 0.2, 1.4, "broken audio", audio=b"fLaC" + bytes(rng.integers(0, 256, 500, dtype=np.uint8)),
            reason="undecodable_audio")
    exp.documents.setdefault(d1, [])
    segment(*d, 1.5, 2.6, "fine audio", d1)
    # rows that cannot be placed: null path, empty segment, reversed segment
    segment(d[0], d[1], None, 3.0, 4.0, "no path", reason="missing_metadata")
    segment(*d, 5.0, 5.0, "empty", reason="empty_segment")
    segment(*d, 6.5, 6.0, "reversed", reason="start_after_end")
    dup = dict(rows[8])  # c's first segment again
    exp.rejects[seg_id(*c[:2], 1.0, 2.3)] = "duplicate_id"

    # two files, rows shuffled across them: every recording has segments in both, out of order
    order = rng.permutation(len(rows))
    file0 = [rows[i] for i in order[: len(rows) // 2]]
    file1 = [rows[i] for i in order[len(rows) // 2:]] + [dup]  # the copy comes after the original in file order
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    for n, part in enumerate((file0, file1)):
        pq.write_table(pa.Table.from_pylist(part, schema=SCHEMA), data / f"train-{n:05d}-of-00002.parquet",
                       row_group_size=row_group_size)
    exp.read = len(rows) + 1

    dev = ("9", "10", "http://www.archive.org/download/dev/dev.mp3")
    dev_rows = [_row(*dev, 0.0, 1.2, "dev one", encode_audio(speechlike(1.2, 900, sr=SR), SR, "FLAC"), 900),
                _row(*dev, 1.3, 2.1, "dev two", encode_audio(speechlike(0.8, 901, sr=SR), SR, "FLAC"), 901)]
    pq.write_table(pa.Table.from_pylist(dev_rows, schema=SCHEMA), data / "dev-00000-of-00001.parquet")
    return exp


def corrupt_column(path: Path, prefix: str) -> int:
    """Overwrite the data of every column chunk whose path starts with ``prefix`` with garbage, in place.

    The other columns stay readable: a reader that touches only them succeeds, one that reads ``prefix`` fails.
    Returns the number of bytes overwritten.
    """
    meta = pq.ParquetFile(path).metadata
    spans = []
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        for j in range(rg.num_columns):
            col = rg.column(j)
            if col.path_in_schema.startswith(prefix):
                start = col.dictionary_page_offset or col.data_page_offset
                spans.append((start, col.total_compressed_size))
    with open(path, "r+b") as f:
        for start, size in spans:
            f.seek(start)
            f.write(b"\xff" * size)
    return sum(size for _, size in spans)


def with_raw_strings(table: pa.Table, column: str, raw: dict[int, bytes]) -> pa.Table:
    """``table`` with some values of a string column replaced by raw bytes, unchecked (not UTF-8, say).

    Parquet does not validate strings; a writer other than Arrow's Python API can store any bytes there.
    """
    values = [v.encode("utf-8") if v is not None else None for v in table.column(column).to_pylist()]
    for row, data in raw.items():
        values[row] = data
    offsets = np.cumsum([0] + [len(v or b"") for v in values]).astype(np.int32)
    validity = pa.array([v is not None for v in values]).buffers()[1]
    array = pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets.tobytes()),
                                        pa.py_buffer(b"".join(v or b"" for v in values)), validity)
    return table.set_column(table.schema.get_field_index(column), column, array)
