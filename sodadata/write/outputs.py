"""Where an output's shards are, and what made them: the one place every tool finds shards.

An **output root** is the folder a recipe's ``--out`` named: a local path or an object-store URL (SPEC §6; every
function here takes either, :mod:`sodadata.locations`). It holds ``<component>/<stem>.parquet`` with the
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

from sodadata.locations import Location, as_location, display, fresh, is_remote
from sodadata.write.made_by import BEFORE_FORMAT_2, difference_lines
from sodadata.write.shards import RECORD_VERSION, REJECTS_DIRNAME, check_component, record_matches_files

log = logging.getLogger(__name__)

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

    root: Location
    component: str
    record_path: Location
    record: dict = field(compare=False, repr=False)

    @property
    def parquet(self) -> Location:
        return self.record_path.with_suffix(".parquet")

    @property
    def rejects(self) -> Location:
        return self.record_path.parent / REJECTS_DIRNAME / f"{self.record_path.stem}.parquet"

    @property
    def stem(self) -> str:
        """The shard's path inside its component folder, without suffix (``EN-B000000``)."""
        if not is_remote(self.root):
            return self.record_path.relative_to(self.root / self.component).with_suffix("").as_posix()
        # a URL's relative_to gives a relative UPath without a usable name: strings are exact here
        base = str(self.root / self.component).rstrip("/") + "/"
        return str(self.record_path)[len(base):].removesuffix(".json")

    @property
    def made_by(self) -> dict | None:
        made_by = self.record.get("made_by")
        return made_by if isinstance(made_by, dict) else None


@dataclass
class Found:
    """The finished shards at or below a folder, and the record files that could not be placed in a root."""

    path: Location
    shards: list[FinishedShard]
    problems: list[str]  # one line each: a record that does not parse, or names another folder than its own

    @property
    def roots(self) -> list[Location]:
        return sorted({s.root for s in self.shards}, key=str)

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


def _walk(path: Location) -> Iterable[tuple[Location, dict[str, int | None]]]:
    """(folder, {file name: size or None}) at or below ``path``, never entering skipped folders or following folder
    links. On a local disk sizes are left to :func:`record_matches_files` (None); a store's listing has them."""
    if not is_remote(path):
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames
                                 if not is_skipped(d) and not os.path.islink(os.path.join(dirpath, d)))
            yield Path(dirpath), dict.fromkeys(sorted(filenames))
        return
    pending = [path]
    while pending:
        folder = pending.pop()
        files, dirs = _list_store(folder)
        yield folder, files
        pending += [folder / d for d in sorted(dirs, reverse=True) if not is_skipped(d)]


def _list_store(folder: Location) -> tuple[dict[str, int | None], list[str]]:
    """({file name: size}, folder names) directly in a store's ``folder`` (one listing, not a cached one)."""
    fs, base = folder.fs, folder.path.rstrip("/")
    fs.invalidate_cache(base)
    try:
        listing = fs.ls(base, detail=True)
    except FileNotFoundError:
        return {}, []
    files: dict[str, int | None] = {}
    dirs: list[str] = []
    for info in listing:
        full = info["name"].rstrip("/")
        if full == base:
            continue
        name = full.rsplit("/", 1)[-1]
        if info.get("type") == "directory":
            dirs.append(name)
        else:
            files[name] = info.get("size")
    return dict(sorted(files.items())), sorted(dirs)


def root_of(folder: Location, component: str) -> Location | None:
    """The output root of a shard in ``folder`` whose record names ``component``, or None if the path does not end
    with the component's folders."""
    root = folder
    for part in reversed(component.split("/")):
        if root.name != part:
            return None
        root = root.parent
    return root


def find_shards(path: Location | str) -> Found:
    """Every finished shard at or below ``path``: an output root, a folder holding roots, or a component folder
    (its root is then above ``path``). Sorted by root, component and path.

    Finished means: the record exists and the files it names beside it have the sizes it names
    (:func:`sodadata.write.shards.record_matches_files`); a Parquet file without such a record (a killed attempt's upload
    on an object store) is not a shard."""
    path = _canonical(as_location(path), resolve=False)
    shards: list[FinishedShard] = []
    problems: list[str] = []
    if fresh(path).is_file():  # one shard (its .parquet or its .json)
        folders: Iterable[tuple[Location, dict[str, int | None]]] = [
            (path.parent, {p.name: None for p in (path.with_suffix(".json"), path.with_suffix(".parquet"))
                           if fresh(p).exists()})]
    else:
        folders = _walk(path)
    for folder, names in folders:
        rejects_sizes: dict[str, int | None] | None = None

        def size_of(loc: Location, folder: Location = folder, names: dict = names) -> int | None:
            nonlocal rejects_sizes
            if loc.parent == folder and names.get(loc.name) is not None:
                return names[loc.name]
            if is_remote(loc) and loc.parent == folder / REJECTS_DIRNAME:
                if rejects_sizes is None:  # one listing of the folder's rejects, not a request per shard
                    rejects_sizes = _list_store(folder / REJECTS_DIRNAME)[0]
                return rejects_sizes.get(loc.name)
            try:
                return fresh(loc).stat().st_size
            except FileNotFoundError:
                return None

        for name in names:
            if not name.endswith(".json") or name.startswith(".") or name[:-5] + ".parquet" not in names:
                continue  # a record is finished only beside its shard; _runs/_stats JSON never sits beside one
            rec_path = folder / name
            try:
                record = json.loads(fresh(rec_path).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                problems.append(f"{display(rec_path)}: record does not parse ({type(exc).__name__}: {exc})")
                continue
            if not isinstance(record, dict) or record.get("record_version") != RECORD_VERSION:
                version = record.get("record_version") if isinstance(record, dict) else None
                problems.append(f"{display(rec_path)}: not a shard record (record_version {version!r}, expected "
                                f"{RECORD_VERSION})")
                continue
            component = record.get("component")
            try:
                root = root_of(folder, check_component(component)) if isinstance(component, str) else None
            except ValueError:
                root = None
            if root is None:
                problems.append(f"{display(rec_path)}: its record names component {component!r}, which is not its "
                                "folder")
                continue
            if not record_matches_files(record, root / component, size_of):
                # a killed attempt's uploads beside an older record, or files changed since: never read as rows
                problems.append(f"{display(rec_path)}: the files beside it are not the sizes its record names "
                                "(unfinished or changed since): not read; rerun the recipe to make it again")
                continue
            shards.append(FinishedShard(root, component, rec_path, record))
    shards.sort(key=lambda s: (str(s.root), s.component, str(s.record_path)))
    return Found(path, shards, problems)


def describe_roots(roots: Sequence[Location]) -> str:
    return ", ".join(display(r) for r in roots)


def _canonical(loc: Location, resolve: bool = True) -> Location:
    """A local path resolved (``resolve``); a URL without a trailing slash (``s3://b/out/`` is ``s3://b/out``)."""
    if is_remote(loc):
        text = str(loc).rstrip("/")
        return loc if text.endswith(":") or text == str(loc) else as_location(text)
    return loc.resolve() if resolve else loc


def one_root(path: Location | str, command: str) -> Found:
    """The finished shards of the one output root at or below ``path`` (``command`` names the tool in messages).

    ``path`` itself when it is a root; the one root below it, said in a log line; else an :class:`OutputError`
    naming the roots found (or saying there are none).
    """
    path = as_location(path)
    found = find_shards(path)
    path = found.path
    roots = found.roots
    if not roots:
        raise OutputError(f"no finished shards under {display(path)} (expected <component>/<stem>.parquet with its .json "
                          "record): run a recipe first" + (f"; {len(found.problems)} records could not be read, "
                                                           f"e.g. {found.problems[0]}" if found.problems else ""))
    if len(roots) > 1:
        raise OutputError(f"{display(path)} holds {len(roots)} output roots ({describe_roots(roots)}): run `sodadata "
                          f"{command}` on one of them")
    root = roots[0]
    if _canonical(root) != _canonical(path):
        if _canonical(path) in _canonical(root).parents:
            log.info("%s is not an output root; using the one below it: %s", display(path), display(root))
        else:
            raise OutputError(f"{display(path)} is inside the output root {display(root)}: run `sodadata "
                              f"{command}` on {display(root)}")
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
