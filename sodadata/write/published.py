"""The layout of a published copy: what ``sodadata push`` writes and what the readers find in it.

A published copy (a Hub dataset repository, or any folder or URL holding the same tree) is::

    README.md                                 the dataset card; one config per component loads data_glob()
    data/<component>/<stem>.parquet           the finished shards of a component
    data/<component>/<xx>/<stem>.parquet      ... in hashed buckets (xx: two hex digits) above the Hub's folder limit
    records/<component>/records.jsonl         every shard's record
    rejects/<component>/rejects.parquet       every rejected input with its reason
    stats/                                    the statistics shown in the card

unlike an output directory, where a component's shards sit in ``<out>/<component>/`` with their records beside
them. hub.py writes this layout through :func:`shard_path`; the card's configs load :func:`data_glob`; the mixture
stream (``root: hf://datasets/ORG/NAME@REV`` in a recipe, ``python -m train --data``) and the Levanter export find
a component's shards through :func:`published_location`, which takes the same :func:`data_glob`, so the trainer
reads exactly the files the card's config loads.
"""

from __future__ import annotations

import hashlib

import fsspec

DATA_DIR, RECORDS_DIR, REJECTS_DIR, STATS_DIR = "data", "records", "rejects", "stats"
BUCKETS = 256
_BUCKET_DIGITS = len(f"{BUCKETS - 1:x}")


def bucket(stem: str) -> str:
    """The bucket folder of a shard (stable: the same shard always lands in the same bucket)."""
    return hashlib.sha1(stem.encode()).hexdigest()[:_BUCKET_DIGITS]


def shard_path(component: str, stem: str, bucketed: bool) -> str:
    """Where a shard goes in the published copy (a path inside the repository)."""
    return f"{DATA_DIR}/{component}/{bucket(stem) + '/' if bucketed else ''}{stem}.parquet"


def data_glob(component: str, bucketed: bool) -> str:
    """The pattern of a component's shards inside the repository (a card config's ``data_files``)."""
    return f"{DATA_DIR}/{component}/*/*.parquet" if bucketed else f"{DATA_DIR}/{component}/*.parquet"


def published_location(root: str, component_path: str) -> str | None:
    """The glob of a component's shards when ``root`` is a published copy holding it, else None.

    Only a Hub repository (``hf://``) or a local folder (a download of one, or push's staging folder) is looked
    at: ``root`` is a published copy for this component when ``<root>/<component_path>`` does not exist and
    ``<root>/data/<component_path>`` does (an output directory never has a ``data/`` component: component names
    are ``corpus/subset``). The component is bucketed when that folder holds no Parquet file directly. Other URLs
    (``gs://``, ``s3://``) are taken as output directories without a look: a config export for them must not need
    their credentials.
    """
    if "://" in root and not root.startswith(("hf://", "file://")):
        return None
    fs, base = fsspec.core.url_to_fs(root)
    base = base.rstrip("/")
    folder = f"{base}/{DATA_DIR}/{component_path}"
    if fs.exists(f"{base}/{component_path}") or not fs.isdir(folder):
        return None
    direct = any(p.endswith(".parquet") for p in fs.ls(folder, detail=False))
    return root.rstrip("/") + "/" + data_glob(component_path, bucketed=not direct)
