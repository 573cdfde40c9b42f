"""The numbers of ``sodadata stats``: per component, from the shards' metadata columns and JSON records.

What is read, and what it costs:

- Counts (documents, rows, utterances, hours, audio tokens, marker tokens) come from the shards' metadata
  columns (``format``, ``n_utterances``, ``audio_seconds``, ``n_audio_tokens``), read with polars column
  projection: the ``text`` column, which is nearly all of a shard's bytes, is never decoded for them.
- Rejects by reason and text characters come from the shards' JSON records (``rejects``, ``text_chars``).
  Text characters are the record's ``text_chars`` minus the audio characters and the marker strings, both known
  exactly from the metadata columns, so they count transcript (or web text) characters exactly.
- Text tokens are exact only with ``--tokenizer DIR`` (every row's ``text`` is then tokenized, i.e. the whole
  corpus is read). Without it they are estimated from text characters (``CHARS_PER_TEXT_TOKEN``) and the output
  marks them ``~``. Audio tokens and marker tokens are exact either way (one token per audio character, one per
  marker, SPEC §3).
- Codebooks and formats come from the records' ``made_by`` (SPEC §1-2; 8 and the text_first/audio_first pair
  for records without one): a document counts once, on its first format's row; audio tokens are ``12.5 N`` per
  second of audio with ``N`` codebooks.
- Utterance durations are not a column (a row is a document), so the utterance histogram reads ``text`` of each
  document's first-format rows (projection of ``format`` + ``text`` only) and measures each audio span:
  ``len(span) / (12.5 N)`` seconds, i.e. the duration rounded up to the 80 ms codec frame. That is a full read of
  the text column; ``--utterance-shards N`` bounds it to N evenly spaced shards per component and
  ``--utterance-shards 0`` skips it.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from sodadata.encode.codes import FRAME_RATE_HZ, NUM_CODEBOOKS
from sodadata.locations import Location, as_location, is_remote
from sodadata.mix.mixture import MIXTURE_DIR, MixtureConfig
from sodadata.mix.tokenizer import TokenCounter, load_tokenizer
from sodadata.write.document import (
    AUDIO_END,
    AUDIO_FIRST,
    AUDIO_ONLY,
    AUDIO_START,
    BOS,
    DEFAULT_FORMATS,
    EOS,
    TEXT_END,
    TEXT_FIRST,
    TEXT_ONLY,
    TEXT_START,
    parse_row,
)
from sodadata.write.outputs import Found, made_by_problems, one_root

log = logging.getLogger(__name__)

DEFAULT_RECIPE = MIXTURE_DIR / "soda.yaml"  # the SODA mixture (SPEC §4), shipped with the package
# Without a tokenizer, text tokens are estimated from characters. Llama-3's BPE (the base of the SODA tokenizer)
# averages a little over 4 characters per token on English prose; the output labels the result as an estimate.
CHARS_PER_TEXT_TOKEN = 4.2
# Marker strings per row (BOS, EOS) and per utterance in a speech row (text and audio start/end): exact counts
# of marker characters and marker tokens follow from the metadata columns alone.
ROW_MARKER_CHARS = len(BOS) + len(EOS)
UTTERANCE_MARKER_CHARS = len(TEXT_START) + len(TEXT_END) + len(AUDIO_START) + len(AUDIO_END)
ROW_MARKER_TOKENS = 2
UTTERANCE_MARKER_TOKENS = 4
TEXT_BATCH_ROWS = 64  # rows per Arrow batch when reading `text`: a Yodas row is a whole video (MBs)


class StatsError(Exception):
    """A problem the user can fix (missing tokenizer file, unreadable recipe, empty output directory)."""


@dataclass
class ComponentStats:
    component: str
    shards: int
    documents: int
    rows: int
    utterances: int
    audio_seconds: float
    audio_tokens: int
    marker_tokens: int
    text_chars: int  # text characters (transcripts / web text): markers and audio characters excluded; exact
    text_tokens: int  # exact if text_tokens_exact, else text_chars / CHARS_PER_TEXT_TOKEN
    text_tokens_exact: bool
    rejects: dict[str, int]
    read: int  # inputs read (utterances or text records), from the records: read == written + rejected
    written: int
    utterance_shards_read: int = 0  # shards whose text was read for utterance durations
    codebooks: int | None = None  # per audio frame (made_by.codebooks); None for text-only components
    formats: list[str] = field(default_factory=list)  # rows per document (made_by.formats)
    warnings: list[str] = field(default_factory=list)
    # Distributions (not written to stats.json: they can hold millions of values; the plots show them).
    document_seconds: np.ndarray | None = field(default=None, repr=False)
    utterance_seconds: np.ndarray | None = field(default=None, repr=False)
    # Summaries of the distributions, kept in stats.json.
    document_seconds_summary: dict | None = None
    utterance_seconds_summary: dict | None = None

    @property
    def hours(self) -> float:
        return self.audio_seconds / 3600.0

    @property
    def audio_tokens_per_second(self) -> float | None:
        """Audio tokens per second of audio in one row: 12.5 per codebook (SPEC §1)."""
        return FRAME_RATE_HZ * self.codebooks if self.codebooks else None

    @property
    def rejected(self) -> int:
        return sum(self.rejects.values())

    @property
    def total_tokens(self) -> int:
        return self.audio_tokens + self.marker_tokens + self.text_tokens

    @property
    def is_speech(self) -> bool:
        return self.utterances > 0


@dataclass
class CorpusStats:
    components: list[ComponentStats]
    weights: dict[str, float]  # recipe weights, normalized over the recipe's components
    weights_source: str
    tokenizer: str | None
    fingerprint: str  # identifies the finished shards and options the numbers were computed from

    def by_name(self) -> dict[str, ComponentStats]:
        return {c.component: c for c in self.components}

    @property
    def total_tokens(self) -> int:
        return sum(c.total_tokens for c in self.components)

    def token_share(self, component: str) -> float:
        total = self.total_tokens
        return self.by_name()[component].total_tokens / total if total else 0.0

    @property
    def text_tokens_exact(self) -> bool:
        return all(c.text_tokens_exact for c in self.components)

    def to_json(self) -> dict:
        comps = []
        for c in self.components:
            d = asdict(c)
            d.pop("document_seconds")
            d.pop("utterance_seconds")
            d.update(hours=c.hours, total_tokens=c.total_tokens, token_share=self.token_share(c.component),
                     recipe_weight=self.weights.get(c.component))
            comps.append(d)
        return {
            "stats_version": 1,
            "fingerprint": self.fingerprint,
            "tokenizer": self.tokenizer,
            "weights": self.weights,
            "weights_source": self.weights_source,
            "chars_per_text_token_estimate": None if self.text_tokens_exact else CHARS_PER_TEXT_TOKEN,
            "total_tokens": self.total_tokens,
            "components": comps,
        }

    @classmethod
    def from_json(cls, data: dict) -> CorpusStats:
        names = {f.name for f in ComponentStats.__dataclass_fields__.values()}
        comps = [ComponentStats(**{k: v for k, v in c.items() if k in names}) for c in data["components"]]
        return cls(components=comps, weights=data["weights"], weights_source=data["weights_source"],
                   tokenizer=data["tokenizer"], fingerprint=data["fingerprint"])


# ---------------------------------------------------------------- inputs


def fingerprint(records: Sequence[tuple[str, Location, dict]], tokenizer: Path | None,
                utterance_shards: int | None) -> str:
    """Hash of the finished shards (name, record, file size and time) and of the options that change the numbers."""
    h = hashlib.sha256()
    for component, path, rec in sorted(records, key=lambda r: (r[0], str(r[1]))):
        st = as_location(path).with_suffix(".parquet").stat()  # a rewritten shard changes these, even with an equal
        changed = getattr(st, "st_mtime_ns", None) or st.st_mtime  # record (a store's stat has seconds)
        h.update(f"{component}\0{as_location(path).name}\0{rec.get('finished_at')}\0{rec.get('rows')}\0"
                 f"{st.st_size}\0{changed}\n".encode())
    tok = str(Path(tokenizer).resolve()) if tokenizer is not None else None
    h.update(f"tokenizer={tok}\0utterance_shards={utterance_shards}".encode())
    return h.hexdigest()[:16]


def load_weights(recipe: Path | None) -> tuple[dict[str, float], str]:
    """Token shares by component from a mixture recipe, normalized, and the file they come from.

    The recipe is read by :meth:`MixtureConfig.load`, strictly (``recipe=None``: the packaged ``soda.yaml``, the
    SPEC §4 weights; a packaged mixture can be named as ``load`` takes it: ``recipes/soda.yaml`` from any folder).
    """
    try:
        config = MixtureConfig.load(recipe if recipe is not None else DEFAULT_RECIPE)
    except FileNotFoundError as exc:
        raise StatsError(f"{exc} (a mixture YAML: components with weights)") from None
    except (ValueError, OSError, yaml.YAMLError) as exc:
        raise StatsError(str(exc).replace("\n", " ")) from exc
    return dict(zip(config.names, config.weights())), str(config.source)


def token_counter(tokenizer: str | Path) -> TokenCounter:
    """The counter of ``--tokenizer`` (a directory holding ``tokenizer.json``, the file, a Hub id)."""
    try:
        return TokenCounter(load_tokenizer(str(tokenizer)))
    except FileNotFoundError as exc:
        raise StatsError(str(exc)) from exc
    except ValueError as exc:  # no markers, no audio tokens, or audio ids out of order
        raise StatsError(f"unusable tokenizer ({exc}); build it with `sodadata tokenizer build` (SPEC §3)") from exc

def record_totals(records: Iterable[dict]) -> dict:
    """The shards' records summed: shards, documents, rows, read, written, rejected, audio seconds and tokens, text
    characters, and rejects by reason (sorted)."""
    records = list(records)
    totals: dict = {"shards": len(records)}
    for key in ("documents", "rows", "read", "written", "rejected", "audio_seconds", "audio_tokens", "text_chars"):
        totals[key] = sum(r.get(key) or 0 for r in records)
    rejects: dict[str, int] = {}
    for r in records:
        for reason, n in (r.get("rejects") or {}).items():
            rejects[reason] = rejects.get(reason, 0) + int(n)
    totals["rejects"] = dict(sorted(rejects.items()))
    return totals


def _evenly_spaced(n: int, k: int | None) -> list[int]:
    if k is None or k >= n:
        return list(range(n))
    if k <= 0:
        return []
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


def _summary(values: np.ndarray | None) -> dict | None:
    if values is None or values.size == 0:
        return None
    q = np.percentile(values, [50, 90, 99])
    return {"count": int(values.size), "mean": float(values.mean()), "p50": float(q[0]), "p90": float(q[1]),
            "p99": float(q[2]), "min": float(values.min()), "max": float(values.max())}


# ---------------------------------------------------------------- computation


@dataclass(frozen=True)
class _RowCounts:
    """What a component's metadata columns say (``format``, ``n_utterances``, ``audio_seconds``,
    ``n_audio_tokens``; no ``text`` read). A speech document counts once, on its row of ``first_format``."""

    rows: int
    documents: int
    speech_documents: int
    utterances: int
    audio_seconds: float
    audio_tokens: int
    marker_tokens: int
    marker_chars: int
    document_seconds: np.ndarray
    codebooks: int | None  # None for a text-only component
    formats: list[str]
    first_format: str


def _row_counts(shard_paths: Sequence[Location], made_by: dict) -> _RowCounts:
    meta = (
        _scan_shards(shard_paths, ["format", "n_utterances", "audio_seconds", "n_audio_tokens"])
        .select(
            pl.col("format"),
            pl.col("n_utterances").cast(pl.Int64),
            pl.col("audio_seconds"),
            pl.col("n_audio_tokens").cast(pl.Int64),
        )
        .collect()
    )
    # A speech document is one row per format of its run (made_by): count its utterances and seconds once, on
    # the row of its first format.
    has_speech = meta.filter(pl.col("format") != TEXT_ONLY).height > 0
    formats = list(made_by.get("formats") or DEFAULT_FORMATS)
    first = next((f for f in formats if f != TEXT_ONLY), TEXT_FIRST)
    speech = meta.filter(pl.col("format") == first)
    rows = meta.height
    interleaved_utts = int(meta.filter(pl.col("format").is_in([TEXT_FIRST, AUDIO_FIRST]))["n_utterances"].sum())
    audio_only_utts = int(meta.filter(pl.col("format") == AUDIO_ONLY)["n_utterances"].sum())
    # an audio_only utterance has the audio markers only (half of the four)
    return _RowCounts(
        rows=rows,
        documents=meta.filter(pl.col("format").is_in([first, TEXT_ONLY])).height,
        speech_documents=speech.height,
        utterances=int(speech["n_utterances"].sum()),
        audio_seconds=float(speech["audio_seconds"].sum()),
        audio_tokens=int(meta["n_audio_tokens"].sum()),
        marker_tokens=(ROW_MARKER_TOKENS * rows + UTTERANCE_MARKER_TOKENS * interleaved_utts
                       + UTTERANCE_MARKER_TOKENS // 2 * audio_only_utts),
        marker_chars=(ROW_MARKER_CHARS * rows + UTTERANCE_MARKER_CHARS * interleaved_utts
                      + (len(AUDIO_START) + len(AUDIO_END)) * audio_only_utts),
        document_seconds=speech["audio_seconds"].to_numpy(),
        codebooks=int(made_by.get("codebooks") or NUM_CODEBOOKS) if has_speech else None,
        formats=formats,
        first_format=first,
    )


def _disagreements(counts: _RowCounts, totals: dict) -> list[str]:
    """Where the metadata columns and the records disagree (one warning each)."""
    warnings = []
    checks = {
        "rows": (counts.rows, int(totals["rows"])),
        "documents": (counts.documents, int(totals["documents"])),
        "audio tokens": (counts.audio_tokens, int(totals["audio_tokens"])),
    }
    for what, (from_rows, from_records) in checks.items():
        if from_rows != from_records:
            warnings.append(f"{what}: {from_rows} in the shards but {from_records} in the records")
    recorded = float(totals["audio_seconds"])
    if not math.isclose(counts.audio_seconds, recorded, rel_tol=1e-6, abs_tol=1e-3):
        warnings.append(f"audio seconds: {counts.audio_seconds:.3f} in the shards but {recorded:.3f} in the records")
    return warnings


@dataclass
class _TextCounts:
    text_tokens: int = 0  # with a tokenizer: every row's
    audio_mismatch: int = 0  # rows whose n_audio_tokens differs from the audio tokens of their text
    utterance_chars: list[int] = field(default_factory=list)  # each audio span of the shards read for durations


def _read_text(shard_paths: Sequence[Location], first_format: str, codebooks: int, counter: TokenCounter | None,
               utterance_shards: set[int]) -> _TextCounts:
    """The text pass: every shard with a tokenizer, else only the shards sampled for utterance durations (each
    document's row of ``first_format`` read back; a malformed row counts the utterances before its fault)."""
    counts = _TextCounts()
    to_read = range(len(shard_paths)) if counter is not None else sorted(utterance_shards)
    for i in to_read:
        columns = ["format", "text", "n_audio_tokens"]
        for batch in _parquet_file(shard_paths[i]).iter_batches(batch_size=TEXT_BATCH_ROWS, columns=columns):
            if counter is not None:
                t, a, _ = counter.count(batch.column("text").to_pylist())
                counts.text_tokens += int(t.sum())
                counts.audio_mismatch += int((a != batch.column("n_audio_tokens").to_numpy()).sum())
            if i in utterance_shards:
                mask = pc.equal(batch.column("format"), first_format)
                for text in pc.filter(batch.column("text"), mask).to_pylist():
                    row = parse_row(text, first_format, codebooks, strict=False)
                    counts.utterance_chars.extend(len(u.audio) for u in row.utterances)
    return counts


def component_stats(component: str, records: Sequence[tuple[Location, dict]], counter: TokenCounter | None = None,
                    utterance_shards: int | None = None) -> ComponentStats:
    """Numbers of one component from its shards' metadata columns and records (``text`` only where said)."""
    shard_paths = [as_location(p).with_suffix(".parquet") for p, _ in records]
    made = records[0][1].get("made_by") if records and isinstance(records[0][1].get("made_by"), dict) else {}
    counts = _row_counts(shard_paths, made)
    totals = record_totals(r for _, r in records)
    warnings = _disagreements(counts, totals)
    text_chars = int(totals["text_chars"]) - counts.audio_tokens - counts.marker_chars

    utt_idx = set(_evenly_spaced(len(shard_paths), utterance_shards))
    text = _read_text(shard_paths, counts.first_format, counts.codebooks or NUM_CODEBOOKS, counter, utt_idx)
    if text.audio_mismatch:
        warnings.append(f"{text.audio_mismatch} rows whose n_audio_tokens differs from the audio tokens of their "
                        "text: the metadata column is wrong (run `sodadata validate`)")
    text_tokens = text.text_tokens if counter is not None else round(text_chars / CHARS_PER_TEXT_TOKEN)
    has_speech = counts.speech_documents > 0
    chars_per_second = FRAME_RATE_HZ * (counts.codebooks or NUM_CODEBOOKS)
    utt_seconds = (np.asarray(text.utterance_chars, dtype=np.float64) / chars_per_second
                   if utt_idx and has_speech else None)
    for w in warnings:
        log.warning("%s: %s", component, w)
    return ComponentStats(
        component=component,
        shards=len(shard_paths),
        documents=counts.documents,
        rows=counts.rows,
        utterances=counts.utterances,
        audio_seconds=counts.audio_seconds,
        audio_tokens=counts.audio_tokens,
        marker_tokens=counts.marker_tokens,
        text_chars=text_chars,
        text_tokens=text_tokens,
        text_tokens_exact=counter is not None,
        rejects=totals["rejects"],
        read=int(totals["read"]),
        written=int(totals["written"]),
        utterance_shards_read=len(utt_idx) if has_speech else 0,
        codebooks=counts.codebooks,
        formats=counts.formats,
        warnings=warnings,
        document_seconds=counts.document_seconds,
        utterance_seconds=utt_seconds,
        document_seconds_summary=_summary(counts.document_seconds),
        utterance_seconds_summary=_summary(utt_seconds),
    )


def _parquet_file(loc: Location) -> pq.ParquetFile:
    """A shard's Parquet file, local or on a store (read through its filesystem: Arrow does not take a UPath)."""
    return pq.ParquetFile(loc.open("rb") if is_remote(loc) else loc)


def _scan_shards(paths: Sequence[Location], columns: list[str]) -> pl.LazyFrame:
    """Some columns of every shard: Polars' own scan on a local disk; on a store each file's columns through its
    filesystem (Polars' object-store client would need the credentials handed to it)."""
    if not any(is_remote(p) for p in paths):
        return pl.scan_parquet([str(p) for p in paths]).select(columns)
    tables = [_parquet_file(p).read(columns=columns) for p in paths]
    return pl.from_arrow(pa.concat_tables(tables)).lazy()


def group_records(out: Location | str | Found, components: Iterable[str] = (), command: str = "stats"
                  ) -> dict[str, list[tuple[Path, dict]]]:
    """Finished shards of the output root ``out`` by component (all, or those named), in path order.

    ``out`` may be a folder holding exactly one output root below it (that root is used) or what
    :func:`sodadata.write.outputs.one_root` found already; ``_``-prefixed folders (``_hub``, ``_stats``) are never read.
    Components whose shards differ in ``made_by`` or lack it get one warning each. No shards, several roots or a
    component not found: :class:`OutputError` (a ``ValueError``) saying what to do.
    """
    found = out if isinstance(out, Found) else one_root(out, command)
    grouped = found.by_component(components)
    for component, shards in grouped.items():
        for problem in made_by_problems(shards):
            log.warning("%s: %s", component, problem)
    return {c: [(s.record_path, s.record) for s in shards] for c, shards in grouped.items()}
