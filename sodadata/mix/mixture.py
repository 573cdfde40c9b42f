"""Mixture recipes: which components, where their shards are, their token weights, tokenizer, window length, seed.

A recipe is a YAML file (``recipes/soda.yaml``; docs/mixture.md explains every field)::

    tokenizer: soda-research/marin-mimi-bpe-8cb-16k-tokenizer   # Hub id, tokenizer.json or its directory
    seq_len: 4096
    seed: 0
    root: out                   # relative component paths are taken under this (a directory or a URL)
    components:
      - {name: yodas2/en, path: yodas2/en, weight: 0.516390}
      - {name: nemotron-cc/hq-actual, path: "hf://datasets/ORG/NAME/nemotron-cc/hq-actual/*.parquet", weight: 0.05}

An optional ``validation:`` list names held-out sets, ``{name, path}`` each, with no weight: they never enter the
mixture stream (nor its fingerprint); ``sodadata export levanter`` gives them to Levanter as weight-0 validation
sources. Names are unique across components and validation sets (Levanter keys both by name).

Weights are shares of **tokens** (SPEC §4); they are normalized to sum to one. A component's ``path`` is a
directory of finished shards (``*.parquet`` with their ``.json`` record beside them, as the recipes write them), or
a glob of Parquet files (``*`` / ``**``), local or any fsspec URL (``hf://datasets/...`` reads through
``HfFileSystem``). A ``root`` that is a published copy (what ``sodadata push`` uploads: ``root:
hf://datasets/ORG/NAME@REV``, or a download of it) is read in its own layout: a component ``path: yodas2/en``
is found under ``data/yodas2/en/`` there (sodadata/write/published.py).

The mixtures the project ships (``soda.yaml``, ``emilia-only.yaml``) are package data in ``sodadata/mixtures/``
(the checkout's top-level ``recipes/`` is a link to it), so an installed wheel has them too: ``load`` takes a
packaged mixture by name (``soda``, ``soda.yaml`` or ``recipes/soda.yaml``) when no such file exists here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import yaml

from sodadata.mix.tokenizer import PUBLISHED
from sodadata.write.published import published_location

log = logging.getLogger(__name__)

MIXTURE_DIR = Path(__file__).resolve().parent.parent / "mixtures"


def packaged_mixtures() -> list[str]:
    """Names of the mixture recipes shipped with the package (``soda``, ``emilia-only`` ...)."""
    return sorted(p.stem for p in MIXTURE_DIR.glob("*.yaml"))


def resolve_recipe_path(path: str | Path) -> Path:
    """``path`` if it exists; otherwise the packaged mixture it names (``soda``, ``soda.yaml``, ``recipes/soda.yaml``:
    a bare name, or one under the checkout's ``recipes/`` folder), so the documented commands work from any folder
    with an installed wheel. Anything else that does not exist is an error naming the packaged ones."""
    p = Path(path)
    if p.exists():
        return p
    if p.parent in (Path("."), Path("recipes")):
        packaged = MIXTURE_DIR / (p.name if p.suffix == ".yaml" else f"{p.name}.yaml")
        if packaged.is_file():
            log.info("%s is not here: using the packaged mixture %s", path, packaged)
            return packaged
    raise FileNotFoundError(
        f"no mixture recipe {path}: give a YAML file, or one of the packaged mixtures: {', '.join(packaged_mixtures())}"
    )


def read_recipe(path: str | Path) -> dict:
    """A recipe file's mapping, with ``extends: OTHER.yaml`` resolved.

    ``extends`` names another recipe (relative to this file's folder) whose keys this one starts from; the keys
    written here replace the base's whole (``components`` too). So a variant of the SODA mix (another tokenizer,
    root or window length: ``recipes/sample.yaml``) keeps the components and weights in one place.
    """
    chain: list[Path] = []
    data: dict = {}
    path = Path(path)
    while True:
        if path.resolve() in chain:
            raise ValueError(f"{path}: recipes extend each other in a loop ({' -> '.join(map(str, chain))})")
        chain.append(path.resolve())
        try:
            with open(path, encoding="utf-8") as f:
                layer = yaml.safe_load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"no such recipe file: {path}") from None
        if not isinstance(layer, dict):
            raise ValueError(f"{path}: a mixture recipe is a YAML mapping")
        data = {**layer, **data}  # keys read earlier (the extending recipe) win
        base = layer.get("extends")
        if base is None:
            break
        if not isinstance(base, str) or not base:
            raise ValueError(f"{path}: extends must name a recipe file, got {base!r}")
        path = path.parent / base
    data.pop("extends", None)
    return data


@dataclass
class SourceConfig:
    """A named set of shards: a validation set as it is, and the base of a weighted mixture component."""

    name: str  # e.g. "yodas2/en"; the label reported per component
    path: str  # directory of finished shards or a glob; relative paths are taken under MixtureConfig.root

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a component needs a name, got {self.name!r}")
        if not self.path or not isinstance(self.path, str):
            raise ValueError(f"component {self.name!r} needs a path")


@dataclass
class ComponentConfig(SourceConfig):
    weight: float  # share of tokens (normalized over the components)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.weight = float(self.weight)
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"component {self.name!r}: weight must be a positive number, got {self.weight}")


@dataclass
class MixtureConfig:
    components: list[ComponentConfig]
    tokenizer: str = PUBLISHED  # Hub id, tokenizer.json, or the directory `sodadata tokenizer build` wrote
    seq_len: int = 4096  # tokens per window
    seed: int = 0  # every shuffle and the mixing order derive from it
    block_size: int = 1000  # windows per mixing block: each component's count per block is fixed by its weight
    lanes: int = 8  # independent sub-streams the reading work is split into (hosts, workers); see docs/mixture.md
    text_key: str = "text"  # the column holding the row text
    root: str | None = None  # base of relative component paths (a directory or URL); None: the working directory
    validation: list[SourceConfig] = field(default_factory=list)  # held-out sets: not mixed, no weight
    source: str | None = field(default=None, compare=False)  # the file it was loaded from (for messages)

    def __post_init__(self) -> None:
        self.components = [c if isinstance(c, ComponentConfig) else ComponentConfig(**c) for c in self.components]
        if not self.components:
            raise ValueError("a mixture needs at least one component")
        self.validation = [v if isinstance(v, SourceConfig) else SourceConfig(**v) for v in self.validation]
        names = [c.name for c in (*self.components, *self.validation)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"component and validation set names must be unique; repeated: {dup}")
        for name in ("seq_len", "block_size", "lanes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.seq_len < 2:
            raise ValueError("seq_len must be at least 2")
        empty = [c.name for c, n in zip(self.components, self.block_counts()) if n == 0]
        if empty:
            raise ValueError(
                f"block_size {self.block_size} gives components {empty} no window per block; raise block_size"
            )

    @classmethod
    def load(cls, path: str | Path, root: str | None = None) -> MixtureConfig:
        """Read a recipe (a file, or a packaged mixture by name: :func:`resolve_recipe_path`; ``extends``
        resolved: :func:`read_recipe`); ``root`` overrides the recipe's own (e.g. where this machine keeps the shards)."""
        path = resolve_recipe_path(path)
        config = cls.from_dict(read_recipe(path), source=str(path))
        if root is not None:
            config.root = str(root)
        return config

    @classmethod
    def from_dict(cls, data: dict, source: str | None = None) -> MixtureConfig:
        known = {f.name for f in fields(cls)} - {"source"}
        unknown = sorted(set(data) - known)
        where = f"{source}: " if source else ""
        if unknown:
            raise ValueError(f"{where}unknown recipe keys {unknown}; known: {sorted(known)}")
        comps = [_entry(ComponentConfig, c, "component", "name, path and weight", where)
                 for c in _entries(data, "components", where)]
        validation = [_entry(SourceConfig, v, "validation set", "name and path", where)
                      for v in _entries(data, "validation", where)]
        return cls(**{**data, "components": comps, "validation": validation}, source=source)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("source")
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.components]

    def weights(self) -> list[float]:
        """Normalized token shares, in component order."""
        total = sum(c.weight for c in self.components)
        return [c.weight / total for c in self.components]

    def block_counts(self) -> list[int]:
        """Windows per component in every block: largest remainder of ``weight * block_size`` (ties: order)."""
        quotas = np.asarray(self.weights()) * self.block_size
        counts = np.floor(quotas).astype(np.int64)
        short = self.block_size - int(counts.sum())
        by_remainder = sorted(range(len(counts)), key=lambda i: (-(quotas[i] - counts[i]), i))
        for i in by_remainder[:short]:
            counts[i] += 1
        return counts.tolist()

    def component_location(self, component: SourceConfig) -> str:
        """The component's path with ``root`` applied (URLs and absolute paths are kept as they are).

        When ``root`` is a published copy (``sodadata push``'s layout, e.g. ``hf://datasets/ORG/NAME@REV``), the
        component's shards are under its ``data/`` folder: the location is then the glob the card's config loads
        (sodadata/write/published.py).
        """
        path = component.path
        if "://" in path or Path(path).is_absolute() or not self.root:
            return path
        return published_location(self.root, path) or self.root.rstrip("/") + "/" + path

    def data_files(self) -> dict[str, list[str]]:
        """Every component's shard files (URLs for remote ones): ``datasets.load_dataset("parquet", data_files=...)``
        reads them as they are, e.g. with ``streaming=True``."""
        from sodadata.mix.streaming import list_shards

        return {c.name: list_shards(self.component_location(c)).urls() for c in self.components}

    def fingerprint(self) -> str:
        """What a stream's order depends on (not where the files are): a resumed stream must match it."""
        # Validation sets are left out: they never enter the stream, and adding one must not void a checkpoint.
        key = {k: v for k, v in self.to_dict().items() if k not in ("root", "tokenizer", "validation")}
        for c in key["components"]:
            c.pop("path")
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _entries(data: dict, key: str, where: str) -> list:
    entries = data.get(key) or []
    if not isinstance(entries, list):
        raise ValueError(f"{where}{key} must be a list of mappings, got {type(entries).__name__}")
    return entries


def _entry(cls: type, entry: object, what: str, keys: str, where: str) -> SourceConfig:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}each {what} is a mapping of {keys}, got {entry!r}")
    try:
        return cls(**entry)
    except TypeError as exc:
        raise ValueError(f"{where}each {what} needs exactly {keys} ({exc})") from None
