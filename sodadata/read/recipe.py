"""What a corpus recipe provides: its tasks (one per source shard) and a reader of one task's items.

A recipe knows only its corpus's layout. Everything after reading (audio decode, transcript checks, Mimi
encoding, grouping into documents, row formatting, shard writing, records, the Dask runner, the CLI) is shared
(``sodadata.run.pipeline``, ``sodadata.run.runner``, ``sodadata.run.cli_recipe``).

Contract for ``read(task)``: every input item of the task (utterance, record) is yielded exactly once, either as
an item (``RawUtterance`` / ``TextRecord``) or as a ``Reject`` with a reason. That is what makes
``read == written + rejected`` hold for every shard. A fault that spoils the whole task (unreadable tar,
truncated stream) raises ``ShardError``: the task fails, is retried, then reported; nothing is written. A fault
of the configuration rather than of the shard raises ``ConfigError``: the run stops at once, without retries.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


class ShardError(RuntimeError):
    """A whole source shard cannot be processed (corrupt or truncated archive, missing file)."""


class ConfigError(ValueError):
    """A fault of the run's configuration, the same for every task: a codec that does not load, a missing model,
    an option no source can satisfy. Retrying cannot fix it, so the runner does not retry it per task: the first
    task that meets one stops the run, with its one line (``sodadata.run.runner``); the CLI exits 2."""


@dataclass(frozen=True)
class SourceFile:
    url: str  # local path, hf://datasets/<repo>@<revision>/<path>, or http(s)://
    size: int | None = None


@dataclass(frozen=True)
class ShardTask:
    """One unit of work: one source shard in, one output shard out."""

    component: str  # e.g. "emilia/en"; output goes to <out>/<component>/<stem>.parquet
    stem: str  # output file stem, unique within the component
    split: str  # value of the rows' `split` column, e.g. "Emilia-EN-B000000" or "en000/00000000"
    inputs: tuple[SourceFile, ...]
    revision: str | None = None  # resolved Hub commit, recorded in the shard's JSON record
    params: tuple[tuple[str, object], ...] = ()  # recipe-specific, hashable (e.g. MLS document groups)

    def param(self, key: str, default=None):
        return dict(self.params).get(key, default)

    @property
    def name(self) -> str:
        return f"{self.component}/{self.stem}"


@dataclass
class RawUtterance:
    """An utterance as read from the source, before decoding and encoding."""

    id: str
    doc_id: str
    order: tuple  # sort key inside the document
    text: str  # as the source gives it (whitespace is stripped by the pipeline, nothing else)
    audio: bytes | np.ndarray  # encoded file bytes (mp3/wav/flac/...) or samples
    sample_rate: int | None = None  # required when `audio` is samples
    metadata: dict = field(default_factory=dict)


@dataclass
class TextRecord:
    id: str
    text: str
    metadata: dict = field(default_factory=dict)


@dataclass
class Reject:
    id: str
    reason: str  # short snake_case code, counted in records and summaries
    detail: str = ""


@dataclass
class Completeness:
    """What a recipe found missing from its source, and what it compared the source with (``Recipe.completeness``;
    the checks are described in ``sodadata.read.completeness``). Recorded in the run summary."""

    missing: list[str] = field(default_factory=list)  # one phrase each, naming what is missing
    compared_with: str = ""

    def to_dict(self) -> dict:
        return {"missing": list(self.missing), "compared_with": self.compared_with}


class Recipe(ABC):
    """Base of every corpus recipe. Subclasses set ``name`` and ``kind`` and implement the methods below."""

    name: str = ""
    kind: str = "speech"  # "speech" (needs the codec) or "text"
    unit: str = "utterance"  # what one read item is, in records and summaries
    # True when read() yields each document's utterances together (one video, then the next): the pipeline then
    # writes each document as soon as the next starts, so a task's memory is bounded by one document.
    contiguous_documents: bool = False

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Recipe-specific options (``--lang``, ``--subset``, ``--source`` ...)."""
        return None

    @classmethod
    @abstractmethod
    def from_args(cls, args: argparse.Namespace) -> Recipe: ...

    @abstractmethod
    def tasks(self) -> list[ShardTask]:
        """All tasks of this run, in a stable order (``--limit-shards`` takes a prefix)."""

    @abstractmethod
    def read(self, task: ShardTask) -> Iterator[RawUtterance | TextRecord | Reject]:
        """Yield every item of one task exactly once (see module docstring)."""

    def row_params(self) -> dict:
        """The parameters of this recipe that change rows (``--shard-hours``, a size limit that rejects ...), for
        the shards' ``made_by``. Not paths, subsets or anything that only selects which shards are made."""
        return {}

    def completeness(self, tasks: list[ShardTask], full: bool) -> Completeness:
        """What is missing from the source: asked for, or (``full``: a run without ``--limit-shards``) listed by the
        catalog, and not found among ``tasks`` (``sodadata.read.completeness``). Called once, before any work."""
        return Completeness(compared_with="nothing (this recipe has no catalog)")

    def describe(self) -> dict:
        """Recorded in the run summary: source, revision, licence ..."""
        return {"recipe": self.name}
