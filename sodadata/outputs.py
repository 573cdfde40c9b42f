"""Where an output's shards are, and what made them: the one place every tool finds shards.

An **output root** is the folder a recipe's ``--out`` named. It holds ``<component>/<stem>.parquet`` with the
shard's record ``<stem>.json`` (its presence marks the shard finished) and tool folders whose names start with
``_`` (``_runs``, ``_stats``, ``_hub``). A folder can hold output roots below it (the README writes its demo to
``out/sample``; ``out/`` then holds one root, ``out/sample``).

A shard belongs to the root its record names: a record at ``R/emilia/en/X.json`` saying ``"component":
"emilia/en"`` makes ``R`` its root. So the roots under a folder are found from the records, at any depth, and
a component is never mistaken for ``sample/emilia/en``. Folders whose names start with ``_`` or ``.`` (``_hub``
holds hard links to the shards, ``_stats`` and ``_runs`` JSON that is not a record) and ``rejects`` folders are
never searched, at any depth.

How the tools use it (docs/publishing.md, docs/listening.md):

- ``validate`` and ``decode`` cover every root at or below the folder they are given, each root on its own (ids
  are unique per root; a row found in two roots is an error naming both).
- ``stats``, ``push`` and ``inspect`` describe one dataset: they take one root (:func:`one_root`). Given a
  folder holding exactly one root below it they use that root and say so; given several they stop with one
  line naming them.

``made_by`` (SPEC §2) says what made a shard. Shards of one component must agree on it: :func:`mixed_made_by`
names the keys where they differ, :func:`missing_made_by` the records that have none (made before format 2).
A reader of one component folder (the mixture stream) uses ``find_shards(component_dir).shards`` and
``mixed_made_by`` the same way.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sodadata.made_by import BEFORE_FORMAT_2, difference_lines
from sodadata.shards import RECORD_VERSION, check_component

log = logging.getLogger(__name__)

REJECTS_DIRNAME = "rejects"
NO_MADE_BY = BEFORE_FORMAT_2  # what a record without made_by is said to be


class OutputError(ValueError):
    """A folder that is not what the tool needs (no shards, several output roots); the message says what to do."""


def is_skipped(name: str) -> bool:
    """Folders that never hold a component's shards: tool folders (``_hub``, ``_stats``, ``_runs``), hidden ones
    and reject lists."""
    return name.startswith(("_", ".")) or name == REJECTS_DIRNAME


@dataclass(frozen=True)
class FinishedShard:
    """One finished shard: its output root, component and record."""

    root: Path
    component: str
    record_path: Path
    record: dict = field(compare=False, repr=False)

    @property
    def parquet(self) -> Path:
        return self.record_path.with_suffix(".parquet")

    @property
    def rejects(self) -> Path:
        return self.record_path.parent / REJECTS_DIRNAME / f"{self.record_path.stem}.parquet"

    @property
    def stem(self) -> str:
        """The shard's path inside its component folder, without suffix (``EN-B000000``)."""
        return self.record_path.relative_to(self.root / self.component).with_suffix("").as_posix()

    @property
    def made_by(self) -> dict | None:
        made_by = self.record.get("made_by")
        return made_by if isinstance(made_by, dict) else None


@dataclass
class Found:
    """The finished shards at or below a folder, and the record files that could not be placed in a root."""

    path: Path
    shards: list[FinishedShard]
    problems: list[str]  # one line each: a record that does not parse, or names another folder than its own

    @property
    def roots(self) -> list[Path]:
        return sorted({s.root for s in self.shards})

    def by_component(self, components: Iterable[str] = ()) -> dict[str, list[FinishedShard]]:
        """Shards by component (all, or those named: a name not found is an :class:`OutputError`), sorted.

        Only for shards of one root: the same component in two roots would be merged.
        """
        if len(self.roots) > 1:
            raise ValueError("by_component() on shards of several output roots; take one root first")
        wanted = set(components)
        grouped: dict[str, list[FinishedShard]] = {}
        for s in self.shards:
            if not wanted or s.component in wanted:
                grouped.setdefault(s.component, []).append(s)
        missing = wanted - set(grouped)
        if missing:
            found = ", ".join(sorted({s.component for s in self.shards})) or "none"
            raise OutputError(f"no finished shards of {', '.join(sorted(missing))} under {self.path} (found: {found})")
        return dict(sorted(grouped.items()))


def _walk(path: Path) -> Iterable[tuple[Path, list[str]]]:
    """(folder, file names) at or below ``path``, never entering skipped folders or following folder links."""
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not is_skipped(d) and not os.path.islink(os.path.join(dirpath, d)))
        yield Path(dirpath), sorted(filenames)


def root_of(folder: Path, component: str) -> Path | None:
    """The output root of a shard in ``folder`` whose record names ``component``, or None if the path does not end
    with the component's folders."""
    parts = component.split("/")
    if len(folder.parts) < len(parts) or list(folder.parts[-len(parts):]) != parts:
        return None
    return Path(*folder.parts[: -len(parts)]) if len(folder.parts) > len(parts) else Path(".")


def find_shards(path: Path) -> Found:
    """Every finished shard at or below ``path``: an output root, a folder holding roots, or a component folder
    (its root is then above ``path``). Sorted by root, component and path."""
    path = Path(path)
    shards: list[FinishedShard] = []
    problems: list[str] = []
    if path.is_file():  # one shard (its .parquet or its .json)
        folders: Iterable[tuple[Path, list[str]]] = [
            (path.parent, [p.name for p in (path.with_suffix(".json"), path.with_suffix(".parquet")) if p.exists()])]
    else:
        folders = _walk(path)
    for folder, names in folders:
        names_set = set(names)
        for name in names:
            if not name.endswith(".json") or name.startswith(".") or name[:-5] + ".parquet" not in names_set:
                continue  # a record is finished only beside its shard; _runs/_stats JSON never sits beside one
            rec_path = folder / name
            try:
                record = json.loads(rec_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                problems.append(f"{rec_path}: record does not parse ({type(exc).__name__}: {exc})")
                continue
            if not isinstance(record, dict) or record.get("record_version") != RECORD_VERSION:
                version = record.get("record_version") if isinstance(record, dict) else None
                problems.append(f"{rec_path}: not a shard record (record_version {version!r}, expected "
                                f"{RECORD_VERSION})")
                continue
            component = record.get("component")
            try:
                root = root_of(folder, check_component(component)) if isinstance(component, str) else None
            except ValueError:
                root = None
            if root is None:
                problems.append(f"{rec_path}: its record names component {component!r}, which is not its folder")
                continue
            shards.append(FinishedShard(root, component, rec_path, record))
    shards.sort(key=lambda s: (str(s.root), s.component, str(s.record_path)))
    return Found(path, shards, problems)


def describe_roots(roots: Sequence[Path]) -> str:
    return ", ".join(str(r) for r in roots)


def one_root(path: Path, command: str) -> Found:
    """The finished shards of the one output root at or below ``path`` (``command`` names the tool in messages).

    ``path`` itself when it is a root; the one root below it, said in a log line; else an :class:`OutputError`
    naming the roots found (or saying there are none).
    """
    path = Path(path)
    found = find_shards(path)
    roots = found.roots
    if not roots:
        raise OutputError(f"no finished shards under {path} (expected <component>/<stem>.parquet with its .json "
                          "record): run a recipe first" + (f"; {len(found.problems)} records could not be read, "
                                                           f"e.g. {found.problems[0]}" if found.problems else ""))
    if len(roots) > 1:
        raise OutputError(f"{path} holds {len(roots)} output roots ({describe_roots(roots)}): run `sodadata "
                          f"{command}` on one of them")
    root = roots[0]
    if root.resolve() != path.resolve():
        if path.resolve() in root.resolve().parents:
            log.info("%s is not an output root; using the one below it: %s", path, root)
        else:
            raise OutputError(f"{path} is inside the output root {root}: run `sodadata {command}` on {root}")
    for problem in found.problems:
        log.warning("%s", problem)
    return Found(root, found.shards, found.problems)


# ---------------------------------------------------------------- made_by


def _key(made_by: dict) -> str:
    return json.dumps(made_by, sort_keys=True, ensure_ascii=False)


def missing_made_by(shards: Sequence[FinishedShard]) -> str | None:
    """One line when records of a component's shards have no ``made_by`` (the caller names the component)."""
    missing = [s for s in shards if s.made_by is None]
    if not missing:
        return None
    return f"{len(missing)} of {len(shards)} shards have no made_by ({NO_MADE_BY}, e.g. {missing[0].stem})"


def mixed_made_by(shards: Sequence[FinishedShard]) -> str | None:
    """One line when a component's shards (those with ``made_by``) differ in it: the keys, and an example shard
    of each side; None when they agree."""
    groups: dict[str, list[FinishedShard]] = {}
    for s in shards:
        if s.made_by is not None:
            groups.setdefault(_key(s.made_by), []).append(s)
    if len(groups) < 2:
        return None
    # the largest group is the reference; each other group's differences are named against it
    ordered = sorted(groups.values(), key=lambda g: (-len(g), str(g[0].record_path)))
    ref = ordered[0]
    keys: list[str] = []
    for g in ordered[1:]:
        keys += [d for d in difference_lines(g[0].made_by or {}, ref[0].made_by or {}) if d not in keys]
    return (f"shards differ in made_by: {'; '.join(keys)} ({len(groups)} kinds among {sum(map(len, groups.values()))} "
            f"shards, e.g. {ordered[1][0].stem} and {ref[0].stem})")


def made_by_problems(shards: Sequence[FinishedShard]) -> list[str]:
    """What is wrong with one component's ``made_by``, one line each: records without it, shards that differ."""
    return [p for p in (missing_made_by(shards), mixed_made_by(shards)) if p]


def component_made_by(shards: Sequence[FinishedShard]) -> dict | None:
    """The ``made_by`` every shard of a component shares, or None when one has none or they differ."""
    keys = {(_key(s.made_by) if s.made_by is not None else None) for s in shards}
    if len(keys) != 1 or None in keys:
        return None
    return shards[0].made_by


__all__ = [
    "NO_MADE_BY",
    "FinishedShard",
    "Found",
    "OutputError",
    "component_made_by",
    "find_shards",
    "is_skipped",
    "made_by_problems",
    "missing_made_by",
    "mixed_made_by",
    "one_root",
    "root_of",
]
