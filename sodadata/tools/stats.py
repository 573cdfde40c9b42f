"""``sodadata stats OUT_DIR``: per-component numbers and plots to check before spending TPU time on a corpus.

What is counted and what it costs to read: :mod:`sodadata.tools.stats_numbers`; the table and Markdown:
:mod:`sodadata.tools.stats_markdown`; the plots: :mod:`sodadata.tools.stats_plots`. This module is the command: it computes
the numbers of an output root, writes them and reads them back (``sodadata push`` and ``sodadata inspect`` reuse
them).

Outputs (default ``OUT_DIR/_stats/``; ``_`` because no component name can start with it): ``stats.md``,
``stats.json``, ``utterance_durations.png``, ``document_durations.png``, ``token_share.png``. The table is
also printed.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from sodadata.cli import OneLineParser, setup_logging
from sodadata.locations import Location, as_location, check_location, is_remote, local_path
from sodadata.read.recipe import ConfigError
from sodadata.tools.stats_markdown import format_table, render_markdown
from sodadata.tools.stats_numbers import (
    CorpusStats,
    StatsError,
    component_stats,
    fingerprint,
    group_records,
    load_weights,
    token_counter,
)
from sodadata.tools.stats_plots import PLOTS, write_plots
from sodadata.write.outputs import Found, OutputError, one_root

log = logging.getLogger(__name__)

STATS_DIRNAME = "_stats"
STATS_JSON = "stats.json"
STATS_MD = "stats.md"


@dataclass(frozen=True)
class StatsConfig:
    out: Location | str
    output: Location | str | None = None  # default: out/_stats (a URL when out is one)
    tokenizer: str | Path | None = None  # directory holding tokenizer.json (or the file itself, or a Hub id)
    recipe: Path | None = None  # default: the packaged recipes/soda.yaml (SPEC §4)
    components: tuple[str, ...] = ()  # empty: every component found
    utterance_shards: int | None = None  # shards per component read for utterance durations; None all, 0 none

    @property
    def output_dir(self) -> Location:
        return as_location(self.output) if self.output is not None else as_location(self.out) / STATS_DIRNAME


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


@dataclass
class StatsOutput:
    """A ``sodadata stats`` output as files: what ``sodadata inspect`` shows at the end of its page."""

    dir: Location
    markdown: str  # stats.md: one table for all components, notes, rejects, durations
    components: dict[str, dict]  # stats.json, by component
    plots: list[Location]  # combined figures (a panel or bar per component)
    meta: dict  # tokenizer, weights_source, fingerprint


def find_stats(out_dir: Location | str, stats_dir: Location | str | None = None) -> StatsOutput | None:
    """The ``sodadata stats`` output in ``stats_dir`` (default ``OUT_DIR/_stats``), or ``None`` if there is none."""
    root = as_location(stats_dir) if stats_dir is not None else as_location(out_dir) / STATS_DIRNAME
    md_path, json_path = root / STATS_MD, root / STATS_JSON
    if not md_path.exists() and not json_path.exists():
        return None
    data: dict = {}
    if json_path.exists():
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            log.warning("ignoring unreadable %s: %s", json_path, exc)
    comps = {c["component"]: c for c in data.get("components", []) if isinstance(c, dict) and "component" in c}
    plots = [root / n for n in PLOTS.values() if (root / n).exists()]
    plots += sorted((p for p in root.glob("*.png") if p not in plots), key=str)
    meta = {k: data.get(k) for k in ("tokenizer", "weights_source", "fingerprint", "total_tokens")}
    markdown = md_path.read_text(encoding="utf-8") if md_path.exists() else ""
    return StatsOutput(root, markdown, comps, plots, meta)


# ---------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="sodadata stats", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output directory of the recipes (holds <component>/<stem>.parquet): a local path "
                   "or a URL (s3://, gs://, az://)")
    p.add_argument("--output", default=None, help="where to write stats.md/json and PNGs (default OUT/_stats, "
                   "in the bucket when OUT is one)")
    p.add_argument("--tokenizer", default=None,  # a str: Path() would drop the trailing "/" that marks a folder
                   help="folder with tokenizer.json (`sodadata tokenizer build`): exact text tokens; reads all text")
    p.add_argument("--recipe", type=local_path, default=None,
                   help="mixture YAML for the weights (default recipes/soda.yaml, else SPEC §4)")
    p.add_argument("--component", action="append", default=[], help="only this component (repeatable)")
    p.add_argument("--utterance-shards", type=int, default=None,
                   help="read text of at most N shards per component for utterance durations (0: skip; "
                   "default all)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

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
