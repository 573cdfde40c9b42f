"""Yodas2 (``espnet/yodas2``) -> component ``yodas2/<lang>``.

Layout on the Hub (SPEC.md §5; catalog: ``catalogs/yodas2.yaml``), CC-BY-3.0, not gated::

    data/<subset>/audio/NNNNNNNN.tar.gz    tar.gz, top-level members "<video_id>.wav": one long 24 kHz WAV a video
    data/<subset>/text/NNNNNNNN.json       ONE JSON array:
                                           [{"audio_id": vid, "text": {"<vid>-<idx:05d>-<start_cs:08d>-<end_cs:08d>": "caption", ...}}, ...]
    data/<subset>/duration/NNNNNNNN.txt    "<video_id> <seconds>" per line
    English subsets: en000..en006 (500 shards each), en007 (437), en100..en128 (500 each), en129 (62)

One task per ``<subset>/NNNNNNNN``: output ``<out>/yodas2/en/<subset>-NNNNNNNN.parquet`` with ``split`` =
``<subset>/NNNNNNNN``. The repo is script-based (``datasets>=4`` refuses it): files are read directly, the tar is
streamed (``r|gz``) and never extracted. Each video is one document (``doc_id`` = video id); its utterances are
the caption keys in index order, sliced out of the video's WAV by their centisecond times. Keys are split from
the right (``rsplit("-", 3)``): video ids contain ``-`` and ``_``.

Memory: the shard's JSON is held (small); of the audio, only the current video's WAV bytes are held, and each
utterance is read out of them on its own (a copy, not a view: a view would keep the whole video alive for as
long as any slice of it waits in the encoder's bucket). Documents are written as soon as the next one starts
(``contiguous_documents``), so a task's memory does not grow with the number of videos in the shard.

Faults of the real data, each rejected with a reason instead of crashing the shard:
  ``empty_segment`` (start == end), ``start_after_end``, ``caption_past_end`` (a caption that starts at or
  ends after the end of the audio; an overrun of at most 1 cs is centisecond rounding and is clipped),
  ``bad_key`` (a key that is not ``<this video>-<idx>-<start>-<end>``), ``video_missing_from_tar`` (every
  utterance of a video in the JSON without a WAV), ``video_missing_from_json`` (a WAV with no JSON entry: one
  reject, id = video id), ``undecodable_audio`` (every utterance of a WAV that cannot be read),
  ``duplicate_video`` (a second WAV of the same video), ``unexpected_member`` (a member that is not a .wav),
  ``video_too_large`` (every utterance of a WAV over ``max_wav_bytes``, 2 GiB: not read, memory stays bounded).
A missing or unreadable tar or JSON file, or a truncated tar, fails the shard (``ShardError``: retried, then
reported; nothing is written).

Examples: the first runs offline on the bundled sample (from the repository root); the others read the real
corpus from the Hub (network)::

    python -m sodadata.recipes.yodas2 --lang en --source sample/yodas2 --codec tiny-random --out out/sample
    python -m sodadata.recipes.yodas2 --lang en --out data/
    python -m sodadata.recipes.yodas2 --lang en --subsets en000,en100 --limit-shards 2 --out data/
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
import sys
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import soundfile as sf

from sodadata.encode.audio import decoder_error_detail
from sodadata.read import sources
from sodadata.read.catalog import add_source_arguments, load_catalog, resolve_source_root
from sodadata.read.completeness import catalog_scope, compare_counts
from sodadata.read.recipe import Completeness, RawUtterance, Recipe, Reject, ShardError, ShardTask, SourceFile
from sodadata.read.tarstream import CheckedTar
from sodadata.run import cli_recipe

log = logging.getLogger("sodadata.recipes.yodas2")  # not __name__: "__main__" under python -m

CORPUS = "yodas2"
_SHARD_RE = re.compile(r"^\d{8}$")
# Caption ends may overrun the WAV by centisecond rounding; more than this is a caption past the end.
END_TOLERANCE_SECONDS = 0.01
# A video's WAV is read whole into memory. 2 GiB is 12 h of 16-bit mono at 24 kHz; a larger member (a corrupt
# header, a decompression bomb: gzip turns a few MB into GBs) is rejected unread, keeping a task's memory bounded.
MAX_WAV_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Yodas2Recipe(Recipe):
    lang: str = "en"
    subsets: tuple[str, ...] | None = None  # None: every subset of `lang` in the catalog
    source: str | None = None  # dataset root holding data/: local path or hf://datasets/espnet/yodas2[@rev]
    revision: str | None = None
    max_wav_bytes: int = MAX_WAV_BYTES

    name = "yodas2"
    contiguous_documents = True  # one video's utterances are yielded together, video after video

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--lang", default="en", help="language of the subsets (default en)")
        parser.add_argument(
            "--subsets", default=None, metavar="en000,en100,...",
            help="comma-separated subsets (default: every subset of --lang in catalogs/yodas2.yaml: 38 for en)",
        )
        add_source_arguments(parser, CORPUS, "data/<subset>/")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Yodas2Recipe:
        subsets = tuple(s.strip() for s in args.subsets.split(",") if s.strip()) if args.subsets else None
        recipe = cls(lang=args.lang, subsets=subsets, source=args.source, revision=args.revision)
        recipe.selected_subsets()  # --lang and --subsets checked now, before the codec loads or a cluster starts
        return recipe

    def selected_subsets(self) -> tuple[str, ...]:
        lang = self.lang.lower()
        languages = load_catalog(CORPUS)["languages"]
        known = languages.get(lang, {}).get("subsets", {})
        if self.subsets is None:
            if not known:
                raise ValueError(f"catalogs/yodas2.yaml lists subsets for --lang {', '.join(sorted(languages))}, not "
                                 f"{lang}: for another language pass --subsets (e.g. {lang}000)")
            return tuple(known)
        bad = [s for s in self.subsets if not re.fullmatch(rf"{re.escape(lang)}\d{{3}}", s)]
        if bad:
            raise ValueError(f"--subsets {','.join(bad)}: expected names like {lang}000 for --lang {lang}")
        return self.subsets

    def _root(self) -> tuple[str, str | None]:
        return resolve_source_root(CORPUS, self.source, self.revision)

    def tasks(self) -> list[ShardTask]:
        catalog = load_catalog(CORPUS)
        subsets = self.selected_subsets()
        root, commit = self._root()
        component = f"{CORPUS}/{self.lang.lower()}"
        tasks = []
        for subset in subsets:
            folder = sources.join(root, catalog["path"].format(subset=subset))
            found: dict[str, dict[str, SourceFile]] = {}
            for kind, pattern, suffix in (("audio", "audio/*.tar.gz", ".tar.gz"), ("text", "text/*.json", ".json"),
                                          ("duration", "duration/*.txt", ".txt")):
                try:
                    files = sources.list_files(folder, pattern)
                except FileNotFoundError:
                    files = []
                for f in files:
                    shard = PurePosixPath(f.url).name.removesuffix(suffix)
                    if _SHARD_RE.match(shard):
                        found.setdefault(shard, {})[kind] = f
            # a subset with no shards here gives no task: completeness() names it if it was asked for
            for shard in sorted(found):
                files = found[shard]
                tasks.append(
                    ShardTask(
                        component=component,
                        stem=f"{subset}-{shard}",
                        split=f"{subset}/{shard}",
                        inputs=tuple(files[k] for k in ("text", "duration", "audio") if k in files),
                        revision=commit,
                        # which input is which; a missing text or audio file fails the shard in read()
                        params=tuple((k, files[k].url if k in files else None) for k in ("text", "duration", "audio")),
                    )
                )
        return tasks

    def completeness(self, tasks: list[ShardTask], full: bool) -> Completeness:
        """Every subset named in ``--subsets`` has shards; no shard lacks its captions or its audio; a full run has
        every subset the catalog lists for ``--lang`` (when none was named) with the catalog's shard count,
        unless the source is a declared sample."""
        catalog = load_catalog(CORPUS)["languages"].get(self.lang.lower(), {}).get("subsets", {})
        found: Counter[str] = Counter()
        missing = []
        for t in tasks:
            subset = t.split.partition("/")[0]
            absent = [k for k in ("text", "audio") if t.param(k) is None]
            if absent:  # half a shard: the listing or the mirror is incomplete
                missing.append(f"shard {t.split}: no {' or '.join(absent)} file")
            else:
                found[subset] += 1
        origin = catalog_scope(self.source, CORPUS, full, "the asked subsets only")
        if origin:
            asked, expected = list(self.subsets or []), {}
        else:
            asked, expected, origin = list(self.selected_subsets()), dict(catalog), "catalogs/yodas2.yaml"
        where = {s: f"no shards in {load_catalog(CORPUS)['path'].format(subset=s)}/" for s in asked}
        return Completeness(compare_counts("subset", found, asked, expected, where, origin) + missing, origin)

    def read(self, task: ShardTask) -> Iterator[RawUtterance | Reject]:
        text_url, duration_url, audio_url = task.param("text"), task.param("duration"), task.param("audio")
        if text_url is None or audio_url is None:
            missing = "text/*.json" if text_url is None else "audio/*.tar.gz"
            raise ShardError(f"{task.split}: no {missing} file for this shard (listing incomplete?)")
        videos = _read_json(text_url)
        durations = _read_durations(duration_url) if duration_url else {}
        if duration_url is None:
            log.warning("%s: no duration file; utterances carry no video_seconds", task.split)
        faults = (tarfile.TarError, EOFError, OSError, zlib.error)
        with sources.open_shard_source(audio_url, faults, "tar") as fileobj:
            yield from _read_tar(fileobj, videos, durations, self.max_wav_bytes)

    def row_params(self) -> dict:
        return {"max_wav_bytes": self.max_wav_bytes}  # larger videos are rejected

    def describe(self) -> dict:
        catalog = load_catalog(CORPUS)
        return {"recipe": self.name, "lang": self.lang, "subsets": list(self.selected_subsets()),
                "source": self.source or catalog["repo"], "licence": catalog["licence"]}


# --- the JSON and duration files ------------------------------------------------------------------------------


@dataclass
class _Caption:
    key: str
    text: object  # as the JSON gives it; the pipeline rejects non-strings and empty ones
    index: int = -1
    start_cs: int = -1
    end_cs: int = -1
    error: tuple[str, str] | None = None  # (reason, detail) when the key itself is unusable


@dataclass
class _Video:
    id: str
    captions: list[_Caption] = field(default_factory=list)


class _Pairs(list):
    """JSON object as its (key, value) pairs: a caption key written twice is two inputs, not one."""


def _read_json(url: str) -> dict[str, _Video]:
    try:
        with sources.open_binary(url) as f:
            raw = f.read()
        entries = json.loads(raw.decode("utf-8"), object_pairs_hook=_Pairs)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardError(f"cannot read {url}: {type(exc).__name__}: {exc}") from exc
    if type(entries) is not list:  # a _Pairs (a JSON object) is a list too
        raise ShardError(f"{url}: expected one JSON array of videos, got {type(entries).__name__}")
    videos: dict[str, _Video] = {}
    for n, entry in enumerate(entries):
        fields = dict(entry) if isinstance(entry, _Pairs) else {}
        vid, captions = fields.get("audio_id"), fields.get("text")
        if not isinstance(vid, str) or not vid or not isinstance(captions, _Pairs):
            raise ShardError(f"{url}: entry {n} is not {{'audio_id': str, 'text': {{key: caption}}}}")
        # a video listed twice: its captions are merged (a key given twice is then a duplicate_id reject)
        video = videos.setdefault(vid, _Video(vid))
        video.captions += [_parse_key(vid, key, text) for key, text in captions]
    return videos


def _parse_key(vid: str, key: str, text: object) -> _Caption:
    parts = key.rsplit("-", 3)
    cap = _Caption(key, text)
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts[1:]):
        cap.error = ("bad_key", f"expected <video id>-<index>-<start cs>-<end cs>, got {key!r}")
    elif parts[0] != vid:
        cap.error = ("bad_key", f"key names video {parts[0]!r} but is listed under {vid!r}")
    else:
        cap.index, cap.start_cs, cap.end_cs = (int(p) for p in parts[1:])
    return cap


def _read_durations(url: str) -> dict[str, float]:
    """``<video id> <seconds>`` per line. Only metadata: a bad line is logged and skipped."""
    try:
        with sources.open_binary(url) as f:
            lines = f.read().decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ShardError(f"cannot read {url}: {type(exc).__name__}: {exc}") from exc
    out: dict[str, float] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        try:
            out[parts[0]] = float(parts[1])
        except (IndexError, ValueError):
            log.warning("%s line %d: expected '<video id> <seconds>', got %r", url, n, line[:200])
    return out


# --- the tar ------------------------------------------------------------------------------------------------


def _read_tar(fileobj, videos: dict[str, _Video], durations: dict[str, float], max_wav_bytes: int = MAX_WAV_BYTES
              ) -> Iterator[RawUtterance | Reject]:
    done: set[str] = set()
    with CheckedTar(fileobj, gzipped=True) as tar:
        for member in tar:
            base = PurePosixPath(member.name).name
            vid, dot, ext = base.rpartition(".")
            if not member.isfile() or not dot or ext.lower() != "wav":
                yield Reject(member.name, "unexpected_member", "expected regular <video_id>.wav members")
                continue
            if vid in done:
                yield Reject(vid, "duplicate_video", "a second WAV of this video in the tar; the first was used")
                continue
            video = videos.get(vid)
            if video is None:
                # not read at all: the stream skips its data
                yield Reject(vid, "video_missing_from_json", f"{base} has no entry in the shard's JSON")
                continue
            done.add(vid)
            if member.size > max_wav_bytes:
                for cap in video.captions:
                    yield Reject(cap.key, "video_too_large", f"{base}: {member.size} bytes > limit {max_wav_bytes}")
                continue
            data = tar.read(member)
            yield from _video_utterances(video, data, durations.get(vid))
            del data  # before the next member is read: never two videos' audio at once
    for vid in sorted(set(videos) - done):
        for cap in videos[vid].captions:
            yield Reject(cap.key, "video_missing_from_tar", f"no {vid}.wav in the shard's tar")


def _video_utterances(video: _Video, wav: bytes, video_seconds: float | None) -> Iterator[RawUtterance | Reject]:
    """Every caption of one video, in index order: a slice of its WAV, or a reject."""
    captions = sorted(video.captions, key=lambda c: (c.index, c.start_cs, c.end_cs, c.key))
    try:
        snd = sf.SoundFile(io.BytesIO(wav))
    except (sf.LibsndfileError, RuntimeError, ValueError, EOFError) as exc:
        detail = f"{video.id}.wav: {decoder_error_detail(exc)}"
        for cap in captions:
            yield Reject(cap.key, cap.error[0] if cap.error else "undecodable_audio", cap.error[1] if cap.error else detail)
        return
    with snd:
        rate, frames = snd.samplerate, snd.frames
        audio_seconds = frames / rate if rate > 0 else 0.0
        for cap in captions:
            if cap.error:
                yield Reject(cap.key, *cap.error)
                continue
            reject = _check_times(cap, audio_seconds)
            if reject:
                yield reject
                continue
            start = round(cap.start_cs * rate / 100)
            end = min(frames, round(cap.end_cs * rate / 100))
            try:
                snd.seek(start)
                # float32, like decode_audio; a fresh array per utterance (see module docstring)
                samples = snd.read(end - start, dtype="float32")
            except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
                yield Reject(cap.key, "undecodable_audio", f"{video.id}.wav at {start}: {decoder_error_detail(exc)}")
                continue
            if len(samples) != end - start:
                yield Reject(cap.key, "undecodable_audio",
                             f"{video.id}.wav: read {len(samples)} of {end - start} frames at {start} (truncated?)")
                continue
            meta = {"start_cs": cap.start_cs, "end_cs": cap.end_cs}
            if video_seconds is not None:
                meta["video_seconds"] = video_seconds
            yield RawUtterance(
                id=cap.key, doc_id=video.id, order=(cap.index,), text=cap.text, audio=samples, sample_rate=rate,
                metadata=meta,
            )


def _check_times(cap: _Caption, audio_seconds: float) -> Reject | None:
    start, end = cap.start_cs / 100, cap.end_cs / 100
    if cap.start_cs == cap.end_cs:
        return Reject(cap.key, "empty_segment", f"start == end == {start:.2f} s")
    if cap.start_cs > cap.end_cs:
        return Reject(cap.key, "start_after_end", f"start {start:.2f} s > end {end:.2f} s")
    if start >= audio_seconds or end > audio_seconds + END_TOLERANCE_SECONDS:
        return Reject(cap.key, "caption_past_end", f"caption {start:.2f}-{end:.2f} s, audio is {audio_seconds:.3f} s")
    return None


def main(argv: list[str] | None = None) -> int:
    return cli_recipe.main(Yodas2Recipe, argv, prog="python -m sodadata.recipes.yodas2", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())

