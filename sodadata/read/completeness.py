"""Completeness: a run compares what it found in the source with what was asked and with what the catalog lists.

Before any work, each recipe reports (``Recipe.completeness``) what is missing:
- what was **asked** and is not in the source at all: an Emilia subset or language, a Yodas2 subset named in
  ``--subsets``, an MLS split; always checked;
- what is **broken in the listing**: a Yodas2 shard with its captions but no audio (or the reverse), a file the
  Nemotron-CC list names that a local mirror lacks; always checked;
- for a **full run** (no ``--limit-shards``), what the catalog (``catalogs/<corpus>.yaml``) lists and the source
  lacks: every catalogued subset when none was named, and the shard count of each asked subset or split.

Anything missing stops the run with one line naming it (exit 2), unless ``--allow-missing``: the run then goes on
without it, and the run summary (``_runs/*.json``) and the summary line say what was missing.

A deliberate sample (the bundled ``sample/`` folders, the tests' generated corpora) says so with a file
``sodadata-sample.yaml`` at its root (``sample_of: <corpus>``): the catalog's counts are then not compared (the
summary says so); what was asked is still checked. A partial mirror without that file is a partial mirror.
"""

from __future__ import annotations

import logging
import urllib.error
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from sodadata.read import sources
from sodadata.read.recipe import Completeness

log = logging.getLogger(__name__)

SAMPLE_MARKER = "sodadata-sample.yaml"
SHOWN = 5  # missing items named in the one-line error; the run summary keeps them all


class IncompleteSource(ValueError):
    """Something asked for or catalogued is not in the source (a configuration error: exit 2, before any work)."""


def catalog_scope(source: str | None, corpus: str, full: bool, partial: str) -> str | None:
    """None when a run is compared with its catalog's counts; otherwise the words for what it is compared with
    instead: ``partial`` (e.g. "the asked subsets only") and why, for a declared sample or a --limit-shards run."""
    sample = sample_of(source, corpus)
    if sample:
        return f"{partial} (the source is a sample: {sample})"
    if not full:
        return f"{partial} (--limit-shards: a partial run)"
    return None


def sample_of(source: str | None, corpus: str) -> str | None:
    """Where the marker is if ``source`` declares itself a deliberate sample of ``corpus``, else None.

    Local folders and web servers are asked (one request per run); a Hub repo is not (a sample is a folder on disk
    or a test server, and the Hub's own repos are the catalog's sources). A marker naming another corpus is an
    error: the wrong ``--source``.
    """
    if not source or sources.is_hf(source):
        return None
    marker = sources.join(source, SAMPLE_MARKER)
    try:
        present = sources.exists(marker)
    except urllib.error.HTTPError as exc:
        if exc.code not in (401, 403):
            raise
        present = False  # a bucket behind a CDN answers 403, not 404, for a key it does not have
    if not present:
        return None
    with sources.open_binary(marker) as f:
        try:
            data = yaml.safe_load(f.read()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{marker} is not YAML: {exc}".splitlines()[0]) from None
    declared = data.get("sample_of") if isinstance(data, dict) else None
    if declared != corpus:
        raise ValueError(f"{marker} declares a sample of {declared!r}, not of {corpus!r}: check --source")
    return marker


def write_sample_marker(root: Path, corpus: str, note: str = "") -> Path:
    """Declare ``root`` a deliberate sample of ``corpus`` (scripts/make_sample.py and the tests' corpora)."""
    path = Path(root) / SAMPLE_MARKER
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        "# A deliberate sample, not a mirror: the sodadata recipes do not compare it with the catalog's shard\n"
        "# counts (catalogs/<corpus>.yaml) and say so in their run summary. Subsets asked for are still checked.\n"
        f"sample_of: {corpus}\n"
    )
    if note:
        text += f"note: {yaml.safe_dump(note, default_style=chr(34)).strip()}\n"
    path.write_text(text, encoding="utf-8")
    return path


def compare_counts(noun: str, found: Mapping[str, int], asked: Iterable[str], expected: Mapping[str, int | None],
                   where: Mapping[str, str], origin: str) -> list[str]:
    """One phrase per asked key that is absent (``found`` 0) or short of its ``expected`` count (when given)."""
    missing = []
    for key in asked:
        have, want = found.get(key, 0), expected.get(key)
        if have == 0:
            missing.append(f"{noun} {key}: not in the source ({where.get(key, 'nothing found')})")
        elif want is not None and have < want:
            missing.append(f"{noun} {key}: {have} of the {want} shards {origin} lists")
    return missing


def missing_line(missing: list[str]) -> str:
    """The named items of the one-line error and of the summary line: the first few, then a count."""
    shown = "; ".join(missing[:SHOWN])
    return shown + (f" (and {len(missing) - SHOWN} more, listed in the run summary)" if len(missing) > SHOWN else "")


def check(report: Completeness, allow_missing: bool) -> None:
    """Raise :class:`IncompleteSource` (one line) if anything is missing and ``--allow-missing`` was not given."""
    if not report.missing:
        log.info("source compared with %s: nothing missing", report.compared_with)
        return
    if not allow_missing:
        raise IncompleteSource(
            f"missing from the source (compared with {report.compared_with}): {missing_line(report.missing)}. "
            "Complete the source or fix the options, or pass --allow-missing to run without them (recorded in the "
            "run summary)"
        )
    log.warning("--allow-missing: running without %d missing item(s): %s", len(report.missing),
                missing_line(report.missing))
