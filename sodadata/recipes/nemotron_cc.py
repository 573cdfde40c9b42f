"""Nemotron-CC v1 (hosted by Common Crawl) -> component ``nemotron-cc/hq-actual`` (text only, no codec).

Layout, relative to ``https://data.commoncrawl.org/`` (SPEC.md §5; catalog: ``catalogs/nemotron_cc.yaml``)::

    contrib/Nemotron/Nemotron-CC/data-jsonl.paths.gz        gzip text, one path per line (relative to the base):
                                                            every file of every partition
    contrib/Nemotron/Nemotron-CC/data-jsonl/quality=high/kind=actual/kind2=actual/CC-MAIN-YYYY-WW-part-NNNNN.jsonl.zstd
    contrib/Nemotron/Nemotron-CC/data-jsonl/quality=high/kind=synthetic/kind2=distill/…     other partitions: skipped
    contrib/Nemotron/Nemotron-CC/data-jsonl/quality=medium/kind=actual/kind2=actual/…
      each .jsonl.zstd: one or more concatenated zstd frames (~350 MB compressed, ~250k records)
      one JSON object per line: {"warc_record_id": …, "url": …, "text": …, …}; texts contain U+2028, U+0085 …

One task per listed file of the chosen partition, one output shard per file
(``<out>/nemotron-cc/hq-actual/CC-MAIN-2024-10-part-00000.parquet``, split ``CC-MAIN-2024-10-part-00000``). The
paths list is the source of truth: a local mirror is a directory with the same relative paths (the list
included); its SHA-256 is recorded as the shard's ``revision`` and can be pinned with ``--paths-sha256``.

Each file is streamed: compressed blocks -> ``zstandard``'s stream reader across frames (the frame headers
followed on the way in, to catch a file cut inside a frame) -> a splitter on ``b"\\n"`` only (``str.splitlines``
and text-mode files would also split on U+2028, U+0085, ``\\r`` …, which occur inside texts). Neither the
compressed nor the decompressed file is ever held whole; a line longer than ``--max-line-bytes`` is rejected
(``line_too_long``) while it is skipped, without being held either.

Each line becomes one row ``<|begin_of_text|>{text}<|end_of_text|>`` with id ``warc_record_id``; every other key,
known or not, goes to the row's ``metadata`` JSON. Lines that cannot be a row are rejected with a reason:
``blank_line``, ``invalid_json`` (also: not UTF-8, not an object), ``missing_id``, ``missing_text``,
``line_too_long``. The pipeline applies the text rule of SPEC §2 (``sodadata.write.document.apply_text_rule``, the same
as for transcripts): audio-range characters folded by NFKC (``！`` -> ``!``, ``ﬁ`` -> ``fi``), U+FEFF and variation
selectors dropped; and it adds the rejects ``invalid_unicode`` (a lone surrogate escape in the id, text or
metadata, which Parquet cannot store), ``audio_range_character``, ``empty_text``, ``duplicate_id``,
``text_has_marker``.

A file that ends inside a zstd frame (an interrupted download, a cut HTTP stream) or is not zstd fails as a
whole (``ShardError``): how many records were lost after the cut is unknowable, so a partial shard cannot be
counted honestly. The shard is retried (a fresh download), then reported; nothing of it is committed.

Examples: the first runs offline on the bundled sample (from the repository root); the others read the real
corpus from Common Crawl (network)::

    python -m sodadata.recipes.nemotron_cc --source sample/nemotron-cc --out out/sample
    python -m sodadata.recipes.nemotron_cc --quality high --kind actual --out data/
    python -m sodadata.recipes.nemotron_cc --quality high --kind actual --limit-shards 2 --out data/
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import json
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO

import zstandard

from sodadata.read import sources
from sodadata.read.catalog import load_catalog
from sodadata.read.completeness import catalog_scope
from sodadata.read.recipe import Completeness, Recipe, Reject, ShardError, ShardTask, SourceFile, TextRecord
from sodadata.run import cli_recipe

log = logging.getLogger("sodadata.recipes.nemotron_cc")  # not __name__: "__main__" under python -m

CATALOG = "nemotron_cc"
SUFFIX = ".jsonl.zstd"
DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024
# Compressed bytes read from the source at once, and decompressed bytes returned at once (one zstd block's worth:
# what is held of the decompressed stream, whatever the compression ratio).
READ_BYTES = 1024 * 1024
CHUNK_BYTES = 128 * 1024
_HEAD_BYTES = 4096  # kept of an over-long line, to name it in its reject
_PARTITION_VALUE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ID_IN_LINE_RE = re.compile(rb'"warc_record_id"\s*:\s*"([^"\\]{1,500})"')


@dataclass(frozen=True)
class NemotronCCRecipe(Recipe):
    quality: str = "high"
    partition_kind: str = "actual"  # `kind=` in the path (named so because Recipe.kind is "text"/"speech")
    partition_kind2: str = "actual"  # `kind2=` in the path
    source: str | None = None  # base the listed paths are relative to: URL or local mirror (default: catalog)
    paths_file: str | None = None  # the list (default: <source>/<catalog paths_file>)
    paths_sha256: str | None = None  # expected SHA-256 of the list as stored (pins the file set)
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES

    name = "nemotron-cc"
    kind = "text"
    unit = "record"

    def __post_init__(self) -> None:
        for flag, value in (("--quality", self.quality), ("--kind", self.partition_kind), ("--kind2", self.partition_kind2)):
            if not _PARTITION_VALUE_RE.match(value):
                raise ValueError(f"{flag} {value!r}: expected a partition value such as 'high', 'actual', 'distill'")
        if self.max_line_bytes < 1:
            raise ValueError("--max-line-bytes must be positive")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--quality", default="high", help="partition quality=… (default high)")
        parser.add_argument("--kind", dest="partition_kind", default="actual", metavar="KIND", help="partition kind=… (default actual)")
        parser.add_argument(
            "--kind2", dest="partition_kind2", default=None, metavar="KIND2",
            help="partition kind2=… (default: 'actual' for --kind actual; required for --kind synthetic, e.g. distill)",
        )
        parser.add_argument(
            "--source", default=None,
            help="base that the listed paths are relative to: an http(s) URL, a local mirror directory with the "
            "same relative paths, or hf:// (default: https://data.commoncrawl.org/)",
        )
        parser.add_argument(
            "--paths-file", default=None,
            help="the file list (gzip or plain text), local or URL (default: "
            "<source>/contrib/Nemotron/Nemotron-CC/data-jsonl.paths.gz)",
        )
        parser.add_argument("--paths-sha256", default=None, metavar="HEX", help="fail unless the list has this SHA-256")
        parser.add_argument(
            "--max-line-bytes", type=int, default=DEFAULT_MAX_LINE_BYTES, metavar="N",
            help=f"reject longer JSON lines as line_too_long (default {DEFAULT_MAX_LINE_BYTES})",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> NemotronCCRecipe:
        kind2 = args.partition_kind2
        if kind2 is None:
            if args.partition_kind != "actual":
                raise ValueError(f"--kind {args.partition_kind} needs --kind2 (e.g. distill, diverse_qa_pairs)")
            kind2 = "actual"
        return cls(
            quality=args.quality, partition_kind=args.partition_kind, partition_kind2=kind2, source=args.source,
            paths_file=args.paths_file, paths_sha256=args.paths_sha256, max_line_bytes=args.max_line_bytes,
        )

    @property
    def partition(self) -> str:
        return f"quality={self.quality}/kind={self.partition_kind}/kind2={self.partition_kind2}"

    @property
    def component(self) -> str:
        """``nemotron-cc/hq-actual`` for the SODA partition; other partitions get their own component."""
        quality = "hq" if self.quality == "high" else self.quality
        kinds = self.partition_kind if self.partition_kind2 == self.partition_kind else (
            f"{self.partition_kind}-{self.partition_kind2}"
        )
        return f"nemotron-cc/{quality}-{kinds}"

    def _locations(self) -> tuple[str, str]:
        catalog = load_catalog(CATALOG)
        base = self.source or catalog["base_url"]
        return base, self.paths_file or sources.join(base, catalog["paths_file"])

    def tasks(self) -> list[ShardTask]:
        catalog = load_catalog(CATALOG)
        base, list_url = self._locations()
        try:
            raw = _read_all(list_url)
        except FileNotFoundError:
            if self.paths_file or sources.is_http(base):
                raise
            return self._tasks_from_directory(base, catalog)
        digest = hashlib.sha256(raw).hexdigest()
        pinned = self.paths_sha256 or catalog.get("paths_sha256")
        if pinned and digest != pinned.lower():
            raise ValueError(
                f"the file list {list_url} has SHA-256 {digest}, not the pinned {pinned}: the list changed; check it "
                "and pass --paths-sha256 with the new digest"
            )
        try:
            text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise ValueError(f"{list_url} is not a gzip or UTF-8 list of paths: {exc}") from None
        entries = [line.strip() for line in text.split("\n") if line.strip()]
        kept, partitions, other = select_partition(entries, catalog["data_prefix"], self.partition)
        if not kept:
            seen = ", ".join(f"{p} ({n})" for p, n in sorted(partitions.items())) or "none"
            raise RuntimeError(
                f"{list_url} lists no {SUFFIX} file of partition {self.partition}; partitions listed: {seen}"
            )
        log.info(
            "%s: %d entries, %d files of %s kept, %d of other partitions skipped%s", list_url, len(entries), len(kept),
            self.partition, sum(partitions.values()) - len(kept), f", {other} other lines ignored" if other else "",
        )
        tasks = []
        for stem, rel in kept:
            url = sources.join(base, rel)
            tasks.append(self._task(stem, SourceFile(url=url, size=_local_size(url)), f"sha256:{digest}"))
        return tasks

    def _tasks_from_directory(self, base: str, catalog: dict) -> list[ShardTask]:
        """A local mirror without the list: read the partition's directory (logged: the set is the mirror's)."""
        folder = sources.join(base, catalog["data_prefix"], self.partition)
        log.warning("no %s in %s: listing %s instead", PurePosixPath(catalog["paths_file"]).name, base, folder)
        files = sources.list_files(folder, f"*{SUFFIX}")
        return [self._task(PurePosixPath(f.url).name.removesuffix(SUFFIX), f, None) for f in files]

    def _task(self, stem: str, src: SourceFile, revision: str | None) -> ShardTask:
        return ShardTask(component=self.component, stem=stem, split=stem, inputs=(src,), revision=revision)

    def completeness(self, tasks: list[ShardTask], full: bool) -> Completeness:
        """Every listed file is in a local mirror (a web source is not asked file by file: 2,755 requests); a full
        run of the catalogued partition has as many files as the catalog lists, unless the source is a declared
        sample."""
        catalog = load_catalog(CATALOG)
        missing = [
            f"file {t.inputs[0].url}: listed, not in the mirror" for t in tasks
            if t.inputs[0].size is None and not (sources.is_http(t.inputs[0].url) or sources.is_hf(t.inputs[0].url))
        ]
        expected = catalog.get("size", {}).get("shards") if self.component == catalog["component"] else None
        origin = catalog_scope(self.source, "nemotron-cc", full, "the file list only")
        if not origin:
            origin = "the file list and catalogs/nemotron_cc.yaml"
            if expected is not None and len(tasks) < expected:
                missing.append(f"partition {self.partition}: {len(tasks)} of the {expected} files "
                               "catalogs/nemotron_cc.yaml lists")
        return Completeness(missing, origin)

    def read(self, task: ShardTask) -> Iterator[TextRecord | Reject]:
        (src,) = task.inputs
        faults = (zstandard.ZstdError, OSError, EOFError, http.client.HTTPException)
        with sources.open_shard_source(src.url, faults) as fileobj:
            counted = _CountingReader(fileobj)
            yield from read_records(counted, task.stem, self.max_line_bytes)
            # A stream cut exactly between two frames decompresses cleanly: only its length tells.
            expected = _expected_size(fileobj, src)
            if expected is not None and counted.bytes_read != expected:
                why = "cut short" if counted.bytes_read < expected else "the file changed since it was listed"
                raise ShardError(f"read {counted.bytes_read} compressed bytes, expected {expected}: {why}")

    def row_params(self) -> dict:
        return {"max_line_bytes": self.max_line_bytes}  # longer lines are rejected

    def describe(self) -> dict:
        catalog = load_catalog(CATALOG)
        base, list_url = self._locations()
        return {
            "recipe": self.name, "component": self.component, "partition": self.partition, "source": base,
            "paths_file": list_url, "paths_sha256": self.paths_sha256 or catalog.get("paths_sha256"),
            "max_line_bytes": self.max_line_bytes, "licence": catalog["licence"],
        }


def select_partition(entries: Iterable[str], data_prefix: str, partition: str) -> tuple[list[tuple[str, str]], Counter, int]:
    """(sorted ``(stem, path)`` of the partition's files, files per partition listed, count of other lines).

    Only ``<data_prefix>/quality=…/kind=…/kind2=…/<name>.jsonl.zstd`` counts as a data file; matching the whole
    path (not a substring) keeps ``quality=medium-high`` out of ``quality=high`` and paths from escaping a mirror.
    """
    pattern = re.compile(
        rf"^{re.escape(data_prefix.strip('/'))}/(?P<part>quality=[^/]+/kind=[^/]+/kind2=[^/]+)/"
        rf"(?P<stem>[A-Za-z0-9][A-Za-z0-9._-]*){re.escape(SUFFIX)}$"
    )
    partitions: Counter = Counter()
    kept: dict[str, str] = {}
    other = 0
    for entry in entries:
        m = pattern.match(entry.lstrip("/"))
        if not m:
            other += 1
            continue
        partitions[m["part"]] += 1
        if m["part"] == partition:
            if m["stem"] in kept:
                log.warning("%s is listed twice; read once", entry)
            kept[m["stem"]] = entry.lstrip("/")
    return sorted(kept.items()), partitions, other


class _CountingReader:
    """Counts the bytes read through it."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self.fileobj = fileobj
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self.fileobj.read(size)
        self.bytes_read += len(data)
        return data


def _expected_size(fileobj, src: SourceFile) -> int | None:
    """The size the file should have: HTTP Content-Length, else the size listed when the tasks were made."""
    headers = getattr(fileobj, "headers", None)
    if headers is not None and not headers.get("Content-Encoding"):
        length = headers.get("Content-Length")
        return int(length) if length and length.isdigit() else None
    return src.size


def _read_all(url: str) -> bytes:
    """The whole file list (small: ~31k lines, gzipped). Errors come out as one line a user can act on."""
    try:
        with sources.open_binary(url) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as exc:  # HTTP errors arrive as HTTPError / URLError, both OSErrors
        if getattr(exc, "code", None) == 404:
            raise FileNotFoundError(f"{url} does not exist (HTTP 404)") from None
        raise RuntimeError(f"cannot read the file list {url}: {type(exc).__name__}: {exc}") from exc


def _local_size(url: str) -> int | None:
    if sources.is_http(url) or sources.is_hf(url):
        return None  # a HEAD per file would cost 2,755 requests on the driver; the record keeps the URL
    try:
        return os.stat(url).st_size
    except OSError:
        return None  # missing from the mirror: the task fails with a clear error when it runs


# --- streaming a .jsonl.zstd ---------------------------------------------------------------------------------


def decompressed_chunks(fileobj: BinaryIO, read_bytes: int = READ_BYTES, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The decompressed bytes of a file of one or more zstd frames, at most ``chunk_bytes`` at a time.

    ``zstandard``'s stream reader decompresses across frames (skippable ones too) and returns at most what it is
    asked for, whatever the compression ratio: a zstd block of 4 bytes expands to 128 KiB, so 32 KiB of input can
    be a GiB. It says nothing when the input ends inside a frame (it returns what it has), so the compressed bytes
    reach it through a :class:`ZstdFrameEnds`: input that ends inside a frame is a truncated file (``ShardError``).
    bench/zstd_frames.py measures the readers.
    """
    frames = ZstdFrameEnds(fileobj)
    reader = zstandard.ZstdDecompressor().stream_reader(
        frames, read_size=read_bytes, read_across_frames=True, closefd=False
    )
    try:
        while chunk := reader.read(chunk_bytes):
            yield chunk
    except zstandard.ZstdError as exc:
        raise ShardError(f"not valid zstd near compressed byte {frames.bytes_read}: {exc}") from exc
    frames.check_end()


_ZSTD_MAGIC = 0xFD2FB528
_FCS_BYTES = (0, 2, 4, 8)  # by Frame_Content_Size_flag; flag 0 means 1 byte when Single_Segment_flag is set
_DICT_ID_BYTES = (0, 1, 2, 4)


class ZstdFrameEnds:
    """A read-only stream over zstd data that follows its frame and block headers (RFC 8878) as they pass, to tell
    a stream that ends at the end of a frame from one cut inside a frame (:meth:`check_end`).

    Headers only: block bodies are skipped unread. Anything that does not parse (not zstd, a reserved block type)
    stops the walk; the decompressor rejects it.
    """

    def __init__(self, fileobj: BinaryIO) -> None:
        self.fileobj = fileobj
        self.bytes_read = 0
        self.frames = 0  # frames complete, skippable ones included
        self._state = "magic"
        self._need = 4  # header bytes to collect in this state
        self._hdr = bytearray()
        self._skip = 0  # bytes to pass before collecting (a block body, header fields not needed, a checksum)
        self._checksum = False

    def read(self, size: int = -1) -> bytes:
        data = self.fileobj.read(size)
        self.bytes_read += len(data)
        self._walk(memoryview(data))
        return data

    def check_end(self) -> None:
        """Raise ``ShardError`` unless the data read so far ends at the end of a frame."""
        if self._state == "opaque":
            raise ShardError(f"not valid zstd: no frame or block header where one was due, before byte {self.bytes_read}")
        if self._state != "magic" or self._hdr:
            raise ShardError(
                f"truncated: the stream ends inside zstd frame {self.frames + 1} after {self.bytes_read} compressed bytes"
            )
        if self.frames == 0:
            raise ShardError("empty file: no zstd frame")

    def _walk(self, data: memoryview) -> None:
        pos, n = 0, len(data)
        # Each state first passes `_skip` bytes, then collects `_need` header bytes, then moves on; a state that
        # needs neither (an empty block body) moves on at once, even at the end of the data.
        while self._state != "opaque":
            if self._skip:
                take = min(self._skip, n - pos)
                pos += take
                self._skip -= take
                if self._skip:
                    return
            if len(self._hdr) < self._need:
                take = min(self._need - len(self._hdr), n - pos)
                self._hdr += data[pos : pos + take]
                pos += take
                if len(self._hdr) < self._need:
                    return
            self._advance()

    def _advance(self) -> None:
        """Move past a complete header or body."""
        hdr, state = bytes(self._hdr), self._state
        self._hdr.clear()
        self._need = 0
        if state == "magic":
            magic = int.from_bytes(hdr, "little")
            if magic == _ZSTD_MAGIC:
                self._state, self._need = "descriptor", 1
            elif magic >> 4 == 0x184D2A5:  # skippable frame
                self._state, self._need = "skippable", 4
            else:
                self._state = "opaque"
        elif state == "descriptor":
            d = hdr[0]
            single = (d >> 5) & 1
            self._checksum = bool((d >> 2) & 1)
            fcs = _FCS_BYTES[d >> 6] or single
            self._state, self._need = "block", 3
            self._skip = (0 if single else 1) + _DICT_ID_BYTES[d & 3] + fcs  # window descriptor, dict id, size
        elif state == "skippable":
            self._state, self._skip = "frame_end", int.from_bytes(hdr, "little")
        elif state == "block":
            h = int.from_bytes(hdr, "little")
            last, btype, size = h & 1, (h >> 1) & 3, h >> 3
            if btype == 3:  # reserved
                self._state = "opaque"
                return
            self._skip = 1 if btype == 1 else size  # an RLE block's body is one byte
            self._state = "last_block_body" if last else "block_body"
        elif state == "block_body":
            self._state, self._need = "block", 3
        elif state == "last_block_body":
            self._state, self._skip = "frame_end", 4 if self._checksum else 0
        elif state == "frame_end":
            self.frames += 1
            self._state, self._need = "magic", 4


@dataclass(frozen=True)
class LongLine:
    """A line longer than the limit: its size and first bytes only."""

    size: int
    head: bytes


def split_lines(chunks: Iterable[bytes], max_line_bytes: int) -> Iterator[bytes | LongLine]:
    """Lines of a byte stream, split on ``b"\\n"`` only (the newline not included; a last line may lack it).

    At most ``max_line_bytes`` of one line are held; a longer line is dropped as it streams past and reported as
    a ``LongLine``.
    """
    buf = bytearray()
    long_size = -1  # >= 0 while skipping an over-long line
    head = b""
    for chunk in chunks:
        start = 0
        n = len(chunk)
        while start <= n:
            nl = chunk.find(b"\n", start)
            end = n if nl < 0 else nl
            if long_size >= 0:
                long_size += end - start
            elif len(buf) + end - start > max_line_bytes:
                long_size = len(buf) + end - start
                head = (bytes(buf[:_HEAD_BYTES]) + chunk[start : min(end, start + _HEAD_BYTES)])[:_HEAD_BYTES]
                buf = bytearray()
            elif nl >= 0 and not buf:
                yield chunk[start:end]  # the common case: a whole line inside one chunk, one copy
                start = nl + 1
                continue
            else:
                buf += chunk[start:end]
            if nl < 0:
                break
            if long_size >= 0:
                yield LongLine(long_size, head)
                long_size = -1
            else:
                yield bytes(buf)
                buf.clear()
            start = nl + 1
    if long_size >= 0:
        yield LongLine(long_size, head)
    elif buf:
        yield bytes(buf)


def read_records(fileobj: BinaryIO, stem: str, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[TextRecord | Reject]:
    """One ``TextRecord`` or ``Reject`` per line of a ``.jsonl.zstd`` file."""
    lineno = 0
    for lineno, line in enumerate(split_lines(decompressed_chunks(fileobj), max_line_bytes), start=1):
        if isinstance(line, LongLine):
            yield Reject(
                _guess_id(line.head, stem, lineno), "line_too_long",
                f"line {lineno}: {line.size} bytes > --max-line-bytes {max_line_bytes}",
            )
        else:
            yield parse_line(line, stem, lineno)
    log.debug("%s: %d lines", stem, lineno)


def _guess_id(raw: bytes, stem: str, lineno: int) -> str:
    """The record's id if it can be read from the raw line, else ``<stem>:<line>``: names a bad line in rejects."""
    m = _ID_IN_LINE_RE.search(raw[:_HEAD_BYTES])
    if m:
        try:
            return m[1].decode("utf-8")
        except UnicodeDecodeError:
            pass
    return f"{stem}:{lineno}"


def parse_line(raw: bytes, stem: str, lineno: int) -> TextRecord | Reject:
    where = f"line {lineno}"
    if not raw.strip():
        return Reject(f"{stem}:{lineno}", "blank_line", where)
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Reject(_guess_id(raw, stem, lineno), "invalid_json", f"{where}: not UTF-8: {exc}")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return Reject(_guess_id(raw, stem, lineno), "invalid_json", f"{where}: {exc}; starts {line[:200]!r}")
    if not isinstance(obj, dict):
        return Reject(f"{stem}:{lineno}", "invalid_json", f"{where}: expected an object, got {type(obj).__name__}")
    rid = obj.pop("warc_record_id", None)
    if not isinstance(rid, str) or not rid.strip():
        return Reject(f"{stem}:{lineno}", "missing_id", f"{where}: warc_record_id is {rid!r}; keys {sorted(obj)[:20]}")
    if "text" not in obj:
        return Reject(rid, "missing_text", f"{where}: no 'text' key")
    text = obj.pop("text")
    if not isinstance(text, str):
        return Reject(rid, "missing_text", f"{where}: 'text' is {type(text).__name__}, not a string")
    # A lone surrogate escape (\ud800) in the id, text or metadata, and the audio-range characters, are the
    # pipeline's text rule (sodadata.write.document.apply_text_rule), the same for transcripts and web text.
    return TextRecord(id=rid, text=text, metadata=obj)


def main(argv: list[str] | None = None) -> int:
    return cli_recipe.main(
        NemotronCCRecipe, argv, prog="python -m sodadata.recipes.nemotron_cc", description=__doc__
    )


if __name__ == "__main__":
    sys.exit(main())
