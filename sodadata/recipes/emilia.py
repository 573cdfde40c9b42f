"""Emilia and Emilia-YODAS (``amphion/Emilia-Dataset``) -> components ``emilia/<lang>``, ``emilia-yodas/<lang>``.

Layout on the Hub (SPEC.md §5; catalog: ``catalogs/emilia.yaml``)::

    Emilia/EN/EN-B000000.tar … EN-B001139.tar          Emilia, CC-BY-NC-4.0
    Emilia-YODAS/EN/EN-B000000.tar … EN-B001361.tar    Emilia-YODAS, CC-BY-4.0
      each tar: <key>.json + <key>.mp3 pairs (24 kHz mono MP3, 3–30 s), in no guaranteed order
      Emilia key        EN_B00000_S00000_W000000  -> document EN_B00000_S00000
      Emilia-YODAS key  EN_<video id>_W000000     -> document EN_<video id> (video ids contain _ and -)
      JSON {"id", "wav", "text": " leading space…", "duration", "speaker", "language", "dnsmos"};
      Emilia-YODAS records may lack id/wav: only "text" is required, the id is the member name.

One task per tar, one output shard per tar (``<out>/emilia/en/EN-B000000.parquet``). Tars are streamed
(``tarfile`` in ``r|`` mode over ``HfFileSystem`` or a local file), never extracted. Members are paired by
key: the tar name is not the batch (``EN-B000060.tar`` holds ``EN_B00006_*``).

Examples: the first runs offline on the bundled sample (from the repository root); the others read the real
corpus (network; Emilia is gated: accept its terms on the Hub and set HF_TOKEN)::

    python -m sodadata.recipes.emilia --lang en --source sample/emilia --codec tiny-random --out out/sample
    python -m sodadata.recipes.emilia --lang en --subset both --out data/
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from sodadata.read import sources
from sodadata.read.catalog import add_source_arguments, load_catalog, resolve_source_root
from sodadata.read.completeness import catalog_scope, compare_counts
from sodadata.read.recipe import Completeness, RawUtterance, Recipe, Reject, ShardTask
from sodadata.read.tarstream import CheckedTar
from sodadata.run import cli_recipe

SUBSETS = ("emilia", "emilia-yodas")
AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg")
_KEY_RE = re.compile(r"^(?P<doc>.+)_W(?P<w>\d+)$")
# A member is read whole into memory; a 30 s MP3 is < 1 MB. Larger members (a corrupt header, a hostile tar) are
# rejected unread, so a task's memory stays bounded whatever the tar holds.
MAX_MEMBER_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class EmiliaRecipe(Recipe):
    lang: str = "en"
    subsets: tuple[str, ...] = SUBSETS
    source: str | None = None  # repo root: local path or hf://datasets/amphion/Emilia-Dataset[@rev]
    revision: str | None = None
    max_member_bytes: int = MAX_MEMBER_BYTES

    name = "emilia"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        languages = [lang.lower() for lang in load_catalog("emilia")["languages"]]
        parser.add_argument("--lang", default="en", type=str.lower, choices=languages, metavar="LANG",
                            help=f"language folder ({', '.join(languages)}; default en)")
        parser.add_argument("--subset", default="both", choices=[*SUBSETS, "both"], help="which corpus (default both)")
        add_source_arguments(parser, "emilia", "Emilia/ and Emilia-YODAS/")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EmiliaRecipe:
        subsets = SUBSETS if args.subset == "both" else (args.subset,)
        return cls(lang=args.lang, subsets=subsets, source=args.source, revision=args.revision)

    def _root(self) -> tuple[str, str | None]:
        return resolve_source_root("emilia", self.source, self.revision)

    def tasks(self) -> list[ShardTask]:
        catalog = load_catalog("emilia")
        root, commit = self._root()
        lang = self.lang.upper()
        tasks = []
        if not sources.is_dir(root):
            raise FileNotFoundError(f"source {root!r} does not exist")
        for subset in self.subsets:
            sub = catalog["subsets"][subset]
            folder = sources.join(root, sub["path"].format(LANG=lang))
            try:
                files = sources.list_files(folder, sub["pattern"].format(LANG=lang))
            except FileNotFoundError:
                files = []  # a subset or language the source lacks: completeness() names it
            for f in files:
                stem = PurePosixPath(f.url).name.removesuffix(".tar")
                tasks.append(
                    ShardTask(
                        component=self.component(subset),
                        stem=stem,
                        split=f"{sub['split_prefix']}-{stem}",
                        inputs=(f,),
                        revision=commit,
                    )
                )
        return tasks

    def component(self, subset: str) -> str:
        return f"{load_catalog('emilia')['subsets'][subset]['component_prefix']}/{self.lang.lower()}"

    def completeness(self, tasks: list[ShardTask], full: bool) -> Completeness:
        """Every asked subset has tars for ``--lang``; a full run has as many as the catalog lists (where it
        lists the language), unless the source is a declared sample."""
        catalog = load_catalog("emilia")
        lang = self.lang.upper()
        asked = {self.component(s): catalog["subsets"][s] for s in self.subsets}
        found = Counter(t.component for t in tasks)
        where = {c: f"no {sub['pattern'].format(LANG=lang)} in {sub['path'].format(LANG=lang)}/" for c, sub in asked.items()}
        origin = catalog_scope(self.source, "emilia", full, "the asked subsets only")
        if origin:
            expected = {}
        else:
            expected = {c: sub.get("shards", {}).get(lang) for c, sub in asked.items()}
            origin = "catalogs/emilia.yaml"
        return Completeness(compare_counts("subset", found, asked, expected, where, origin), origin)

    def read(self, task: ShardTask) -> Iterator[RawUtterance | Reject]:
        (src,) = task.inputs
        faults = (tarfile.TarError, EOFError, OSError)
        with sources.open_shard_source(src.url, faults, "tar") as fileobj:
            yield from _read_tar(fileobj, src.url, self.max_member_bytes)

    def row_params(self) -> dict:
        return {"max_member_bytes": self.max_member_bytes}  # larger members are rejected

    def describe(self) -> dict:
        catalog = load_catalog("emilia")
        return {
            "recipe": self.name, "lang": self.lang, "subsets": list(self.subsets), "source": self.source or catalog["repo"],
            "licences": {s: catalog["subsets"][s]["licence"] for s in self.subsets},
        }


def _member_key(name: str) -> tuple[str, str]:
    """(key, extension) of a tar member; only the base name counts (member paths are never used as paths)."""
    base = PurePosixPath(name).name
    stem, dot, ext = base.rpartition(".")
    return (stem, "." + ext.lower()) if dot else (base, "")


def _read_tar(fileobj, url: str, max_member_bytes: int = MAX_MEMBER_BYTES) -> Iterator[RawUtterance | Reject]:
    pending: dict[str, dict[str, bytes]] = {}
    too_large: set[str] = set()  # keys already rejected for a member over the limit: their other member is skipped
    with CheckedTar(fileobj) as tar:
        for member in tar:
            key, ext = _member_key(member.name)
            if not member.isfile():
                yield Reject(member.name, "tar_unsupported_member", "links and devices are not read")
                continue
            if ext != ".json" and ext not in AUDIO_EXTENSIONS:
                yield Reject(member.name, "unexpected_member", f"extension {ext or '(none)'}")
                continue
            if key in too_large:
                continue
            if member.size > max_member_bytes:
                # not read: the stream skips its data. One reject for the utterance, whichever member was too large.
                pending.pop(key, None)
                too_large.add(key)
                yield Reject(key, "member_too_large", f"{member.name}: {member.size} bytes > limit {max_member_bytes}")
                continue
            kind = "json" if ext == ".json" else "audio"
            data = tar.read(member)
            slot = pending.setdefault(key, {})
            if kind in slot:
                yield Reject(key, "duplicate_id", f"second {ext} member for this key in {PurePosixPath(url).name}")
                continue
            slot[kind] = data
            if "json" in slot and "audio" in slot:
                del pending[key]
                yield _utterance(key, slot["json"], slot["audio"])
    for key in sorted(pending):
        missing = "missing_json" if "json" not in pending[key] else "missing_audio"
        yield Reject(key, missing, f"no {'.json' if missing == 'missing_json' else 'audio'} member with this key")


def _utterance(key: str, raw_json: bytes, audio: bytes) -> RawUtterance | Reject:
    m = _KEY_RE.match(key)
    if not m:
        return Reject(key, "bad_key", "expected <document>_W<number>")
    try:
        meta = json.loads(raw_json.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Reject(key, "invalid_json", f"not UTF-8: {exc}")
    except json.JSONDecodeError as exc:
        return Reject(key, "invalid_json", str(exc))
    if not isinstance(meta, dict):
        return Reject(key, "invalid_json", f"expected an object, got {type(meta).__name__}")
    text = meta.pop("text", None)
    if not isinstance(text, str):
        return Reject(key, "missing_text", "no string 'text' field")
    return RawUtterance(
        id=key, doc_id=m["doc"], order=(int(m["w"]),), text=text, audio=audio, metadata=meta
    )


def main(argv: list[str] | None = None) -> int:
    return cli_recipe.main(EmiliaRecipe, argv, prog="python -m sodadata.recipes.emilia", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
