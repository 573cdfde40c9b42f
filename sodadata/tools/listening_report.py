"""``sodadata inspect``: a static HTML page to listen to sampled documents of every component.

::

    sodadata inspect OUT_DIR --html report/ [--per-component 3] [--seed 0]

For every component of a finished output directory the page shows the shards' totals (from their records), its
numbers from ``sodadata stats`` when a stats output exists (``OUT_DIR/_stats``, or ``--stats DIR``; the stats
Markdown and plots follow at the end of the page; ``--with-stats`` runs the stats command first if there is none),
and ``--per-component`` documents sampled with ``--seed``: each utterance's transcript beside an ``<audio>`` player
of its decoded speech, a player for the whole document, its duration and token counts (audio and marker tokens
exact; text tokens exact with ``--tokenizer``, else estimated as ``sodadata stats`` does). Text-only components
(Nemotron-CC) show their sampled texts.

Only the sampled documents are read in full (``id`` filter) and decoded, one batch per document: decoding is
expensive with real Mimi on CPU. ``--max-seconds`` caps the audio decoded per document (a Yodas document is a
whole video); transcripts past the cap are still shown, without a player.

The page needs no server: open ``report/index.html`` from disk. Audio files lie next to it under ``audio/``,
MP3 when libsndfile can write it (every browser plays it), else Opus, else WAV. ``report.json`` holds the same
content for scripts; the page itself is made in :mod:`sodadata.tools.listening_page`.

Decode with the codec that encoded the data (the default: the codec named in the shard records). With
``tiny-random``/``full-random`` the players play noise: those are seeded random models whose codes are NOT real
Mimi codes, and the page says so at the top.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from sodadata.cli import OneLineParser, setup_logging
from sodadata.encode.codec_config import CodecConfig
from sodadata.encode.codes import SAMPLE_RATE, chars_to_codes
from sodadata.locations import Location, as_location, check_location, display, is_remote
from sodadata.read.recipe import ConfigError
from sodadata.tools.audio_files import audio_suffix, can_write, compact_audio_format, write_audio
from sodadata.tools.listening_page import ComponentView, DocumentView, UtteranceView, render_html, slugify
from sodadata.tools.mimi_decoder import get_decoder
from sodadata.tools.recorded_codec import add_codec_args, codebooks_of, codec_config_from
from sodadata.tools.row_lookup import FoundRow, find_rows, shard_dataset
from sodadata.tools.stats import StatsConfig, StatsOutput, compute_stats, find_stats, write_report
from sodadata.tools.stats_numbers import (
    CHARS_PER_TEXT_TOKEN,
    ROW_MARKER_TOKENS,
    UTTERANCE_MARKER_TOKENS,
    group_records,
    record_totals,
)
from sodadata.write.document import AUDIO_FIRST, AUDIO_ONLY, TEXT_FIRST, TEXT_ONLY, ParsedRow, parse_row
from sodadata.write.outputs import one_root

log = logging.getLogger(__name__)

DEFAULT_MAX_SECONDS = 120.0


# --------------------------------------------------------------------------------------------------------------
# Sampling


def _component_seed(seed: int, component: str) -> np.random.Generator:
    # per component, so one component's sample does not change when another is added or removed
    return np.random.default_rng([seed, zlib.crc32(component.encode())])


def sample_ids(files: Sequence[Location], n: int, seed: int, component: str) -> tuple[list[str], int]:
    """``n`` row ids of distinct documents, drawn with ``seed`` (metadata columns only, not ``text``).

    A speech document has two rows with the same utterances; we take its text-first row (text rows are their own
    documents). Returns the ids in shard order and how many documents there were to draw from.
    """
    table = shard_dataset(files)[0].to_table(columns=["id", "format"])
    ids = table.column("id").to_pylist()
    fmts = table.column("format").to_pylist()
    candidates = [i for i, f in zip(ids, fmts) if f in (TEXT_FIRST, TEXT_ONLY)]
    if not candidates:  # e.g. a directory that kept only audio_first rows
        candidates = [i for i, f in zip(ids, fmts) if f == AUDIO_FIRST] or ids
    if n >= len(candidates):
        return list(candidates), len(candidates)
    picked = _component_seed(seed, component).choice(len(candidates), size=n, replace=False)
    return [candidates[k] for k in sorted(picked)], len(candidates)


def run_stats(out_dir: Location | str, stats_dir: Location | str | None) -> StatsOutput | None:
    """``--with-stats``: run ``sodadata stats`` when no output exists yet."""
    config = StatsConfig(out=as_location(out_dir), output=stats_dir)
    log.info("running sodadata stats into %s", config.output_dir)
    write_report(compute_stats(config), config.output_dir)
    return find_stats(out_dir, stats_dir)


# --------------------------------------------------------------------------------------------------------------
# Building the report


class _TextTokens:
    """Exact text tokens with ``--tokenizer`` (tokenizer.json, a directory holding one, or a Hub id).

    With the extended tokenizer (``sodadata tokenizer build``) the whole row is counted as training encodes it
    (:class:`sodadata.mix.tokenizer.TokenCounter`). A plain base tokenizer (no SODA tokens) counts the transcripts one
    by one.
    """

    def __init__(self, spec: str) -> None:
        from sodadata.mix.tokenizer import TokenCounter, load_tokenizer

        self.tok = load_tokenizer(spec)
        try:
            self.rows: TokenCounter | None = TokenCounter(self.tok)
        except ValueError:
            log.info("tokenizer %s has no SODA markers/audio tokens: counting transcripts alone", spec)
            self.rows = None

    def count(self, row_text: str, texts: Sequence[str]) -> int:
        if self.rows is not None:
            return int(self.rows.count([row_text])[0][0])
        return sum(len(self.tok.encode(t, add_special_tokens=False).ids) for t in texts if t)


@dataclass
class InspectOptions:
    per_component: int = 3
    seed: int = 0
    max_seconds: float = DEFAULT_MAX_SECONDS
    audio_format: str = "auto"
    components: tuple[str, ...] = ()
    stats_dir: Path | None = None
    with_stats: bool = False
    tokenizer: str | None = None
    codec: str | None = None  # None: the codec named in the shard records
    revision: str | None = None
    device: str = "cpu"
    dtype: str = "float32"


def _chosen_utterances(utterances: Sequence, max_seconds: float) -> int:
    """How many leading utterances fit in ``max_seconds`` (at least one)."""
    total = 0.0
    for k, u in enumerate(utterances):
        total += u.seconds
        if k and total > max_seconds:
            return k
    return len(utterances)


@dataclass
class _Players:
    """Decodes the sampled documents and writes their audio next to the page (``audio/``); keeps the codecs used."""

    html_dir: Path
    fmt: str
    max_seconds: float
    codecs: set[str] = field(default_factory=set)
    random_codecs: set[str] = field(default_factory=set)
    scaled: int = 0  # files that peaked above full scale and were scaled down

    def add(self, doc: DocumentView, parsed: ParsedRow, config: CodecConfig, base: str) -> None:
        """Decode ``parsed``'s utterances (those within ``max_seconds``: one batch) into ``base``/ and ``base``."""
        self.codecs.add(config.codec)
        if config.is_random:
            self.random_codecs.add(config.codec)
        decoder = get_decoder(config)
        n_decode = _chosen_utterances(parsed.utterances, self.max_seconds)
        waves = decoder.decode([chars_to_codes(u.audio, decoder.config.num_codebooks)
                                for u in parsed.utterances[:n_decode]])
        suffix = audio_suffix(self.fmt)
        for u in parsed.utterances:
            rel = None
            if u.index < n_decode:
                rel = f"{base}/u{u.index:04d}{suffix}"
                self.scaled += write_audio(self.html_dir / rel, waves[u.index], fmt=self.fmt) < 1.0
            doc.utterances.append(UtteranceView(u.index, u.text, u.frames, u.seconds, rel))
        joined = np.concatenate(waves)
        doc.audio = f"{base}{suffix}"
        self.scaled += write_audio(self.html_dir / doc.audio, joined, fmt=self.fmt) < 1.0
        doc.decoded_seconds = joined.size / SAMPLE_RATE


def _document_view(component: str, found: FoundRow, counter: _TextTokens | None
                   ) -> tuple[DocumentView, ParsedRow | None]:
    """The sampled row ``found`` as the page shows it, and the row read back (None when it is malformed)."""
    row = found.row
    try:
        parsed = parse_row(row["text"], row["format"], codebooks_of(found.record))
    except ValueError as exc:  # a malformed row is exactly what a listener must see: show it, go on
        log.warning("%s: row %s in %s is malformed: %s", component, row["id"], display(found.path), exc)
        return DocumentView(
            row_id=row["id"], split=row["split"], format=row["format"], audio_seconds=float(row["audio_seconds"]),
            n_utterances=0, n_audio_tokens=int(row["n_audio_tokens"]), marker_tokens=0, text_chars=0,
            text_tokens=0, text_tokens_exact=False, error=f"{exc} (shard {found.path.name})"), None
    texts = [parsed.body] if parsed.format == TEXT_ONLY else parsed.transcripts
    # an audio_only utterance has the audio markers only (half of the four)
    per_utterance = UTTERANCE_MARKER_TOKENS // 2 if parsed.format == AUDIO_ONLY else UTTERANCE_MARKER_TOKENS
    markers = ROW_MARKER_TOKENS + per_utterance * len(parsed.utterances)
    text_chars = sum(len(t) for t in texts)
    text_tokens = (counter.count(row["text"], texts) if counter is not None
                   else round(text_chars / CHARS_PER_TEXT_TOKEN))
    doc = DocumentView(
        row_id=row["id"], split=row["split"], format=parsed.format, audio_seconds=float(row["audio_seconds"]),
        n_utterances=len(parsed.utterances), n_audio_tokens=int(row["n_audio_tokens"]), marker_tokens=markers,
        text_chars=text_chars, text_tokens=text_tokens, text_tokens_exact=counter is not None,
        body=parsed.body if parsed.format == TEXT_ONLY else None,
    )
    return doc, parsed


def _component_view(name: str, shards: Sequence[tuple[Location, dict]], stats: StatsOutput | None,
                    options: InspectOptions, counter: _TextTokens | None, players: _Players) -> ComponentView:
    """Sample ``options.per_component`` documents of one component, read them in full and decode them."""
    files = [p.with_suffix(".parquet") for p, _ in shards]
    view = ComponentView(name=name, totals=record_totals(rec for _, rec in shards),
                         stats=stats.components.get(name) if stats else None)
    ids, view.candidates = sample_ids(files, options.per_component, options.seed, name)
    rows = find_rows(files, ids, columns=["id", "split", "text", "format", "audio_seconds", "n_audio_tokens"])
    scaled_before = players.scaled
    for k, found in enumerate(rows):
        doc, parsed = _document_view(name, found, counter)
        view.documents.append(doc)
        if parsed is None or parsed.format == TEXT_ONLY:
            continue
        config = codec_config_from(options, found.record)  # the codec that made this row's shard
        view.codec = ", ".join(sorted({*(view.codec.split(", ") if view.codec else ()), config.codec}))
        # one batch per document, and only the sampled documents: decoding is the expensive part
        players.add(doc, parsed, config, f"audio/{slugify(name)}/{k:03d}_{slugify(doc.row_id)}")  # k: slugs may match
    if players.scaled > scaled_before:
        log.warning("%s: %d decoded audio files peaked above full scale and were scaled down to avoid clipping",
                    name, players.scaled - scaled_before)
    log.info("%s: %d of %d documents%s", name, len(view.documents), view.candidates,
             f", {sum(len(d.utterances) for d in view.documents)} utterances decoded" if view.codec else "")
    return view


def _copy_stats_plots(stats: StatsOutput | None, html_dir: Path) -> list[str]:
    """Copy the stats plots under ``html_dir/stats/``, so the report folder can be moved or shared on its own."""
    copied = []
    for plot in stats.plots if stats is not None else ():
        rel = f"stats/{plot.name}"
        (html_dir / "stats").mkdir(parents=True, exist_ok=True)
        (html_dir / rel).write_bytes(plot.read_bytes())
        copied.append(rel)
    return copied


def build_report(out_dir: Location | str, html_dir: Path, options: InspectOptions) -> dict:
    """Sample, decode and write the page (``index.html``, ``audio/``, ``stats/``, ``report.json``); return the report.

    Raises ``ValueError`` with what to do when there is nothing to report on.
    """
    html_dir = Path(html_dir)
    # One output root: the one given, or the one below it (the README's out/ holding out/sample); several: stop
    # naming them (OutputError is a ValueError). Its _hub/ and _stats/ are never sampled. A component whose shards
    # differ in made_by gets a warning, and still plays right: each row is decoded with its own shard's codec.
    output = one_root(as_location(out_dir), "inspect")
    by_component = group_records(output, options.components)
    fmt = compact_audio_format() if options.audio_format == "auto" else options.audio_format
    if not can_write(fmt):
        raise ValueError(f"this libsndfile cannot write {fmt}; use --audio-format wav")
    if (html_dir / "report.json").exists():  # our previous report: its audio files would go stale
        shutil.rmtree(html_dir / "audio", ignore_errors=True)
        shutil.rmtree(html_dir / "stats", ignore_errors=True)
    html_dir.mkdir(parents=True, exist_ok=True)

    stats = find_stats(output.path, options.stats_dir)
    if stats is None and options.with_stats:
        stats = run_stats(output.path, options.stats_dir)
    stats_plots = _copy_stats_plots(stats, html_dir)
    counter = _TextTokens(options.tokenizer) if options.tokenizer else None
    players = _Players(html_dir, fmt, options.max_seconds)
    t_start = time.perf_counter()
    components = [_component_view(name, shards, stats, options, counter, players)
                  for name, shards in by_component.items()]
    report = {
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "out_dir": display(output.path) if is_remote(output.path) else str(output.path.resolve()),
        "per_component": options.per_component,
        "seed": options.seed,
        "max_seconds": options.max_seconds,
        "audio_format": fmt,
        "codecs": sorted(players.codecs),
        "random_codecs": sorted(players.random_codecs),
        "tokenizer": options.tokenizer,
        "stats": None if stats is None else {"dir": display(stats.dir), "plots": stats_plots, **stats.meta},
        "elapsed_seconds": round(time.perf_counter() - t_start, 2),
        "components": [_component_json(c) for c in components],
    }
    page = render_html(report, components, fmt, stats)
    (html_dir / "index.html").write_text(page, encoding="utf-8")
    (html_dir / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def _component_json(c: ComponentView) -> dict:
    d = asdict(c)
    for doc, view in zip(d["documents"], c.documents):
        doc["total_tokens"] = view.total_tokens
    return d


# --------------------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="sodadata inspect",
        description="Write a static HTML page (opens from disk) to listen to sampled documents of every component.",
    )
    p.add_argument("out_dir", help="output directory of the recipes: a local path or a URL (s3://, gs://, az://)")
    p.add_argument("--html", required=True, help="local directory to write index.html and its audio into "
                   "(the page opens from disk)")
    p.add_argument("--per-component", type=int, default=3, help="documents sampled per component (default 3)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--component", action="append", default=[], dest="components",
                   help="only this component (repeatable), e.g. emilia/en")
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                   help=f"audio decoded per document at most (default {DEFAULT_MAX_SECONDS:.0f} s)")
    p.add_argument("--audio-format", choices=("auto", "mp3", "opus", "wav"), default="auto",
                   help="audio files next to the page; auto: mp3 if libsndfile writes it, else opus, else wav")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer.json, a directory holding one, or a Hub id: exact text token counts (the "
                        "extended tokenizer of 'sodadata tokenizer build' counts whole rows as training does)")
    p.add_argument("--stats", default=None, dest="stats_dir",
                   help="directory or URL of a 'sodadata stats' output (default: look under OUT_DIR)")
    p.add_argument("--with-stats", action="store_true",
                   help="run 'sodadata stats' first when no stats output is found")
    add_codec_args(p)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.per_component < 1:
        print("sodadata inspect: --per-component must be at least 1", file=sys.stderr)
        return 2
    if is_remote(args.html):  # a str: Path() would make s3://b/x the local folder s3:/b/x
        print(f"sodadata inspect: --html {display(args.html)}: the page and its audio are written on this "
              "machine (it opens from disk): give a local folder", file=sys.stderr)
        return 2
    try:
        check_location(args.out_dir, write=False)
        if args.stats_dir is not None:
            check_location(args.stats_dir, write=args.with_stats)
    except ConfigError as exc:
        print(f"sodadata inspect: {exc}", file=sys.stderr)
        return 2
    if not is_remote(args.out_dir) and not Path(args.out_dir).is_dir():
        print(f"sodadata inspect: {args.out_dir} is not a directory", file=sys.stderr)
        return 2
    options = InspectOptions(
        per_component=args.per_component, seed=args.seed, max_seconds=args.max_seconds,
        audio_format=args.audio_format, components=tuple(args.components), stats_dir=args.stats_dir,
        with_stats=args.with_stats, tokenizer=args.tokenizer, codec=args.codec, revision=args.revision,
        device=args.device, dtype=args.dtype,
    )
    try:
        report = build_report(args.out_dir, Path(args.html), options)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:  # RuntimeError: a codec that cannot be loaded
        print(f"sodadata inspect: {exc}", file=sys.stderr)
        return 1
    page = (Path(args.html) / "index.html").resolve()
    n_docs = sum(len(c["documents"]) for c in report["components"])
    log.info("wrote %s: %d components, %d documents in %.1fs", page, len(report["components"]), n_docs,
             report["elapsed_seconds"])
    print(page.as_uri())
    return 0


__all__ = ["InspectOptions", "build_report", "main", "run_stats", "sample_ids"]
