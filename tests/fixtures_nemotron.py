"""Nemotron-CC in its real Common Crawl layout (SPEC.md §5), with the real quirks, for the recipe tests.

``make_nemotron_source(root)`` writes a mirror of ``https://data.commoncrawl.org/``::

    root/contrib/Nemotron/Nemotron-CC/data-jsonl.paths.gz                  lists every file below, in no order
    root/contrib/Nemotron/Nemotron-CC/data-jsonl/quality=high/kind=actual/kind2=actual/CC-MAIN-*.jsonl.zstd
    root/…/quality=high/kind=synthetic/kind2=distill/…                     decoys with the kept files' names
    root/…/quality=medium-high/kind=actual/kind2=actual/…, quality=low/…    decoys
    root/…/quality=high/kind=actual/kind2=actual/CC-MAIN-2099-99-part-00000.jsonl.zstd   on disk, not listed

Quirks: a file of two zstd frames cut inside the UTF-8 bytes of a U+2028, a file of three frames (one skippable)
without a final newline; texts holding U+2028, U+2029, U+0085, ``\\r``, ``\\x0c``, ``\\x1c``…; unknown keys; a
broken line; bad lines of every kind. ``serve(root)`` serves the mirror over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import itertools
import json
import random
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zstandard

BASE = "contrib/Nemotron/Nemotron-CC"
PATHS_FILE = f"{BASE}/data-jsonl.paths.gz"
KEPT = "quality=high/kind=actual/kind2=actual"
DECOYS = ("quality=high/kind=synthetic/kind2=distill", "quality=medium-high/kind=actual/kind2=actual",
          "quality=low/kind=actual/kind2=actual")
STEMS = ("CC-MAIN-2013-20-part-00000", "CC-MAIN-2024-10-part-00000", "CC-MAIN-2024-10-part-00001")
UNLISTED = "CC-MAIN-2099-99-part-00000"
# Characters str.splitlines() (and so text-mode readers) would break a line on, besides \n.
LINE_BREAKERS = "\u2028\u2029\u0085\r\x0b\x0c\x1c\x1d\x1e"
WORDS = ("common crawl web text pages of many sites about science history music cooking travel and code "
         "naïve café 東京 😀").split()


@dataclass
class NemotronExpected:
    """What the recipe must make of the fixture (all for the kept partition only)."""

    stems: list[str] = field(default_factory=list)  # kept files in task order
    texts: dict[str, str] = field(default_factory=dict)  # written id -> text as in the source
    metadata: dict[str, dict] = field(default_factory=dict)  # written id -> keys other than text and id
    stem_of: dict[str, str] = field(default_factory=dict)  # written id -> stem
    rejects: dict[str, dict[str, str]] = field(default_factory=dict)  # stem -> reject id -> reason
    lines: dict[str, int] = field(default_factory=dict)  # stem -> lines in the file
    long_id: str = ""  # the record whose line is longer than the tests' --max-line-bytes
    decoy_ids: set[str] = field(default_factory=set)  # ids only in skipped files
    paths: dict[str, Path] = field(default_factory=dict)  # stem -> file


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def record_line(obj: dict) -> bytes:
    # ensure_ascii=False writes U+2028 & co. as raw UTF-8 bytes, as in the real files
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def compress_frames(data: bytes, cuts: list[int], skippable_after: int | None = None) -> bytes:
    """``data`` as consecutive zstd frames split at byte offsets ``cuts`` (anywhere, even inside a character)."""
    cctx = zstandard.ZstdCompressor(level=3)
    bounds = [0, *cuts, len(data)]
    frames = [cctx.compress(data[a:b]) for a, b in itertools.pairwise(bounds)]
    if skippable_after is not None:  # a skippable frame (magic 0x184D2A5?) between data frames is valid zstd
        frames.insert(skippable_after + 1, struct.pack("<II", 0x184D2A50, 7) + b"skipped")
    return b"".join(frames)


def make_nemotron_source(root: Path, seed: int = 0, records_per_file: int = 6, long_line_bytes: int = 300_000
                         ) -> NemotronExpected:
    rng = random.Random(seed)
    exp = NemotronExpected()
    data_dir = root / BASE / "data-jsonl"
    listed: list[str] = []
    uid = iter(range(1_000_000))

    def good(prefix: str, stem: str, **extra) -> dict:
        rid = f"<urn:uuid:{prefix}-{next(uid):06d}>"
        return {"warc_record_id": rid, "url": f"https://example.org/{stem}/{rid[10:-1]}",
                "text": sentence(rng, rng.randint(5, 40)), **extra}

    for i, stem in enumerate(STEMS):
        lines: list[bytes] = []
        rejects: dict[str, str] = {}

        def keep(obj: dict, stem: str = stem, lines: list[bytes] = lines) -> None:
            lines.append(record_line(obj))
            meta = {k: v for k, v in obj.items() if k not in ("text", "warc_record_id")}
            exp.texts[obj["warc_record_id"]] = obj["text"]
            exp.metadata[obj["warc_record_id"]] = meta
            exp.stem_of[obj["warc_record_id"]] = stem

        def bad(rid: str | None, reason: str, line: bytes, lines: list[bytes] = lines, rejects: dict = rejects,
                stem: str = stem) -> None:
            lines.append(line)
            rejects[rid or f"{stem}:{len(lines)}"] = reason  # a line without a readable id is named by number

        for _ in range(records_per_file):
            keep(good("hq", stem))
        if i == 0:
            # Texts full of characters that splitlines() would break on; unknown keys, nested values.
            keep(good("hq", stem, text="first\u2028second\u2029third\u0085fourth\r\nfifth\x0c\x0b\x1c\x1d\x1e end"))
            keep(good("hq", stem, language="en", new_field={"nested": [1, 2.5, None]}, score=0.97))
            keep(good("hq", stem, text="  keeps its own spacing and a\nnewline (escaped in JSON)  "))
            obj = good("broken", stem)
            line = record_line(obj)
            bad(obj["warc_record_id"], "invalid_json", line[: line.index(b'"text": "') + 15])  # cut mid-text
            latin1 = good("latin1", stem)
            bad(latin1["warc_record_id"], "invalid_json", record_line(latin1)[:-2] + b' caf\xe9"}')  # not UTF-8
            bad(None, "invalid_json", b'["an", "array"]')
            obj = good("hq", stem)
            del obj["text"]
            bad(obj["warc_record_id"], "missing_text", record_line(obj))
            obj = good("hq", stem, text=None)
            bad(obj["warc_record_id"], "missing_text", record_line(obj))
            obj = good("hq", stem)
            del obj["warc_record_id"]
            bad(None, "missing_id", record_line(obj))
            bad(None, "blank_line", b"   ")
            obj = good("hq", stem, text="")
            bad(obj["warc_record_id"], "empty_text", record_line(obj))
            obj = good("hq", stem, text=" \n\t ")
            bad(obj["warc_record_id"], "empty_text", record_line(obj))
            obj = good("hq", stem, text="a row marker <|end_of_text|> inside")
            bad(obj["warc_record_id"], "text_has_marker", record_line(obj))
            obj = good("hq", stem, text="a private-use icon \ue000 from a web font")
            bad(obj["warc_record_id"], "audio_range_character", record_line(obj))
            obj = good("hq", stem)
            line = record_line(obj).replace(b'"text": "', b'"text": "lone \\ud800 surrogate ', 1)
            bad(obj["warc_record_id"], "invalid_unicode", line)
            first_id = json.loads(lines[0])["warc_record_id"]
            bad(first_id, "duplicate_id", record_line(good("hq", stem, warc_record_id=first_id)))
            obj = good("hq", stem, text="x" * long_line_bytes)
            exp.long_id = obj["warc_record_id"]
            lines.append(record_line(obj))  # written or rejected depending on --max-line-bytes: tests decide
            keep(good("hq", stem))  # the line after the long one must be intact
        data = b"\n".join(lines) + (b"" if i == 1 else b"\n")  # file 1 has no final newline
        if i == 0:
            at = data.index("\u2028".encode()) + 1  # frame boundary inside the 3 UTF-8 bytes of U+2028
            blob = compress_frames(data, [at])
        elif i == 1:
            blob = compress_frames(data, [len(data) // 3, 2 * len(data) // 3], skippable_after=0)
        else:
            blob = compress_frames(data, [])
        rel = f"{BASE}/data-jsonl/{KEPT}/{stem}.jsonl.zstd"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
        listed.append(rel)
        exp.stems.append(stem)
        exp.paths[stem] = path
        exp.rejects[stem] = rejects
        exp.lines[stem] = len(lines)

    for partition in DECOYS:
        for stem in STEMS[:2]:  # same file names as kept files: only the partition tells them apart
            rel = f"{BASE}/data-jsonl/{partition}/{stem}.jsonl.zstd"
            objs = [good("decoy", stem) for _ in range(3)]
            exp.decoy_ids.update(o["warc_record_id"] for o in objs)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(compress_frames(b"\n".join(map(record_line, objs)) + b"\n", []))
            listed.append(rel)
    unlisted = [good("decoy", UNLISTED)]
    exp.decoy_ids.add(unlisted[0]["warc_record_id"])
    (data_dir / KEPT / f"{UNLISTED}.jsonl.zstd").write_bytes(compress_frames(record_line(unlisted[0]) + b"\n", []))

    rng.shuffle(listed)
    write_paths_file(root, listed)
    return exp


def write_paths_file(root: Path, entries: list[str]) -> Path:
    path = root / PATHS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(("\n".join(entries) + "\n").encode(), mtime=0))
    return path


@functools.cache
def _word_corpus(seed: int, size: int = 16_000_000) -> str:
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    vocab = ["".join(map(chr, rng.choice(letters, size=rng.integers(2, 10)))) for _ in range(20_000)]
    return " ".join(vocab[i] for i in rng.integers(0, len(vocab), size=size // 6))


def write_large_file(path: Path, decompressed_bytes: int, seed: int = 0, text_bytes: int = 8000) -> int:
    """A ``.jsonl.zstd`` of about ``decompressed_bytes``, streamed to disk (never whole in memory); returns records.

    Records look like the real ones: unique ids, ~``text_bytes`` of text cut from a 16 MB corpus of random words
    (so it compresses about as web text does, ~3x, not 20x as repeated texts would); frames of ~8 MB, a
    concatenation of independently compressed pieces like the real multi-frame files.
    """
    corpus = _word_corpus(seed)
    starts = np.random.default_rng(seed).integers(0, len(corpus) - text_bytes, size=4096)
    cctx = zstandard.ZstdCompressor(level=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = records = 0
    with open(path, "wb") as f:
        while written < decompressed_bytes:
            piece = []
            size = 0
            while size < 8_000_000 and written + size < decompressed_bytes:
                start = int(starts[records % len(starts)]) + records % 997  # no two texts alike
                text = json.dumps(corpus[start : start + text_bytes])
                line = (f'{{"warc_record_id": "<urn:uuid:{records:012d}>", "url": "https://example.org/{records}", '
                        f'"text": {text}, "language": "en"}}\n').encode()
                piece.append(line)
                size += len(line)
                records += 1
            f.write(cctx.compress(b"".join(piece)))
            written += size
    return records


@contextlib.contextmanager
def serve(root: Path, cut: dict[str, int] | None = None) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1 (a free port) while the block runs; yields the base URL.

    ``cut`` maps a URL path (``/contrib/…``) to a byte count: that file's body stops there, after a
    Content-Length promising the whole file, as when a connection drops mid-transfer.
    """
    cut = dict(cut or {})

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def copyfile(self, source, outputfile) -> None:
            if self.path in cut:
                outputfile.write(source.read(cut[self.path]))
                self.close_connection = True
                return
            super().copyfile(source, outputfile)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, name="fixture-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
