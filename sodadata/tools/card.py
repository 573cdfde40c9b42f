"""The dataset card (README.md) of a pushed output: YAML configs, format, sources and licences, statistics.

One Hub config per component. Hub config names cannot contain ``/``, so a component's config name is its name
with ``/`` replaced by ``_`` (``emilia/en`` -> ``emilia_en``, ``nemotron-cc/hq-actual`` ->
``nemotron-cc_hq-actual``).

Titles, licences and sources come from ``catalogs/<corpus>.yaml`` (:func:`sodadata.read.catalog.source_entry`: a
top-level ``title``/``licence``/``licence_note``/``repo``/``revision``, or a ``subsets`` entry whose
``component_prefix`` is the component's corpus part, as in ``catalogs/emilia.yaml``); a component no catalog
names has an unknown licence. Revisions come from the shard records (``source.revision``: the commit the recipe
resolved), falling back to the catalog's.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sodadata.encode.codec import RANDOM_CODECS
from sodadata.mix.tokenizer import PUBLISHED
from sodadata.read.catalog import CATALOG_DIR, source_entry
from sodadata.tools.stats_markdown import render_markdown
from sodadata.tools.stats_numbers import CorpusStats
from sodadata.write.published import STATS_DIR, data_glob


@dataclass(frozen=True)
class Licence:
    name: str  # as the source states it, e.g. "CC-BY-NC-4.0"
    hub_id: str  # the Hub's licence identifier for the card YAML ("other" when the Hub has none)
    url: str
    note: str = ""


CC = "https://creativecommons.org/licenses"
# The one licence named by words rather than a Hub identifier (the Hub has none for it: "other", with this link).
COMMON_CRAWL_TERMS = Licence("Common Crawl Terms of Use", "other", "https://commoncrawl.org/terms-of-use")
# Licence names a catalog may give -> Hub identifiers (anything else becomes "other" with a link).
HUB_LICENCE_IDS = {
    "cc-by-nc-4.0", "cc-by-4.0", "cc-by-3.0", "cc-by-sa-4.0", "cc-by-nc-sa-4.0", "cc-by-nc-3.0", "cc-by-sa-3.0",
    "cc0-1.0", "apache-2.0", "mit", "odc-by", "odbl",
}


def config_name(component: str) -> str:
    """Hub config name of a component: ``/`` is not allowed there, so it becomes ``_``."""
    return component.replace("/", "_")


def check_config_names(components: Sequence[str]) -> None:
    seen: dict[str, str] = {}
    for c in components:
        name = config_name(c)
        if name in seen:
            raise ValueError(f"components {seen[name]!r} and {c!r} map to the same Hub config name {name!r}")
        seen[name] = c


@dataclass
class SourceInfo:
    component: str
    title: str
    repo: str | None
    url: str
    licence: Licence
    revisions: list[str] = field(default_factory=list)  # commits recorded by the shards, or the catalog's
    revision_from: str = "records"  # "records", "catalog" or "unknown"
    made_by: dict | None = None  # what made every shard (SPEC §2); None when not recorded (made before format 2)
    settings_codec: str | None = None  # without made_by: the codec the records' old settings name, if any


def random_codec_of(record: dict) -> str | None:
    """The random test codec that made a shard (``made_by.codec.random``), or None. Records made before format 2
    have no ``made_by``: there, a random codec named in their ``codec`` settings counts."""
    made_by = record.get("made_by")
    if isinstance(made_by, dict):
        codec = made_by.get("codec")
        return str(codec.get("id")) if isinstance(codec, dict) and codec.get("random") else None
    settings = record.get("codec")
    name = settings.get("codec") if isinstance(settings, dict) else None
    return name if name in RANDOM_CODECS else None


def licence_named(name: str, note: str = "") -> Licence:
    """The licence a catalog names (``CC-BY-4.0``; anything else is the Hub's "other"), with its link."""
    hub_id = name.lower().replace(" ", "-")
    if hub_id in HUB_LICENCE_IDS:
        major = hub_id.removeprefix("cc-").rsplit("-", 1)
        url = f"{CC}/{major[0]}/{major[1]}/" if hub_id.startswith("cc-") and len(major) == 2 else ""
        return Licence(name, hub_id, url, note)
    if "common crawl" in name.lower():
        return dataclasses.replace(COMMON_CRAWL_TERMS, note=note)
    return Licence(name, "other", "", note)


def source_info(component: str, records: Sequence[dict], catalog_dir: Path = CATALOG_DIR) -> SourceInfo:
    entry = source_entry(component, catalog_dir) or {}
    licence = (licence_named(str(entry["licence"]), str(entry.get("licence_note") or "")) if entry.get("licence")
               else Licence("unknown: see the source", "other", ""))
    repo = entry.get("repo")
    url = entry.get("homepage") or (f"https://huggingface.co/datasets/{repo}" if repo else "")
    revisions = sorted({str(r["source"]["revision"]) for r in records
                        if isinstance(r.get("source"), dict) and r["source"].get("revision")})
    revision_from = "records"
    if not revisions and entry.get("revision"):
        revisions, revision_from = [str(entry["revision"])], "catalog"
    elif not revisions:
        revision_from = "unknown"
    made = {json.dumps(r.get("made_by"), sort_keys=True) for r in records}
    made_by = records[0].get("made_by") if len(made) == 1 and isinstance(records[0].get("made_by"), dict) else None
    if len(made) > 1:  # push refuses this (sodadata.tools.hub.check_made_by); a card built anyway must not pick one
        raise ValueError(f"{component}: shards differ in made_by; the card states one per config")
    settings = sorted({str(c["codec"]) for r in records if isinstance(c := r.get("codec"), dict) and c.get("codec")})
    return SourceInfo(component, str(entry.get("title") or component.split("/")[0]), repo, url, licence, revisions, revision_from,
                      made_by, ", ".join(settings) or None)


def card_metadata(repo_id: str, sources: Sequence[SourceInfo], bucketed: dict[str, bool]) -> dict:
    licences = sorted({s.licence.hub_id for s in sources})
    meta: dict = {"pretty_name": repo_id.split("/")[-1]}
    meta["license"] = licences[0] if len(licences) == 1 else licences
    other = [s.licence for s in sources if s.licence.hub_id == "other"]
    if other:
        meta["license_name"] = re.sub(r"[^a-z0-9]+", "-", other[0].name.lower()).strip("-")
        if other[0].url:
            meta["license_link"] = other[0].url
    langs = sorted({c.split("/")[-1] for c in (s.component for s in sources) if re.fullmatch(r"[a-z]{2,3}", c.split("/")[-1])})
    meta["language"] = langs or ["en"]
    meta["tags"] = ["audio", "speech", "mimi", "audio-tokens", "interleaved", "soda", "sodadata"]
    meta["configs"] = [
        {"config_name": config_name(s.component),
         "data_files": [{"split": "train", "path": data_glob(s.component, bucketed.get(s.component, False))}]}
        for s in sources
    ]
    return meta


def _revision_text(s: SourceInfo) -> str:
    if not s.revisions:
        return "not recorded"
    shown = ", ".join(f"`{r}`" for r in s.revisions[:3]) + (f" (+{len(s.revisions) - 3} more)" if len(s.revisions) > 3 else "")
    return shown + (" (catalog; not recorded by the shards)" if s.revision_from == "catalog" else "")


def _encoding_cells(s: SourceInfo) -> list[str]:
    """codec, revision or weights, codebooks, dtype, formats: as the records' made_by states them."""
    m = s.made_by
    if m is None:
        named = f"; their settings name `{s.settings_codec}`" if s.settings_codec else ""
        return [f"not recorded (made before format 2{named})", "not recorded", "not recorded", "not recorded",
                "not recorded"]
    formats = ", ".join(f"`{f}`" for f in m.get("formats") or []) or "-"
    codec = m.get("codec")
    if not isinstance(codec, dict):
        return ["none (text only)", "-", "-", "-", formats]
    cid = codec.get("id")
    if cid == "local":
        name, rev = "a local Mimi (`save_pretrained` folder)", f"weights sha256 `{codec.get('weights_sha256')}`"
    else:
        name = f"`{cid}`" + (" (**RANDOM test codec: noise, not Mimi codes**)" if codec.get("random") else "")
        rev = f"`{codec['revision']}`" if codec.get("revision") else ("-" if codec.get("random") else "not recorded")
    return [name, rev, str(m.get("codebooks", "not recorded")), f"`{m.get('dtype')}` on {m.get('device')}", formats]


def _is_random(s: SourceInfo) -> bool:
    if s.made_by is None:
        return any(name in RANDOM_CODECS for name in (s.settings_codec or "").split(", "))
    codec = s.made_by.get("codec")
    return isinstance(codec, dict) and bool(codec.get("random"))


def _codebooks(sources: Sequence[SourceInfo]) -> int | None:
    """The one number of codebooks every speech config records, or None (they differ, or none is recorded)."""
    found = {s.made_by.get("codebooks") for s in sources
             if s.made_by is not None and isinstance(s.made_by.get("codec"), dict)}
    return found.pop() if len(found) == 1 else None


def _sources_section(sources: Sequence[SourceInfo], stats: CorpusStats) -> str:
    by_name = stats.by_name()
    rows = []
    for s in sources:
        c = by_name.get(s.component)
        lic = f"[{s.licence.name}]({s.licence.url})" if s.licence.url else s.licence.name
        src = f"[{s.repo or s.title}]({s.url})" if s.url else (s.repo or s.title)
        rows.append(f"| `{config_name(s.component)}` | `{s.component}` | {src} | {_revision_text(s)} | {lic} | "
                    + (f"{c.documents:,} | {c.rows:,} | {c.hours:,.1f} |" if c else "- | - | - |"))
    return f"""## Configs, sources and licences

| config | component | source | source revision | licence | documents | rows | hours |
|---|---|---|---|---|---:|---:|---:|
{chr(10).join(rows)}

Config names are the component names with `/` replaced by `_` (the Hub does not allow `/` in config names)."""


def _random_warning(sources: Sequence[SourceInfo]) -> str:
    """The warning above everything when a config was made with a random test codec ("" otherwise)."""
    random = sorted({f"`{config_name(s.component)}` ({s.made_by['codec']['id'] if s.made_by else s.settings_codec})"
                     for s in sources if _is_random(s)})
    if not random:
        return ""
    return ("\n> **WARNING: RANDOM CODEC.** " + ", ".join(random) + " were encoded with a seeded random test "
            "codec: their audio characters are NOT Mimi codes, decode to noise and must not be trained on. They "
            "were published on purpose (`sodadata push --allow-random-codec`).\n")


def _encoding_section(sources: Sequence[SourceInfo]) -> str:
    encoding = [f"| `{config_name(s.component)}` | " + " | ".join(_encoding_cells(s)) + " |" for s in sources]
    notes = [f"- `{config_name(s.component)}` ({s.title}): {s.licence.name}. {s.licence.note}".rstrip()
             for s in sources]
    return f"""## How the audio was encoded

As each shard's record states it (`made_by` in `records/<component>/records.jsonl`; every shard of a config
was made the same way):

| config | codec | codec revision | codebooks | dtype, device | formats |
|---|---|---|---:|---|---|
{chr(10).join(encoding)}

**Licences differ per config; there is no single licence for the repository.** Use each config under its
source's terms and credit the source:

{chr(10).join(notes)}"""


def _loading_section(repo_id: str, sources: Sequence[SourceInfo], revision: str | None) -> str:
    first = config_name(sources[0].component) if sources else "CONFIG"
    rev_arg = f', revision="{revision}"' if revision and revision != "main" else ""
    return f"""## Loading

```python
from datasets import load_dataset

ds = load_dataset("{repo_id}", "{first}", split="train"{rev_arg}, streaming=True)
row = next(iter(ds))
print(row["id"], row["format"], row["n_utterances"], row["audio_seconds"])
```

Each config is plain Parquet under `data/<component>/`: any Parquet reader works (polars, pyarrow, DuckDB), and
a Levanter/Marin config with `text_key="text"` reads the `text` column unchanged."""


def _format_section(n: int | None) -> str:
    """Rows, columns, audio as characters (for ``n`` codebooks, or N per config when configs differ), tokenizing."""
    n_text = (f"keeping the first {n} of its codebooks" if n is not None else
              "keeping the first N of its codebooks (N per config in the table above)")
    n_code = str(n) if n is not None else "8  # this config's codebooks (table above)"
    per_second = f"{n} characters per 80 ms frame, **{n * 12.5:g} characters per second**" if n is not None else \
        "N characters per 80 ms frame, 12.5·N characters per second"
    return f"""## Format

**Rows.** A speech row is one *document*: the consecutive utterances of one source recording (a YODAS2 video,
an Emilia speaker session, an MLS recording), in order. Every document appears twice, once per layout, and both
rows are meant for training:

- `<doc_id>_type1`, text first (`format = "text_first"`):
  `<|begin_of_text|><|text_start|>T1<|text_end|><|audio_start|>A1<|audio_end|><|text_start|>T2<|text_end|>…<|end_of_text|>`
- `<doc_id>_type2`, audio first (`format = "audio_first"`):
  `<|begin_of_text|><|audio_start|>A1<|audio_end|><|text_start|>T1<|text_end|>…<|end_of_text|>`

`T1` is the first utterance's transcript (as the source gives it, surrounding whitespace removed) and `A1` its
audio. Pieces are joined with nothing in between. A text-only row (`format = "text"`, Nemotron-CC) is
`<|begin_of_text|>TEXT<|end_of_text|>`.

**Columns.** `id`, `split` (where the row came from, e.g. the source shard), `text`, and metadata to filter and
count without parsing `text`: `corpus` (the component), `format`, `n_utterances`, `audio_seconds`,
`n_audio_tokens`, `metadata` (source fields kept as a JSON string, or null).

**Audio as characters.** Audio is encoded with the Mimi codec each config names above (24 kHz, 12.5 frames per
second), {n_text} (2048 codes each). Code `c` of codebook `i` is the character `chr(0xE000 + i * 2048 + c)`,
written frame by frame: `f0c0 f0c1 … f0c{(n or 8) - 1} f1c0 …`. That is {per_second}, and one token per
character with the SODA tokenizer. Back to codes:

```python
import re
import numpy as np

N = {n_code}
for span in re.findall(r"<\\|audio_start\\|>(.*?)<\\|audio_end\\|>", row["text"], flags=re.S):
    cp = np.frombuffer(span.encode("utf-32-le"), dtype=np.uint32).reshape(-1, N)  # (frames, N)
    codes = (cp - 0xE000 - 2048 * np.arange(N)).T  # (N codebooks, frames): decode with the config's codec
```

**Do not normalize the text.** The characters span U+E000..U+11FFF; some of them are changed by Unicode
normalization (NFC/NFKC), whitespace stripping or "cleaning", which silently corrupts the audio. Read and
tokenize the strings exactly as stored.

**Tokenizing.** Every row already holds its `<|begin_of_text|>` and `<|end_of_text|>` as text: tokenize
**without adding special tokens** (`add_special_tokens=False`), or rows get a doubled BOS. The matching
tokenizer is [`{PUBLISHED}`](https://huggingface.co/{PUBLISHED}) (Llama-3 with the four markers and
the 16,384 audio characters added as single tokens).

**Mixing.** Mixture weights such as SODA's are shares of *tokens*, not rows: a YODAS2 document is a whole video,
an Emilia document a few utterances. The statistics below give tokens per config."""


def _files_section(bucketed: dict[str, bool]) -> str:
    return f"""## Files

- `data/<component>/` — the Parquet shards (loaded by the configs{"; split into sub-folders where a component has many files" if any(bucketed.values()) else ""}).
- `records/<component>/records.jsonl` — one JSON record per shard: source files and revision, what made it
  (`made_by`: codec, revision, codebooks, dtype, formats), counts read, written and rejected, timings. Not loaded
  by any config.
- `rejects/<component>/rejects.parquet` — every rejected input with its reason (`id`, `reason`, `detail`,
  `source`, `shard`). Not loaded by any config.
- `stats/` — the statistics and plots below (`stats.json` for machines)."""


def render_card(repo_id: str, sources: Sequence[SourceInfo], stats: CorpusStats, bucketed: dict[str, bool],
                revision: str | None = None, sodadata_version: str = "") -> str:
    """README.md text: YAML front matter (configs, licences) and the Markdown body."""
    check_config_names([s.component for s in sources])
    meta = card_metadata(repo_id, sources, bucketed)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False)
    made_with = f"sodadata{f' {sodadata_version}' if sodadata_version else ''}"
    introduction = f"""# {repo_id.split("/")[-1]}
{_random_warning(sources)}
Speech (and text) data in the SODA format: transcripts interleaved with **Mimi audio codes written as Unicode
characters**, one string per row, ready to tokenize and train a native audio language model. Made with
{made_with} from public corpora; each config is one source
component and keeps that source's licence."""
    sections = [
        introduction,
        _sources_section(sources, stats),
        _encoding_section(sources),
        _loading_section(repo_id, sources, revision),
        _format_section(_codebooks(sources)),
        _files_section(bucketed),
        render_markdown(stats, image_prefix=f"{STATS_DIR}/", heading_level=2),
    ]
    return f"---\n{front}---\n\n" + "\n\n".join(sections) + "\n"
