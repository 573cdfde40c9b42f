"""Read ``catalogs/<corpus>.yaml``: where a corpus lives, its layout, licence, shard counts and hours."""

from __future__ import annotations

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


def all_catalogs() -> dict[str, dict]:
    return {p.stem: load_catalog(p.stem) for p in sorted(CATALOG_DIR.glob("*.yaml"))}
