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
content for scripts.

Decode with the codec that encoded the data (the default: the codec named in the shard records). With
``tiny-random``/``full-random`` the players play noise: those are seeded random models whose codes are NOT real
Mimi codes, and the page says so at the top.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import re
import shutil
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from sodadata.codec import NOT_REAL_WARNING
from sodadata.codes import SAMPLE_RATE
from sodadata.decode import (
    add_codec_args,
    audio_suffix,
    can_write,
    codebooks_of,
    codec_config_from,
    compact_audio_format,
    find_rows,
    get_decoder,
    parse_row,
    write_audio,
)
from sodadata.document import AUDIO_FIRST, AUDIO_ONLY, TEXT_FIRST, TEXT_ONLY
from sodadata.locations import Location, as_location, check_location, display, is_remote
from sodadata.outputs import made_by_problems, one_root
from sodadata.recipe import ConfigError
from sodadata.row_lookup import shard_dataset

log = logging.getLogger(__name__)

DEFAULT_MAX_SECONDS = 120.0
try:  # estimate text tokens without a tokenizer exactly as sodadata stats does, so the two pages agree
    from sodadata.stats import CHARS_PER_TEXT_TOKEN
except ImportError:
    CHARS_PER_TEXT_TOKEN = 4.2
MARKERS_PER_UTTERANCE = 4  # <|text_start|> <|text_end|> <|audio_start|> <|audio_end|>, one token each
MARKERS_PER_ROW = 2  # <|begin_of_text|> <|end_of_text|>


# --------------------------------------------------------------------------------------------------------------
# What the report holds (also written as report.json)


@dataclass
class UtteranceView:
    index: int
    text: str
    frames: int
    seconds: float
    audio: str | None  # path relative to the page; None when past --max-seconds


@dataclass
class DocumentView:
    row_id: str
    split: str
    format: str
    audio_seconds: float  # the row's column: the source audio's duration
    n_utterances: int
    n_audio_tokens: int  # one token per audio character (SPEC §3): exact
    marker_tokens: int  # one token per marker: exact
    text_chars: int
    text_tokens: int  # exact with --tokenizer, else text_chars / CHARS_PER_TEXT_TOKEN (as sodadata stats does)
    text_tokens_exact: bool
    utterances: list[UtteranceView] = field(default_factory=list)
    audio: str | None = None  # the decoded utterances joined, relative path
    decoded_seconds: float = 0.0
    body: str | None = None  # text-only rows
    error: str | None = None  # why the row could not be parsed (shown instead of players)

    @property
    def total_tokens(self) -> int:
        return self.n_audio_tokens + self.text_tokens + self.marker_tokens


@dataclass
class ComponentView:
    name: str
    totals: dict  # summed from the shards' records
    documents: list[DocumentView] = field(default_factory=list)
    candidates: int = 0
    stats: dict | None = None  # this component's entry of stats.json, when a stats output exists
    codec: str | None = None


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


# --------------------------------------------------------------------------------------------------------------
# Stats output (``sodadata stats``, issue 6: OUT_DIR/_stats/{stats.md, stats.json, *.png})


@dataclass
class StatsOutput:
    dir: Location
    markdown: str  # stats.md: one table for all components, notes, rejects, durations
    components: dict[str, dict]  # stats.json, by component
    plots: list[Location]  # combined figures (a panel or bar per component)
    meta: dict  # tokenizer, weights_source, fingerprint


def _stats_names() -> tuple[str, str, str, tuple[str, ...]]:
    try:
        from sodadata.stats import PLOTS, STATS_DIRNAME, STATS_JSON, STATS_MD

        return STATS_DIRNAME, STATS_MD, STATS_JSON, tuple(PLOTS.values())
    except ImportError:  # the stats command is optional for the report
        return "_stats", "stats.md", "stats.json", ("utterance_durations.png", "document_durations.png",
                                                   "token_share.png")


def find_stats(out_dir: Location | str, stats_dir: Location | str | None = None) -> StatsOutput | None:
    """The ``sodadata stats`` output in ``stats_dir`` (default ``OUT_DIR/_stats``), or ``None`` if there is none."""
    dirname, md_name, json_name, plot_names = _stats_names()
    root = as_location(stats_dir) if stats_dir is not None else as_location(out_dir) / dirname
    md_path, json_path = root / md_name, root / json_name
    if not md_path.exists() and not json_path.exists():
        return None
    data: dict = {}
    if json_path.exists():
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            log.warning("ignoring unreadable %s: %s", json_path, exc)
    comps = {c["component"]: c for c in data.get("components", []) if isinstance(c, dict) and "component" in c}
    plots = [root / n for n in plot_names if (root / n).exists()]
    plots += sorted((p for p in root.glob("*.png") if p not in plots), key=str)
    meta = {k: data.get(k) for k in ("tokenizer", "weights_source", "fingerprint", "total_tokens")}
    markdown = md_path.read_text(encoding="utf-8") if md_path.exists() else ""
    return StatsOutput(root, markdown, comps, plots, meta)


def run_stats(out_dir: Location | str, stats_dir: Location | str | None) -> StatsOutput | None:
    """``--with-stats``: run ``sodadata stats`` (if installed) when no output exists yet."""
    try:
        from sodadata.stats import StatsConfig, compute_stats, write_report
    except ImportError:
        log.warning("--with-stats: sodadata.stats is not available; the report has no stats section")
        return None
    config = StatsConfig(out=as_location(out_dir), output=stats_dir)
    log.info("running sodadata stats into %s", config.output_dir)
    write_report(compute_stats(config), config.output_dir)
    return find_stats(out_dir, stats_dir)


def _inline_md(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def markdown_to_html(text: str) -> str:
    """The little Markdown the stats command writes: pipe tables, headings, lists, paragraphs (escaped)."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                    rows.append(cells)
                i += 1
            if rows:
                head = "".join(f"<th>{_inline_md(c)}</th>" for c in rows[0])
                body = "".join("<tr>" + "".join(f"<td>{_inline_md(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
                out.append(f"<table class='stats'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            continue
        m = re.match(r"^(#+)\s+(.*)$", line)
        if m:
            level = min(6, len(m.group(1)) + 2)  # nested under the page's <h2>
            out.append(f"<h{level}>{_inline_md(m.group(2))}</h{level}>")
        elif re.match(r"^\s*[-*]\s+", line):
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                items.append("<li>" + _inline_md(re.sub(r"^\s*[-*]\s+", "", lines[i])) + "</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.startswith("!["):  # images are copied and shown separately
            pass
        elif line.strip():
            out.append(f"<p>{_inline_md(line)}</p>")
        i += 1
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------------------
# Building the report


def slugify(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def _rel_url(path: str) -> str:
    return quote(path, safe="/._-")


class _TextTokens:
    """Exact text tokens with ``--tokenizer`` (tokenizer.json, a directory holding one, or a Hub id).

    With the extended tokenizer (``sodadata tokenizer build``) the whole row is counted as training encodes it
    (:class:`sodadata.tokenizer.TokenCounter`). A plain base tokenizer (no SODA tokens) counts the transcripts one
    by one.
    """

    def __init__(self, spec: str) -> None:
        from sodadata.tokenizer import TokenCounter, load_tokenizer

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


def _totals(records: list[dict]) -> dict:
    totals: dict[str, Any] = {"shards": len(records)}
    for key in ("documents", "rows", "written", "rejected", "audio_seconds", "audio_tokens", "text_chars"):
        totals[key] = sum(r.get(key) or 0 for r in records)
    rejects: dict[str, int] = {}
    for r in records:
        for k, v in (r.get("rejects") or {}).items():
            rejects[k] = rejects.get(k, 0) + int(v)
    totals["rejects"] = dict(sorted(rejects.items()))
    return totals


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


def build_report(out_dir: Location | str, html_dir: Path, options: InspectOptions) -> dict:
    """Sample, decode and write the page (``index.html``, ``audio/``, ``stats/``, ``report.json``); return the report.

    Raises ``ValueError`` with what to do when there is nothing to report on.
    """
    from sodadata.codes import chars_to_codes

    html_dir = Path(html_dir)
    # One output root: the one given, or the one below it (the README's out/ holding out/sample); several: stop
    # naming them (OutputError is a ValueError). Its _hub/ and _stats/ are never sampled.
    output = one_root(as_location(out_dir), "inspect")
    out_dir = output.path
    by_component: dict[str, list[tuple[Location, dict]]] = {}
    for component, shards in output.by_component(options.components).items():
        by_component[component] = [(s.record_path, s.record) for s in shards]
        for problem in made_by_problems(shards):
            # each row is decoded with its own shard's codec below, so a mixed component still plays right
            log.warning("%s: %s", component, problem)
    fmt = compact_audio_format() if options.audio_format == "auto" else options.audio_format
    if not can_write(fmt):
        raise ValueError(f"this libsndfile cannot write {fmt}; use --audio-format wav")
    if (html_dir / "report.json").exists():  # our previous report: its audio files would go stale
        shutil.rmtree(html_dir / "audio", ignore_errors=True)
        shutil.rmtree(html_dir / "stats", ignore_errors=True)
    html_dir.mkdir(parents=True, exist_ok=True)

    stats = find_stats(out_dir, options.stats_dir)
    if stats is None and options.with_stats:
        stats = run_stats(out_dir, options.stats_dir)
    stats_plots = []
    if stats is not None:
        for plot in stats.plots:  # copied, so the report folder can be moved or shared on its own
            rel = f"stats/{plot.name}"
            (html_dir / "stats").mkdir(parents=True, exist_ok=True)
            (html_dir / rel).write_bytes(plot.read_bytes())
            stats_plots.append(rel)
    counter = _TextTokens(options.tokenizer) if options.tokenizer else None
    components: list[ComponentView] = []
    codecs_used: set[str] = set()
    random_codecs: set[str] = set()
    t_start = time.perf_counter()
    for name in sorted(by_component):
        entries = by_component[name]
        records = [rec for _, rec in entries]
        files = [p.with_suffix(".parquet") for p, _ in entries]
        view = ComponentView(name=name, totals=_totals(records), stats=stats.components.get(name) if stats else None)
        ids, view.candidates = sample_ids(files, options.per_component, options.seed, name)
        rows = find_rows(files, ids, columns=["id", "split", "text", "format", "audio_seconds", "n_audio_tokens"])
        decoder = None
        scaled = 0
        for k, found in enumerate(rows):
            row = found.row
            try:
                parsed = parse_row(row["text"], row["format"], codebooks_of(found.record))
            except ValueError as exc:  # a malformed row is exactly what a listener must see: show it, go on
                log.warning("%s: row %s in %s is malformed: %s", name, row["id"], display(found.path), exc)
                view.documents.append(DocumentView(
                    row_id=row["id"], split=row["split"], format=row["format"],
                    audio_seconds=float(row["audio_seconds"]), n_utterances=0,
                    n_audio_tokens=int(row["n_audio_tokens"]), marker_tokens=0, text_chars=0, text_tokens=0,
                    text_tokens_exact=False, error=f"{exc} (shard {found.path.name})"))
                continue
            texts = [parsed.body] if parsed.format == TEXT_ONLY else parsed.transcripts
            per_utterance = MARKERS_PER_UTTERANCE // 2 if parsed.format == AUDIO_ONLY else MARKERS_PER_UTTERANCE
            markers = MARKERS_PER_ROW + per_utterance * len(parsed.utterances)
            text_chars = sum(len(t) for t in texts)
            if counter is not None:
                text_tokens = counter.count(row["text"], texts)
            else:
                text_tokens = round(text_chars / CHARS_PER_TEXT_TOKEN)
            doc = DocumentView(
                row_id=row["id"], split=row["split"], format=parsed.format, audio_seconds=float(row["audio_seconds"]),
                n_utterances=len(parsed.utterances), n_audio_tokens=int(row["n_audio_tokens"]), marker_tokens=markers,
                text_chars=text_chars, text_tokens=text_tokens, text_tokens_exact=counter is not None,
            )
            view.documents.append(doc)
            if parsed.format == TEXT_ONLY:
                doc.body = parsed.body
                continue
            config = codec_config_from(options, found.record)  # the codec that made this row's shard
            view.codec = ", ".join(sorted({*(view.codec.split(", ") if view.codec else ()), config.codec}))
            codecs_used.add(config.codec)
            if config.is_random:
                random_codecs.add(config.codec)
            decoder = get_decoder(config)
            # one batch per document, and only the sampled documents: decoding is the expensive part
            n_decode = _chosen_utterances(parsed.utterances, options.max_seconds)
            waves = decoder.decode([chars_to_codes(u.audio, decoder.config.num_codebooks)
                                    for u in parsed.utterances[:n_decode]])
            base = f"audio/{slugify(name)}/{k:03d}_{slugify(row['id'])}"  # index: slugs of two ids may match
            for u in parsed.utterances:
                rel = None
                if u.index < n_decode:
                    rel = f"{base}/u{u.index:04d}{audio_suffix(fmt)}"
                    scaled += write_audio(html_dir / rel, waves[u.index], fmt=fmt) < 1.0
                doc.utterances.append(UtteranceView(u.index, u.text, u.frames, u.seconds, rel))
            joined = np.concatenate(waves)
            doc.audio = f"{base}{audio_suffix(fmt)}"
            scaled += write_audio(html_dir / doc.audio, joined, fmt=fmt) < 1.0
            doc.decoded_seconds = joined.size / SAMPLE_RATE
        if scaled:
            log.warning("%s: %d decoded audio files peaked above full scale and were scaled down to avoid clipping",
                        name, scaled)
        log.info("%s: %d of %d documents%s", name, len(view.documents), view.candidates,
                 f", {sum(len(d.utterances) for d in view.documents)} utterances decoded" if decoder else "")
        components.append(view)
    report = {
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "out_dir": display(out_dir) if is_remote(out_dir) else str(out_dir.resolve()),
        "per_component": options.per_component,
        "seed": options.seed,
        "max_seconds": options.max_seconds,
        "audio_format": fmt,
        "codecs": sorted(codecs_used),
        "random_codecs": sorted(random_codecs),
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
# HTML

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1em 2em; color: #222; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 2px solid #444; margin-top: 2em; }
.muted { color: #666; font-size: 90%; }
.warning { background: #fff3cd; border: 2px solid #d39e00; padding: .6em 1em; font-weight: 600; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ccc; padding: .2em .6em; }
th { text-align: left; font-weight: 500; background: #f6f6f6; } caption { text-align: left; }
.tables { display: flex; flex-wrap: wrap; gap: 0 2em; align-items: flex-start; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.document { border: 1px solid #ddd; border-radius: 6px; margin: 1em 0; padding: .6em 1em; }
.document h3 { margin: .2em 0; font-family: ui-monospace, monospace; font-size: 100%; }
.utterances { list-style: none; padding: 0; margin: .5em 0 0; }
.utterance { display: grid; grid-template-columns: 320px 4.5em 1fr; gap: .8em; align-items: center;
  border-top: 1px solid #eee; padding: .3em 0; }
.utterance audio, .document-audio { width: 320px; height: 32px; vertical-align: middle; }
.transcript { white-space: pre-wrap; margin: 0; }
.not-decoded { color: #999; font-size: 85%; }
.text-body { white-space: pre-wrap; max-height: 24em; overflow: auto; background: #fafafa; padding: .5em; }
.plots img { max-width: 100%; border: 1px solid #ddd; margin: .2em 0; }
audio.broken { outline: 3px solid #c00; }
"""

# Marks a player whose file fails to load, so a broken report shows at a glance; the page works without it.
_JS = """
document.querySelectorAll('audio').forEach(function (a) {
  function broken() { a.classList.add('broken'); a.title = 'audio failed to load: ' + a.currentSrc; }
  if (a.error) broken();
  a.addEventListener('error', broken);
});
"""


def _fmt_int(n: int | None) -> str:
    return "n/a" if n is None else f"{n:,}"


def _audio_tag(rel: str, cls: str) -> str:
    url = html.escape(_rel_url(rel))
    # src on the element, not <source> children: a failed load then sets audio.error, which the page's script and
    # the browser test see; the link is for browsers without <audio>
    return f'<audio class="{cls}" controls preload="metadata" src="{url}"><a href="{url}">download</a></audio>'


def render_html(report: dict, components: list[ComponentView], fmt: str, stats: StatsOutput | None = None) -> str:
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>sodadata: listen to sampled documents</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Listen to sampled documents</h1>",
        f'<p class="muted">{e(report["out_dir"])} · {report["per_component"]} document(s) per component, seed '
        f'{report["seed"]} · decoded with {e(", ".join(report["codecs"]) or "-")} · audio files: {e(fmt)} · '
        f'generated {e(report["generated_at"])}</p>',
    ]
    for name in report["random_codecs"]:
        parts.append(f'<p class="warning random-codec-warning">{e(NOT_REAL_WARNING.format(name=name))} '
                     "The players below play what that random model makes of the codes: noise, not speech.</p>")
    parts.append("<nav><ul>" + "".join(
        f'<li><a href="#{e(_section_id(c.name))}">{e(c.name)}</a>: {len(c.documents)} of {c.candidates:,} '
        "documents</li>" for c in components) + (
        '<li><a href="#stats">sodadata stats</a></li>' if stats else "") + "</ul></nav>")
    for c in components:
        parts.append(_component_html(c, report["tokenizer"], stats is not None))
    if stats is not None:
        parts.append('<section id="stats" class="stats-output"><h2>sodadata stats</h2>'
                     f'<p class="muted">from {e(str(stats.dir))}</p>' + markdown_to_html(stats.markdown))
        if report["stats"]["plots"]:
            parts.append('<div class="plots">' + "".join(
                f'<img src="{e(_rel_url(p))}" alt="{e(Path(p).stem)}">' for p in report["stats"]["plots"])
                + "</div>")
        parts.append("</section>")
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts)


def _section_id(name: str) -> str:
    return "c-" + slugify(name)


def _stats_rows(st: dict) -> list[tuple[str, str]]:
    approx = "" if st.get("text_tokens_exact") else "~"
    rows = [
        ("utterances", _fmt_int(st.get("utterances"))),
        ("hours", f"{st.get('hours', 0.0):,.3f}"),
        ("audio tokens", _fmt_int(st.get("audio_tokens"))),
        ("marker tokens", _fmt_int(st.get("marker_tokens"))),
        ("text tokens", approx + _fmt_int(st.get("text_tokens"))),
        ("total tokens", approx + _fmt_int(st.get("total_tokens"))),
    ]
    if st.get("token_share") is not None:
        weight = st.get("recipe_weight")
        rows.append(("token share / recipe weight",
                     f"{st['token_share']:.4f} / {'-' if weight is None else f'{weight:.4f}'}"))
    for kind in ("utterance", "document"):
        summ = st.get(f"{kind}_seconds_summary")
        if summ:
            rows.append((f"{kind} seconds (mean, p50, p90, max)",
                         ", ".join(f"{summ[k]:.1f}" for k in ("mean", "p50", "p90", "max"))))
    rows += [("warning", w) for w in st.get("warnings") or []]
    return rows


def _component_html(c: ComponentView, tokenizer: str | None, have_stats: bool) -> str:
    e = html.escape
    t = c.totals
    rejects = ", ".join(f"{k}: {v:,}" for k, v in t["rejects"].items()) or "none"
    rows = [
        ("shards", _fmt_int(t["shards"])), ("documents", _fmt_int(t["documents"])), ("rows", _fmt_int(t["rows"])),
        ("audio hours", f"{t['audio_seconds'] / 3600:,.3f}"), ("audio tokens (both rows)", _fmt_int(t["audio_tokens"])),
        ("rejected inputs", f"{_fmt_int(t['rejected'])} ({rejects})"),
    ]
    out = [f'<section class="component" id="{e(_section_id(c.name))}" data-component="{e(c.name)}">',
           f"<h2>{e(c.name)}</h2>", '<div class="tables">',
           '<table class="totals"><caption class="muted">from the shard records</caption>'
           + "".join(f"<tr><th>{e(k)}</th><td class='num'>{e(v)}</td></tr>" for k, v in rows) + "</table>"]
    if c.stats:
        out.append('<table class="component-stats"><caption class="muted">from <a href="#stats">sodadata stats'
                   "</a></caption>" + "".join(f"<tr><th>{e(k)}</th><td class='num'>{e(v)}</td></tr>"
                                             for k, v in _stats_rows(c.stats)) + "</table>")
    out.append("</div>")
    if not c.stats and not have_stats:
        out.append('<p class="muted no-stats">No <code>sodadata stats</code> output found (run <code>sodadata stats '
                   "OUT_DIR</code>, or pass <code>--with-stats</code>).</p>")
    if c.codec:
        out.append(f'<p class="muted">decoded with {e(c.codec)}</p>')
    for d in c.documents:
        out.append(_document_html(d, tokenizer))
    out.append("</section>")
    return "\n".join(out)


def _document_html(d: DocumentView, tokenizer: str | None) -> str:
    e = html.escape
    approx = "" if d.text_tokens_exact else "~"
    how = (f"tokenizer {tokenizer}" if d.text_tokens_exact
           else f"estimated at {CHARS_PER_TEXT_TOKEN} characters a token; pass --tokenizer for exact counts")
    meta = [
        f"<span class='duration' data-seconds='{d.audio_seconds:.3f}'>{d.audio_seconds:,.2f} s</span>"
        if d.format != TEXT_ONLY else "text only",
        f"{d.n_utterances} utterance(s)" if d.format != TEXT_ONLY else "",
        f"<span class='audio-tokens'>{d.n_audio_tokens:,}</span> audio tokens",
        f"<span class='text-tokens'>{approx}{d.text_tokens:,}</span> text tokens",
        f"<span class='marker-tokens'>{d.marker_tokens:,}</span> marker tokens",
        f"<span class='total-tokens' title='{e(how)}'>{approx}{d.total_tokens:,}</span> tokens in this row",
        f"{d.text_chars:,} text characters",
    ]
    if d.error is not None:  # only what the metadata columns say: the text could not be parsed
        meta = [meta[0], meta[2]]
    out = [f'<article class="document" data-row-id="{e(d.row_id)}" data-format="{e(d.format)}">',
           f"<h3>{e(d.row_id)}</h3>",
           f'<p class="meta muted">{e(d.split)} · ' + " · ".join(m for m in meta if m) + "</p>"]
    if d.error is not None:
        out.append(f'<p class="warning row-error">malformed row: {e(d.error)}</p></article>')
        return "\n".join(out)
    if d.body is not None:
        out.append(f'<div class="text-body">{e(d.body)}</div></article>')
        return "\n".join(out)
    if d.audio:
        n_players = sum(1 for u in d.utterances if u.audio)
        cut = "" if n_players == len(d.utterances) else f" (first {n_players} utterances, {d.decoded_seconds:.1f} s)"
        out.append(f"<p>whole document{e(cut)}: {_audio_tag(d.audio, 'document-audio')}</p>")
    out.append('<ol class="utterances">')
    for u in d.utterances:
        player = (_audio_tag(u.audio, "utterance-audio") if u.audio
                  else '<span class="not-decoded">not decoded (past --max-seconds)</span>')
        out.append(f'<li class="utterance" data-index="{u.index}">{player}'
                   f'<span class="muted">{u.seconds:.2f} s</span><p class="transcript">{e(u.text)}</p></li>')
    out.append("</ol></article>")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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
    from sodadata.cli import setup_logging

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


__all__ = [
    "InspectOptions",
    "StatsOutput",
    "build_report",
    "find_stats",
    "main",
    "markdown_to_html",
    "render_html",
    "sample_ids",
]
