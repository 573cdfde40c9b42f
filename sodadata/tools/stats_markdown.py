"""``sodadata stats`` as text: the table it prints and the Markdown it writes (``stats.md``, and the card's section)."""

from __future__ import annotations

from sodadata.tools.stats_numbers import CHARS_PER_TEXT_TOKEN, ComponentStats, CorpusStats
from sodadata.tools.stats_plots import PLOTS


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
