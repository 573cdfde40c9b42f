"""Shard reading for the mixture stream: listing, per-epoch shuffles, one row group at a time, resumable.

One :class:`ComponentReader` is the endless token stream of one component inside one *lane* (see packing.py).
Epoch ``e`` of a component is a permutation ``perm_e`` of its ``n`` shards drawn from ``(seed, component, e)``.
Lane ``l`` of ``L`` reads, in its epoch ``e``, the shards ``perm_e[l], perm_e[l+L], …``; when there are fewer
shards than lanes, the lanes ``l ≡ k (mod n)`` share shard ``perm_e[k]`` and take every ``m``-th of its rows. Either
way every row of every epoch is read by exactly one lane (no overlap, no loss) and lanes never coordinate. A lane
that has read its share starts its next epoch, with a fresh shuffle.

Inside a shard the row groups are visited in a shuffled order and the rows of each row group in a shuffled order
(both drawn from the seed, the epoch and the shard), so the two rows of a document and neighbouring documents are
spread apart; a row group (at most 64 MiB of text, shards.py) is the shuffle window and the most a reader holds in
memory.

A reader's position is five integers (epoch, shard, row group, row, token offset), so a restore re-reads one row
group and re-tokenizes from one row: no replay from the start.

On an object store (SPEC §6) a row group is a round trip or several: each reader reads the row group that follows
the current one in a background thread while the current one is tokenized (:class:`_Prefetch`). The next row group
is a function of the position alone, so the order, the windows and a saved position are the same as without it; a
reader holds at most two row groups (the current one and the next). A local disk reads a row group in milliseconds
and is read in the caller's thread, as before.

Shards are identified by content, not by name (:meth:`ShardList.identities`): a shard's size and a digest of its
record (``<stem>.json``, which a rebuilt shard rewrites) and of its Parquet footer (row groups, sizes and statistics
of the data; or, where the filesystem's listing carries a content hash such as the Hub's LFS SHA-256, that hash).
A stream state saved on one set of shards is refused on another, naming the shard replaced under the same name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import PurePosixPath

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from sodadata.locations import EXTRAS, check_location, display, is_remote, scheme
from sodadata.mix.tokenizer import RowEncoder
from sodadata.write.outputs import is_skipped

log = logging.getLogger(__name__)

ENCODE_CHUNK_BYTES = 8 * 1024 * 1024  # text handed to the tokenizer per call: large enough to batch, bounded memory
ENCODE_CHUNK_ROWS = 256
PREFETCH_THREADS = 8  # row-group reads in flight per process (one per reader at most): I/O waits, not CPU
GLOB_CHARS = "*?["  # what makes a location a glob (fsspec's, as list_shards expands it)


# Keys of an fsspec listing entry that hold a hash of the file's content (Hub LFS files, GCS, S3 single-part).
_CONTENT_HASH_KEYS = ("sha256", "md5Hash", "crc32c", "ETag", "etag", "blob_id")
_FOOTER_TAIL = 8  # a Parquet file ends with the footer's length (4 bytes, little-endian) and b"PAR1"


@dataclass(frozen=True)
class ShardList:
    """A component's shard files, sorted by name, on one fsspec filesystem."""

    fs: fsspec.AbstractFileSystem
    paths: tuple[str, ...]
    location: str
    infos: tuple[dict, ...] = ()  # the listing's entry for each path (size, and a content hash where there is one)
    with_records: bool = False  # a directory of finished shards: each has its record <stem>.json beside it

    def urls(self) -> list[str]:
        if isinstance(self.fs, LocalFileSystem):
            return list(self.paths)
        return [self.fs.unstrip_protocol(p) for p in self.paths]

    @property
    def names(self) -> list[str]:
        return [p.rsplit("/", 1)[-1] for p in self.paths]

    def record(self, index: int) -> dict | None:
        """The shard's record (directory of finished shards), or None (a glob of Parquet files)."""
        return json.loads(self._record_bytes[index]) if self.with_records else None

    @cached_property
    def _record_bytes(self) -> tuple[bytes, ...]:
        return tuple(self.fs.cat_file(p[: -len(".parquet")] + ".json") for p in self.paths) if self.with_records else ()

    @cached_property
    def identities(self) -> tuple[str, ...]:
        """Per shard, ``<size>:<digest>``: what the shard is, whatever its name (module doc). Read once."""
        out = []
        for k, path in enumerate(self.paths):
            info = self.infos[k] if self.infos else self.fs.info(path)
            h = hashlib.sha256()
            if self.with_records:
                h.update(self._record_bytes[k])
            content = _content_hash(info)
            h.update(content.encode() if content else self._footer(path, int(info["size"])))
            out.append(f"{int(info['size'])}:{h.hexdigest()[:16]}")
        return tuple(out)

    def _footer(self, path: str, size: int) -> bytes:
        tail = self.fs.cat_file(path, start=max(0, size - _FOOTER_TAIL), end=size)
        if len(tail) < _FOOTER_TAIL or tail[4:] != b"PAR1":
            raise ValueError(f"{path} is not a Parquet file (no PAR1 at its end)")
        (length,) = struct.unpack("<I", tail[:4])
        return self.fs.cat_file(path, start=max(0, size - _FOOTER_TAIL - length), end=size)

    def made_by_problem(self) -> str | None:
        """One line when the shards' records disagree on ``made_by`` (SPEC §2): they differ, or some have none
        (made before format 2) while others have one. None when they agree, when none has one (an older output: it
        cannot be checked), or without records (a glob)."""
        if not self.with_records:
            return None
        from sodadata.write.outputs import FinishedShard, missing_made_by, mixed_made_by

        root = PurePosixPath(self.paths[0]).parent  # a directory of finished shards: one folder
        shards = [FinishedShard(root=root, component="", record_path=PurePosixPath(p).with_suffix(".json"),
                                record=self.record(k)) for k, p in enumerate(self.paths)]
        missing = missing_made_by(shards)
        if missing and len(shards) > 1 and any(s.made_by is not None for s in shards):
            return missing
        return mixed_made_by(shards)

    def fingerprint(self) -> str:
        """Names and contents of every shard (a resumed stream must find the same)."""
        return hashlib.sha256("\n".join(f"{n}\0{i}" for n, i in zip(self.names, self.identities)).encode()
                              ).hexdigest()[:16]

    def names_fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.names).encode()).hexdigest()[:16]

    def short_identities(self) -> list[str]:
        """A 12-hex digest per shard (stream states keep these to name a replaced shard)."""
        return [hashlib.sha256(f"{n}\0{i}".encode()).hexdigest()[:12] for n, i in zip(self.names, self.identities)]

    def changes_since(self, saved: dict) -> str | None:
        """What differs from a saved :meth:`summary` (one phrase), or None when the shards are the same."""
        if saved.get("names") != self.names_fingerprint() or len(saved.get("shards", [])) != len(self.paths):
            return (f"its shard files are not the same ({len(saved.get('shards', []))} then, {len(self.paths)} now, "
                    "or other names)")
        changed = [n for n, old, new in zip(self.names, saved["shards"], self.short_identities()) if old != new]
        if not changed:
            return None
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        return f"{changed[0]} was replaced under the same name (its size, record or content differ){more}"

    def summary(self) -> dict:
        return {"names": self.names_fingerprint(), "shards": self.short_identities()}

    def open(self, index: int) -> pq.ParquetFile:
        path = self.paths[index]
        if isinstance(self.fs, LocalFileSystem):
            return pq.ParquetFile(path)  # Arrow's own reader: no Python file object in the way
        # On a store each read is a request: no read-ahead cache (a row group's text column is one read, and nothing
        # beyond it is wanted), and the footer is read once per shard, not at every epoch's reopening.
        file = pq.ParquetFile(self.fs.open(path, "rb", cache_type="none"), metadata=self._metadata.get(index))
        self._metadata[index] = file.metadata
        return file

    @cached_property
    def _metadata(self) -> dict[int, pq.FileMetaData]:
        return {}


def is_glob(location: str) -> bool:
    """Whether ``location`` is a glob (holds ``*``, ``?`` or ``[``) rather than a folder of shards."""
    return any(ch in location for ch in GLOB_CHARS)


def list_shards(location: str) -> ShardList:
    """The Parquet shards at ``location``: a directory of finished shards, or a glob.

    A directory holds finished shards as the recipes write them: ``<stem>.parquet`` directly inside, finished only
    once ``<stem>.json`` (its record) is beside it. A glob (``*``, ``**``) takes every ``.parquet`` it matches,
    record or not (published copies may not carry records), except hidden files and files in folders below the
    glob's fixed part that never hold shards (``rejects/``, ``_hub/``, ``_stats/``, hidden ones).
    """
    if is_remote(location):
        check_readable(location)
    fs, path = fsspec.core.url_to_fs(location)
    glob = is_glob(path)
    if glob:
        entries = {p: info for p, info in fs.glob(path, detail=True).items() if p.endswith(".parquet")}
    else:
        try:
            listed = {e["name"]: e for e in fs.ls(path, detail=True)}
        except FileNotFoundError:
            listed = {}
        names = {e.rstrip("/").rsplit("/", 1)[-1] for e in listed}
        entries = {e: info for e, info in listed.items()
                   if e.endswith(".parquet") and e[: -len(".parquet")].rsplit("/", 1)[-1] + ".json" in names}
        if scheme(location) in EXTRAS:
            # No rename on an object store: a record beside a Parquet object says nothing until the sizes it names
            # match (SPEC §6; a killed attempt's upload beside an older record is never read). outputs decides that.
            # (memory:// and the like keep the local rule: a record beside the shard.)
            from sodadata.write.outputs import find_shards

            finished = {s.parquet.path for s in find_shards(location).shards}
            entries = {e: info for e, info in entries.items() if e in finished}
    # Below the fixed part of the location, folders that never hold shards (``_hub`` staged copies, ``_stats``,
    # ``rejects``, hidden ones: sodadata.write.outputs.is_skipped) are not searched; hidden files are not shards either.
    first_glob = min([path.index(ch) for ch in GLOB_CHARS if ch in path], default=len(path))
    fixed = len(path[:first_glob].rsplit("/", 1)[0]) + 1 if glob else len(path.rstrip("/")) + 1
    # Ordered by file name (then path): a component's published copy, whose shards may sit in hashed bucket
    # folders (sodadata/write/published.py), gives the same list as its output directory, hence the same stream.
    found = sorted((p for p in entries if not any(is_skipped(d) for d in p[fixed:].split("/")[:-1])
                    and not p.rsplit("/", 1)[-1].startswith(".")), key=lambda p: (p.rsplit("/", 1)[-1], p))
    if not found:
        raise FileNotFoundError(f"no finished Parquet shards at {display(location)}")
    return ShardList(fs=fs, paths=tuple(found), location=location, infos=tuple(entries[p] for p in found),
                     with_records=not glob)


def check_readable(location: str) -> None:
    """One :class:`~sodadata.read.recipe.ConfigError` line, before any read, when ``location`` (a folder or a glob) is on
    an object store whose backend is missing, whose credentials are refused, that cannot be reached or that has
    nothing there (:func:`sodadata.locations.check_location` on the glob's fixed part). Local paths and other
    fsspec URLs (``hf://``, ``memory://``) say what is wrong when listed."""
    if scheme(location) not in EXTRAS:
        return
    first_glob = min([location.index(ch) for ch in GLOB_CHARS if ch in location], default=len(location))
    prefix = location[:first_glob].rsplit("/", 1)[0] if first_glob < len(location) else location
    check_location(prefix, write=False)


def _content_hash(info: dict) -> str | None:
    """A hash of the file's content from its listing entry, where the filesystem gives one."""
    lfs = info.get("lfs")
    if isinstance(lfs, dict) and lfs.get("sha256"):
        return f"sha256:{lfs['sha256']}"
    for key in _CONTENT_HASH_KEYS:
        if info.get(key):
            return f"{key}:{info[key]}"
    return None


def stable_id(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _key_seed(key: tuple[int, ...]) -> np.uint64:
    digest = hashlib.blake2b(",".join(map(str, key)).encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # uint64 arithmetic wraps, which is the point; numpy only warns about it for scalars.
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniform(n: int, *key: int) -> np.ndarray:
    """``n`` numbers in [0, 1) that depend only on ``key``.

    Hand-rolled (blake2b + splitmix64) rather than ``np.random``: NumPy does not promise the same stream across
    versions, and an exact resume must not depend on the NumPy a restarted job happens to have.
    """
    bits = _splitmix64(np.arange(n, dtype=np.uint64) ^ _key_seed(key))
    return (bits >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def permutation(n: int, *key: int) -> np.ndarray:
    """A permutation of ``range(n)`` that depends only on ``key`` (same on every host, Python and NumPy)."""
    bits = _splitmix64(np.arange(n, dtype=np.uint64) ^ _key_seed(key))
    return np.argsort(bits, kind="stable")


_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def _forget_executor() -> None:
    # a forked child (a DataLoader worker) has none of its parent's threads: it starts its own pool
    global _EXECUTOR, _EXECUTOR_LOCK
    _EXECUTOR, _EXECUTOR_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_executor)


class _Prefetch:
    """One reader's next row group, read in the process's shared prefetch threads (module doc): at most one read
    in flight and one row group waiting. While a read is in flight only its thread touches the reader's open file;
    :meth:`take` waits for it before the reader reads anything itself."""

    def __init__(self) -> None:
        self._future: Future | None = None
        self._ready: tuple[tuple[int, int, int], tuple[pa.Array, np.ndarray]] | None = None

    def start(self, read_next, key: tuple[int, int, int]) -> None:
        """Read what follows ``key`` (``read_next(key)``), unless it is already read or being read."""
        global _EXECUTOR
        if self._future is not None or self._ready is not None:
            return
        with _EXECUTOR_LOCK:
            if _EXECUTOR is None:
                _EXECUTOR = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="sodadata-prefetch")
            self._future = _EXECUTOR.submit(read_next, key)

    def take(self, key: tuple[int, int, int]) -> tuple[pa.Array, np.ndarray] | None:
        """The row group ``key`` if it was read ahead, else None (the reader reads it); a failed read raises here.
        Keys are in reading order: one read ahead past ``key`` (the next shard's first row group, while the reader
        is still finding its current shard's end) is kept for later."""
        if self._future is not None:
            future, self._future = self._future, None
            self._ready = future.result()
        if self._ready is None or self._ready[0] < key:
            self._ready = None
            return None
        if self._ready[0] > key:
            return None
        group, self._ready = self._ready[1], None
        return group


@dataclass
class ReaderPosition:
    epoch: int = 0
    shard: int = 0  # position in this lane's list of shards for the epoch
    row_group: int = 0  # position in the shard's shuffled row-group order
    row: int = 0  # position in this lane's share of the row group's shuffled rows
    offset: int = 0  # tokens of that row already consumed


@dataclass(frozen=True)
class LaneShare:
    shard: int  # index into ShardList.paths
    part: int  # this lane takes rows part, part + parts, ... of every row group (parts > 1: fewer shards than lanes)
    parts: int


def lane_shares(n_shards: int, lanes: int, lane: int, order: np.ndarray) -> list[LaneShare]:
    """What lane ``lane`` reads of one epoch whose shard order is ``order`` (module doc)."""
    if n_shards >= lanes:
        return [LaneShare(int(order[k]), 0, 1) for k in range(lane, n_shards, lanes)]
    k = lane % n_shards
    return [LaneShare(int(order[k]), lane // n_shards, len(range(k, lanes, n_shards)))]


class ComponentReader:
    """One lane's endless token stream of one component (module doc); yields pieces of rows."""

    def __init__(self, name: str, shards: ShardList, encoder: RowEncoder, seed: int, lane: int, lanes: int,
                 text_key: str = "text", position: dict | None = None) -> None:
        self.name = name
        self.shards = shards
        self.encoder = encoder
        self.lane = lane
        self.lanes = lanes
        self.text_key = text_key
        self._key = (int(seed), stable_id(name))
        if position is None:
            self.position = ReaderPosition()
        else:
            if position.get("shards") != shards.fingerprint():
                raise ValueError(f"the shards of {name} changed since this state was saved (names or contents); "
                                 "cannot resume exactly")
            self.position = ReaderPosition(**{k: position[k] for k in ("epoch", "shard", "row_group", "row", "offset")})
        self._shares: dict[int, list[LaneShare]] = {}  # per epoch (the current one and the next)
        self._file: pq.ParquetFile | None = None
        self._file_at: tuple[int, int] = (-1, -1)  # (epoch, shard position) of the open file
        self._group_order: np.ndarray | None = None
        self._texts: pa.Array | None = None  # the current row group's text column
        self._row_order: np.ndarray | None = None  # this lane's rows of it, in reading order
        self._encoded: dict[int, np.ndarray] = {}  # row position -> token ids, for the current chunk
        self._prefetch = _Prefetch() if is_remote(shards.location) else None

    @property
    def epoch(self) -> int:
        return self.position.epoch

    def state(self) -> dict:
        return {**asdict(self.position), "shards": self.shards.fingerprint()}

    def _epoch_shares(self, epoch: int) -> list[LaneShare]:
        shares = self._shares.get(epoch)
        if shares is None:  # the prefetch thread may be one epoch ahead: a small dict, replaced whole (atomic)
            n = len(self.shards.paths)
            shares = lane_shares(n, self.lanes, self.lane, permutation(n, *self._key, epoch))
            self._shares = {**{e: v for e, v in self._shares.items() if e >= epoch - 1}, epoch: shares}
        return shares

    def _load_group(self) -> bool:
        """Make the row group at the current position readable; False if the current shard is exhausted."""
        pos = self.position
        key = (pos.epoch, pos.shard, pos.row_group)
        if self._texts is not None:
            return True
        group = self._prefetch.take(key) if self._prefetch is not None else None
        if group is None:
            group = self._read_group(key)
        if group is None:
            return False
        self._texts, self._row_order = group
        self._encoded = {}
        if self._prefetch is not None:
            self._prefetch.start(self._next_group, key)
        return True

    def _read_group(self, key: tuple[int, int, int]) -> tuple[pa.Array, np.ndarray] | None:
        """The text column of row group ``key`` = (epoch, shard position, row group position) and this lane's rows
        of it in reading order; None past the end of the shard or of the epoch's shares. Opens the shard's file when
        ``key`` is in another shard than the open one. Only one thread at a time calls it (:class:`_Prefetch`)."""
        epoch, shard_pos, group_pos = key
        shares = self._epoch_shares(epoch)
        if shard_pos >= len(shares):
            return None
        share = shares[shard_pos]
        if self._file_at != (epoch, shard_pos):
            self._file = self.shards.open(share.shard)
            self._file_at = (epoch, shard_pos)
            self._group_order = permutation(self._file.num_row_groups, *self._key, epoch, share.shard)
        if group_pos >= len(self._group_order):
            return None
        group = int(self._group_order[group_pos])
        texts = self._file.read_row_group(group, columns=[self.text_key]).column(self.text_key).combine_chunks()
        order = permutation(len(texts), *self._key, epoch, share.shard, group)
        return texts, order[share.part::share.parts]

    def _next_group(self, key: tuple[int, int, int]) -> tuple[tuple[int, int, int], tuple[pa.Array, np.ndarray]] | None:
        """The first row group after ``key`` in reading order and its key: the next row group of the shard, else
        the next shard's first, else the next epoch's first, as :meth:`pieces` moves (empty shards are passed)."""
        epoch, shard_pos, group_pos = key[0], key[1], key[2] + 1
        for _ in range(2 * len(self.shards.paths) + 2):
            group = self._read_group((epoch, shard_pos, group_pos))
            if group is not None:
                return (epoch, shard_pos, group_pos), group
            if shard_pos + 1 < len(self._epoch_shares(epoch)):
                shard_pos, group_pos = shard_pos + 1, 0
            else:
                epoch, shard_pos, group_pos = epoch + 1, 0, 0
        return None  # only empty shards within reach: the reader's own loop meets them as before

    def _advance_group(self) -> None:
        self.position.row_group += 1
        self.position.row = 0
        self.position.offset = 0
        self._texts = None

    def _advance_shard(self) -> None:
        pos = self.position
        if pos.shard + 1 < len(self._epoch_shares(pos.epoch)):
            self.position = ReaderPosition(epoch=pos.epoch, shard=pos.shard + 1)
        else:
            self.position = ReaderPosition(epoch=pos.epoch + 1)
        self._texts = None

    def _row_tokens(self) -> np.ndarray:
        """Token ids of the row at the current position (encoding the next chunk of rows when needed)."""
        pos = self.position
        if pos.row not in self._encoded:
            rows = self._row_order[pos.row:pos.row + ENCODE_CHUNK_ROWS]
            sizes = pc.binary_length(self._texts.take(pa.array(rows))).to_numpy(zero_copy_only=False)
            n = max(1, int(np.searchsorted(np.cumsum(sizes), ENCODE_CHUNK_BYTES, side="right")))
            texts = self._texts.take(pa.array(rows[:n])).to_pylist()
            self._encoded = dict(zip(range(pos.row, pos.row + n), self.encoder.encode_batch(texts)))
        return self._encoded[pos.row]

    def pieces(self, n_tokens: int) -> Iterator[np.ndarray]:
        """The next ``n_tokens`` tokens as consecutive pieces, one per row they come from."""
        empty_epochs, last_epoch = 0, self.position.epoch
        while n_tokens > 0:
            if self.position.epoch != last_epoch:
                empty_epochs, last_epoch = empty_epochs + 1, self.position.epoch
                # A lane's share can be empty by chance in an epoch (it drew an empty or one-row shard); this many
                # in a row means it never gets any rows (e.g. one row shared by several lanes).
                if empty_epochs > max(100, 10 * len(self.shards.paths)):
                    raise RuntimeError(f"component {self.name} gives lane {self.lane} no tokens "
                                       f"({self.shards.location})")
            if not self._load_group():
                self._advance_shard()
                continue
            if self.position.row >= len(self._row_order):
                self._advance_group()
                continue
            ids = self._row_tokens()
            take = min(n_tokens, len(ids) - self.position.offset)
            if take <= 0:  # an empty row
                self.position.row += 1
                self.position.offset = 0
                continue
            empty_epochs = 0
            yield ids[self.position.offset:self.position.offset + take]
            n_tokens -= take
            self.position.offset += take
            if self.position.offset == len(ids):
                self._encoded.pop(self.position.row, None)
                self.position.row += 1
                self.position.offset = 0
