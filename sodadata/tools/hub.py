"""``sodadata push OUT_DIR --repo ORG/NAME``: publish components of an output directory to the Hugging Face Hub.

``OUT_DIR`` is one output root (or a folder holding exactly one below it: that root is used), a local path or a
URL (``s3://``, ``gs://``, ``az://``: checked before any work, one line). From a bucket nothing of the output is
copied to the local disk: the stage is ``OUT_DIR/_hub/…`` in the bucket, holding only the card, records, rejects
and stats, and each shard is read from where it is when its commit is built, one file in memory at a time. Before anything is
staged, the records are checked (:func:`check_made_by`): a random test codec (unless ``--allow-random-codec``; the
card then warns at the top), a component whose shards differ in ``made_by`` (never), records without ``made_by``
(unless ``--allow-unknown-made-by``) stop the push with one line per component. Then two steps:

1. **Stage** the exact folder to upload (``--dry-run`` stops here), by default ``OUT_DIR/_hub/<org>--<name>/``::

       README.md                                   dataset card: configs, format, sources, licences, stats
       data/<component>/<stem>.parquet              the shards; one config per component loads these
       data/<component>/<xx>/<stem>.parquet         ... in 256 hashed sub-folders above FOLDER_ENTRY_LIMIT shards
                                                    (sodadata/write/published.py: the layout, and how readers find it)
       records/<component>/records.jsonl            every shard's JSON record (not loaded by any config)
       rejects/<component>/rejects.parquet          every rejected input with its reason (not loaded)
       stats/                                       stats.md, stats.json, PNGs (shown in the card)

   Shards are hard links to the originals (no copy) when they are already fit for the Hub: row groups at most
   ``max_row_group_mb`` uncompressed (the dataset viewer refuses row groups above ~286 MiB; streaming readers
   hold a row group in memory) and a page index. Others are rewritten into the stage with
   ``parquet_writer_options()`` (zstd, page index, content-defined chunking where pyarrow has it, so a re-upload
   of a rewritten shard deduplicates on the Hub's Xet storage) and byte-bounded row groups.

2. **Upload** in batched commits (``--method commits``, the default): the remote tree is listed once, files
   already there (same path and size; same hash where it is cheap or ``--checksum``) are skipped, the rest go in
   commits of at most ``files_per_commit`` files and ``commit_gb`` GB: data first, then records and rejects,
   then stats and the card (so the card never points at data that is not there yet). Each commit is
   ``HfApi.create_commit``, whose transfers go through the library's Xet/LFS upload: data already uploaded by
   an interrupted attempt is deduplicated, not sent again. Commits and listings are retried with exponential
   backoff on 429/5xx and connection errors (``RetryPolicy``, honouring ``Retry-After``). A rerun after any
   failure uploads only what is missing. ``--method library`` hands the whole staged folder to the library's
   own resumable folder upload instead (``upload_large_folder`` where the installed ``huggingface_hub`` has it,
   else ``upload_folder``, which with ``hf_xet`` commits in batches and resumes on rerun).

   After the upload the remote tree is listed again and every staged file is checked (present, same size, same
   hash where known); the command fails if anything is missing or differs, or if a config's data folder on the
   Hub holds files not in the stage (they would be loaded by the config: ``--prune`` deletes them).

The token is the library's (``HF_TOKEN`` or ``hf auth login``); it is never read, logged or written here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sodadata import __version__
from sodadata.cli import OneLineParser, setup_logging
from sodadata.locations import Location, as_location, check_location, display, is_remote, local_path
from sodadata.read.catalog import CATALOG_DIR
from sodadata.read.recipe import ConfigError
from sodadata.tools.card import SourceInfo, check_config_names, random_codec_of, render_card, source_info
from sodadata.tools.stats import (
    STATS_DIRNAME,
    STATS_MD,
    StatsConfig,
    compute_stats,
    read_report,
    write_report,
)
from sodadata.tools.stats_numbers import CorpusStats, StatsError, fingerprint, load_weights
from sodadata.tools.stats_plots import PLOTS
from sodadata.write.outputs import FinishedShard, Found, OutputError, missing_made_by, mixed_made_by, one_root
from sodadata.write.published import DATA_DIR, RECORDS_DIR, REJECTS_DIR, STATS_DIR, data_glob, shard_path
from sodadata.write.shards import REJECT_SCHEMA, parquet_writer_options

log = logging.getLogger(__name__)

CARD = "README.md"
HUB_DIRNAME = "_hub"  # under OUT_DIR; '_' because no component name can start with it
# The Hub recommends < 10k entries per folder; above this many shards a component is split into hashed buckets.
FOLDER_ENTRY_LIMIT = 5_000
# Largest row group (uncompressed) published as is. The dataset viewer refuses row groups above ~286 MiB and the
# Hub recommends 100-300 MB; 256 MiB keeps a margin. ShardWriter's 64 MiB target counts characters, and audio
# characters are 3-4 UTF-8 bytes, so its audio-heavy groups reach ~224 MiB: those pass, larger ones are rewritten.
MAX_ROW_GROUP_MB = 256
REWRITE_ROW_GROUP_BYTES = 64 * 1024 * 1024
HASH_SMALL_FILES_BYTES = 10 * 1024 * 1024  # hash files up to this size for the remote comparison: cheap, exact
REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
REJECTS_WITH_SHARD = REJECT_SCHEMA.append(pa.field("shard", pa.string(), nullable=False))


class PushError(Exception):
    """A problem the user can fix; the message says what to do."""


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for Hub calls: delay ``base * multiplier**k`` (capped), or the server's Retry-After."""

    max_attempts: int = 8
    base_delay_s: float = 2.0
    multiplier: float = 2.0
    max_delay_s: float = 300.0
    retry_statuses: tuple[int, ...] = (408, 429, 500, 502, 503, 504)

    def delay(self, attempt: int, exc: BaseException | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        computed = min(self.max_delay_s, self.base_delay_s * self.multiplier ** (attempt - 1))
        retry_after = _retry_after(exc)
        return min(self.max_delay_s, max(computed, retry_after)) if retry_after is not None else computed

    def is_retryable(self, exc: BaseException) -> bool:
        status = _status(exc)
        if status is not None:
            return status in self.retry_statuses
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        try:  # the transport errors of the HTTP client huggingface_hub uses (httpx2 in 2.x, requests before)
            import httpx2

            if isinstance(exc, httpx2.TransportError):
                return True
        except ImportError:
            pass
        try:
            import requests

            return isinstance(exc, (requests.ConnectionError, requests.Timeout))
        except ImportError:
            return False


def _status(exc: BaseException | None) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return int(status) if isinstance(status, int) else None


def _retry_after(exc: BaseException | None) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


@dataclass(frozen=True)
class CommitConfig:
    files_per_commit: int = 100  # the Hub recommends commits of about 100 files at most
    bytes_per_commit: int = 20 * 1000**3  # bounds the work lost with one failed commit
    deletes_per_commit: int = 1000


@dataclass(frozen=True)
class PushConfig:
    out: Location | str
    repo: str
    private: bool = False
    revision: str | None = None
    dry_run: bool = False
    stage_dir: Location | str | None = None  # default OUT/_hub/<org>--<name> (in the bucket when OUT is one)
    components: tuple[str, ...] = ()
    tokenizer: str | Path | None = None
    recipe: Path | None = None
    utterance_shards: int | None = None
    prune: bool = False
    checksum: bool = False
    method: str = "commits"  # or "library"
    commits: CommitConfig = field(default_factory=CommitConfig)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_row_group_mb: float = MAX_ROW_GROUP_MB
    catalog_dir: Path = CATALOG_DIR
    allow_random_codec: bool = False  # publish shards of a random test codec (the card warns at the top)
    allow_unknown_made_by: bool = False  # publish shards whose records have no made_by (made before format 2)

    @property
    def stage(self) -> Location:
        if self.stage_dir is not None:
            return as_location(self.stage_dir)
        return as_location(self.out) / HUB_DIRNAME / self.repo.replace("/", "--")


# ---------------------------------------------------------------- staging


@dataclass
class StagedFile:
    path_in_repo: str
    location: Location  # the file uploaded: in the stage, or a shard in its bucket (read from there at upload)
    size: int
    kind: str  # "data", "records", "rejects", "stats" or "card"
    _sha256: str | None = field(default=None, repr=False)
    _git_sha1: str | None = field(default=None, repr=False)

    def sha256(self) -> str:
        if self._sha256 is None:
            h = hashlib.sha256()
            with self.location.open("rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
            self._sha256 = h.hexdigest()
        return self._sha256

    def git_sha1(self) -> str:
        """The git blob id the Hub reports for a regular (non-LFS) file."""
        if self._git_sha1 is None:
            h = hashlib.sha1(f"blob {self.size}\0".encode())
            with self.location.open("rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
            self._git_sha1 = h.hexdigest()
        return self._git_sha1


@dataclass
class Staged:
    root: Location
    files: list[StagedFile]
    sources: list[SourceInfo]
    stats: CorpusStats
    globs: dict[str, str]  # component -> the data_files pattern of its config
    rewritten: list[str]  # paths in repo of shards rewritten for the Hub (not hard links)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


def _open_parquet(loc: Location) -> pq.ParquetFile:
    # Arrow takes a local path, not a UPath: a file on a store is read through its filesystem
    return pq.ParquetFile(loc.open("rb") if is_remote(loc) else loc)


def parquet_hub_problem(path: Location, max_row_group_bytes: int) -> str | None:
    """Why a shard is not fit to publish as is (row groups too large, no page index), or None."""
    md = _open_parquet(path).metadata
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        if rg.total_byte_size > max_row_group_bytes:
            return f"row group {i} is {rg.total_byte_size / 2**20:.0f} MiB uncompressed"
        if any(not rg.column(j).has_offset_index for j in range(rg.num_columns)):
            return f"row group {i} has no page index"
    return None


def _row_bytes(batch: pa.RecordBatch) -> list[int]:
    """Uncompressed bytes of each row: UTF-8 bytes of strings (audio characters are 3-4 bytes, not 1)."""
    sizes = np.zeros(batch.num_rows, dtype=np.int64)
    for col in batch.columns:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_binary(col.type) \
                or pa.types.is_large_binary(col.type):
            sizes += pc.fill_null(pc.binary_length(col), 0).to_numpy(zero_copy_only=False)
        else:
            sizes += max(getattr(col.type, "bit_width", 64) // 8, 1)
    return sizes.tolist()


def _write_row_groups(pf: pq.ParquetFile, sink: Any, row_group_bytes: int) -> None:
    opts = parquet_writer_options()
    if "write_statistics" in opts:  # restrict statistics to the columns this file has
        opts["write_statistics"] = [c for c in opts["write_statistics"] if c in pf.schema_arrow.names]
    with pq.ParquetWriter(sink, pf.schema_arrow, **opts) as writer:
        pending: list[pa.RecordBatch] = []
        pending_bytes = 0

        def flush() -> None:
            nonlocal pending, pending_bytes
            if pending:
                writer.write_table(pa.Table.from_batches(pending, schema=pf.schema_arrow),
                                   row_group_size=sum(len(b) for b in pending))
            pending, pending_bytes = [], 0

        for batch in pf.iter_batches(batch_size=256):
            start = 0
            for i, size in enumerate(_row_bytes(batch)):
                if pending_bytes + size > row_group_bytes and (pending or i > start):
                    pending.append(batch.slice(start, i - start))
                    flush()
                    start = i
                pending_bytes += size
            pending.append(batch.slice(start))
        flush()


def rewrite_for_hub(src: Location, dst: Location, row_group_bytes: int = REWRITE_ROW_GROUP_BYTES) -> None:
    """Copy a Parquet file with Hub-friendly options and row groups of at most ``row_group_bytes`` (real bytes;
    a single larger row gets a group of its own). Locally under a temporary name then renamed; on a store uploaded
    under its name (an upload is visible only once complete)."""
    pf = _open_parquet(src)
    if is_remote(dst):
        with dst.open("wb") as sink:
            _write_row_groups(pf, sink, row_group_bytes)
        return
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        _write_row_groups(pf, tmp, row_group_bytes)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)  # no copy of TBs of shards; the stage is rebuilt on every run so links stay current
    except OSError:
        shutil.copy2(src, tmp)  # another filesystem, or links not allowed
    os.replace(tmp, dst)


def _mkdirs(folder: Location) -> None:
    if not is_remote(folder):  # a store has no folders to make
        folder.mkdir(parents=True, exist_ok=True)


def _remove_tree(folder: Location) -> None:
    if is_remote(folder):
        if folder.exists():
            folder.fs.rm(folder.path, recursive=True)
    elif folder.exists():
        shutil.rmtree(folder)


def _copy_tree(src: Location, dst: Location) -> None:
    if not is_remote(src) and not is_remote(dst):
        shutil.copytree(src, dst)
        return
    _mkdirs(dst)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())  # stats files: a few small files


def _prepare_stage_dir(stage: Location, out: Location) -> dict:
    """Create the stage folder (refusing a non-empty folder we did not make); return the previous manifest."""
    manifest_path = _manifest_path(stage)
    same = str(stage).rstrip("/") == str(out).rstrip("/") if is_remote(stage) or is_remote(out) else \
        Path(stage).resolve() == Path(out).resolve()
    if same:
        raise PushError(f"--stage {display(stage)} is the output directory itself: choose another folder")
    if stage.exists() and any(p.name != ".cache" for p in stage.iterdir()) and not manifest_path.exists():
        raise PushError(f"{display(stage)} exists and was not staged by sodadata: give --stage an empty or new "
                        "folder")
    _mkdirs(stage)
    try:
        return json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _manifest_path(stage: Location) -> Location:
    # Beside the stage, not in it: the stage holds exactly what is uploaded.
    return stage.with_name(stage.name + ".manifest.json")


def _reusable_stats(candidates: Sequence[Location], fp: str, weights: dict[str, float]) -> Location | None:
    """A stats folder computed from the same shards, options and recipe weights, if there is one."""
    for d in candidates:
        st = read_report(d)
        same_weights = st is not None and st.weights.keys() == weights.keys() and all(
            abs(st.weights[k] - w) < 1e-12 for k, w in weights.items())
        if same_weights and st.fingerprint == fp and all((d / n).exists() for n in [STATS_MD, *PLOTS.values()]):
            return d
    return None

def check_made_by(grouped: dict[str, list[FinishedShard]], allow_random_codec: bool = False,
                  allow_unknown_made_by: bool = False) -> None:
    """Refuse to publish what the records say is not fit (before any work; ``PushError``, one line per component).

    A component whose shards differ in ``made_by`` (never publishable: one config must be one kind of data); one
    whose records have no ``made_by`` (made before format 2: rebuild, or ``--allow-unknown-made-by``); one encoded
    with a random test codec (``made_by.codec.random``; for records without ``made_by``, a random codec named in
    their settings): its codes are noise (``--allow-random-codec``, and the card says so at the top).
    """
    lines = []
    for component, shards in grouped.items():
        if mixed := mixed_made_by(shards):
            lines.append(f"{component}: {mixed}: a config is one kind of data (rebuild the odd shards with the "
                         "recipe's --redo-mismatched, or leave this component out with --component)")
        if (missing := missing_made_by(shards)) and not allow_unknown_made_by:
            lines.append(f"{component}: {missing}: rebuild them with this sodadata, or pass --allow-unknown-made-by "
                         "to publish them as they are (the card then says so)")
        random = sorted({name for s in shards if (name := random_codec_of(s.record))})
        if random and not allow_random_codec:
            lines.append(f"{component}: encoded with {', '.join(random)}, a RANDOM test codec: its audio codes are "
                         "noise, not Mimi codes. Rebuild with the real codec, or pass --allow-random-codec (the card "
                         "then says so at the top)")
    if lines:
        raise PushError("\n".join(["refusing to push:", *lines]))


@dataclass
class _StagedComponent:
    files: list[StagedFile]
    rewritten: dict[str, dict]  # path in repo -> what it was rewritten from (the manifest's entry)


def _stage_shard(shard: FinishedShard, rel: str, root: Location, previous: dict, max_rg: int,
                 rewritten: dict[str, dict]) -> StagedFile:
    """One shard as published: itself (a hard link in a local stage; on a store the object where it is, uploaded
    from there), or a copy rewritten for the Hub when its row groups are not fit."""
    src = shard.parquet
    dst = root / rel
    problem = parquet_hub_problem(src, max_rg)
    if problem is None:
        if is_remote(src) or is_remote(root):
            return StagedFile(rel, src, src.stat().st_size, "data")  # streamed from the bucket at upload: no copy
        _mkdirs(dst.parent)
        _link_or_copy(src, dst)
        return StagedFile(rel, dst, dst.stat().st_size, "data")
    st = src.stat()
    key = {"source": str(src) if is_remote(src) else str(Path(src).resolve()), "size": st.st_size,
           "mtime_ns": getattr(st, "st_mtime_ns", None)}
    if previous.get("rewritten", {}).get(rel) == key and dst.exists():
        log.debug("%s: reusing the rewritten copy from the last run", rel)
    else:
        log.info("rewriting %s for the Hub: %s", rel, problem)
        _mkdirs(dst.parent)
        rewrite_for_hub(src, dst, min(REWRITE_ROW_GROUP_BYTES, max_rg // 2))
    rewritten[rel] = key
    return StagedFile(rel, dst, dst.stat().st_size, "data")


def _stage_component(component: str, shards: Sequence[FinishedShard], bucketed: bool, root: Location,
                     previous: dict, max_rg: int) -> _StagedComponent:
    """A component's shards, its records (one JSON Lines file) and its rejects (one Parquet file)."""
    files: list[StagedFile] = []
    rewritten: dict[str, dict] = {}
    reject_tables = []
    jsonl = []
    for shard in shards:
        rel = shard_path(component, shard.stem, bucketed)
        files.append(_stage_shard(shard, rel, root, previous, max_rg, rewritten))
        jsonl.append(json.dumps(shard.record, ensure_ascii=False, sort_keys=False))
        if shard.rejects.exists():
            t = _open_parquet(shard.rejects).read().select(REJECT_SCHEMA.names).cast(REJECT_SCHEMA)
            reject_tables.append(t.append_column("shard", pa.array([shard.stem] * t.num_rows, pa.string())))
    rec = root / RECORDS_DIR / component / "records.jsonl"
    _mkdirs(rec.parent)
    rec.write_text("\n".join(jsonl) + "\n", encoding="utf-8")
    files.append(StagedFile(f"{RECORDS_DIR}/{component}/records.jsonl", rec, rec.stat().st_size, "records"))
    if reject_tables:
        rej = root / REJECTS_DIR / component / "rejects.parquet"
        _mkdirs(rej.parent)
        table = pa.concat_tables(reject_tables).cast(REJECTS_WITH_SHARD)
        opts = parquet_writer_options()
        opts.pop("write_statistics", None)
        with rej.open("wb") as sink:
            pq.write_table(table, sink, row_group_size=100_000, **opts)
        files.append(StagedFile(f"{REJECTS_DIR}/{component}/rejects.parquet", rej, rej.stat().st_size, "rejects"))
    return _StagedComponent(files, rewritten)


def _stage_stats(config: PushConfig, out: Location, root: Location, found: Found,
                 grouped: dict[str, list[FinishedShard]]) -> tuple[CorpusStats, list[StagedFile]]:
    """The statistics shown in the card. A report whose fingerprint matches these shards and options (from
    `sodadata stats` or the last push attempt) is reused: reading `text` for utterance durations or exact tokens
    can take hours."""
    all_records = [(c, s.record_path, s.record) for c, shards in grouped.items() for s in shards]
    fp = fingerprint(all_records, config.tokenizer, config.utterance_shards)
    stats_dir = root / STATS_DIR
    reusable = _reusable_stats([stats_dir, out / STATS_DIRNAME], fp, load_weights(config.recipe)[0])
    if reusable is None:
        stats = compute_stats(StatsConfig(out=out, output=stats_dir, tokenizer=config.tokenizer, recipe=config.recipe,
                                          components=tuple(grouped), utterance_shards=config.utterance_shards),
                              found)
        _remove_tree(stats_dir)
        write_report(stats, stats_dir)
    else:
        log.info("reusing the statistics in %s (same shards and options)", display(reusable))
        if str(reusable) != str(stats_dir):
            _remove_tree(stats_dir)
            _copy_tree(reusable, stats_dir)
        stats = read_report(stats_dir)
    files = [StagedFile(f"{STATS_DIR}/{p.name}", p, p.stat().st_size, "stats")
             for p in sorted(stats_dir.iterdir(), key=lambda p: p.name)]
    return stats, files


def _remove_stale(root: Location, wanted: set[str]) -> None:
    """Remove what an earlier run staged but this one did not (a component dropped, a shard renamed)."""
    if is_remote(root):
        base = root.path.rstrip("/") + "/"
        for key in root.fs.find(root.path):
            if key.startswith(base) and key[len(base):] not in wanted:
                root.fs.rm_file(key)
        return
    for p in sorted(root.rglob("*"), reverse=True):
        rel = p.relative_to(root).as_posix()
        if rel == ".cache" or rel.startswith(".cache/"):
            continue  # upload_large_folder keeps its resume state there
        if p.is_file() and rel not in wanted:
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()


def stage(config: PushConfig, found: Found | None = None) -> Staged:
    """Build the folder that is uploaded; return its files. Rebuilt on every run: links are cheap.

    ``config.out`` is one output root (``found``: its shards, if already looked up); the records are checked
    first (:func:`check_made_by`), so nothing is staged from shards that may not be published. When the output is
    on a store the stage is too (``OUT/_hub/…`` in the bucket, by default): it holds the small files (card,
    records, rejects, stats) and the shards stay where they are, each read from the bucket when it is uploaded.
    """
    out = as_location(config.out)
    found = found if found is not None else one_root(out, "push")
    if found.problems:
        raise PushError(f"{len(found.problems)} records under {display(out)} cannot be read, so their shards would be "
                        f"left out silently; fix them (`sodadata validate {display(out)}`) first: {found.problems[0]}")
    grouped = found.by_component(config.components)
    check_made_by(grouped, config.allow_random_codec, config.allow_unknown_made_by)
    check_config_names(list(grouped))
    root = config.stage
    previous = _prepare_stage_dir(root, out)
    max_rg = int(config.max_row_group_mb * 2**20)
    files: list[StagedFile] = []
    manifest: dict[str, dict] = {}
    bucketed = {c: len(shards) > FOLDER_ENTRY_LIMIT for c, shards in grouped.items()}
    sources = [source_info(c, [s.record for s in shards], config.catalog_dir) for c, shards in grouped.items()]
    for component, shards in grouped.items():
        staged = _stage_component(component, shards, bucketed[component], root, previous, max_rg)
        files += staged.files
        manifest.update(staged.rewritten)
    stats, stats_files = _stage_stats(config, out, root, found, grouped)
    files += stats_files
    card = root / CARD
    card.write_text(render_card(config.repo, sources, stats, bucketed, revision=config.revision,
                                sodadata_version=__version__), encoding="utf-8")
    files.append(StagedFile(CARD, card, card.stat().st_size, "card"))
    _remove_stale(root, {f.path_in_repo for f in files})
    _manifest_path(root).write_text(json.dumps({"repo": config.repo, "rewritten": manifest}, indent=1) + "\n",
                                    encoding="utf-8")
    files.sort(key=lambda f: f.path_in_repo)
    globs = {c: data_glob(c, b) for c, b in bucketed.items()}
    return Staged(root=root, files=files, sources=sources, stats=stats, globs=globs, rewritten=sorted(manifest))


# ---------------------------------------------------------------- remote state and the commit plan


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None = None  # LFS/Xet files: the content's sha256
    blob_id: str | None = None  # regular files: the git blob sha1


def list_remote(api: Any, repo: str, revision: str | None, retry: RetryPolicy,
                sleep: Callable[[float], None] = time.sleep) -> dict[str, RemoteFile]:
    def listing() -> list:
        return list(api.list_repo_tree(repo, recursive=True, repo_type="dataset", revision=revision))

    remote = {}
    for entry in call_with_retries(listing, retry, "list the repository", sleep):
        size = getattr(entry, "size", None)
        if size is None:  # a folder
            continue
        lfs = getattr(entry, "lfs", None)
        sha = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
        remote[entry.path] = RemoteFile(entry.path, int(size), sha, None if lfs else getattr(entry, "blob_id", None))
    return remote


def up_to_date(local: StagedFile, remote: RemoteFile | None, checksum: bool = False) -> bool:
    """Whether the Hub already has this file: same size, and the same hash where the hash is cheap or asked for."""
    if remote is None or remote.size != local.size:
        return False
    hash_it = checksum or local.size <= HASH_SMALL_FILES_BYTES
    if remote.sha256 is not None:
        return local.sha256() == remote.sha256 if hash_it else True
    if remote.blob_id is not None:
        return local.git_sha1() == remote.blob_id if hash_it else True
    return True


@dataclass
class Commit:
    message: str
    files: list[StagedFile]
    deletes: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


# Data first, then the files no config loads, then the card with its stats: the card's configs and numbers
# only ever describe data that is already on the Hub.
PHASES = (("data", ("data",)), ("records and rejects", ("records", "rejects")), ("card and stats", ("stats", "card")))


def prunable(remote: dict[str, RemoteFile], staged: Sequence[StagedFile]) -> list[str]:
    """Remote files in our folders that the stage does not have (stale shards, dropped components)."""
    mine = {f.path_in_repo for f in staged}
    ours = tuple(f"{d}/" for d in (DATA_DIR, RECORDS_DIR, REJECTS_DIR, STATS_DIR))
    return sorted(p for p in remote if p.startswith(ours) and p not in mine)


def plan_commits(files: Sequence[StagedFile], remote: dict[str, RemoteFile], config: CommitConfig | None = None,
                 prune: bool = False, checksum: bool = False) -> list[Commit]:
    """The commits that bring the remote to the staged state: only missing or changed files, in phase order."""
    config = config or CommitConfig()
    commits: list[Commit] = []
    for phase, kinds in PHASES:
        todo = sorted((f for f in files if f.kind in kinds and not up_to_date(f, remote.get(f.path_in_repo), checksum)),
                      key=lambda f: (f.kind == "card", f.path_in_repo))
        batches: list[list[StagedFile]] = []
        for f in todo:
            if (not batches or len(batches[-1]) >= config.files_per_commit
                    or (batches[-1] and sum(x.size for x in batches[-1]) + f.size > config.bytes_per_commit)):
                batches.append([])
            batches[-1].append(f)
        if phase == "card and stats" and prune:
            deletes = prunable(remote, files)
            for i in range(0, len(deletes), config.deletes_per_commit):
                chunk = deletes[i : i + config.deletes_per_commit]
                commits.append(Commit(f"sodadata: remove {len(chunk)} stale file(s)", [], chunk))
        for i, batch in enumerate(batches, 1):
            span = batch[0].path_in_repo if len(batch) == 1 else f"{batch[0].path_in_repo} … {batch[-1].path_in_repo}"
            commits.append(Commit(f"sodadata: {phase} {i}/{len(batches)} ({len(batch)} files: {span})", batch))
    return commits


def call_with_retries(fn: Callable[[], Any], retry: RetryPolicy, what: str,
                      sleep: Callable[[float], None] = time.sleep) -> Any:
    for attempt in range(1, retry.max_attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not retry.is_retryable(exc) or attempt == retry.max_attempts:
                raise
            wait = retry.delay(attempt, exc)
            status = _status(exc)
            log.warning("%s failed (%s%s); retry %d/%d in %.0f s", what, f"HTTP {status}: " if status else "",
                        type(exc).__name__, attempt, retry.max_attempts - 1, wait)
            sleep(wait)
    raise AssertionError("unreachable")


def _addition(api: Any, repo: str, revision: str | None, f: StagedFile) -> Any:
    """The commit operation adding ``f``. A local file is handed over by path (the library streams it). A file on a
    store is read into memory and pre-uploaded at once, one file at a time: the library then frees the content of
    large (LFS/Xet) files and keeps only their hash for the commit, so a commit of many shards holds at most one
    shard in memory, and nothing is copied to the local disk. (A file object would do without the bytes, but the
    library sends file objects over plain HTTP, not Xet, so an interrupted upload would not deduplicate.)"""
    from huggingface_hub import CommitOperationAdd

    if not is_remote(f.location):
        return CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.location))
    op = CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=f.location.read_bytes())
    api.preupload_lfs_files(repo, additions=[op], repo_type="dataset", revision=revision, free_memory=True)
    return op


def run_commits(api: Any, repo: str, revision: str | None, commits: Sequence[Commit], retry: RetryPolicy,
                sleep: Callable[[float], None] = time.sleep) -> None:
    from huggingface_hub import CommitOperationDelete

    for i, commit in enumerate(commits, 1):
        def make_and_send(commit: Commit = commit) -> Any:
            # Operations are built afresh per attempt: the library mutates them and refuses to reuse them.
            ops: list = [CommitOperationDelete(path_in_repo=p) for p in commit.deletes]
            ops += [_addition(api, repo, revision, f) for f in commit.files]
            return api.create_commit(repo, operations=ops, commit_message=commit.message, repo_type="dataset",
                                     revision=revision)

        log.info("commit %d/%d: %d files, %.2f GB%s", i, len(commits), len(commit.files), commit.bytes / 1e9,
                 f", {len(commit.deletes)} deletions" if commit.deletes else "")
        call_with_retries(make_and_send, retry, f"commit {i}/{len(commits)}", sleep)


def library_upload(api: Any, config: PushConfig, staged: Staged, retry: RetryPolicy,
                   sleep: Callable[[float], None] = time.sleep) -> None:
    """The library's own resumable folder upload: rerunning it resumes, so it is retried as a whole."""
    if hasattr(api, "upload_large_folder"):  # huggingface_hub 0.25 .. 1.x
        def send() -> Any:
            return api.upload_large_folder(repo_id=config.repo, folder_path=str(staged.root), repo_type="dataset",
                                           revision=config.revision, private=config.private)
    else:  # 2.x: upload_folder itself is the resumable, multi-commit upload when hf_xet is installed
        def send() -> Any:
            return api.upload_folder(repo_id=config.repo, folder_path=str(staged.root), repo_type="dataset",
                                     revision=config.revision, commit_message="sodadata: push")
    call_with_retries(send, retry, "folder upload", sleep)
    if config.prune:  # neither call deletes only what is stale: do it as planned delete commits
        deletes = prunable(list_remote(api, config.repo, config.revision, retry, sleep), staged.files)
        step = config.commits.deletes_per_commit
        commits = [Commit(f"sodadata: remove {len(deletes[i : i + step])} stale file(s)", [], deletes[i : i + step])
                   for i in range(0, len(deletes), step)]
        run_commits(api, config.repo, config.revision, commits, retry, sleep)


@dataclass
class Verification:
    missing: list[str]
    different: list[str]  # present with another size or hash
    extra_loaded: list[str]  # remote files under a config's data folder that the stage lacks
    extra_other: list[str]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.different or self.extra_loaded)


def _glob_regex(pattern: str) -> re.Pattern:
    # data_files patterns use '*' within one path segment only
    return re.compile("^" + "[^/]*".join(re.escape(part) for part in pattern.split("*")) + "$")


def verify(files: Sequence[StagedFile], remote: dict[str, RemoteFile], globs: Sequence[str] = (),
           checksum: bool = False) -> Verification:
    """Compare the remote tree with the stage; ``globs`` are the configs' data_files patterns."""
    missing = [f.path_in_repo for f in files if f.path_in_repo not in remote]
    different = [f.path_in_repo for f in files
                 if f.path_in_repo in remote and not up_to_date(f, remote[f.path_in_repo], checksum)]
    patterns = [_glob_regex(g) for g in globs]
    extra = prunable(remote, files)
    loaded = [p for p in extra if any(r.match(p) for r in patterns)]
    return Verification(missing, different, loaded, [p for p in extra if p not in loaded])


# ---------------------------------------------------------------- the command


def push(config: PushConfig, api: Any = None, sleep: Callable[[float], None] = time.sleep) -> int:
    if not REPO_RE.match(config.repo):
        raise PushError(f"--repo {config.repo!r} must look like ORG/NAME")
    if config.method not in ("commits", "library"):
        raise PushError(f"--method must be 'commits' or 'library', not {config.method!r}")
    if config.method == "library" and (is_remote(config.out) or is_remote(config.stage)):
        raise PushError("--method library uploads a local folder; an output or stage on a store is pushed with "
                        "--method commits (each shard read from the bucket as it is uploaded)")
    # One output root: the one given, or the one below it (the README's out/ holding out/sample, staged in
    # out/sample/_hub/); several: stop naming them.
    found = one_root(as_location(config.out), "push")
    config = replace(config, out=found.path)
    staged = stage(config, found)
    log.info("staged %d files (%.2f GB) in %s%s", len(staged.files), staged.bytes / 1e9, display(staged.root),
             f"; {len(staged.rewritten)} shards rewritten for the Hub" if staged.rewritten else "")
    if config.dry_run:
        plan = plan_commits(staged.files, {}, config.commits)
        log.info("dry run: an empty repository would get %d commits (%s); nothing was sent", len(plan),
                 ", ".join(f"{sum(1 for f in staged.files if f.kind == k)} {k}" for k in
                           ("data", "records", "rejects", "stats", "card")))
        return 0

    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    retry = config.retry
    call_with_retries(lambda: api.create_repo(config.repo, repo_type="dataset", private=config.private,
                                              exist_ok=True), retry, "create the repository", sleep)
    if config.revision and config.revision != "main":
        call_with_retries(lambda: api.create_branch(config.repo, branch=config.revision, repo_type="dataset",
                                                    exist_ok=True), retry, "create the branch", sleep)
    if config.method == "library":
        library_upload(api, config, staged, retry, sleep)
    else:
        remote = list_remote(api, config.repo, config.revision, retry, sleep)
        commits = plan_commits(staged.files, remote, config.commits, prune=config.prune, checksum=config.checksum)
        todo = sum(len(c.files) for c in commits)
        log.info("%d of %d files already on the Hub; %d to upload in %d commits", len(staged.files) - todo,
                 len(staged.files), todo, len(commits))
        run_commits(api, config.repo, config.revision, commits, retry, sleep)

    remote = list_remote(api, config.repo, config.revision, retry, sleep)
    result = verify(staged.files, remote, list(staged.globs.values()), config.checksum)
    for what, paths in (("missing on the Hub", result.missing), ("different on the Hub", result.different),
                        ("on the Hub in a config's data folder but not staged (loaded by the config; --prune "
                         "deletes them)", result.extra_loaded)):
        if paths:
            log.error("%d files %s: %s%s", len(paths), what, ", ".join(paths[:5]), " …" if len(paths) > 5 else "")
    if result.extra_other:
        log.warning("%d files on the Hub under data/, records/, rejects/ or stats/ are not in this push (no config "
                    "of this card loads them; --prune deletes them)", len(result.extra_other))
    if not result.ok:
        log.error("verification failed: rerun the same command to upload what is missing")
        return 1
    where = f"https://huggingface.co/datasets/{config.repo}" + (f"/tree/{config.revision}" if config.revision else "")
    log.info("verified %d files (%.2f GB) on %s", len(staged.files), staged.bytes / 1e9, where)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="sodadata push", description="Publish an output directory to the Hugging Face "
                                "Hub: one dataset config per component, a dataset card, records, rejects and stats.")
    p.add_argument("out", help="output directory of the recipes: a local path or a URL (s3://, gs://, az://)")
    p.add_argument("--repo", required=True, help="dataset repository, ORG/NAME")
    p.add_argument("--private", action="store_true", help="create the repository private (an existing one is kept)")
    p.add_argument("--revision", default=None, help="branch to push to (created from main if missing)")
    p.add_argument("--dry-run", action="store_true", help="stage the folder that would be uploaded, send nothing")
    p.add_argument("--component", action="append", default=[], help="only this component (repeatable; default all)")
    p.add_argument("--stage", default=None, help="staging folder, local or a URL (default OUT/_hub/ORG--NAME, in "
                   "the bucket when OUT is one)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder for exact text tokens in the stats")
    p.add_argument("--recipe", type=local_path, default=None, help="mixture YAML for the stats' weights")
    p.add_argument("--utterance-shards", type=int, default=None, help="see `sodadata stats --help`")
    p.add_argument("--prune", action="store_true",
                   help="delete remote files under data/, records/, rejects/, stats/ that this push does not have")
    p.add_argument("--checksum", action="store_true",
                   help="compare every file's sha256 with the Hub's, not only sizes (reads every shard once)")
    p.add_argument("--method", choices=("commits", "library"), default="commits",
                   help="commits: planned batched commits (default); library: huggingface_hub's folder upload")
    p.add_argument("--files-per-commit", type=int, default=CommitConfig.files_per_commit)
    p.add_argument("--commit-gb", type=float, default=CommitConfig.bytes_per_commit / 1e9)
    p.add_argument("--max-attempts", type=int, default=RetryPolicy.max_attempts, help="tries per Hub call")
    p.add_argument("--max-row-group-mb", type=float, default=MAX_ROW_GROUP_MB,
                   help="shards with larger row groups (uncompressed) are rewritten in the stage")
    p.add_argument("--catalogs", type=local_path, default=CATALOG_DIR, help="catalog folder (licences, source repos)")
    p.add_argument("--allow-random-codec", action="store_true",
                   help="publish shards encoded with a random test codec (tiny-random, full-random: noise, not Mimi "
                        "codes); the card says so at the top")
    p.add_argument("--allow-unknown-made-by", action="store_true",
                   help="publish shards whose records have no made_by (made before format 2); the card says the "
                        "codec facts are not recorded")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    setup_logging(args.verbose)
    config = PushConfig(
        out=args.out, repo=args.repo, private=args.private, revision=args.revision, dry_run=args.dry_run,
        stage_dir=args.stage, components=tuple(args.component), tokenizer=args.tokenizer, recipe=args.recipe,
        utterance_shards=args.utterance_shards, prune=args.prune, checksum=args.checksum, method=args.method,
        commits=CommitConfig(files_per_commit=args.files_per_commit, bytes_per_commit=int(args.commit_gb * 1e9)),
        retry=RetryPolicy(max_attempts=args.max_attempts), max_row_group_mb=args.max_row_group_mb,
        catalog_dir=args.catalogs, allow_random_codec=args.allow_random_codec,
        allow_unknown_made_by=args.allow_unknown_made_by,
    )
    try:
        check_location(args.out, write=False)
        check_location(config.stage, write=True)
        return push(config)
    except (PushError, StatsError, OutputError, ConfigError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    except Exception as exc:
        status = _status(exc)
        if status is None:
            raise
        hint = {401: "log in (`hf auth login`) or set HF_TOKEN", 403: "use a token that can write to the repository",
                404: "check --repo and that your token can see it"}.get(status, "rerun to resume")
        log.error("the Hub answered HTTP %d (%s): %s", status, type(exc).__name__, hint)
        return 1
