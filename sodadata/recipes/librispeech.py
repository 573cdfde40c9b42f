"""LibriSpeech (OpenSLR resource 12) -> component ``librispeech/<split>``.

Layout (SPEC.md §5; catalog: ``catalogs/librispeech.yaml``), CC-BY-4.0, one ``<split>.tar.gz`` per split at
``https://www.openslr.org/resources/12/<split>.tar.gz``::

    LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac    16 kHz mono FLAC
    LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt         "<utt id> UPPER CASE TEXT" per line
    LibriSpeech/{BOOKS,CHAPTERS,LICENSE,README,SPEAKERS}.TXT                       corpus metadata (not read)

Splits: dev-clean, dev-other, test-clean, test-other, train-clean-100, train-clean-360, train-other-500. SODA
measures its validation NLL on dev-clean.

Documents (SPEC.md §2): one chapter (``<speaker>-<chapter>``), utterances in id order. The rows' ``split``
column is the LibriSpeech split (``dev-clean``). The FLAC is resampled from 16 to 24 kHz by the pipeline.
A transcript line without its FLAC is a ``missing_flac`` reject, a FLAC without its line a ``missing_transcript``
reject (every FLAC of a chapter without a ``.trans.txt`` too); a line that is not ``<this chapter's id> TEXT`` is
``bad_transcript_line``; other files are ``unexpected_file``. None of these fails a shard.

``--source`` is one of:

- a folder holding ``LibriSpeech/<split>/`` (an extracted archive; several splits may share it). One task per
  speaker (output shard ``<out>/librispeech/<split>/<speaker>.parquet``): tasks of 8–30 minutes of audio (the
  paper's minutes per speaker), so a split runs on every worker and a killed run resumes speaker by speaker.
  A chapter is read whole (its lines, then its FLACs in id order), so documents reach the pipeline one after
  another and only one chapter's audio is held at a time.
- a ``.tar.gz`` file or an http(s) URL of one (default: the OpenSLR URL of ``--split``), streamed, never
  extracted. **One task for the whole archive** (shard ``<out>/librispeech/<split>/<split>.parquet``): gzip
  cannot seek, so splitting the archive into tasks would make every task decompress it from the start. A FLAC
  waits for its chapter's ``.trans.txt`` only while that has not been read (tar order within a chapter folder is
  arbitrary); the codes of the whole split are held until the task ends (about 1.4 MB per audio-hour). Fine for
  the dev and test splits (5 h each); for the training splits (100–500 h), download and extract the archive and
  pass the folder to get parallel, resumable tasks.

Use one kind of source per ``--out``: the two kinds name their shards differently, so a folder run after an
archive run of the same split would add the same rows a second time.

Examples: the first runs offline on the bundled sample (from the repository root; SODA's validation set goes to
its own output, apart from the training mixture); the others read the real corpus (network, or a local copy)::

    python -m sodadata.recipes.librispeech --split dev-clean --source sample/librispeech --codec tiny-random --out out/val
    python -m sodadata.recipes.librispeech --split dev-clean --out data/val
    python -m sodadata.recipes.librispeech --split dev-clean --source /data/dev-clean.tar.gz --out data/val
    python -m sodadata.recipes.librispeech --split train-clean-100 --source /data --workers 16 --out data/
"""

from __future__ import annotations

import argparse
import gzip
import logging
import re
import sys
import tarfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from sodadata.read import sources
from sodadata.read.catalog import load_catalog
from sodadata.read.completeness import catalog_scope
from sodadata.read.recipe import Completeness, RawUtterance, Recipe, Reject, ShardError, ShardTask, SourceFile
from sodadata.read.tarstream import CheckedTar
from sodadata.run import cli_recipe

log = logging.getLogger(__name__)

CORPUS = "librispeech"
SPLITS = ("dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100", "train-clean-360",
          "train-other-500")
TOP = "LibriSpeech"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
# A FLAC is read whole into memory; LibriSpeech's longest utterances are ~35 s (~1 MB). Larger files (a corrupt or
# hostile input) are rejected unread, so a task's memory stays bounded whatever the source holds.
MAX_FILE_BYTES = 64 * 1024 * 1024
# FLACs of an archive waiting for their chapter's transcript. In OpenSLR's archives a chapter's files are together,
# so at most one chapter (tens of MB) waits; an archive that holds back every transcript would grow without bound.
MAX_WAITING_BYTES = 1024 * 1024 * 1024
_UTT_RE = re.compile(r"^(?P<speaker>\d+)-(?P<chapter>\d+)-(?P<utt>\d+)$")
_DIGITS = re.compile(r"^\d+$")


@dataclass(frozen=True)
class LibriSpeechRecipe(Recipe):
    split: str = "dev-clean"
    source: str | None = None  # folder holding LibriSpeech/, a .tar.gz, an http(s) URL; None: the OpenSLR URL
    max_file_bytes: int = MAX_FILE_BYTES

    name = "librispeech"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--split", default="dev-clean", choices=SPLITS, help="which split (default dev-clean)")
        parser.add_argument(
            "--source", default=None,
            help="a folder holding LibriSpeech/<split>/ (one task per speaker), a <split>.tar.gz file or an http(s) "
            "URL of one (streamed, one task); default: the OpenSLR URL in catalogs/librispeech.yaml",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LibriSpeechRecipe:
        return cls(split=args.split, source=args.source)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")

    @property
    def component(self) -> str:
        return load_catalog(CORPUS)["component"].format(split=self.split)

    @property
    def url(self) -> str:
        """Where this run reads from: ``--source`` or the catalog's download URL of the split."""
        return self.source or load_catalog(CORPUS)["url"].format(split=self.split)

    @property
    def is_archive(self) -> bool:
        return sources.is_http(self.url) or self.url.lower().endswith(ARCHIVE_SUFFIXES)

    @property
    def contiguous_documents(self) -> bool:  # type: ignore[override]
        # a folder is read chapter by chapter; an archive's chapters are only as contiguous as its member order
        return not self.is_archive

    def tasks(self) -> list[ShardTask]:
        sources.check_source(self.url)
        if self.is_archive:
            size = None
            if not sources.is_http(self.url):
                size = sources.file_size(self.url)
                if size is None:
                    raise FileNotFoundError(f"source archive {self.url!r} does not exist")
            return [ShardTask(component=self.component, stem=self.split, split=self.split,
                              inputs=(SourceFile(self.url, size),))]
        root = self._split_root()
        if sources.is_hf(self.url) or not sources.is_dir(root):
            raise FileNotFoundError(
                f"no {TOP}/{self.split}/ under {self.url!r}: give the local folder that holds {TOP}/ (an extracted "
                f"{self.split}.tar.gz), the .tar.gz itself or its URL"
            )
        by_speaker: dict[str, list[SourceFile]] = defaultdict(list)
        for f in sources.list_files(root, "**/*"):
            rel = _relative_parts(f.url, root)
            # files directly in the split folder (no speaker folder) form a task of their own: all are rejects
            by_speaker[rel[0] if len(rel) > 1 else "_unplaced"].append(f)
        if not by_speaker:
            raise FileNotFoundError(f"{root} holds no files")
        log.info("librispeech %s: %d files in %d speaker folders -> one task per speaker", self.split,
                 sum(map(len, by_speaker.values())), len(by_speaker))
        return [ShardTask(component=self.component, stem=speaker, split=self.split, inputs=tuple(by_speaker[speaker]))
                for speaker in sorted(by_speaker, key=_numeric_key)]

    def _split_root(self) -> str:
        """The split's folder (``<source>/LibriSpeech/<split>``): a local path or an object-store URL."""
        return sources.join(self.url, TOP, self.split)

    def completeness(self, tasks: list[ShardTask], full: bool) -> Completeness:
        """A folder's full run has every speaker and every utterance (FLAC) the catalog counts for the split, unless
        it is a declared sample. An archive is one file: it is there (``tasks`` checked), and read to its
        end-of-archive block; what it holds is only known once it is read."""
        if self.is_archive:
            return Completeness([], "nothing before reading (one archive, checked to its end while it is read)")
        catalog = load_catalog(CORPUS)
        origin = catalog_scope(self.source, CORPUS, full, "nothing")
        if origin:
            return Completeness([], origin)
        expected = catalog["splits"][self.split]
        speakers = sum(1 for t in tasks if _DIGITS.match(t.stem))
        flacs = sum(1 for t in tasks for f in t.inputs if f.url.lower().endswith(".flac"))
        missing = [f"split {self.split}: {have} of the {want} {noun} catalogs/librispeech.yaml lists"
                   for noun, have, want in (("speakers", speakers, expected["speakers"]),
                                            ("utterances (FLAC files)", flacs, expected["utterances"]))
                   if have < want]
        return Completeness(missing, "catalogs/librispeech.yaml")

    def read(self, task: ShardTask) -> Iterator[RawUtterance | Reject]:
        if self.is_archive:
            (src,) = task.inputs
            faults = (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile)
            with sources.open_shard_source(src.url, faults, "archive") as fileobj:
                yield from _read_archive(fileobj, self.split, self.max_file_bytes)
            return
        root = self._split_root()
        chapters: dict[tuple[str, ...], list[SourceFile]] = defaultdict(list)
        for f in task.inputs:
            chapters[_relative_parts(f.url, root)[:-1]].append(f)
        for folder in sorted(chapters, key=lambda p: tuple(_numeric_key(x) for x in p)):
            yield from self._read_chapter(folder, chapters[folder])

    def _read_chapter(self, folder: tuple[str, ...], files: list[SourceFile]) -> Iterator[RawUtterance | Reject]:
        chapter = Chapter(folder)
        for f in sorted(files, key=lambda f: f.url):
            kind = chapter.classify(PurePosixPath(f.url).name)
            if kind == "transcript":
                yield from chapter.add_transcript(_read_file(f))
        for f in sorted(files, key=lambda f: f.url):
            name = PurePosixPath(f.url).name
            kind = chapter.classify(name)
            if kind == "flac":
                if f.size is not None and f.size > self.max_file_bytes:
                    yield from chapter.add_flac(name, None, f"{f.size} bytes > limit {self.max_file_bytes}")
                else:
                    yield from chapter.add_flac(name, _read_file(f))
            elif kind != "transcript":
                yield Reject(_rel(folder, name), "unexpected_file", kind)
        yield from chapter.finish()

    def row_params(self) -> dict:
        return {"max_file_bytes": self.max_file_bytes}  # larger FLACs are rejected

    def describe(self) -> dict:
        catalog = load_catalog(CORPUS)
        return {"recipe": self.name, "split": self.split, "source": sources.redact_url(self.url),
                "licence": catalog["licence"]}


def _numeric_key(name: str) -> tuple:
    """Speaker and chapter folders sort by number (``19`` before ``103``); anything else after them, by name."""
    return (0, int(name), name) if _DIGITS.match(name) else (1, 0, name)


def _rel(folder: tuple[str, ...], name: str) -> str:
    return "/".join((*folder, name))


def _read_file(f: SourceFile) -> bytes:
    try:
        with sources.open_binary(f.url) as fh:
            return fh.read()
    except OSError as exc:
        raise ShardError(f"cannot read {f.url}: {type(exc).__name__}: {exc}") from exc


@dataclass
class Chapter:
    """One ``<speaker>/<chapter>/`` folder: pairs its transcript lines with its FLACs, in any order of arrival.

    A FLAC whose line is known becomes an utterance at once; one that comes before the chapter's ``.trans.txt``
    waits (``waiting``). ``finish`` resolves what is left: lines without a FLAC, FLACs without a line. Every
    utterance id is yielded exactly once, as an utterance or a reject.
    """

    folder: tuple[str, ...]  # (speaker, chapter) below the split folder
    lines: dict[str, str] = field(default_factory=dict)  # utt id -> text, not yet paired with a FLAC
    waiting: dict[str, bytes] = field(default_factory=dict)  # utt id -> FLAC bytes, transcript not yet read
    done: set[str] = field(default_factory=set)  # utt ids already yielded (utterance or reject)
    silenced: set[str] = field(default_factory=set)  # rejected by their line: their FLAC is not a second item
    has_transcript: bool = False

    @property
    def doc_id(self) -> str:
        return "-".join(self.folder)

    @property
    def well_placed(self) -> bool:
        return len(self.folder) == 2 and all(_DIGITS.match(p) for p in self.folder)

    def classify(self, name: str) -> str:
        """``transcript``, ``flac``, or why the file is not one of them."""
        if not self.well_placed:
            return f"not in a <speaker>/<chapter>/ folder: {_rel(self.folder, name)}"
        if name == f"{self.doc_id}.trans.txt":
            return "transcript"
        stem, _, ext = name.rpartition(".")
        m = _UTT_RE.match(stem)
        if ext.lower() == "flac" and m and f"{m['speaker']}-{m['chapter']}" == self.doc_id:
            return "flac"
        return f"not {self.doc_id}.trans.txt or {self.doc_id}-NNNN.flac"

    def add_transcript(self, data: bytes) -> Iterator[RawUtterance | Reject]:
        if self.has_transcript:  # one per folder; a tar may hold a member twice
            yield Reject(_rel(self.folder, f"{self.doc_id}.trans.txt"), "duplicate_transcript",
                         "a second copy of the chapter's transcript; the first was used")
            return
        self.has_transcript = True
        for n, raw in enumerate(data.split(b"\n"), 1):
            raw = raw.rstrip(b"\r")
            if not raw.strip():
                continue
            head, _, rest = raw.partition(b" ")
            utt = head.decode("ascii", "replace")
            m = _UTT_RE.match(utt)
            if m is None or f"{m['speaker']}-{m['chapter']}" != self.doc_id:
                yield Reject(f"{self.doc_id}.trans.txt:{n}", "bad_transcript_line",
                             f"expected '<{self.doc_id}-NNNN> TEXT', got {raw[:120]!r}")
                continue
            if utt in self.lines or utt in self.done:
                yield Reject(utt, "duplicate_id", f"line {n} repeats an id of {self.doc_id}.trans.txt")
                continue
            try:
                text = rest.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.done.add(utt)  # one reject for the utterance: its FLAC, waiting or to come, is dropped
                if self.waiting.pop(utt, None) is None:
                    self.silenced.add(utt)
                yield Reject(utt, "invalid_unicode", f"transcript line {n} is not UTF-8 ({exc.reason})")
                continue
            self.lines[utt] = text
        # FLACs that came before the transcript
        for utt in sorted(self.waiting, key=_utt_key):
            if utt in self.lines:
                yield self._utterance(utt, self.waiting.pop(utt))

    def add_flac(self, name: str, data: bytes | None, too_large: str = "") -> Iterator[RawUtterance | Reject]:
        utt = name.rpartition(".")[0]
        if utt in self.silenced:
            self.silenced.discard(utt)
            return
        if utt in self.done or utt in self.waiting:
            yield Reject(utt, "duplicate_id", f"a second {name}; the first was used")
            return
        if data is None:
            self.done.add(utt)
            self.lines.pop(utt, None)
            yield Reject(utt, "file_too_large", f"{name}: {too_large}")
            return
        if utt in self.lines:
            yield self._utterance(utt, data)
        elif self.has_transcript:
            self.done.add(utt)
            yield Reject(utt, "missing_transcript", f"{name} has no line in {self.doc_id}.trans.txt")
        else:
            self.waiting[utt] = data

    def finish(self) -> Iterator[Reject]:
        for utt in sorted(self.lines, key=_utt_key):
            self.done.add(utt)
            yield Reject(utt, "missing_flac", f"{self.doc_id}.trans.txt has a line for {utt}, but there is no {utt}.flac")
        self.lines.clear()
        for utt in sorted(self.waiting, key=_utt_key):
            self.done.add(utt)
            yield Reject(utt, "missing_transcript", f"{utt}.flac: the chapter has no {self.doc_id}.trans.txt")
        self.waiting.clear()

    def waiting_bytes(self) -> int:
        return sum(len(b) for b in self.waiting.values())

    def _utterance(self, utt: str, audio: bytes) -> RawUtterance:
        self.done.add(utt)
        text = self.lines.pop(utt)
        return RawUtterance(id=utt, doc_id=self.doc_id, order=_utt_key(utt), text=text, audio=audio)


def _utt_key(utt: str) -> tuple:
    m = _UTT_RE.match(utt)
    return (int(m["speaker"]), int(m["chapter"]), int(m["utt"])) if m else (0, 0, 0)


def _read_archive(fileobj, split: str, max_file_bytes: int = MAX_FILE_BYTES) -> Iterator[RawUtterance | Reject]:
    """Every utterance of ``LibriSpeech/<split>/`` in a streamed .tar.gz (members in any order)."""
    chapters: dict[tuple[str, ...], Chapter] = {}
    prefix = (TOP, split)
    other_splits: set[str] = set()
    seen_split = False
    waiting = 0  # bytes of FLACs waiting for their chapter's transcript, over all chapters
    with CheckedTar(fileobj, gzipped=True) as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if parts[:1] == (TOP,) and len(parts) == 2 and parts[1].upper().endswith(".TXT"):
                continue  # the corpus's own BOOKS/CHAPTERS/LICENSE/README/SPEAKERS.TXT
            if parts[:2] != prefix:
                if parts[:1] == (TOP,) and len(parts) > 2:
                    other_splits.add(parts[1])
                yield Reject(member.name, "unexpected_file", f"not under {TOP}/{split}/")
                continue
            seen_split = True
            folder, name = parts[2:-1], parts[-1]
            chapter = chapters.get(folder)
            if chapter is None:
                chapter = chapters[folder] = Chapter(folder)
            kind = chapter.classify(name)
            if not member.isfile() and kind in ("transcript", "flac"):
                yield Reject(member.name, "tar_unsupported_member", "links and devices are not read")
            elif kind == "transcript":
                before = chapter.waiting_bytes()
                yield from chapter.add_transcript(tar.read(member))
                waiting -= before - chapter.waiting_bytes()
            elif kind == "flac":
                if member.size > max_file_bytes:
                    yield from chapter.add_flac(name, None, f"{member.size} bytes > limit {max_file_bytes}")
                    continue
                before = chapter.waiting_bytes()
                yield from chapter.add_flac(name, tar.read(member))
                waiting += chapter.waiting_bytes() - before
                if waiting > max(MAX_WAITING_BYTES, max_file_bytes):
                    raise ShardError(
                        f"{waiting} bytes of FLACs are waiting for transcripts that have not come: the archive is not "
                        "in OpenSLR's order (a chapter's files together); extract it and pass the folder"
                    )
            else:
                yield Reject(member.name, "unexpected_file", kind)
    if not seen_split:
        found = f" (it holds {', '.join(sorted(other_splits))})" if other_splits else ""
        raise ShardError(f"the archive holds nothing under {TOP}/{split}/{found}: is it {split}.tar.gz?")
    for folder in sorted(chapters, key=lambda p: tuple(_numeric_key(x) for x in p)):
        yield from chapters[folder].finish()


def _relative_parts(url: str, root: str) -> tuple[str, ...]:
    """The folders and name of a listed file below ``root`` (what ``sources.list_files`` under it gave)."""
    return tuple(p for p in url[len(root.rstrip("/")):].split("/") if p)


def main(argv: list[str] | None = None) -> int:
    return cli_recipe.main(LibriSpeechRecipe, argv, prog="python -m sodadata.recipes.librispeech", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
