"""Run one task: read -> check -> decode -> encode -> documents -> rows -> shard + rejects + record.

The shape is datatrove's: small steps over iterators, run per task, each keeping counts. Decoding and
resampling run in a background thread that feeds the encoder, so on a multi-core worker they hide under the
codec instead of adding to it. Every item the recipe yields is counted once as written or rejected; the
counts are checked before anything is committed.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import queue
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from sodadata import __version__
from sodadata.encode.audio import DEFAULT_MAX_SECONDS, AudioError, decode_audio, to_mono_24k
from sodadata.encode.codec import CodecConfig, MimiEncoder, get_encoder
from sodadata.encode.codes import SAMPLE_RATE, codes_to_chars
from sodadata.locations import display, write_json_atomic
from sodadata.read.recipe import ConfigError, RawUtterance, Recipe, Reject, ShardTask, TextRecord
from sodadata.read.sources import redact_secrets
from sodadata.write import made_by
from sodadata.write.document import (
    DEFAULT_FORMATS,
    INVALID_UNICODE,
    ROW_SUFFIX,
    SPEECH_FORMATS,
    TEXT_ONLY,
    EncodedUtterance,
    TextVerdict,
    apply_text_rule,
    format_speech_row,
    format_text_row,
    invalid_unicode,
    storable,
)
from sodadata.write.shards import (
    RECORD_VERSION,
    REJECT_SCHEMA,
    ShardPaths,
    ShardWriter,
    shard_file_names,
    withdraw_record,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineConfig:
    out: str
    codec: CodecConfig | None = None  # None for text-only recipes
    max_utterance_seconds: float = DEFAULT_MAX_SECONDS
    # Rows written per speech document, in this order (--formats; SPEC §2). The codebooks kept are the codec's
    # (CodecConfig.num_codebooks, --codebooks).
    formats: tuple[str, ...] = DEFAULT_FORMATS
    # Audio gathered before encoding, so the encoder can sort it into batches of similar length. None: 600 s on
    # CPU (batch 1 there: only order changes), and on CUDA twice the codec's padded audio per batch (3,840 s by
    # default), so a bucket fills whole GPU batches of similar length.
    bucket_seconds: float | None = None
    prefetch_items: int = 32  # decoded utterances queued ahead of the encoder
    # Threads decoding and resampling in the prefetch stage. None: 1 on CPU (the cores are busy encoding; one
    # thread decodes at thousands of times real time, far ahead of a CPU encoder), every core on CUDA (one
    # thread cannot keep a GPU fed; libsndfile and soxr release the GIL, see bench/gpu.py).
    decode_threads: int | None = None
    # What makes this run's shards (sodadata.write.made_by): set once on the driver by made_by.prepare, before any task,
    # so every shard of a run records the identical dict. Left out of the hash (a dict has none); compared as usual.
    made_by: dict | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if not self.max_utterance_seconds > 0:
            raise ValueError(f"--max-utterance-seconds must be positive, got {self.max_utterance_seconds}")
        if not self.formats or any(f not in SPEECH_FORMATS for f in self.formats) \
                or len(set(self.formats)) != len(self.formats):
            raise ValueError(f"formats must be distinct names among {', '.join(SPEECH_FORMATS)}, got {self.formats}")

    def effective_bucket_seconds(self) -> float:
        if self.bucket_seconds is not None:
            return self.bucket_seconds
        if self.codec is None or self.codec.device == "cpu":
            return 600.0
        return 2 * self.codec.effective_max_batch_samples() / SAMPLE_RATE

    def effective_decode_threads(self) -> int:
        if self.decode_threads is not None:
            return max(1, self.decode_threads)
        if self.codec is None or self.codec.device == "cpu":
            return 1
        return max(1, os.cpu_count() or 1)


@dataclass
class TaskCounts:
    read: int = 0
    written: int = 0
    rejects: Counter = field(default_factory=Counter)
    timings: dict = field(default_factory=lambda: defaultdict(float))
    # characters the text rule folded / dropped in written texts (SPEC §2), counted once per written utterance
    folded_chars: int = 0
    dropped_chars: int = 0

    @property
    def rejected(self) -> int:
        return sum(self.rejects.values())


class _Rejects:
    """Collects reject rows for one task (one per rejected input item)."""

    def __init__(self, source: str, counts: TaskCounts) -> None:
        self.source = source
        self.counts = counts
        self.rows: list[dict] = []

    def add(self, item_id: str, reason: str, detail: str = "") -> None:
        self.counts.rejects[reason] += 1
        # details quote decoders' and servers' messages: never let one carry the Hub token into a reject list.
        # An id may hold a lone surrogate (the reason it is rejected): escaped, so the reject list stays writable.
        self.rows.append({"id": storable(item_id), "reason": reason, "detail": storable(redact_secrets(detail[:2000])),
                          "source": storable(self.source)})


@dataclass
class _UncommittedShard:
    """A task's rows, written (``writer``) but not yet committed, and their totals for the shard's record."""

    writer: ShardWriter
    rows: int = 0
    documents: int = 0
    audio_seconds: float = 0.0
    audio_tokens: int = 0
    text_chars: int = 0


@dataclass
class _Admitted:
    """An item past the checks every recipe's items get (``_admitted``), with its text as the text rule keeps it."""

    item: RawUtterance | TextRecord
    verdict: TextVerdict


def check_item(item: RawUtterance | TextRecord, transcript: bool) -> TextVerdict:
    """The text rule on an item's text, plus invalid Unicode anywhere else it carries into a shard (id, metadata).

    One home for both kinds of recipe, so every corpus gets the same rule: a lone surrogate in a JSON escape, a
    caption key or a metadata field is one ``invalid_unicode`` reject, never a shard failed at write time.
    """
    fields: dict[str, object] = {"id": item.id, "metadata": item.metadata}
    if isinstance(item, RawUtterance):
        fields["doc_id"] = item.doc_id
    for name, value in fields.items():
        bad = invalid_unicode(value, name)
        if bad is not None:
            return TextVerdict("", INVALID_UNICODE, bad)
    return apply_text_rule(item.text, transcript=transcript)


def _admitted(items: Iterable, counts: TaskCounts, kind: str) -> Iterator[_Admitted | Reject]:
    """Count every item a recipe of ``kind`` ("speech" or "text") yields; pass its rejects on; reject a second item
    with an id already seen and a text the text rule refuses (:func:`check_item`); admit the rest."""
    expected, transcript, noun = (RawUtterance, True, "item") if kind == "speech" else (TextRecord, False, "record")
    seen: set[str] = set()
    for item in items:
        counts.read += 1
        if isinstance(item, Reject):
            yield item
        elif not isinstance(item, expected):
            raise TypeError(f"a {kind} recipe yielded {type(item).__name__}, expected {expected.__name__} or Reject")
        elif item.id in seen:
            yield Reject(item.id, "duplicate_id", f"an earlier {noun} of this shard has the same id")
        else:
            seen.add(item.id)
            verdict = check_item(item, transcript=transcript)
            yield _Admitted(item, verdict) if verdict.reason is None else Reject(item.id, verdict.reason, verdict.detail)


def run_task(recipe: Recipe, task: ShardTask, config: PipelineConfig) -> dict:
    """Process one task and commit its shard, rejects and record; return the record.

    A shard already there (``--redo-mismatched``) stays valid while this one is made: the new files are written
    under temporary names, then its record is withdrawn, the new rejects and rows renamed over the old and the new
    record written last. A kill during those renames leaves a shard without a record, which any rerun redoes:
    never old rows under a new record or new rows under an old one.
    """
    if config.made_by is None:  # a direct call (tests, benchmarks); the runner prepares it once for all tasks
        config = made_by.prepare(recipe, config)
    paths = ShardPaths(config.out, task.component, task.stem)
    paths.remove_stale_temps()  # partial files of a killed earlier attempt would otherwise stay on disk forever
    t0 = time.perf_counter()
    counts = TaskCounts()
    rejects = _Rejects(task.stem, counts)
    if recipe.kind == "speech":
        if config.codec is None:
            raise ConfigError(f"recipe {recipe.name} needs a codec")
        shard = _run_speech(recipe, task, config, paths, counts, rejects)
    else:
        shard = _run_text(recipe, task, paths, counts, rejects)
    writer = shard.writer
    try:
        if counts.read != counts.written + counts.rejected:
            raise RuntimeError(
                f"{task.name}: counts do not balance (read {counts.read} != written {counts.written} + "
                f"rejected {counts.rejected}); nothing was committed"
            )
        tw = time.perf_counter()
        with ShardWriter(paths.rejects, schema=REJECT_SCHEMA) as w:
            w.write_all(rejects.rows)
            w.flush()
            withdraw_record(paths)
            w.commit()
        writer.commit()
        parquet_name, rejects_name = shard_file_names(task.stem)
        files = {parquet_name: writer.size, rejects_name: w.size}
        counts.timings["write"] += time.perf_counter() - tw
    except BaseException:
        writer.abort()
        raise
    record = {
        "record_version": RECORD_VERSION,
        "component": task.component,
        "shard": task.stem,
        "split": task.split,
        "unit": recipe.unit,
        "source": {"inputs": [{"url": display(f.url), "size": f.size} for f in task.inputs],
                   "revision": task.revision},
        "rows": shard.rows,
        "documents": shard.documents,
        "read": counts.read,
        "written": counts.written,
        "rejected": counts.rejected,
        "rejects": dict(sorted(counts.rejects.items())),
        "files": files,  # the sizes of the files beside it: what makes the shard finished (shards.py)
        "audio_seconds": round(shard.audio_seconds, 4),
        "audio_tokens": shard.audio_tokens,
        "text_chars": shard.text_chars,
        "text_folded_chars": counts.folded_chars,
        "text_dropped_chars": counts.dropped_chars,
        "codec": config.codec.describe() if (config.codec and recipe.kind == "speech") else None,
        "made_by": config.made_by,
        "sodadata_version": __version__,
        "elapsed_seconds": round(time.perf_counter() - t0, 3),
        "timings": {k: round(v, 4) for k, v in sorted(counts.timings.items())},
        "finished_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    tw = time.perf_counter()
    write_json_atomic(paths.record, record)
    record["timings"]["write"] = round(record["timings"].get("write", 0.0) + time.perf_counter() - tw, 4)
    return record


# --- speech -------------------------------------------------------------------------------------------------


@dataclass
class _Decoded:
    item: RawUtterance
    verdict: TextVerdict  # the kept text and what the text rule folded in it
    wave: np.ndarray


def _decode(item: RawUtterance, max_seconds: float) -> tuple[np.ndarray | None, AudioError | None, float]:
    """Decode one utterance to 24 kHz mono: (wave, None, seconds) or (None, the reason, seconds)."""
    t = time.perf_counter()
    try:
        if isinstance(item.audio, (bytes, bytearray, memoryview)):
            wave = decode_audio(bytes(item.audio), max_seconds=max_seconds)
        else:
            if item.sample_rate is None:
                raise AudioError("bad_sample_rate", "samples given without a sample rate")
            wave = to_mono_24k(item.audio, item.sample_rate, max_seconds=max_seconds)
    except AudioError as exc:
        return None, exc, time.perf_counter() - t
    return wave, None, time.perf_counter() - t


def _decoded_in_order(admitted: Iterable[_Admitted | Reject], counts: TaskCounts, rejects: _Rejects,
                      max_seconds: float, threads: int = 1) -> Iterator[_Decoded]:
    """Decode the admitted utterances to 24 kHz mono; file every reject (the recipe's, the admission's, a failed
    decode) in input order.

    With ``threads > 1`` decoding runs in a thread pool, a few items ahead; results (and rejects) are still
    taken strictly in input order, so the output is the same as with one thread.
    """
    pool = ThreadPoolExecutor(threads, thread_name_prefix="sodadata-decode") if threads > 1 else None
    pending: deque = deque()  # in input order: a Reject, or (admitted, the decode's result or its future)

    def finish(entry) -> Iterator[_Decoded]:
        if isinstance(entry, Reject):
            rejects.add(entry.id, entry.reason, entry.detail)
            return
        admitted, result = entry
        wave, error, seconds = result.result() if pool is not None else result
        counts.timings["read_decode"] += seconds
        item = admitted.item
        if error is not None:
            rejects.add(item.id, error.reason, error.detail)
            return
        item.audio = b""  # the encoded bytes are no longer needed; keep memory to the decoded wave
        yield _Decoded(item, admitted.verdict, wave)

    try:
        for entry in admitted:
            if isinstance(entry, Reject):
                pending.append(entry)
            elif pool is not None:
                pending.append((entry, pool.submit(_decode, entry.item, max_seconds)))
            else:
                pending.append((entry, _decode(entry.item, max_seconds)))
            # one thread: everything is resolved at once; a pool: keep up to 2 x threads decodes in flight
            while pending and (pool is None or isinstance(pending[0], Reject) or len(pending) > 2 * threads):
                yield from finish(pending.popleft())
        while pending:
            yield from finish(pending.popleft())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


_DONE = object()


def prefetch(items: Iterator, depth: int) -> Iterator:
    """Run ``items`` in a background thread, ``depth`` items ahead. Exceptions re-raise in the consumer."""
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for x in items:
                while not stop.is_set():
                    try:
                        q.put((x, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put((_DONE, exc))

    thread = threading.Thread(target=produce, name="sodadata-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            x, exc = q.get()
            if x is _DONE:
                if exc is not None:
                    raise exc
                return
            yield x
    finally:
        stop.set()
        thread.join(timeout=5)


def _encode_buckets(decoded: Iterator[_Decoded], encoder: MimiEncoder, bucket_samples: int) -> Iterator[EncodedUtterance]:
    bucket: list[_Decoded] = []
    size = 0
    for d in decoded:
        bucket.append(d)
        size += d.wave.size
        if size >= bucket_samples:
            yield from _encode_bucket(bucket, encoder)
            bucket, size = [], 0
    if bucket:
        yield from _encode_bucket(bucket, encoder)


def _encode_bucket(bucket: list[_Decoded], encoder: MimiEncoder) -> Iterator[EncodedUtterance]:
    codes = encoder.encode([d.wave for d in bucket])
    for d, c in zip(bucket, codes, strict=True):
        yield EncodedUtterance(
            id=d.item.id,
            doc_id=d.item.doc_id,
            order=d.item.order,
            text=d.verdict.text,
            audio=codes_to_chars(c),
            seconds=d.wave.size / SAMPLE_RATE,
        )


class _DocumentRows:
    """Turns finished documents into their rows, one per format, written as they come (ShardWriter bounds memory
    by bytes)."""

    def __init__(self, shard: _UncommittedShard, task: ShardTask, metadata: dict[str, dict],
                 folds: dict[str, tuple[int, int]], counts: TaskCounts, formats: tuple[str, ...]) -> None:
        self.shard, self.task, self.metadata, self.folds, self.counts = shard, task, metadata, folds, counts
        self.formats = formats

    def write(self, doc_id: str, utts: list[EncodedUtterance]) -> None:
        utts = sorted(utts, key=lambda u: (u.order, u.id))
        n_tokens = sum(len(u.audio) for u in utts)
        seconds = sum(u.seconds for u in utts)
        meta = {"utterances": [{"id": u.id, **self.metadata.pop(u.id, {})} for u in utts]}
        for u in utts:  # counted here, once written: an utterance rejected after the text rule is not counted
            folded, dropped = self.folds.pop(u.id, (0, 0))
            self.counts.folded_chars += folded
            self.counts.dropped_chars += dropped
        meta_json = json.dumps(meta, ensure_ascii=False, sort_keys=True)
        for fmt in self.formats:
            text = format_speech_row(utts, fmt)
            self.shard.writer.write(
                {
                    "id": doc_id + ROW_SUFFIX[fmt],
                    "split": self.task.split,
                    "text": text,
                    "corpus": self.task.component,
                    "format": fmt,
                    "n_utterances": len(utts),
                    "audio_seconds": seconds,
                    "n_audio_tokens": n_tokens,
                    "metadata": meta_json,
                }
            )
            self.shard.rows += 1
            self.shard.audio_tokens += n_tokens
            self.shard.text_chars += len(text)
        self.shard.documents += 1
        self.shard.audio_seconds += seconds


def _run_speech(recipe, task, config, paths, counts, rejects) -> _UncommittedShard:
    """Encode every utterance; write documents as rows.

    Recipes whose documents arrive whole and in order (``contiguous_documents``, e.g. one Yodas video after
    another) have each document written as soon as the next one starts, so memory is bounded by a document.
    Otherwise (Emilia: a document's utterances may be anywhere in the tar) codes are kept until the end of
    the task and documents are written sorted by id. Either order is deterministic.
    """
    t_load = time.perf_counter()
    encoder = get_encoder(config.codec)  # loads the codec in the first task of a worker process only
    counts.timings["model_load"] += time.perf_counter() - t_load
    enc_before, check_before = encoder.stats.encode_seconds, encoder.stats.check_seconds
    contiguous = bool(getattr(recipe, "contiguous_documents", False))
    metadata: dict[str, dict] = {}
    folds: dict[str, tuple[int, int]] = {}  # utterance id -> (folded, dropped), for those the text rule changed
    docs: dict[str, list[EncodedUtterance]] = defaultdict(list)
    finished: set[str] = set()

    def remember_metadata(items):
        for d in items:
            if d.item.metadata:
                metadata[d.item.id] = d.item.metadata
            if d.verdict.folded or d.verdict.dropped:
                folds[d.item.id] = (d.verdict.folded, d.verdict.dropped)
            yield d

    shard = _UncommittedShard(ShardWriter(paths.parquet))
    out = _DocumentRows(shard, task, metadata, folds, counts, config.formats)
    try:
        decoded = prefetch(
            _decoded_in_order(_admitted(recipe.read(task), counts, "speech"), counts, rejects,
                              config.max_utterance_seconds, config.effective_decode_threads()),
            config.prefetch_items,
        )
        bucket_samples = int(config.effective_bucket_seconds() * SAMPLE_RATE)
        for u in _encode_buckets(remember_metadata(decoded), encoder, bucket_samples):
            if contiguous and u.doc_id not in docs:
                if u.doc_id in finished:
                    raise RuntimeError(f"{task.name}: document {u.doc_id} came back after it ended ({recipe.name} "
                                       "declares contiguous_documents)")
                tw = time.perf_counter()
                for done in list(docs):
                    out.write(done, docs.pop(done))
                    finished.add(done)
                counts.timings["write"] += time.perf_counter() - tw
            docs[u.doc_id].append(u)
            counts.written += 1
        checked = encoder.stats.check_seconds - check_before  # the chunked engine's check (once per machine)
        counts.timings["engine_check"] += checked
        counts.timings["encode"] += encoder.stats.encode_seconds - enc_before - checked
        tw = time.perf_counter()
        for doc_id in sorted(docs):
            out.write(doc_id, docs.pop(doc_id))
        counts.timings["write"] += time.perf_counter() - tw
    except BaseException:
        shard.writer.abort()
        raise
    return shard


# --- text ---------------------------------------------------------------------------------------------------


def _run_text(recipe, task, paths, counts, rejects) -> _UncommittedShard:
    shard = _UncommittedShard(ShardWriter(paths.parquet))
    t = time.perf_counter()
    try:
        for entry in _admitted(recipe.read(task), counts, "text"):
            if isinstance(entry, Reject):
                rejects.add(entry.id, entry.reason, entry.detail)
                continue
            item, verdict = entry.item, entry.verdict
            # Web text is kept as the source gives it (not stripped): only the text rule's folds change it.
            counts.folded_chars += verdict.folded
            counts.dropped_chars += verdict.dropped
            row_text = format_text_row(verdict.text)
            shard.writer.write(
                {
                    "id": item.id,
                    "split": task.split,
                    "text": row_text,
                    "corpus": task.component,
                    "format": TEXT_ONLY,
                    "n_utterances": 0,
                    "audio_seconds": 0.0,
                    "n_audio_tokens": 0,
                    "metadata": json.dumps(item.metadata, ensure_ascii=False, sort_keys=True) if item.metadata else None,
                }
            )
            counts.written += 1
            shard.rows += 1
            shard.text_chars += len(row_text)
    except BaseException:
        shard.writer.abort()
        raise
    counts.timings["read_write"] += time.perf_counter() - t
    shard.documents = shard.rows  # a text record is a document of one row
    return shard
