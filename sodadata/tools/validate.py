"""``sodadata validate OUT_DIR``: check every shard of an output directory against the contract (SPEC.md §1–§2).

For every ``<out>/<component>/<stem>.parquet`` and its record ``<stem>.json`` and reject list
``rejects/<stem>.parquet``, the checks are:

=============  ==========================================================================================
files          every shard has its record and reject list (and the reverse); no partial or temporary file
               under a visible name
schema         the row columns and types of ``sodadata.write.shards.ROW_SCHEMA``; no nulls where none are allowed
record         the JSON record parses, names its component/shard, ``read == written + rejected``,
               ``rejected`` equals the sum by reason, source URLs carry no credentials
counts         the record's ``rows``, ``documents``, ``written``, ``audio_tokens``, ``audio_seconds`` and
               ``text_chars`` equal what the shard holds
rejects        the reject list has REJECT_SCHEMA, one row per reject, and the same counts by reason
ids            ids are non-empty and unique in each output root; speech ids end in ``_type1`` (text-first),
               ``_type2`` (audio-first) or ``_type3`` (audio-only)
columns        ``corpus``/``split`` match the record, ``format`` is one of the record's ``made_by.formats``, ``n_utterances``,
               ``n_audio_tokens`` and ``audio_seconds`` equal what the text holds, ``metadata`` is JSON
structure      BOS first and EOS last, each exactly once; markers balanced and in the order of the row's
               format; nothing between pieces
audio_span     every audio span well-formed: non-empty, a multiple of N characters, character k in
               codebook k mod N's range (SPEC.md §1; N is the record's ``made_by.codebooks``, 8 without one)
transcript     every transcript non-empty, stripped, free of audio-range characters
pairs          every speech document has one row per format of the record's ``made_by.formats`` (text_first and
               audio_first without one), holding identical (text, audio) pairs (audio_only: identical audio)
made_by        every record says what made its shard (``made_by``, SPEC §2) and a component's shards agree on
               it: one line per component naming the keys that differ
=============  ==========================================================================================

OUT_DIR may be an output root (a recipe's ``--out``) or a folder holding roots below it (the README's ``out/``
holding ``out/sample``): each root is checked on its own, its components named relative to it; ``_``-prefixed
folders (``_hub``, ``_stats``, ``_runs``) are never read.

Each violation is one line ``FILE:row N (id X) offset K: what`` (rows count from 0, offsets are character
offsets into ``text``); then a table of violations per check. Exit status 1 on any violation, 0 when clean.

Streaming: shards are read a batch of rows at a time (``--batch-mb``, sized from each row group's bytes per
row), so memory is bounded by a few rows, not a shard (a Yodas row is a whole video, MBs). Id uniqueness across the directory keeps an 8-byte
hash per row; rows whose hashes meet are read again to confirm and name them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sodadata.cli import OneLineParser
from sodadata.encode.codes import FRAME_RATE_HZ, NUM_CODEBOOKS
from sodadata.locations import Location, as_location, check_location, display, is_remote
from sodadata.read.recipe import ConfigError
from sodadata.read.sources import url_credentials
from sodadata.write.document import (
    AUDIO_ONLY,
    DEFAULT_FORMATS,
    ROW_SUFFIX,
    SPEECH_FORMATS,
    TEXT_ONLY,
    parse_row,
)
from sodadata.write.outputs import FinishedShard, find_shards, is_skipped, made_by_problems
from sodadata.write.shards import RECORD_VERSION, REJECT_SCHEMA, ROW_SCHEMA

log = logging.getLogger(__name__)

CHECKS: dict[str, str] = {
    "files": "shards, records and reject lists present; no partial files",
    "schema": "row columns and types",
    "record": "JSON record well-formed and balanced",
    "counts": "record counts equal the shard's",
    "rejects": "reject list present, one row per reject",
    "ids": "ids unique, suffix matches format",
    "columns": "corpus/split/format/n_* columns equal the text",
    "structure": "BOS/EOS once, markers balanced and ordered",
    "audio_span": "audio spans well-formed",
    "transcript": "transcripts non-empty, stripped, no audio characters",
    "pairs": "every format of a document, same (text, audio) pairs",
    "made_by": "a component's shards made alike, made_by recorded",
}
DEFAULT_MAX_ERRORS = 100
DEFAULT_BATCH_BYTES = 8 * 1024 * 1024
MAX_BATCH_ROWS = 4096
# A row's audio_seconds comes from the decoded samples, its tokens from ceil(samples / 1920) frames: the tokens
# cover the audio and overshoot it by less than one 80 ms frame per utterance.
FRAME_SECONDS = 1 / FRAME_RATE_HZ
SECONDS_SLACK = 1e-6
RECORD_SECONDS_TOLERANCE = 1e-3  # records round audio_seconds to 4 decimals
_SUFFIX_FORMAT = {suffix: fmt for fmt, suffix in ROW_SUFFIX.items()}


@dataclass
class Violation:
    check: str
    file: str
    what: str
    row: int | None = None
    id: str | None = None
    offset: int | None = None

    def line(self) -> str:
        where = self.file
        if self.row is not None:
            where += f":row {self.row}"
            if self.id is not None:
                where += f" (id {self.id})"
        if self.offset is not None:
            where += f" offset {self.offset}"
        return f"{where}: {self.what}"


class _TooManyErrors(Exception):
    pass


# --- the directory ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """What a shard's record says its rows hold: codebooks per frame and the formats of each document."""

    codebooks: int
    formats: tuple[str, ...]


@dataclass
class _ShardTotals:
    rows: int = 0
    documents: int = 0
    utterances: int = 0
    audio_tokens: int = 0
    audio_seconds: float = 0.0
    text_chars: int = 0
    speech_rows: int = 0


@dataclass
class Report:
    counts: Counter = field(default_factory=Counter)
    shown: int = 0
    components: set = field(default_factory=set)
    shards: int = 0
    rows: int = 0
    bytes: int = 0
    stale_temp_files: int = 0
    stopped: bool = False

    @property
    def violations(self) -> int:
        return sum(self.counts.values())


class Validator:
    """Walks an output directory and reports each violation as it finds it."""

    def __init__(self, out: Path, max_errors: int = DEFAULT_MAX_ERRORS, batch_bytes: int = DEFAULT_BATCH_BYTES,
                 stream=None) -> None:
        self.out = as_location(out)
        self.max_errors = max_errors
        self.batch_bytes = batch_bytes
        self.stream = stream if stream is not None else sys.stdout
        self.report = Report()
        # Each output root on its own (the README's out/ holds out/sample): ids are unique per root, components are
        # named relative to their root. Roots come from the records (sodadata.write.outputs); a folder under no root is
        # taken relative to OUT_DIR, so a record that names another folder is still reported.
        self.roots = sorted(find_shards(self.out).roots, key=lambda r: len(r.parts), reverse=True)
        self._id_hashes: dict[Path, list[np.ndarray]] = defaultdict(list)
        self._id_shards: dict[Path, list[np.ndarray]] = defaultdict(list)
        self._shard_files: list[Path] = []
        self._made: dict[tuple[Path, str], list[FinishedShard]] = defaultdict(list)

    # reporting
    def add(self, v: Violation) -> None:
        self.report.counts[v.check] += 1
        if self.max_errors and self.report.shown >= self.max_errors:
            self.report.stopped = True
            raise _TooManyErrors
        self.report.shown += 1
        print(v.line(), file=self.stream)

    def _rel(self, path: Path) -> str:
        return str(path)

    # walking
    def run(self) -> Report:
        try:
            shard_dirs = self._walk()
            for directory, stems in shard_dirs:
                for stem in stems:
                    self._shard(directory, stem)
            self._check_made_by()
            self._check_global_ids()
        except _TooManyErrors:
            pass
        return self.report

    def _walk(self) -> list[tuple[Path, list[str]]]:
        """Directories holding shards, with the stems of their complete shards; file-level faults reported."""
        found = []
        for directory in sorted(self._dirs(self.out)):
            files = sorted(p for p in directory.iterdir() if p.is_file())
            if directory.name == "rejects":
                continue
            visible = [p for p in files if not p.name.startswith(".")]
            parquets = {p.stem for p in visible if p.suffix == ".parquet"}
            records = {p.stem for p in visible if p.suffix == ".json"}
            if not parquets and not records:
                continue
            self.report.stale_temp_files += sum(1 for p in files if p.name.startswith(".") and ".tmp-" in p.name)
            rejects_dir = directory / "rejects"
            for p in visible:
                if p.suffix not in (".parquet", ".json"):
                    self.add(Violation("files", self._rel(p), "unexpected file in a shard folder (a partial or "
                                       "temporary file under a visible name?)"))
            for stem in sorted(parquets - records):
                self.add(Violation("files", self._rel(directory / f"{stem}.parquet"),
                                   "shard has no record: it is unfinished (interrupted or failed run); rerun the "
                                   "recipe"))
            for stem in sorted(records - parquets):
                self.add(Violation("files", self._rel(directory / f"{stem}.json"), "record without its shard"))
            if rejects_dir.is_dir():
                for p in sorted(rejects_dir.iterdir()):
                    if p.name.startswith("."):
                        self.report.stale_temp_files += ".tmp-" in p.name
                        continue
                    if p.suffix != ".parquet":
                        self.add(Violation("files", self._rel(p), "unexpected file in a rejects folder"))
                    elif p.stem not in records:
                        self.add(Violation("files", self._rel(p), "reject list of a shard that has no record"))
            found.append((directory, sorted(parquets & records)))
        return found

    def _dirs(self, root: Path, top: bool = True) -> Iterator[Path]:
        # Folders whose names start with '_' or '.' are not components (_runs, _hub, _stats, hidden); files at
        # the top level are not shards (a component is at least one folder deep), unless OUT_DIR is a component
        # folder inside a root.
        if top and any(r in root.parents for r in self.roots):
            yield root
        for p in sorted(root.iterdir()):
            if p.is_dir() and not is_skipped(p.name) and (is_remote(p) or not p.is_symlink()):
                yield p
                yield from self._dirs(p, top=False)

    def _place(self, directory: Path) -> tuple[Path, str]:
        """(output root, component) of a shard folder: under the deepest root above it, else under OUT_DIR."""
        root = next((r for r in self.roots if r in directory.parents), self.out)
        if is_remote(root):  # a URL's relative_to loses the name: the path strings are exact
            return root, str(directory)[len(str(root).rstrip("/")) + 1:]
        return root, directory.relative_to(root).as_posix()

    # one shard
    def _shard(self, directory: Path, stem: str) -> None:
        parquet, record_path = directory / f"{stem}.parquet", directory / f"{stem}.json"
        rel = self._rel(parquet)
        root, component = self._place(directory)
        self.report.components.add((root, component))
        self.report.shards += 1
        record = self._record(record_path, component, stem)
        if record is not None:
            self._made[(root, component)].append(FinishedShard(root, component, record_path, record))
        try:
            pf = _parquet_file(parquet)
        except Exception as exc:  # any reader error means the shard is unusable; say which
            self.add(Violation("schema", rel, f"cannot open as Parquet: {type(exc).__name__}: {exc}"))
            return
        self.report.bytes += parquet.stat().st_size
        with pf:
            if not self._schema(pf.schema_arrow, rel):
                return
            try:
                totals = self._rows(pf, rel, component, record, root)
            except _TooManyErrors:
                raise
            except Exception as exc:  # a footer that opens over pages that do not decode: report, go on
                self.add(Violation("schema", rel, f"rows cannot be read: {type(exc).__name__}: "
                                                  f"{' '.join(str(exc).split())}"))
                return
        if record is not None:
            self._counts(record, totals, record_path)
            self._rejects(directory / "rejects" / f"{stem}.parquet", record)

    def _record(self, path: Path, component: str, stem: str) -> dict | None:
        rel = self._rel(path)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.add(Violation("record", rel, f"record does not parse: {type(exc).__name__}: {exc}"))
            return None
        if not isinstance(record, dict):
            self.add(Violation("record", rel, "record is not a JSON object"))
            return None
        if record.get("record_version") != RECORD_VERSION:
            self.add(Violation("record", rel, f"record_version {record.get('record_version')!r}, expected "
                                              f"{RECORD_VERSION}"))
        for key, want in (("component", component), ("shard", stem)):
            if record.get(key) != want:
                self.add(Violation("record", rel, f"{key} is {record.get(key)!r}, expected {want!r} (its path)"))
        ok = True
        for key in ("rows", "documents", "read", "written", "rejected", "audio_tokens", "text_chars"):
            value = record.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                self.add(Violation("record", rel, f"{key} is {value!r}, expected a count"))
                ok = False
        seconds = record.get("audio_seconds")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds) \
                or seconds < 0:
            self.add(Violation("record", rel, f"audio_seconds is {seconds!r}, expected seconds"))
            ok = False
        rejects = record.get("rejects")
        if not isinstance(rejects, dict) or not all(isinstance(v, int) and v >= 0 for v in rejects.values()):
            self.add(Violation("record", rel, f"rejects is {rejects!r}, expected {{reason: count}}"))
            ok = False
        if not isinstance(record.get("split"), str) or not record.get("split"):
            self.add(Violation("record", rel, f"split is {record.get('split')!r}, expected a name"))
        if ok:
            if record["read"] != record["written"] + record["rejected"]:
                self.add(Violation("record", rel, f"read {record['read']} != written {record['written']} + "
                                                  f"rejected {record['rejected']}"))
            if record["rejected"] != sum(rejects.values()):
                self.add(Violation("record", rel, f"rejected {record['rejected']} != {sum(rejects.values())}, "
                                                  "the sum of rejects by reason"))
        inputs = (record.get("source") or {}).get("inputs") if isinstance(record.get("source"), dict) else None
        for item in inputs or []:
            url = item.get("url") if isinstance(item, dict) else None
            if isinstance(url, str) and (what := url_credentials(url)):
                self.add(Violation("record", rel, f"a source URL carries credentials ({what})"))
        return record if ok else None

    def _schema(self, schema: pa.Schema, rel: str) -> bool:
        """Report schema faults; False when the rows cannot be checked at all."""
        ok = True
        names = set(schema.names)
        for want in ROW_SCHEMA:
            if want.name not in names:
                self.add(Violation("schema", rel, f"column {want.name!r} is missing"))
                ok = False
                continue
            got = schema.field(want.name).type
            # string and large_string are the same Parquet type; which one a writer picked does not matter
            if got != want.type and not (_stringlike(got) and _stringlike(want.type)):
                self.add(Violation("schema", rel, f"column {want.name!r} has type {got}, expected {want.type}"))
                ok = False
        for extra in sorted(names - set(ROW_SCHEMA.names)):
            self.add(Violation("schema", rel, f"unexpected column {extra!r}"))
        return ok

    def _rows(self, pf: pq.ParquetFile, rel: str, component: str, record: dict | None, root: Path) -> _ShardTotals:
        totals = _ShardTotals()
        # doc -> {format: (row, pair digests, audio_seconds, structural)} of the rows seen so far; a document
        # leaves once it has a row of every format its record names (they are written together)
        pending: dict[str, dict[str, tuple]] = {}
        seen_ids: set[str] = set()
        hashes: list[int] = []
        row = 0
        split = record.get("split") if record else None
        made = (record or {}).get("made_by") or {}
        # what the shard says it holds (SPEC §1-2); a record made before made_by: SODA's 8 codebooks and pair
        codebooks, formats = made.get("codebooks") or NUM_CODEBOOKS, made.get("formats") or list(DEFAULT_FORMATS)
        if codebooks not in range(1, NUM_CODEBOOKS + 1) or isinstance(codebooks, bool):
            self.add(Violation("record", rel, f"made_by.codebooks is {codebooks!r}, expected 1-{NUM_CODEBOOKS}; "
                                              f"spans checked as {NUM_CODEBOOKS} codebooks"))
            codebooks = NUM_CODEBOOKS
        if not isinstance(formats, list) or not formats or any(f not in (*SPEECH_FORMATS, TEXT_ONLY) for f in formats):
            self.add(Violation("record", rel, f"made_by.formats is {formats!r}, expected a list of "
                                              f"{', '.join(SPEECH_FORMATS)} or text"))
            formats = DEFAULT_FORMATS
        shape = _Shape(codebooks, tuple(formats))
        columns = ROW_SCHEMA.names
        for batch in self._batches(pf, columns):
            data = {name: batch.column(name).to_pylist() for name in columns}
            for i in range(batch.num_rows):
                r = {name: data[name][i] for name in columns}
                self._row(r, row, rel, component, split, totals, pending, seen_ids, shape)
                hashes.append(_id_hash(r["id"]))
                row += 1
        for doc, got in sorted(pending.items()):
            fmt, (r0, *_) = next(iter(got.items()))
            missing = [f for f in shape.formats if f not in got]
            self.add(Violation("pairs", rel, f"document {doc} has no {' or '.join(missing)} row "
                               f"({', '.join(doc + ROW_SUFFIX[f] for f in missing)})", row=r0, id=doc + ROW_SUFFIX[fmt]))
        totals.documents += len(pending)
        self.report.rows += row
        self._shard_files.append(as_location(rel))
        self._id_hashes[root].append(np.asarray(hashes, dtype=np.uint64))
        self._id_shards[root].append(np.full(len(hashes), len(self._shard_files) - 1, dtype=np.uint32))
        return totals

    def _batches(self, pf: pq.ParquetFile, columns: list[str]) -> Iterator[pa.RecordBatch]:
        """Batches of at most ``batch_bytes`` (estimated from each row group's size): rows differ 1000-fold in size."""
        for g in range(pf.num_row_groups):
            meta = pf.metadata.row_group(g)
            per_row = max(1, meta.total_byte_size // max(1, meta.num_rows))
            size = int(min(max(1, self.batch_bytes // per_row), MAX_BATCH_ROWS))
            yield from pf.iter_batches(batch_size=size, row_groups=[g], columns=columns)

    def _row(self, r: dict, row: int, rel: str, component: str, split: str | None, totals: _ShardTotals,
             pending: dict, seen_ids: set, shape: _Shape) -> None:
        rid = r["id"]

        def v(check: str, what: str, offset: int | None = None) -> None:
            self.add(Violation(check, rel, what, row=row, id=rid, offset=offset))

        for name in ("id", "split", "text", "corpus", "format", "n_utterances", "audio_seconds", "n_audio_tokens"):
            if r[name] is None:
                v("schema", f"{name} is null")
        text, fmt = r["text"] or "", r["format"]
        totals.rows += 1
        totals.text_chars += len(text)
        if not rid:
            v("ids", "empty id")
        elif rid in seen_ids:
            v("ids", "id appears twice in this shard")
        seen_ids.add(rid or "")
        if r["corpus"] is not None and r["corpus"] != component:
            v("columns", f"corpus is {r['corpus']!r}, expected {component!r} (its folder)")
        if split is not None and r["split"] is not None and r["split"] != split:
            v("columns", f"split is {r['split']!r}, the record says {split!r}")
        if r["metadata"] is not None:
            try:
                json.loads(r["metadata"])
            except json.JSONDecodeError as exc:
                v("columns", f"metadata is not JSON: {exc}")
        if fmt not in (*SPEECH_FORMATS, TEXT_ONLY):
            v("columns", f"format is {fmt!r}, expected {', '.join(SPEECH_FORMATS)} or text")
            return
        if fmt != TEXT_ONLY and fmt not in shape.formats:
            v("columns", f"format is {fmt!r}, but the record's made_by.formats are {', '.join(shape.formats)}")
            return
        parsed = parse_row(text, fmt, shape.codebooks, strict=False)
        for p in parsed.problems:
            v(p.check, p.what, p.offset)
        pairs = [(u.text, u.audio) for u in parsed.utterances]
        n_utt, n_tok, seconds = r["n_utterances"], r["n_audio_tokens"], r["audio_seconds"]
        if fmt == TEXT_ONLY:
            totals.documents += 1
            totals.utterances += 1
            if (n_utt, n_tok, seconds) != (0, 0, 0.0):
                v("columns", f"a text row has n_utterances {n_utt}, n_audio_tokens {n_tok}, audio_seconds "
                             f"{seconds} (expected 0)")
            return
        totals.speech_rows += 1
        structural = parsed.structural
        tokens = sum(len(a) for _, a in pairs)
        if n_tok is not None:
            totals.audio_tokens += n_tok
        if not structural:
            if n_utt != len(pairs):
                v("columns", f"n_utterances is {n_utt}, the text holds {len(pairs)}")
            if n_tok != tokens:
                v("columns", f"n_audio_tokens is {n_tok}, the text holds {tokens} audio characters")
            covered = tokens / (FRAME_RATE_HZ * shape.codebooks)
            if seconds is not None and not (
                    covered - FRAME_SECONDS * len(pairs) - SECONDS_SLACK < seconds <= covered + SECONDS_SLACK):
                v("columns", f"audio_seconds is {seconds}, but {tokens} audio characters of {shape.codebooks} "
                             f"codebooks cover {covered:.2f} s ({len(pairs)} utterances)")
        suffix = next((s for s in _SUFFIX_FORMAT if rid and rid.endswith(s)), None)
        if suffix is None or _SUFFIX_FORMAT[suffix] != fmt:
            v("ids", f"a {fmt} row's id must end in {ROW_SUFFIX[fmt]}")
            return
        doc = rid[: -len(suffix)]
        digests = [(_digest(t), _digest(a)) for t, a in pairs]
        got = pending.setdefault(doc, {})
        if fmt in got:
            return  # a duplicate id, reported above
        got[fmt] = (row, digests, seconds, structural)
        if len(got) < len(shape.formats):
            return
        del pending[doc]
        first_fmt, (first_row, first, first_seconds, _) = next(iter(got.items()))
        totals.documents += 1
        totals.utterances += len(first)
        totals.audio_seconds += first_seconds or 0.0
        if any(entry[3] for entry in got.values()):
            return  # a row whose structure is broken was reported; its pairs are not comparable
        for other_fmt, (other_row, other, other_seconds, _) in list(got.items())[1:]:
            # an audio_only row has no transcripts: only the audio is compared with it
            texts = first_fmt != AUDIO_ONLY and other_fmt != AUDIO_ONLY
            mine = other if texts else [a for _, a in other]
            theirs = first if texts else [a for _, a in first]
            here = (other_row, other_fmt)
            if mine != theirs:
                where = next((k for k, (a, b) in enumerate(zip(mine, theirs)) if a != b), None)
                if where is None:
                    what = f"{len(mine)} utterances here, {len(theirs)} in row {first_row}"
                else:
                    part = "transcript" if texts and mine[where][0] != theirs[where][0] else "audio"
                    what = f"utterance {where}'s {part} differs from row {first_row}"
                self.add(Violation("pairs", rel, f"{ROW_SUFFIX[first_fmt][1:]} and {ROW_SUFFIX[other_fmt][1:]} of "
                                   f"document {doc} hold different {'(text, audio) pairs' if texts else 'audio'}: "
                                   f"{what}", row=here[0], id=doc + ROW_SUFFIX[other_fmt]))
            elif other_seconds != first_seconds:
                self.add(Violation("pairs", rel, f"audio_seconds {other_seconds} differs from row {first_row}'s "
                                   f"{first_seconds}", row=here[0], id=doc + ROW_SUFFIX[other_fmt]))

    def _counts(self, record: dict, t: _ShardTotals, path: Path) -> None:
        rel = self._rel(path)
        for key, got in (("rows", t.rows), ("documents", t.documents), ("written", t.utterances),
                         ("audio_tokens", t.audio_tokens), ("text_chars", t.text_chars)):
            if record[key] != got:
                self.add(Violation("counts", rel, f"{key} is {record[key]} in the record, {got} in the shard"))
        if abs(record["audio_seconds"] - t.audio_seconds) > RECORD_SECONDS_TOLERANCE + 1e-9 * t.audio_seconds:
            self.add(Violation("counts", rel, f"audio_seconds is {record['audio_seconds']} in the record, "
                                              f"{t.audio_seconds:.4f} in the shard"))

    def _rejects(self, path: Path, record: dict) -> None:
        rel = self._rel(path)
        if not path.exists():
            self.add(Violation("rejects", rel, f"reject list is missing (the record counts {record['rejected']} "
                                               "rejects)"))
            return
        try:
            pf = _parquet_file(path)
        except Exception as exc:  # any reader error means the list is unusable
            self.add(Violation("rejects", rel, f"cannot open as Parquet: {type(exc).__name__}: {exc}"))
            return
        with pf:
            schema = pf.schema_arrow
            if schema.names != REJECT_SCHEMA.names or any(schema.field(f.name).type != f.type for f in REJECT_SCHEMA):
                self.add(Violation("rejects", rel, f"columns {schema.names}, expected {REJECT_SCHEMA.names} "
                                                   "(strings)"))
                return
            reasons: Counter = Counter()
            row = 0
            try:
                for batch in pf.iter_batches(batch_size=4096, columns=["id", "reason"]):
                    for rid, reason in zip(batch.column("id").to_pylist(), batch.column("reason").to_pylist()):
                        if not reason:
                            self.add(Violation("rejects", rel, "reject without a reason", row=row, id=rid))
                        reasons[reason] += 1
                        row += 1
            except _TooManyErrors:
                raise
            except Exception as exc:  # pages that do not decode
                self.add(Violation("rejects", rel, f"rows cannot be read: {type(exc).__name__}: "
                                                   f"{' '.join(str(exc).split())}"))
                return
        if row != record["rejected"]:
            self.add(Violation("rejects", rel, f"{row} rows, the record counts {record['rejected']} rejects"))
        elif dict(reasons) != {k: v for k, v in record["rejects"].items() if v}:
            self.add(Violation("rejects", rel, f"rejects by reason {dict(sorted(reasons.items()))}, the record "
                                               f"says {dict(sorted(record['rejects'].items()))}"))

    def _check_made_by(self) -> None:
        """Shards of one component made alike (SPEC §2): one line per component whose shards differ in made_by
        (naming the keys) or lack it."""
        for (root, component), shards in sorted(self._made.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            for problem in made_by_problems(shards):
                self.add(Violation("made_by", self._rel(root / component), problem))

    def _check_global_ids(self) -> None:
        for root in sorted(self._id_hashes, key=str):
            self._check_root_ids(root)

    def _check_root_ids(self, root: Path) -> None:
        hashes = np.concatenate(self._id_hashes[root])
        shards = np.concatenate(self._id_shards[root])
        order = np.argsort(hashes, kind="stable")
        h = hashes[order]
        dup = np.flatnonzero(h[1:] == h[:-1])
        if not dup.size:
            return
        # Hash collisions are possible: read the ids of the shards involved and compare the strings.
        involved = sorted({int(shards[order[i]]) for i in dup} | {int(shards[order[i + 1]]) for i in dup})
        where: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for s in involved:
            ids = _parquet_file(self._shard_files[s]).read(columns=["id"]).column("id").to_pylist()
            for row, rid in enumerate(ids):
                where[rid].append((s, row))
        for rid, places in sorted(where.items()):
            shard_set = {s for s, _ in places}
            if len(shard_set) < 2:
                continue  # within one shard: reported already
            first = places[0]
            for s, row in places[1:]:
                if s == first[0]:
                    continue
                self.add(Violation("ids", str(self._shard_files[s]), f"id also used by {self._shard_files[first[0]]}"
                                   f":row {first[1]}", row=row, id=rid))


def _stringlike(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _id_hash(rid: str | None) -> int:
    return int.from_bytes(hashlib.blake2b((rid or "").encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _digest(s: str) -> bytes:
    return hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def format_summary(report: Report, elapsed: float, out: Path | None = None) -> str:
    width = max(map(len, CHECKS))
    lines = [f"{'check':<{width}}  {'violations':>10}  what"]
    lines += [f"{name:<{width}}  {report.counts.get(name, 0):>10}  {what}" for name, what in CHECKS.items()]
    state = "clean" if not report.violations else f"{report.violations} violations"
    if report.stopped:
        state += f" (stopped after {report.shown} shown: --max-errors 0 checks everything)"
    roots = sorted({str(r) for r, _ in report.components})
    if len(roots) > 1 or (roots and out is not None and roots != [str(out)]):
        lines.append(f"output roots: {', '.join(roots)}")
    lines.append(
        f"{len(report.components)} components, {report.shards} shards, {report.rows} rows, "
        f"{report.bytes / 1e6:.1f} MB in {elapsed:.1f} s: {state}"
    )
    if report.stale_temp_files:
        lines.append(f"note: {report.stale_temp_files} hidden temporary files left by interrupted runs (not shards; "
                     "safe to delete when no run is writing here)")
    return "\n".join(lines)


def _parquet_file(loc: Location) -> pq.ParquetFile:
    """A shard's Parquet file, local or on a store (read through its filesystem: Arrow does not take a UPath)."""
    return pq.ParquetFile(loc.open("rb") if is_remote(loc) else loc)


def validate(out: Location | str, max_errors: int = DEFAULT_MAX_ERRORS, batch_bytes: int = DEFAULT_BATCH_BYTES,
             stream=None) -> Report:
    """Check ``out``; print one line per violation to ``stream`` (stdout); return the report."""
    return Validator(out, max_errors=max_errors, batch_bytes=batch_bytes, stream=stream).run()


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="sodadata validate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", metavar="OUT_DIR", help="output directory of one or more recipe runs (a local path or "
                        "a URL: s3://, gs://, az://)")
    parser.add_argument("--max-errors", type=int, default=DEFAULT_MAX_ERRORS, metavar="N",
                        help=f"stop after reporting N violations (default {DEFAULT_MAX_ERRORS}; 0: report all)")
    parser.add_argument("--batch-mb", type=float, default=DEFAULT_BATCH_BYTES / 2**20, metavar="MB",
                        help="rows read at a time, in uncompressed MB (default %(default)s; a single row larger "
                        "than this is read alone)")
    args = parser.parse_args(argv)
    try:
        check_location(args.out, write=False)
        args.out = as_location(args.out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.out.is_dir():
        print(f"error: {display(args.out)} is not a directory", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    report = validate(args.out, max_errors=args.max_errors, batch_bytes=int(args.batch_mb * 2**20))
    if report.shards == 0 and not report.violations:
        print(f"error: no shards under {display(args.out)} (expected <component>/<stem>.parquet with its .json record)",
              file=sys.stderr)
        return 2
    print(format_summary(report, time.perf_counter() - t0, args.out))
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
