"""Parquet shards, their JSON records and reject lists, written atomically.

Layout of an output directory::

    <out>/<component>/<stem>.parquet          rows (ROW_SCHEMA)
    <out>/<component>/<stem>.json             the shard's record; its presence marks the shard finished
    <out>/<component>/rejects/<stem>.parquet  rejected inputs (REJECT_SCHEMA), one row each, with reason

A shard is visible under its final name only once complete: it is written to a hidden temporary name in the
same directory and renamed. The record is written last, so a shard without a record is redone by a rerun.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

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


@dataclass(frozen=True)
class ShardPaths:
    out: Path
    component: str
    stem: str

    @property
    def dir(self) -> Path:
        return Path(self.out) / self.component

    @property
    def parquet(self) -> Path:
        return self.dir / f"{self.stem}.parquet"

    @property
    def record(self) -> Path:
        return self.dir / f"{self.stem}.json"

    @property
    def rejects(self) -> Path:
        return self.dir / "rejects" / f"{self.stem}.parquet"

    def is_finished(self) -> bool:
        return self.record.exists() and self.parquet.exists()

    def remove_stale_temps(self) -> int:
        """Delete temporary files left by earlier attempts at this shard (a killed process leaves its partial
        file behind, hidden; a Yodas partial can be hundreds of MB). Returns how many were removed.

        Only this shard's names are touched. The one writer that could still own such a file is a task on a lost
        Dask worker that is still running: its commit then fails, and this attempt's result stands.
        """
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


def _temp_name(final: Path) -> Path:
    # Hidden and not ending in .parquet/.json, so no glob of finished shards ever matches a partial file.
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (network mounts) refuse directory fsync; the rename is still atomic
    finally:
        os.close(fd)


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

    Use as a context manager: ``commit()`` renames the finished file into place; leaving the block with an
    exception removes the temporary file, so nothing partial is ever visible.
    """

    def __init__(self, path: Path, schema: pa.Schema = ROW_SCHEMA, row_group_bytes: int = ROW_GROUP_BYTES) -> None:
        self.path = Path(path)
        self.schema = schema
        self.row_group_bytes = row_group_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _temp_name(self.path)
        opts = parquet_writer_options()
        if schema is not ROW_SCHEMA:
            opts.pop("write_statistics")
        # The file is opened here, not by ParquetWriter: when the disk is full, ParquetWriter.close() raises while
        # writing the footer and never closes a file it opened itself, so each failed shard kept a descriptor to
        # its deleted temp file (space not freed, descriptors exhausted on a long run).
        self._sink = pa.OSFile(str(self.tmp), "wb")
        try:
            self._writer = pq.ParquetWriter(self._sink, schema, **opts)
        except BaseException:
            # Opening writes the magic bytes: on a full disk it fails after creating the file, and no context
            # manager exists yet to abort. Without this, every retry on a full disk left an empty temp file.
            self._sink.close()
            self.tmp.unlink(missing_ok=True)
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

    def commit(self) -> Path:
        self.flush()
        self._writer.close()
        self._sink.close()
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)
        self.committed = True
        return self.path

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception as exc:  # the writer may already be broken (disk full): clean up, say so, go on
            log.warning("closing the partial %s failed while aborting (%s); removing it", self.tmp.name, exc)
        finally:
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


def write_json_atomic(path: Path, obj: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def withdraw_record(paths: ShardPaths) -> bool:
    """Remove a finished shard's record before its files are replaced (``--redo-mismatched``); True if there was one.

    The record marks the shard finished, so between this and the new record the shard reads as unfinished: a
    reader or a rerun never pairs the old record with new rows, nor the new record with old rows.
    """
    try:
        paths.record.unlink()
    except FileNotFoundError:
        return False
    _fsync_dir(paths.record.parent)
    log.info("%s/%s: old record withdrawn; replacing the shard", paths.component, paths.stem)
    return True


def read_record(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
