"""``sodadata stats OUT_DIR``: per-component numbers and plots to check before spending TPU time on a corpus.

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

Outputs (default ``OUT_DIR/_stats/``; ``_`` because no component name can start with it): ``stats.md``,
``stats.json``, ``utterance_durations.png``, ``document_durations.png``, ``token_share.png``. The table is
also printed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
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

from sodadata.codes import FRAME_RATE_HZ, NUM_CODEBOOKS
from sodadata.document import (
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
)
from sodadata.locations import Location, as_location, check_location, is_remote
from sodadata.mixture import MIXTURE_DIR, read_recipe, resolve_recipe_path
from sodadata.outputs import Found, OutputError, made_by_problems, one_root
from sodadata.recipe import ConfigError
from sodadata.tokenizer import TokenCounter, load_tokenizer

log = logging.getLogger(__name__)

STATS_DIRNAME = "_stats"
STATS_JSON = "stats.json"
STATS_MD = "stats.md"
PLOTS = {
    "utterance": "utterance_durations.png",
    "document": "document_durations.png",
    "share": "token_share.png",
}
DEFAULT_RECIPE = MIXTURE_DIR / "soda.yaml"
# SPEC §4: token proportions of the SODA mixture, used when no recipe file is there (yet).
SPEC_WEIGHTS: dict[str, float] = {
    "yodas2/en": 0.95 * 131 / 241,
    "emilia-yodas/en": 0.95 * 73 / 241,
    "emilia/en": 0.95 * 37 / 241,
    "nemotron-cc/hq-actual": 0.05,
}
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


@dataclass(frozen=True)
class StatsConfig:
    out: Location | str
    output: Location | str | None = None  # default: out/_stats (a URL when out is one)
    tokenizer: str | Path | None = None  # directory holding tokenizer.json (or the file itself, or a Hub id)
    recipe: Path | None = None  # default: recipes/soda.yaml, else the SPEC §4 weights
    components: tuple[str, ...] = ()  # empty: every component found
    utterance_shards: int | None = None  # shards per component read for utterance durations; None all, 0 none

    @property
    def output_dir(self) -> Location:
        return as_location(self.output) if self.output is not None else as_location(self.out) / STATS_DIRNAME


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
    """Mixture weights by component from a recipe file (``components: [{name, path, weight}]``), normalized.

    ``recipe=None`` reads the packaged ``soda.yaml`` if it exists and otherwise uses the SPEC §4 weights; a
    packaged mixture can be named as :meth:`MixtureConfig.load` takes it (``recipes/soda.yaml`` from any folder).
    """
    if recipe is None:
        if not DEFAULT_RECIPE.exists():
            return dict(SPEC_WEIGHTS), "SPEC §4 (recipes/soda.yaml not found)"
        recipe = DEFAULT_RECIPE
    try:
        recipe = resolve_recipe_path(recipe)
        data = read_recipe(recipe)
    except FileNotFoundError as exc:
        raise StatsError(f"{exc} (a mixture YAML: components with weights)") from None
    except (ValueError, OSError) as exc:
        raise StatsError(str(exc)) from exc
    entries = data.get("components")
    weights: dict[str, float] = {}
    if isinstance(entries, dict):  # {name: weight} or {name: {weight: w}}
        entries = [{"name": k, **(v if isinstance(v, dict) else {"weight": v})} for k, v in entries.items()]
    for entry in entries or []:
        if not isinstance(entry, dict) or "weight" not in entry:
            continue
        name = entry.get("name") or _component_from_path(entry.get("path"))
        if name:
            weights[str(name)] = weights.get(str(name), 0.0) + float(entry["weight"])
    total = sum(weights.values())
    if not weights or total <= 0:
        raise StatsError(f"recipe {recipe} has no 'components' with positive 'weight'")
    return {k: v / total for k, v in weights.items()}, str(recipe)


def _component_from_path(path: str | None) -> str | None:
    # A recipe path points at <out>/<corpus>/<subset>: the last two parts are the component name.
    if not path:
        return None
    parts = Path(str(path).rstrip("/")).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else None


def token_counter(tokenizer: str | Path) -> TokenCounter:
    """The counter of ``--tokenizer`` (a directory holding ``tokenizer.json``, the file, a Hub id)."""
    try:
        return TokenCounter(load_tokenizer(str(tokenizer)))
    except FileNotFoundError as exc:
        raise StatsError(str(exc)) from exc
    except ValueError as exc:  # no markers, no audio tokens, or audio ids out of order
        raise StatsError(f"unusable tokenizer ({exc}); build it with `sodadata tokenizer build` (SPEC §3)") from exc


def audio_span_lengths(text: str) -> list[int]:
    """Characters of every audio span in a row, in order (100 characters per second of audio)."""
    lengths = []
    pieces = text.split(AUDIO_END)
    for piece in pieces[:-1]:  # the part after the last AUDIO_END holds no span
        start = piece.rfind(AUDIO_START)
        if start >= 0:
            lengths.append(len(piece) - start - len(AUDIO_START))
    return lengths


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


def component_stats(component: str, records: Sequence[tuple[Location, dict]], counter: TokenCounter | None = None,
                    utterance_shards: int | None = None) -> ComponentStats:
    """Numbers of one component from its shards' metadata columns and records (``text`` only where said)."""
    shard_paths = [as_location(p).with_suffix(".parquet") for p, _ in records]
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
    made = records[0][1].get("made_by") if records and isinstance(records[0][1].get("made_by"), dict) else {}
    has_speech = meta.filter(pl.col("format") != TEXT_ONLY).height > 0
    codebooks = int(made.get("codebooks") or NUM_CODEBOOKS) if has_speech else None
    formats = list(made.get("formats") or DEFAULT_FORMATS)
    first = next((f for f in formats if f != TEXT_ONLY), TEXT_FIRST)
    docs = meta.filter(pl.col("format").is_in([first, TEXT_ONLY]))
    speech = meta.filter(pl.col("format") == first)
    rows = meta.height
    interleaved_utts = int(meta.filter(pl.col("format").is_in([TEXT_FIRST, AUDIO_FIRST]))["n_utterances"].sum())
    audio_only_utts = int(meta.filter(pl.col("format") == AUDIO_ONLY)["n_utterances"].sum())
    audio_tokens = int(meta["n_audio_tokens"].sum())
    # an audio_only utterance has the audio markers only (half of the four)
    marker_tokens = (ROW_MARKER_TOKENS * rows + UTTERANCE_MARKER_TOKENS * interleaved_utts
                     + UTTERANCE_MARKER_TOKENS // 2 * audio_only_utts)
    marker_chars = (ROW_MARKER_CHARS * rows + UTTERANCE_MARKER_CHARS * interleaved_utts
                    + (len(AUDIO_START) + len(AUDIO_END)) * audio_only_utts)

    recs = pl.DataFrame(
        {
            "rows": [int(r.get("rows", 0)) for _, r in records],
            "documents": [int(r.get("documents", 0)) for _, r in records],
            "read": [int(r.get("read", 0)) for _, r in records],
            "written": [int(r.get("written", 0)) for _, r in records],
            "audio_seconds": [float(r.get("audio_seconds", 0.0)) for _, r in records],
            "audio_tokens": [int(r.get("audio_tokens", 0)) for _, r in records],
            "text_chars": [int(r.get("text_chars", 0)) for _, r in records],
        },
        schema={"rows": pl.Int64, "documents": pl.Int64, "read": pl.Int64, "written": pl.Int64,
                "audio_seconds": pl.Float64, "audio_tokens": pl.Int64, "text_chars": pl.Int64},
    ).sum()
    reasons = pl.DataFrame(
        [(k, int(v)) for _, r in records for k, v in (r.get("rejects") or {}).items()],
        schema={"reason": pl.String, "count": pl.Int64}, orient="row",
    )
    rejects = {
        row["reason"]: int(row["count"])
        for row in reasons.group_by("reason").agg(pl.col("count").sum()).sort("reason").iter_rows(named=True)
    }

    warnings = []
    checks = {
        "rows": (rows, int(recs["rows"][0])),
        "documents": (docs.height, int(recs["documents"][0])),
        "audio tokens": (audio_tokens, int(recs["audio_tokens"][0])),
    }
    for what, (from_rows, from_records) in checks.items():
        if from_rows != from_records:
            warnings.append(f"{what}: {from_rows} in the shards but {from_records} in the records")
    seconds = float(speech["audio_seconds"].sum())
    if not math.isclose(seconds, float(recs["audio_seconds"][0]), rel_tol=1e-6, abs_tol=1e-3):
        warnings.append(f"audio seconds: {seconds:.3f} in the shards but {float(recs['audio_seconds'][0]):.3f} "
                        "in the records")
    text_chars = int(recs["text_chars"][0]) - audio_tokens - marker_chars

    # The text pass: every shard with a tokenizer, else only the shards sampled for utterance durations.
    utt_idx = set(_evenly_spaced(len(shard_paths), utterance_shards))
    to_read = range(len(shard_paths)) if counter is not None else sorted(utt_idx)
    utterance_chars: list[int] = []
    text_tokens = 0
    tok_audio_mismatch = 0
    for i in to_read:
        want_utts = i in utt_idx
        columns = ["format", "text", "n_audio_tokens"]
        for batch in _parquet_file(shard_paths[i]).iter_batches(batch_size=TEXT_BATCH_ROWS, columns=columns):
            if counter is not None:
                t, a, _ = counter.count(batch.column("text").to_pylist())
                text_tokens += int(t.sum())
                tok_audio_mismatch += int((a != batch.column("n_audio_tokens").to_numpy()).sum())
            if want_utts:
                mask = pc.equal(batch.column("format"), first)
                for text in pc.filter(batch.column("text"), mask).to_pylist():
                    utterance_chars.extend(audio_span_lengths(text))
    if tok_audio_mismatch:
        warnings.append(f"{tok_audio_mismatch} rows whose n_audio_tokens differs from the audio tokens of their "
                        "text: the metadata column is wrong (run `sodadata validate`)")
    if counter is None:
        text_tokens = round(text_chars / CHARS_PER_TEXT_TOKEN)

    doc_seconds = speech["audio_seconds"].to_numpy()
    chars_per_second = FRAME_RATE_HZ * (codebooks or NUM_CODEBOOKS)
    utt_seconds = np.asarray(utterance_chars, dtype=np.float64) / chars_per_second if utt_idx else None
    for w in warnings:
        log.warning("%s: %s", component, w)
    return ComponentStats(
        component=component,
        shards=len(shard_paths),
        documents=docs.height,
        rows=rows,
        utterances=int(speech["n_utterances"].sum()),
        audio_seconds=seconds,
        audio_tokens=audio_tokens,
        marker_tokens=marker_tokens,
        text_chars=text_chars,
        text_tokens=text_tokens,
        text_tokens_exact=counter is not None,
        rejects=rejects,
        read=int(recs["read"][0]),
        written=int(recs["written"][0]),
        utterance_shards_read=len(utt_idx) if speech.height else 0,
        codebooks=codebooks,
        formats=formats,
        warnings=warnings,
        document_seconds=doc_seconds,
        utterance_seconds=utt_seconds if speech.height else None,
        document_seconds_summary=_summary(doc_seconds),
        utterance_seconds_summary=_summary(utt_seconds) if speech.height else None,
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
    :func:`sodadata.outputs.one_root` found already; ``_``-prefixed folders (``_hub``, ``_stats``) are never read.
    Components whose shards differ in ``made_by`` or lack it get one warning each.
    """
    try:
        found = out if isinstance(out, Found) else one_root(out, command)
        grouped = found.by_component(components)
    except OutputError as exc:
        raise StatsError(str(exc)) from None
    for component, shards in grouped.items():
        for problem in made_by_problems(shards):
            log.warning("%s: %s", component, problem)
    return {c: [(s.record_path, s.record) for s in shards] for c, shards in grouped.items()}


def compute_stats(config: StatsConfig, found: Found | None = None) -> CorpusStats:
    """Numbers of ``config.out`` (an output root), or of the shards already ``found`` there."""
    grouped = group_records(found if found is not None else config.out, config.components)
    weights, source = load_weights(config.recipe)
    counter = token_counter(config.tokenizer) if config.tokenizer is not None else None
    comps = []
    for component, records in grouped.items():
        log.info("stats for %s (%d shards)", component, len(records))
        comps.append(component_stats(component, records, counter, config.utterance_shards))
    all_records = [(c, p, r) for c, recs in grouped.items() for p, r in recs]
    return CorpusStats(
        components=comps, weights=weights, weights_source=source,
        tokenizer=str(config.tokenizer) if config.tokenizer is not None else None,
        fingerprint=fingerprint(all_records, config.tokenizer, config.utterance_shards),
    )


# ---------------------------------------------------------------- rendering


def _int(n: int) -> str:
    return f"{n:,}"


def _tokens(c: ComponentStats, n: int) -> str:
    return _int(n) if c.text_tokens_exact else f"~{_int(n)}"


def table_rows(stats: CorpusStats) -> tuple[list[str], list[list[str]]]:
    header = ["component", "shards", "documents", "rows", "utterances", "hours", "audio tokens", "text chars",
              "text tokens", "total tokens", "token share", "recipe weight", "rejected"]
    rows = []
    for c in stats.components:
        weight = stats.weights.get(c.component)
        rows.append([
            c.component, _int(c.shards), _int(c.documents), _int(c.rows), _int(c.utterances), f"{c.hours:,.2f}",
            _int(c.audio_tokens), _int(c.text_chars), _tokens(c, c.text_tokens), _tokens(c, c.total_tokens),
            f"{stats.token_share(c.component):.4f}", "-" if weight is None else f"{weight:.4f}", _int(c.rejected),
        ])
    total = stats.components
    exact = stats.text_tokens_exact
    rows.append([
        "total", _int(sum(c.shards for c in total)), _int(sum(c.documents for c in total)),
        _int(sum(c.rows for c in total)), _int(sum(c.utterances for c in total)),
        f"{sum(c.hours for c in total):,.2f}", _int(sum(c.audio_tokens for c in total)),
        _int(sum(c.text_chars for c in total)),
        ("" if exact else "~") + _int(sum(c.text_tokens for c in total)),
        ("" if exact else "~") + _int(stats.total_tokens), "1.0000" if stats.total_tokens else "0.0000", "",
        _int(sum(c.rejected for c in total)),
    ])
    return header, rows


def format_table(stats: CorpusStats) -> str:
    header, rows = table_rows(stats)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    out.append("")
    out += _notes(stats)
    rejects = _reject_lines(stats)
    if rejects:
        out += ["", "rejects by reason:"] + [f"  {c}: {r}" for c, r in rejects]
    return "\n".join(out)


def _notes(stats: CorpusStats) -> list[str]:
    notes = ["Audio tokens and marker tokens are exact (one token per audio character and per marker, SPEC §3); "
             "hours count each document once (all of its rows train)."]
    if stats.text_tokens_exact:
        notes.append(f"Text tokens are exact (tokenizer: {stats.tokenizer}).")
    else:
        notes.append(f"Text tokens marked ~ are estimates (text characters / {CHARS_PER_TEXT_TOKEN}); "
                     "run `sodadata stats --tokenizer DIR` for exact counts.")
    notes.append(f"Recipe weights: {stats.weights_source}. Token share is this output's share of all its tokens.")
    for c in stats.components:
        if c.codebooks is not None:
            notes.append(f"{c.component}: {c.codebooks} codebooks ({c.audio_tokens_per_second:g} audio tokens per "
                         f"second of audio), rows {', '.join(c.formats)}.")
    for c in stats.components:
        notes += [f"WARNING {c.component}: {w}" for w in c.warnings]
    return notes


def _reject_lines(stats: CorpusStats) -> list[tuple[str, str]]:
    return [(c.component, ", ".join(f"{k}={v:,}" for k, v in sorted(c.rejects.items())))
            for c in stats.components if c.rejects]


def render_markdown(stats: CorpusStats, image_prefix: str = "", heading_level: int = 1) -> str:
    """The report as Markdown; ``image_prefix`` is prepended to the PNG names (e.g. ``stats/`` in the card)."""
    h = "#" * heading_level
    header, rows = table_rows(stats)
    md = [f"{h} Statistics", "", "| " + " | ".join(header) + " |",
          "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for i, r in enumerate(rows):
        name = "**total**" if i == len(rows) - 1 else f"`{r[0]}`"
        md.append("| " + " | ".join([name, *r[1:]]) + " |")
    md += [""] + [f"- {n}" for n in _notes(stats)]
    rejects = [(c.component, c.rejects) for c in stats.components if c.rejects]
    if rejects:
        md += ["", f"{h}# Rejects by reason", "", "| component | reason | count |", "|---|---|---:|"]
        md += [f"| `{comp}` | {reason} | {n:,} |" for comp, rej in rejects for reason, n in sorted(rej.items())]
    dur = [(c.component, c.utterance_seconds_summary, c.document_seconds_summary) for c in stats.components
           if c.document_seconds_summary]
    if dur:
        md += ["", f"{h}# Durations (seconds)", "",
               "| component | utterances: mean | p50 | p90 | max | documents: mean | p50 | p90 | max |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for comp, u, d in dur:
            uc = [f"{u[k]:.1f}" for k in ("mean", "p50", "p90", "max")] if u else ["-"] * 4
            dc = [f"{d[k]:.1f}" for k in ("mean", "p50", "p90", "max")]
            md.append(f"| `{comp}` | " + " | ".join(uc + dc) + " |")
    md += ["", f"{h}# Plots", "",
           f"![Utterance durations]({image_prefix}{PLOTS['utterance']})", "",
           f"![Document durations]({image_prefix}{PLOTS['document']})", "",
           f"![Token share against the recipe weights]({image_prefix}{PLOTS['share']})", ""]
    return "\n".join(md)


def _save_png(fig, path: Location) -> None:
    if not is_remote(path):
        fig.savefig(path, dpi=100)
        return
    buffer = io.BytesIO()  # matplotlib writes files and file objects, not URLs
    fig.savefig(buffer, format="png", dpi=100)
    path.write_bytes(buffer.getvalue())


def write_plots(stats: CorpusStats, output: Location) -> dict[str, Location]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    if not is_remote(output):
        output.mkdir(parents=True, exist_ok=True)
    speech = [c for c in stats.components if c.is_speech]
    paths = {}

    def histograms(kind: str, title: str, get, note) -> None:
        items = [(c, get(c)) for c in speech]
        items = [(c, v) for c, v in items if v is not None and v.size]
        n = max(len(items), 1)
        fig, axes = plt.subplots(n, 1, figsize=(7, 2.2 * n + 0.6), squeeze=False)
        for ax, (c, values) in zip(axes[:, 0], items):
            ax.hist(values, bins=_bins(values, log=kind == "document"), color="tab:blue")
            if kind == "document" and values.min() > 0 and values.max() / values.min() > 50:
                ax.set_xscale("log")
            ax.set_title(f"{c.component}: {values.size:,} {kind}s{note(c)}", fontsize=9)
            ax.set_xlabel("seconds")
            ax.set_ylabel("count")
        if not items:
            axes[0, 0].text(0.5, 0.5, f"no {kind} durations (no speech components, or not read)",
                            ha="center", va="center")
            axes[0, 0].set_axis_off()
        fig.suptitle(title)
        fig.tight_layout()
        path = output / PLOTS[kind]
        _save_png(fig, path)
        plt.close(fig)
        paths[kind] = path

    histograms("utterance", "Utterance durations (audio spans, rounded up to 80 ms frames)",
               lambda c: c.utterance_seconds,
               lambda c: f", text of {c.utterance_shards_read} of {c.shards} shards read")
    histograms("document", "Document durations", lambda c: c.document_seconds, lambda c: "")

    names = sorted(set(c.component for c in stats.components) | set(stats.weights))
    share = [stats.token_share(n) if n in stats.by_name() else 0.0 for n in names]
    weight = [stats.weights.get(n, 0.0) for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    x = np.arange(len(names))
    ax.bar(x - 0.2, share, 0.4, label="share of tokens in this output")
    label = "SPEC §4" if stats.weights_source.startswith("SPEC") else Path(stats.weights_source).name
    ax.bar(x + 0.2, weight, 0.4, label=f"recipe weight ({label})")
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("fraction of tokens")
    exact = "exact" if stats.text_tokens_exact else f"text tokens estimated at {CHARS_PER_TEXT_TOKEN} chars/token"
    ax.set_title(f"Token share per component ({exact})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths["share"] = output / PLOTS["share"]
    _save_png(fig, paths["share"])
    plt.close(fig)
    return paths


def _bins(values: np.ndarray, log: bool) -> np.ndarray | int:
    lo, hi = float(values.min()), float(values.max())
    if log and lo > 0 and hi / lo > 50:
        return np.geomspace(lo, hi, 41)
    return 40 if hi > lo else 1


def write_report(stats: CorpusStats, output: Location | str) -> dict[str, Location]:
    """Write stats.md, stats.json and the PNGs to ``output`` (a folder, or a prefix on a store); return their
    paths."""
    output = as_location(output)
    if not is_remote(output):  # a store has no folders to make
        output.mkdir(parents=True, exist_ok=True)
    paths = write_plots(stats, output)
    paths["markdown"] = output / STATS_MD
    paths["markdown"].write_text(render_markdown(stats), encoding="utf-8")
    paths["json"] = output / STATS_JSON
    paths["json"].write_text(json.dumps(stats.to_json(), indent=2) + "\n", encoding="utf-8")
    return paths


def read_report(output: Location | str) -> CorpusStats | None:
    """The stats saved in ``output`` (stats.json), or None if there are none or they are unreadable."""
    path = as_location(output) / STATS_JSON
    try:
        return CorpusStats.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sodadata stats", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output directory of the recipes (holds <component>/<stem>.parquet): a local path "
                   "or a URL (s3://, gs://, az://)")
    p.add_argument("--output", default=None, help="where to write stats.md/json and PNGs (default OUT/_stats, "
                   "in the bucket when OUT is one)")
    p.add_argument("--tokenizer", default=None,  # a str: Path() would drop the trailing "/" that marks a folder
                   help="folder with tokenizer.json (`sodadata tokenizer build`): exact text tokens; reads all text")
    p.add_argument("--recipe", type=Path, default=None,
                   help="mixture YAML for the weights (default recipes/soda.yaml, else SPEC §4)")
    p.add_argument("--component", action="append", default=[], help="only this component (repeatable)")
    p.add_argument("--utterance-shards", type=int, default=None,
                   help="read text of at most N shards per component for utterance durations (0: skip; "
                   "default all)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sodadata.cli import setup_logging

    setup_logging(args.verbose)
    try:
        # A folder holding one output root below it (the README's out/ holding out/sample) means that root, and
        # the report goes to its _stats/ unless --output says otherwise; several roots: name them, stop.
        check_location(args.out, write=False)
        if args.output is not None:
            check_location(args.output, write=True)
        found = one_root(args.out, "stats")
        config = StatsConfig(out=found.path, output=args.output, tokenizer=args.tokenizer, recipe=args.recipe,
                             components=tuple(args.component), utterance_shards=args.utterance_shards)
        stats = compute_stats(config, found)
    except (StatsError, OutputError, ConfigError) as exc:
        log.error("%s", exc)
        return 2
    paths = write_report(stats, config.output_dir)
    print(format_table(stats))
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0
