"""Read ``catalogs/<corpus>.yaml``: where a corpus lives, its layout, licence, shard counts and hours.

The catalogs are package data (``sodadata/catalogs/``), so an installed wheel has them; the checkout's top-level
``catalogs/`` is a link to that folder. :data:`CATALOG_DIR` is the one place that says where they are.
"""

from __future__ import annotations

import argparse
from functools import cache
from pathlib import Path

import yaml

CATALOG_DIR = Path(__file__).resolve().parent.parent / "catalogs"


@cache
def load_catalog(corpus: str) -> dict:
    path = CATALOG_DIR / f"{corpus}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no catalog for {corpus!r} at {path}")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def add_source_arguments(parser: argparse.ArgumentParser, corpus: str, holding: str) -> None:
    """``--source`` and ``--revision`` of a recipe whose corpus is a Hub dataset: what :func:`resolve_source_root`
    takes. ``holding``: what the dataset root holds (``data/*.parquet``), for the help."""
    parser.add_argument(
        "--source", default=None,
        help=f"dataset root holding {holding}: a local path, hf:// URL or object-store URL "
        f"(s3://, gs://, az://) (default: the Hub repo in catalogs/{corpus}.yaml)",
    )
    parser.add_argument("--revision", default=None, help="Hub revision (default: catalog's, resolved to a commit)")


def resolve_source_root(corpus: str, source: str | None, revision: str | None) -> tuple[str, str | None]:
    """(source root, commit) for a recipe: ``--source`` or the catalog's Hub repo; for the Hub, the revision
    (``--revision``, else one in the URL, else the catalog's) resolved to a commit once, on the driver, so every
    task reads the same files. Local, HTTP and object-store sources have no commit (None); an object store is
    checked here (backend, credentials, reachable), before any work."""
    from sodadata.read import sources

    catalog = load_catalog(corpus)
    root = source or sources.hf_url(catalog["repo"])
    if not sources.is_hf(root):
        sources.check_source(root)
        return root, None
    _, repo, rev_in_url, _ = sources.parse_hf_url(root)
    commit = sources.resolve_hf_revision(repo, revision or rev_in_url or catalog["revision"])
    return sources.with_revision(root, commit), commit


def all_catalogs() -> dict[str, dict]:
    return {p.stem: load_catalog(p.stem) for p in sorted(CATALOG_DIR.glob("*.yaml"))}


def component_sizes() -> dict[str, dict]:
    """Every catalogued component's size, from the catalogs' ``sizes`` blocks: ``{"hours": H}`` for speech,
    ``{"tokens": T}`` for text. What ``sodadata plan`` counts unique tokens from."""
    sizes: dict[str, dict] = {}
    for corpus, catalog in all_catalogs().items():
        for component, size in (catalog.get("sizes") or {}).items():
            if component in sizes:
                raise ValueError(f"catalogs: component {component!r} is sized twice ({corpus}.yaml and another)")
            if not isinstance(size, dict) or len(set(size) & {"hours", "tokens"}) != 1:
                raise ValueError(f"catalogs/{corpus}.yaml: sizes.{component} needs exactly one of hours, tokens")
            sizes[component] = {**size, "catalog": corpus}
    return sizes


def source_entry(component: str, catalog_dir: Path = CATALOG_DIR) -> dict | None:
    """What the catalogs say of the source of ``component`` (title, repo, revision, homepage, licence,
    licence_note), or None when no catalog names it: a catalog whose ``component_prefix`` (or ``corpus``) is the
    component's corpus part (before the ``/``), or a ``subsets`` entry with that prefix, which adds to and overrides
    its catalog's top level (``catalogs/emilia.yaml``). What the dataset card credits and licenses a component by.

    ``catalog_dir`` other than the package's: a folder of catalogs of one's own (``sodadata push --catalogs``); its
    unreadable files are skipped.
    """
    corpus = component.split("/")[0]
    if not Path(catalog_dir).is_dir():
        return None
    for path in sorted(Path(catalog_dir).glob("*.yaml")):
        try:
            with open(path, encoding="utf-8") as f:
                cat = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(cat, dict):
            continue
        for sub in (cat.get("subsets") or {}).values():
            if isinstance(sub, dict) and sub.get("component_prefix") == corpus:
                return {**{k: cat.get(k) for k in ("title", "repo", "revision", "homepage", "licence", "licence_note")},
                        **{k: v for k, v in sub.items() if v is not None}}
        if cat.get("component_prefix", cat.get("corpus")) == corpus:
            return cat
    return None
