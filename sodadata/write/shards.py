"""Parquet shards, their JSON records and reject lists, written atomically.

Layout of an output directory::

    <out>/<component>/<stem>.parquet          rows (ROW_SCHEMA)
    <out>/<component>/<stem>.json             the shard's record; its presence marks the shard finished
    <out>/<component>/rejects/<stem>.parquet  rejected inputs (REJECT_SCHEMA), one row each, with reason

The record is written last and names the sizes of the files beside it (``"files": {"<stem>.parquet": 123,
"rejects/<stem>.parquet": 45}``): a shard is finished only when its record exists and those files have those
sizes (:func:`record_matches_files`). On a local disk each file is written to a hidden temporary name in the same
directory, fsynced and renamed, so a file is visible under its final name only once complete. An object store
has no rename (SPEC §6): each file is uploaded under its final name (an upload becomes visible only whole, when
committed) and the record last; a killed attempt leaves at most files whose sizes no record names, which a rerun
overwrites and no reader reads.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from sodadata.locations import (
    Location,
    as_location,
    display,
    fresh,
    fsync_dir,
    is_remote,
    temp_name,
)

log = logging.getLogger(__name__)

ROW_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("text", pa.large_string(), nullable=False),
        pa.field("corpus", pa.string(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("n_utterances", pa.int32(), nullable=False),
        pa.field("audio_seconds", pa.float64(), nullable=False),
        pa.field("n_audio_tokens", pa.int64(), nullable=False),
        pa.field("metadata", pa.string(), nullable=True),  # JSON: source fields we keep but do not interpret
    ]
)
REJECT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)
# Row groups are bounded by bytes, not rows: a Yodas row (a whole video) is 1 MB+, an Emilia row a few kB.
# ~64 MiB uncompressed keeps the HF dataset viewer and streaming readers happy and Arrow far from its 2 GiB cap.
ROW_GROUP_BYTES = 64 * 1024 * 1024
MAX_ROWS_PER_GROUP = 10_000
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
RECORD_VERSION = 1
_COMPONENT_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")


def check_component(component: str) -> str:
    if not _COMPONENT_RE.match(component) or ".." in component:
        raise ValueError(f"component name {component!r} must look like 'corpus/lang' (lower case, no '..')")
    return component


REJECTS_DIRNAME = "rejects"


def shard_file_names(stem: str) -> tuple[str, str]:
    """The names, relative to the component folder, of a shard's rows and rejects (the keys of a record's
    ``files``)."""
    return f"{stem}.parquet", f"{REJECTS_DIRNAME}/{stem}.parquet"


def _stat_size(loc: Location) -> int | None:
    try:
        return fresh(loc).stat().st_size
    except FileNotFoundError:
        return None


def record_matches_files(record: dict, component_dir: Location,
                         size_of: Callable[[Location], int | None] = _stat_size) -> bool:
    """Whether the files a record names beside it have the sizes it names: what makes a shard finished.

    A record without ``files`` (written before it existed) counts on a local disk, where temp+rename made each file
    whole and the record came last, if its Parquet file is there; on an object store it does not (nothing there
    says the files are the ones it was written for). ``size_of`` answers from a listing where the caller has one.
    """
    files = record.get("files")
    stem = record.get("shard")
    if not isinstance(files, dict):
        if is_remote(component_dir) or not isinstance(stem, str):
            return False
        return size_of(component_dir / shard_file_names(stem)[0]) is not None
    if not files:
        return False
    for name, size in files.items():
        if not isinstance(name, str) or ".." in name.split("/") or name.startswith("/"):
            return False
        if size_of(component_dir / name) != size:
            return False
    return True


@dataclass(frozen=True)
class ShardPaths:
    out: Location | str
    component: str
    stem: str

    @property
    def dir(self) -> Location:
        return as_location(self.out) / self.component

    @property
    def parquet(self) -> Location:
        return self.dir / shard_file_names(self.stem)[0]

    @property
    def record(self) -> Location:
        return self.dir / f"{self.stem}.json"

    @property
    def rejects(self) -> Location:
        return self.dir / shard_file_names(self.stem)[1]

    def finished_record(self) -> dict | None:
        """The shard's record if the shard is finished (its record exists and names the files beside it as they
        are, :func:`record_matches_files`), else None: a shard to (re)make."""
        try:
            record = read_record(self.record)
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("%s: record does not read (%s); the shard is made again", display(self.record),
                        type(exc).__name__)
            return None
        if not isinstance(record, dict) or not record_matches_files(record, self.dir):
            return None
        return record

    def is_finished(self) -> bool:
        return self.finished_record() is not None

    def remove_stale_temps(self) -> int:
        """Delete temporary files left by earlier attempts at this shard (a killed process leaves its partial
        file behind, hidden; a Yodas partial can be hundreds of MB). Returns how many were removed.

        Only this shard's names are touched. The one writer that could still own such a file is a task on a lost
        Dask worker that is still running: its commit then fails, and this attempt's result stands. An object store
        has no temporary names (an upload never committed is not an object), so nothing is removed there.
        """
        if is_remote(self.dir):
            return 0
        removed = 0
        for final in (self.parquet, self.rejects, self.record):
            if not final.parent.is_dir():
                continue
            for tmp in final.parent.glob(f".{final.name}.tmp-*"):
                tmp.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("%s/%s: removed %d temporary files of an interrupted attempt", self.component, self.stem, removed)
        return removed


def parquet_writer_options() -> dict:
    """Options for every Parquet file we write: zstd, page index, content-defined chunking where supported."""
    opts: dict = dict(
        compression=COMPRESSION,
        compression_level=COMPRESSION_LEVEL,
        write_page_index=True,
        write_statistics=["id", "split", "corpus", "format", "n_utterances", "audio_seconds", "n_audio_tokens"],
    )
    if _supports_cdc():
        opts["use_content_defined_chunking"] = True
    return opts


def _supports_cdc() -> bool:
    import inspect

    try:
        return "use_content_defined_chunking" in inspect.signature(pq.ParquetWriter.__init__).parameters
    except (TypeError, ValueError):
        return False


class ShardWriter:
    """Writes one Parquet file atomically; row groups are flushed by byte size.

    Use as a context manager: ``commit()`` puts the finished file in place (local: renames the temporary file;
    object store: completes the upload under the final name); leaving the block with an exception removes the
    temporary file or abandons the upload, so nothing partial is ever visible. ``size`` is the committed file's
    size in bytes (for the record's ``files``).
    """

    def __init__(self, path: Location | str, schema: pa.Schema = ROW_SCHEMA,
                 row_group_bytes: int = ROW_GROUP_BYTES) -> None:
        self.path = as_location(path)
        self.schema = schema
        self.row_group_bytes = row_group_bytes
        self.remote = is_remote(self.path)
        self.size: int | None = None
        opts = parquet_writer_options()
        if schema is not ROW_SCHEMA:
            opts.pop("write_statistics")
        if self.remote:
            # Streamed under the final name without committing: the store shows the object only at commit()
            # (S3: a multipart upload completed), and discard() abandons it.
            self.tmp = None
            self._upload = self.path.fs.open(self.path.path, "wb", autocommit=False)
            self._sink = pa.PythonFile(self._upload, mode="w")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = temp_name(self.path)
            # The file is opened here, not by ParquetWriter: when the disk is full, ParquetWriter.close() raises
            # while writing the footer and never closes a file it opened itself, so each failed shard kept a
            # descriptor to its deleted temp file (space not freed, descriptors exhausted on a long run).
            self._sink = pa.OSFile(str(self.tmp), "wb")
        try:
            self._writer = pq.ParquetWriter(self._sink, schema, **opts)
        except BaseException:
            # Opening writes the magic bytes: on a full disk it fails after creating the file, and no context
            # manager exists yet to abort. Without this, every retry on a full disk left an empty temp file.
            self._discard_sink()
            raise
        self._buffer: list[dict] = []
        self._buffer_bytes = 0
        self.rows = 0
        self.committed = False

    def write(self, row: dict) -> None:
        self._buffer.append(row)
        # UTF-8 bytes, not characters: audio characters take 3-4 bytes each (about 1 ms per MB to count)
        self._buffer_bytes += sum(len(v.encode("utf-8")) if isinstance(v, str) else 8 for v in row.values())
        if self._buffer_bytes >= self.row_group_bytes or len(self._buffer) >= MAX_ROWS_PER_GROUP:
            self.flush()

    def write_all(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.write(row)

    def flush(self) -> None:
        if not self._buffer:
            return
        table = pa.Table.from_pylist(self._buffer, schema=self.schema)
        self._writer.write_table(table, row_group_size=len(self._buffer))
        self.rows += len(self._buffer)
        self._buffer = []
        self._buffer_bytes = 0

    def commit(self) -> Location:
        self.flush()
        self._writer.close()
        self.size = self._sink.tell()
        self._sink.close()
        if self.remote:
            self._upload.commit()
        else:
            with open(self.tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, self.path)
            fsync_dir(self.path.parent)
        self.committed = True
        return self.path

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception as exc:  # the writer may already be broken (disk full): clean up, say so, go on
            log.warning("closing the partial %s failed while aborting (%s); removing it", self.path.name, exc)
        finally:
            self._discard_sink()

    def _discard_sink(self) -> None:
        if self.remote:
            self._upload.discard()  # S3: the multipart upload is aborted; nothing was ever visible
            try:
                self._upload.closed = True  # so that closing cannot commit what was buffered
            except AttributeError:
                pass  # a file type whose close() never commits (fsspec's MemoryFile)
            return
        try:
            self._sink.close()
        except OSError:
            pass  # unflushed bytes of a file that is deleted next
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.committed:
            self.abort()


def withdraw_record(paths: ShardPaths) -> bool:
    """Remove a finished shard's record before its files are replaced (``--redo-mismatched``); True if there was one.

    The record marks the shard finished, so between this and the new record the shard reads as unfinished: a
    reader or a rerun never pairs the old record with new rows, nor the new record with old rows.
    """
    if is_remote(paths.record):
        if not paths.record.exists():  # deleting a missing object is no error on a store: ask first
            return False
        paths.record.unlink()
    else:
        try:
            paths.record.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(paths.record.parent)
    log.info("%s/%s: old record withdrawn; replacing the shard", paths.component, paths.stem)
    return True


def read_record(path: Location | str) -> dict:
    return json.loads(fresh(as_location(path)).read_text(encoding="utf-8"))
