"""Multilingual LibriSpeech English (``parler-tts/mls_eng``) -> component ``mls/en``.

Layout on the Hub (SPEC.md §5; catalog: ``catalogs/mls.yaml``), CC-BY-4.0, open::

    data/train-00000-of-01416.parquet … data/train-01415-of-01416.parquet
    data/dev-00000-of-00001.parquet, data/test-00000-of-00001.parquet
      columns: audio {bytes, path} (16 kHz mono), original_path, begin_time, end_time, transcript,
               audio_duration, speaker_id, book_id

Documents (SPEC.md §2): the segments of one ``original_path`` (one LibriVox recording), sorted by ``begin_time``;
a new document starts where the gap to the previous segment's ``end_time`` exceeds 0.2 s. One recording's
segments are spread over many files, so ``tasks()`` first reads the metadata columns of every file of the split
(polars, lazily, projected: the ``audio`` column is never read), builds the documents, and packs whole
documents into tasks of about ``--shard-hours`` of audio. A task carries its files (``inputs``) and, per
segment, (input, row, document) packed as int32 bytes in ``params`` (hashable, 16 bytes a segment: the train
split has 10.8 M segments). The task reads only the row groups holding its rows; audio is decoded and resampled
from 16 to 24 kHz by the pipeline.

Ids (there is no id column): a segment is ``{speaker_id}-{book_id}-{begin_cs:08d}-{end_cs:08d}`` (SPEC.md §5);
in the rare case that two recordings give the same id, each of them gets ``-{h}`` appended, ``h`` being the
first 8 hex digits of the SHA-1 of its ``original_path``. A document is ``{speaker_id}-{book_id}-{h}-{begin_cs:08d}``
(``h`` keeps two recordings of one speaker and book apart).

Rows the metadata pass cannot place are rejected by the task that holds their file position:
``missing_metadata`` (a null/NaN original_path, begin_time, end_time, speaker_id or book_id),
``empty_segment`` (begin == end), ``start_after_end``; a transcript that is not UTF-8 is ``invalid_unicode``.
Bad audio and transcripts are rejected by the pipeline (the text rule of SPEC §2). Metadata columns that are not
UTF-8 stop the run at the metadata pass, with one line (polars refuses the file).
A file that cannot be read fails its task (``ShardError``). Output shards are ``<split>-NNNNN`` with ``split``
column ``<split>/NNNNN``; keep ``--shard-hours`` the same when resuming into the same ``--out`` (another value
groups documents differently under the same names). MLS is prepared, but it is not in the SODA mix (SPEC.md §4).

Examples: the first runs offline on the bundled sample (from the repository root); the others read the real
corpus from the Hub (network)::

    python -m sodadata.recipes.mls --lang en --source sample/mls --codec tiny-random --out out/sample
    python -m sodadata.recipes.mls --lang en --split train --out data/
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sodadata.read import sources
from sodadata.read.catalog import add_source_arguments, load_catalog, resolve_source_root
from sodadata.read.completeness import catalog_scope
from sodadata.read.recipe import Completeness, RawUtterance, Recipe, Reject, ShardError, ShardTask, SourceFile
from sodadata.run import cli_recipe

log = logging.getLogger("sodadata.recipes.mls")  # not __name__: "__main__" under python -m

CORPUS = "mls"
SPLITS = ("train", "dev", "test")
META_COLUMNS = ("original_path", "begin_time", "end_time", "speaker_id", "book_id")
READ_COLUMNS = ("audio", "transcript", *META_COLUMNS)
OPTIONAL_COLUMNS = ("audio_duration",)
GAP_MS = 200  # a gap longer than this between segments of one recording starts a new document
# rows[:, 2] holds the document's index in the task, or minus one of these codes for a rejected row
REASONS = {1: "missing_metadata", 2: "empty_segment", 3: "start_after_end"}
ROW_FIELDS = 4  # input index, row in file, document (or -reason), id needs the recording suffix (0/1)
_FILE_RE = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.parquet$")


@dataclass(frozen=True)
class MLSRecipe(Recipe):
    lang: str = "en"
    split: str = "train"
    source: str | None = None  # dataset root holding data/: local path or hf://datasets/parler-tts/mls_eng[@rev]
    revision: str | None = None
    shard_hours: float = 10.0

    name = "mls"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--lang", default="en", choices=["en"], help="language (only en: parler-tts/mls_eng)")
        parser.add_argument("--split", default="train", choices=SPLITS, help="which split (default train)")
        add_source_arguments(parser, CORPUS, "data/*.parquet")
        parser.add_argument(
            "--shard-hours", type=float, default=10.0,
            help="audio hours per output shard (whole documents; default 10). Keep it when resuming.",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MLSRecipe:
        if args.shard_hours <= 0:
            raise ValueError("--shard-hours must be > 0")
        return cls(lang=args.lang, split=args.split, source=args.source, revision=args.revision,
                   shard_hours=args.shard_hours)

    def _root(self) -> tuple[str, str | None]:
        return resolve_source_root(CORPUS, self.source, self.revision)

    def files(self) -> tuple[list[SourceFile], str | None]:
        if self.lang != "en":
            raise ValueError(f"--lang {self.lang}: only en is catalogued (parler-tts/mls_eng)")
        if self.split not in SPLITS:
            raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        catalog = load_catalog(CORPUS)
        root, commit = self._root()
        files = sources.list_files(sources.join(root, catalog["path"]), catalog["pattern"].format(split=self.split))
        if not files:
            raise FileNotFoundError(f"no {self.split}-*.parquet files under {sources.join(root, catalog['path'])}")
        return files, commit

    def tasks(self) -> list[ShardTask]:
        files, commit = self.files()
        log.info("mls: reading the metadata columns of %d %s files", len(files), self.split)
        meta = scan_metadata([f.url for f in files])
        plans = plan_tasks(meta, self.shard_hours * 3600)
        component = f"{CORPUS}/{self.lang}"
        tasks = []
        for k, plan in enumerate(plans):
            tasks.append(
                ShardTask(
                    component=component,
                    stem=f"{self.split}-{k:05d}",
                    split=f"{self.split}/{k:05d}",
                    inputs=tuple(files[i] for i in plan.files),
                    revision=commit,
                    params=(("rows", plan.rows.astype(np.int32).tobytes()), ("docs", plan.docs)),
                )
            )
        if tasks:
            per_task = [len(t.inputs) for t in tasks]
            log.info("mls: %d segments, %d documents -> %d tasks of ~%.1f h (files per task: mean %.1f, max %d)",
                     meta.height, sum(len(p.docs) for p in plans), len(tasks), self.shard_hours,
                     sum(per_task) / len(per_task), max(per_task))
        return tasks

    def completeness(self, tasks: list[ShardTask], full: bool) -> Completeness:
        """The split's files are all there: every index below the ``-of-NNNNN`` their names state, and, for a full
        run, as many as the catalog lists, unless the source is a declared sample. (An absent split already
        stopped ``tasks()``.)"""
        catalog = load_catalog(CORPUS)
        names = sorted({PurePosixPath(f.url).name for t in tasks for f in t.inputs})
        indices, totals = set(), set()
        for name in names:
            m = _FILE_RE.match(name)
            if m:
                indices.add(int(m["index"]))
                totals.add(int(m["total"]))
        missing = []
        if len(totals) > 1:
            missing.append(f"split {self.split}: file names disagree on the number of files ({sorted(totals)})")
        if totals:
            total = max(totals)
            gaps = [i for i in range(total) if i not in indices]
            missing += [f"file {catalog['path']}/{self.split}-{i:05d}-of-{total:05d}.parquet: not in the source"
                        for i in gaps]
        expected = catalog["splits"].get(self.split, {}).get("files")
        origin = catalog_scope(self.source, CORPUS, full, "the file names only")
        if not origin:
            origin = "the file names and catalogs/mls.yaml"
            if expected is not None and len(names) < expected:
                missing.append(f"split {self.split}: {len(names)} of the {expected} files catalogs/mls.yaml lists")
        return Completeness(missing, origin)

    def read(self, task: ShardTask) -> Iterator[RawUtterance | Reject]:
        rows = np.frombuffer(task.param("rows"), dtype=np.int32).reshape(-1, ROW_FIELDS)
        docs: tuple[tuple[str, str], ...] = task.param("docs")
        for i, src in enumerate(task.inputs):
            mine = rows[rows[:, 0] == i]
            try:
                with sources.open_binary(src.url) as f:
                    yield from _read_file(pq.ParquetFile(f), src.url, mine, docs)
            except (OSError, pa.ArrowException) as exc:
                raise ShardError(f"cannot read {src.url}: {type(exc).__name__}: {exc}") from exc

    def row_params(self) -> dict:
        return {"shard_hours": self.shard_hours}  # which documents go into which shard

    def describe(self) -> dict:
        catalog = load_catalog(CORPUS)
        return {"recipe": self.name, "lang": self.lang, "split": self.split, "shard_hours": self.shard_hours,
                "source": self.source or catalog["repo"], "licence": catalog["licence"]}


# --- the metadata pass (driver) ------------------------------------------------------------------------------


def scan_metadata(urls: list[str]):
    """``file``, ``row`` and the metadata columns of every file: lazily, projected, so ``audio`` is never read."""
    import polars as pl

    frames = [
        pl.scan_parquet(url, row_index_name="row", glob=False)
        .select(
            pl.lit(i, dtype=pl.Int32).alias("file"),
            pl.col("row").cast(pl.Int64),
            pl.col("original_path").cast(pl.Utf8),
            pl.col("begin_time").cast(pl.Float64),
            pl.col("end_time").cast(pl.Float64),
            pl.col("speaker_id").cast(pl.Utf8),
            pl.col("book_id").cast(pl.Utf8),
        )
        for i, url in enumerate(urls)
    ]
    try:
        return pl.concat(frames).collect()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise RuntimeError(f"cannot read the metadata columns {', '.join(META_COLUMNS)}: {exc}") from exc


@dataclass(frozen=True)
class TaskPlan:
    files: tuple[int, ...]  # indices into the split's file list, ascending
    rows: np.ndarray  # (n, ROW_FIELDS): input index (into `files`), row, document or -reason, suffix flag
    docs: tuple[tuple[str, str], ...]  # (doc_id, recording hash) per document of the task
    seconds: float


def path_hash(original_path: str) -> str:
    return hashlib.sha1(original_path.encode("utf-8")).hexdigest()[:8]


def centiseconds(seconds: float) -> int:
    # floor(x + 0.5), not round(): the same arithmetic as the polars expression in plan_tasks (ties agree)
    return math.floor(seconds * 100 + 0.5)


def plan_tasks(meta, target_seconds: float) -> list[TaskPlan]:
    """Documents from the metadata, packed in file order into tasks of about ``target_seconds``."""
    import polars as pl

    def units(col: str, scale: int) -> pl.Expr:
        return (pl.col(col) * scale + 0.5).floor().cast(pl.Int64)

    df = meta.with_columns(
        key=pl.col("file").cast(pl.Int64) * (1 << 32) + pl.col("row"),
        begin_ms=units("begin_time", 1000), end_ms=units("end_time", 1000),
        begin_cs=units("begin_time", 100), end_cs=units("end_time", 100),
    )
    missing = pl.any_horizontal(
        *(pl.col(c).is_null() for c in META_COLUMNS), pl.col("begin_time").is_nan(), pl.col("end_time").is_nan()
    )
    df = df.with_columns(
        reason=pl.when(missing).then(1).when(pl.col("end_ms") == pl.col("begin_ms")).then(2)
        .when(pl.col("end_ms") < pl.col("begin_ms")).then(3).otherwise(0).cast(pl.Int32)
    )
    good = df.filter(pl.col("reason") == 0).sort(["original_path", "begin_ms", "end_ms", "file", "row"])
    prev_path, prev_end = pl.col("original_path").shift(1), pl.col("end_ms").shift(1)
    good = good.with_columns(
        doc=((prev_path.is_null() | (pl.col("original_path") != prev_path) | (pl.col("begin_ms") - prev_end > GAP_MS))
             .cum_sum() - 1).cast(pl.Int64),
        # the same segment id from two recordings: both get their recording's hash appended
        suffix=(pl.col("original_path").n_unique().over(["speaker_id", "book_id", "begin_cs", "end_cs"]) > 1)
        .cast(pl.Int32),
    )
    doc_table = good.group_by("doc").agg(
        pl.col("original_path").first(), pl.col("speaker_id").first(), pl.col("book_id").first(),
        pl.col("begin_cs").first(), (pl.col("end_time") - pl.col("begin_time")).sum().alias("seconds"),
        pl.col("key").min(),
    ).sort("doc")  # `first` is the earliest segment: `good` is sorted by begin within a recording
    bad = df.filter(pl.col("reason") != 0).select("file", "row", "reason", "key")
    # A unit is a document (unit = doc >= 0) or a rejected row (unit = -1 - its index in `bad`). Units are packed in
    # the order of their first row in the files, so that a task reads few, neighbouring files.
    unit_table = pl.concat([
        doc_table.select(pl.col("doc").alias("unit"), "key", "seconds"),
        bad.select((-1 - pl.int_range(pl.len(), dtype=pl.Int64)).alias("unit"), "key", pl.lit(0.0).alias("seconds")),
    ]).sort("key")
    unit = unit_table["unit"].to_numpy()
    seconds = unit_table["seconds"].to_numpy()
    before = np.cumsum(seconds) - seconds
    # the task a unit starts in (a document is never split; one longer than a task makes a task of its own)
    task_of_unit = np.unique(np.floor(before / target_seconds).astype(np.int64), return_inverse=True)[1].ravel()
    n_tasks = int(task_of_unit.max()) + 1 if len(unit) else 0

    is_doc = unit >= 0
    doc_order, doc_task = unit[is_doc], task_of_unit[is_doc]  # documents in packing order, and their task
    doc_bounds = np.searchsorted(doc_task, np.arange(n_tasks + 1))
    task_by_doc = np.empty(doc_table.height, dtype=np.int64)
    local_by_doc = np.empty(doc_table.height, dtype=np.int64)
    task_by_doc[doc_order] = doc_task
    local_by_doc[doc_order] = np.arange(len(doc_order)) - doc_bounds[doc_task]
    task_by_bad = np.empty(bad.height, dtype=np.int64)
    task_by_bad[-1 - unit[~is_doc]] = task_of_unit[~is_doc]

    g_doc = good["doc"].to_numpy()
    file = np.concatenate([good["file"].to_numpy(), bad["file"].to_numpy()]).astype(np.int64)
    row = np.concatenate([good["row"].to_numpy(), bad["row"].to_numpy()]).astype(np.int64)
    task = np.concatenate([task_by_doc[g_doc], task_by_bad])
    local = np.concatenate([local_by_doc[g_doc], -bad["reason"].to_numpy().astype(np.int64)])
    suffix = np.concatenate([good["suffix"].to_numpy(), np.zeros(bad.height, dtype=np.int32)]).astype(np.int64)
    order = np.lexsort((row, file, task))
    file, row, task, local, suffix = file[order], row[order], task[order], local[order], suffix[order]
    bounds = np.searchsorted(task, np.arange(n_tasks + 1))

    hashes = [path_hash(p) for p in doc_table["original_path"]]
    doc_keys = [
        (f"{spk}-{book}-{h}-{cs:08d}", h)
        for spk, book, h, cs in zip(doc_table["speaker_id"], doc_table["book_id"], hashes, doc_table["begin_cs"],
                                    strict=True)
    ]
    doc_seconds = doc_table["seconds"].to_numpy()
    plans = []
    for t in range(n_tasks):
        lo, hi = bounds[t], bounds[t + 1]
        files, input_index = np.unique(file[lo:hi], return_inverse=True)
        docs = doc_order[doc_bounds[t]:doc_bounds[t + 1]]
        plans.append(TaskPlan(
            files=tuple(int(f) for f in files),
            rows=np.stack([input_index.ravel(), row[lo:hi], local[lo:hi], suffix[lo:hi]], axis=1),
            docs=tuple(doc_keys[d] for d in docs),
            seconds=float(doc_seconds[docs].sum()),
        ))
    return plans


# --- reading a task (worker) ------------------------------------------------------------------------------------


def _read_file(pf: pq.ParquetFile, url: str, rows: np.ndarray, docs) -> Iterator[RawUtterance | Reject]:
    """The task's rows of one file, one row group at a time (only the groups that hold them)."""
    names = set(pf.schema_arrow.names)
    columns = [c for c in READ_COLUMNS + OPTIONAL_COLUMNS if c in names]
    if "audio" not in names or "transcript" not in names:
        raise ShardError(f"{url}: no audio/transcript column (columns: {sorted(names)})")
    starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
    rows = rows[np.argsort(rows[:, 1], kind="stable")]
    group_of = np.searchsorted(starts, rows[:, 1], side="right") - 1
    if len(rows) and (rows[-1, 1] >= starts[-1] or rows[0, 1] < 0):
        raise ShardError(f"{url}: row {int(rows[-1, 1])} is past its {int(starts[-1])} rows: did the file change?")
    name = PurePosixPath(url).name
    for g in np.unique(group_of):
        sel = rows[group_of == g]
        table = _transcripts_as_bytes(pf.read_row_group(int(g), columns=columns).take(pa.array(sel[:, 1] - starts[g])))
        for (_, row, doc, suffix), rec in zip(sel.tolist(), table.to_pylist(), strict=True):
            yield _item(rec, name, row, doc, suffix, docs)


def _transcripts_as_bytes(table: pa.Table) -> pa.Table:
    """The transcript column as bytes (a zero-copy cast), decoded row by row in ``_item``.

    Parquet does not check that a string column holds UTF-8, and Arrow's conversion to Python raises on the first
    bad value: one transcript written by a tool that did not validate would fail the whole task.
    """
    i = table.schema.get_field_index("transcript")
    kind = table.schema.field(i).type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        binary = pa.large_binary() if pa.types.is_large_string(kind) else pa.binary()
        table = table.set_column(i, "transcript", table.column(i).cast(binary))
    return table


def _item(rec: dict, file_name: str, row: int, doc: int, suffix: int, docs) -> RawUtterance | Reject:
    spk, book, begin, end = rec.get("speaker_id"), rec.get("book_id"), rec.get("begin_time"), rec.get("end_time")
    have_times = all(isinstance(x, (int, float)) and math.isfinite(x) for x in (begin, end))
    known = spk is not None and book is not None and have_times
    seg_id = f"{spk}-{book}-{centiseconds(begin):08d}-{centiseconds(end):08d}" if known else f"{file_name}#row{row}"
    if doc < 0:
        reason = REASONS[-doc]
        detail = (f"original_path {rec.get('original_path')!r}, begin {begin!r}, end {end!r}, speaker {spk!r}, "
                  f"book {book!r}")
        return Reject(seg_id, reason, detail)
    doc_id, h = docs[doc]
    path = rec.get("original_path")
    if not known or path is None or path_hash(path) != h:
        raise ShardError(f"{file_name} row {row} is not the segment the metadata pass saw: did the file change?")
    if suffix:
        seg_id = f"{seg_id}-{h}"
    audio = rec.get("audio")
    data = audio.get("bytes") if isinstance(audio, dict) else None
    meta = {"begin_time": begin, "end_time": end, "original_path": path}
    if rec.get("audio_duration") is not None:
        meta["audio_duration"] = rec["audio_duration"]
    text = rec.get("transcript")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            near = text[max(0, exc.start - 20):exc.start + 20]
            return Reject(seg_id, "invalid_unicode", f"transcript is not UTF-8 ({exc.reason} at byte {exc.start}): "
                          f"near {near!r}")
    return RawUtterance(id=seg_id, doc_id=doc_id, order=(begin, end), text=text, audio=data or b"", metadata=meta)


def main(argv: list[str] | None = None) -> int:
    return cli_recipe.main(MLSRecipe, argv, prog="python -m sodadata.recipes.mls", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
