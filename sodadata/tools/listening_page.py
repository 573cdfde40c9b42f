"""The page of ``sodadata inspect``: what the report holds (also written as report.json) and its static HTML.

The page needs no server and no script to work (a small one marks players whose file fails to load). The stats
Markdown (``stats.md``) is rendered with markdown-it-py; its images are left out there, since the page shows the
stats plots, copied next to it, on their own.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from markdown_it import MarkdownIt
from markdown_it.token import Token

from sodadata.encode.codec_config import NOT_REAL_WARNING
from sodadata.tools.stats import StatsOutput
from sodadata.tools.stats_numbers import CHARS_PER_TEXT_TOKEN
from sodadata.write.document import TEXT_ONLY

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


def slugify(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def _rel_url(path: str) -> str:
    return quote(path, safe="/._-")


# --------------------------------------------------------------------------------------------------------------
# The stats Markdown

# CommonMark with pipe tables; raw HTML in the Markdown is escaped, not passed through.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
HEADING_SHIFT = 2  # the Markdown's "# Statistics" sits under the page's <h2>: an <h3>


def _only_images(tok: Token) -> bool:
    return tok.type == "inline" and bool(tok.children) and all(c.type in ("image", "softbreak") for c in tok.children)


def _without_images(tokens: list[Token]) -> list[Token]:
    """The tokens less every paragraph that holds only images (the plots are shown from their copies)."""
    kept: list[Token] = []
    i = 0
    while i < len(tokens):
        if tokens[i].type == "paragraph_open" and i + 1 < len(tokens) and _only_images(tokens[i + 1]):
            i += 3  # paragraph_open, inline, paragraph_close
            continue
        kept.append(tokens[i])
        i += 1
    return kept


def markdown_to_html(text: str) -> str:
    """``stats.md`` as HTML: headings shifted under the page's ``<h2>``, tables of class ``stats``, no images."""
    tokens = _MARKDOWN.parse(text)
    for tok in tokens:
        if tok.type in ("heading_open", "heading_close"):
            tok.tag = f"h{min(6, int(tok.tag[1:]) + HEADING_SHIFT)}"
        elif tok.type == "table_open":
            tok.attrSet("class", "stats")
    return _MARKDOWN.renderer.render(_without_images(tokens), _MARKDOWN.options, {})


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
