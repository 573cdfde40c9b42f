"""Bad input catalogue: every kind of malformed input, per corpus, and what becomes of it.

For each corpus one source is built in the corpus's real layout with one source shard per malformed input (plus
good items in each), the recipe runs once over all of them, and every case is checked:

* the outcome is the expected one: the bad item rejected with its reason, or the good-but-unusual item written
  (resampled, downmixed), or - for a fault that spoils the whole source shard - that shard failed with a clear
  error while every other shard finished;
* never a crash of the run (``run_recipe`` returns; failures are per shard);
* never a silent loss: every item put into a shard that did not fail is written or rejected, the record balances,
  and ``sodadata validate`` finds nothing wrong with the output.

The tables go to RELIABILITY.md (tests/test_reliability_report.py). "A shard missing from the source" is a file that
was listed and then disappeared before its task read it; its CLI exit code and the rerun after it reappears are
checked in ``test_a_shard_missing_from_the_source_fails_alone_and_a_rerun_completes``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import zstandard
from fixtures import encode_audio, speechlike, write_tar
from fixtures_mls import SCHEMA as MLS_SCHEMA
from fixtures_mls import SR as MLS_SR
from fixtures_mls import corrupt_column, with_raw_strings
from fixtures_nemotron import BASE, KEPT, compress_frames, record_line, write_paths_file
from fixtures_yodas2 import Caption, Video, write_shard
from test_reliability_report import publish, table

from sodadata.encode.codec import CodecConfig
from sodadata.read.completeness import write_sample_marker
from sodadata.recipes.emilia import EmiliaRecipe
from sodadata.recipes.librispeech import LibriSpeechRecipe
from sodadata.recipes.mls import MLSRecipe
from sodadata.recipes.nemotron_cc import NemotronCCRecipe
from sodadata.recipes.yodas2 import Yodas2Recipe
from sodadata.run import cli_recipe
from sodadata.run.pipeline import PipelineConfig
from sodadata.run.runner import RunnerConfig, run_recipe
from sodadata.tools.validate import validate

CODEC = CodecConfig(codec="tiny-random", threads=1)
SERIAL = RunnerConfig(serial=True, progress=False, retries=0)
SR = 24_000


@dataclass
class Case:
    input: str  # the malformed input, as the table names it
    expect: str  # "reject <reason>", "written ..." or "shard fails"
    stem: str  # output shard of the case
    target: str | None = None  # the item whose fate the case is about
    items: list[str] = field(default_factory=list)  # every item id put into the shard
    error: str = ""  # for "shard fails": text the error must contain
    observed: str = ""
    detail: str = ""


def wav_bytes(wave: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def observe(cases: list[Case], out: Path, component: str, result, unit_ids: Callable[[dict], list[str]]) -> None:
    """Fill in each case's observed outcome from the run's failures, rejects and rows."""
    failed = {f.task.rsplit("/", 1)[-1]: f.error for f in result.failures}
    for case in cases:
        shard = out / component / f"{case.stem}.parquet"
        if case.stem in failed:
            assert not shard.exists(), f"{case.input}: a failed shard left {shard.name}"
            case.observed, case.detail = "shard fails", failed[case.stem]
            continue
        assert (out / component / f"{case.stem}.json").exists(), f"{case.input}: shard neither failed nor finished"
        rejects = {}
        for r in pq.read_table(out / component / "rejects" / f"{case.stem}.parquet").to_pylist():
            rejects.setdefault(r["id"], []).append((r["reason"], r["detail"]))
        written = [u for row in pq.read_table(shard).to_pylist() if row["format"] != "audio_first"
                   for u in unit_ids(row)]
        lost = [i for i in case.items if i not in rejects and i not in written]
        assert not lost, f"{case.input}: items neither written nor rejected: {lost}"
        record = json.loads((out / component / f"{case.stem}.json").read_text())
        assert record["read"] == record["written"] + record["rejected"], case.input
        if case.target in rejects:
            reason, detail = rejects[case.target][-1]
            case.observed = f"reject {reason}" + (" (first copy written)" if case.target in written else "")
            case.detail = detail
        elif case.target in written:
            case.observed, case.detail = "written", f"{written.count(case.target)} row(s)"
        else:
            case.observed = "LOST"


def check_and_publish(name: str, corpus: str, cases: list[Case], out: Path, extra_rows: list[list[str]],
                      src: Path) -> None:
    wrong = [f"{c.input}: expected {c.expect!r}, observed {c.observed!r} ({c.detail[:300]})" for c in cases
             if not c.observed.startswith(c.expect) or (c.expect == "shard fails" and c.error not in c.detail)]
    report = validate(out, stream=open(os.devnull, "w"))
    rows = [[c.input, c.observed, _short(c.detail.replace(str(src), "SRC"))] for c in cases] + extra_rows
    publish(name, f"**{corpus}** ({len(cases)} malformed inputs in one run; the run completed, other shards "
                  f"finished, validate: {report.violations} violations)\n\n"
            + table(["malformed input", "outcome", "detail (reason / error, shortened)"], rows))
    assert not wrong, "\n".join(wrong)
    assert report.violations == 0, dict(report.counts)


def _short(text: str, n: int = 160) -> str:
    text = " ".join("".join(ch for ch in text if ch.isprintable() or ch.isspace()).split())
    return text if len(text) <= n else text[: n - 1] + "…"


# --- Emilia ---------------------------------------------------------------------------------------------------


def build_emilia(root: Path) -> tuple[list[Case], Callable[[], None]]:
    write_sample_marker(root, "emilia")  # a corpus of test cases, not a mirror of the catalog's 1,140 tars
    folder = root / "Emilia" / "EN"
    good_audio = [encode_audio(speechlike(0.5, s)) for s in range(2)]
    cases: list[Case] = []

    def shard(label: str, expect: str, fault: Callable[[str], list[tuple[str, bytes]]], error: str = "",
              post: Callable[[Path], None] | None = None, suffix: str = "") -> None:
        n = len(cases)
        stem = f"EN-B{n:06d}"
        members, ids = [], []
        for w in range(2):
            key = f"EN_B{n:05d}_S00000_W{w:06d}"
            members += [(f"{key}.json", json.dumps({"text": f" good utterance {w}"}).encode()),
                        (f"{key}.mp3", good_audio[w])]
            ids.append(key)
        bad = f"EN_B{n:05d}_S00001_W000000"
        members += fault(bad)
        ids.append(bad + suffix)  # a reject names an unpaired member by its member name
        path = write_tar(folder / f"{stem}.tar", members)
        if post:
            post(path)
        cases.append(Case(label, expect, stem, target=bad + suffix, items=ids, error=error))

    def pair(text: object, audio: bytes, ext: str = "mp3", raw_json: bytes | None = None):
        def fault(key: str) -> list[tuple[str, bytes]]:
            meta = raw_json if raw_json is not None else json.dumps({"text": text, "speaker": "x"}).encode()
            return [(f"{key}.json", meta), (f"{key}.{ext}", audio)]
        return fault

    ok = good_audio[0]
    wave = speechlike(0.5, 9)
    nan = wave.copy()
    nan[100:110] = np.nan
    shard("corrupt MP3", "reject undecodable_audio", pair(" t", b"\xff\xfb\x90\x00" + bytes(range(256)) * 12))
    shard("corrupt WAV", "reject undecodable_audio", pair(" t", b"RIFF\x24\x00\x00\x00WAVEjunk" * 8, "wav"))
    shard("corrupt FLAC", "reject undecodable_audio", pair(" t", b"fLaC\x00\x00\x00\x22" + bytes(200), "flac"))
    shard("zero-length audio", "reject empty_audio", pair(" t", b""))
    shard("NaN samples (float WAV)", "reject nonfinite_audio", pair(" t", wav_bytes(nan, subtype="FLOAT"), "wav"))
    shard("wrong sample rate (16 kHz MP3)", "written", pair(" t", encode_audio(speechlike(0.5, 3, sr=16_000), 16_000)))
    shard("wrong sample rate (44.1 kHz WAV)", "written", pair(" t", wav_bytes(speechlike(0.5, 4, sr=44_100), 44_100),
                                                                "wav"))
    shard("stereo WAV", "written", pair(" t", wav_bytes(np.stack([wave, wave[::-1]], axis=1)), "wav"))
    shard("audio longer than --max-utterance-seconds", "reject too_long_audio", pair(" t", encode_audio(speechlike(6.5, 5))))
    shard("member larger than the 64 MB cap (scaled: 250 kB)", "reject member_too_large",
          pair(" t", wav_bytes(speechlike(6.0, 6)), "wav"))
    shard("non-UTF-8 JSON", "reject invalid_json", pair(None, ok, raw_json=b'{"text": " caf\xe9"}'))
    shard("malformed JSON", "reject invalid_json", pair(None, ok, raw_json=b'{"text": " cut'))
    shard("JSON not an object", "reject invalid_json", pair(None, ok, raw_json=b'["text"]'))
    shard("missing field (no text)", "reject missing_text", pair(None, ok, raw_json=b'{"speaker": "x"}'))
    shard("text not a string", "reject missing_text", pair(5, ok))
    shard("blank transcript", "reject empty_transcript", pair("   ", ok))
    shard("transcript with an audio-range character", "reject audio_range_character", pair(" a \U00011000 b", ok))
    shard("transcript with a marker string", "reject transcript_has_marker", pair(" a <|text_end|> b", ok))
    shard("transcript with fullwidth punctuation and a BOM (folded)", "written", pair(" \ufeff你好，世界！", ok))
    shard("transcript with U+FFFD", "reject audio_range_character", pair(" mojibake \ufffd here", ok))
    shard("lone surrogate escape in the transcript (\\ud800)", "reject invalid_unicode",
          pair(None, ok, raw_json=b'{"text": " a \\ud800 b"}'))
    shard("lone surrogate escape in a metadata field", "reject invalid_unicode",
          pair(None, ok, raw_json=b'{"text": " fine", "speaker": "\\udc80"}'))
    shard("duplicate id (a key's JSON twice)", "reject duplicate_id",
          lambda k: [(f"{k}.json", b'{"text": " one"}'), (f"{k}.json", b'{"text": " two"}'), (f"{k}.mp3", ok)])
    shard("audio without JSON", "reject missing_json", lambda k: [(f"{k}.mp3", ok)])
    shard("JSON without audio", "reject missing_audio", lambda k: [(f"{k}.json", b'{"text": " t"}')])
    shard("unexpected member (.txt)", "reject unexpected_member", lambda k: [(f"{k}.txt", b"hello")], suffix=".txt")

    def cut_mid_member(path: Path) -> None:
        with tarfile.open(path) as tar:
            m = tar.getmembers()[1]
        path.write_bytes(path.read_bytes()[: m.offset_data + m.size // 2])

    def cut_at_boundary(path: Path) -> None:
        with tarfile.open(path) as tar:
            last = tar.getmembers()[-2]
        path.write_bytes(path.read_bytes()[: last.offset_data + -(-last.size // 512) * 512])

    def corrupt_header(path: Path) -> None:
        with tarfile.open(path) as tar:
            m = tar.getmembers()[3]
        data = bytearray(path.read_bytes())
        data[m.offset : m.offset + 512] = b"\x7f" * 512
        path.write_bytes(bytes(data))

    shard("truncated tar (cut inside a member)", "shard fails", pair(" t", ok), error="ReadError", post=cut_mid_member)
    shard("truncated tar (cut at a member boundary)", "shard fails", pair(" t", ok), error="truncated tar",
          post=cut_at_boundary)
    shard("tar with a corrupt member header", "shard fails", pair(" t", ok), error="corrupt tar", post=corrupt_header)
    shard("not a tar at all", "shard fails", pair(" t", ok), error="ReadError",
          post=lambda p: p.write_bytes(b"this is not a tar file\n" * 200))
    missing = len(cases)
    shard("a shard missing from the source (listed, then gone)", "shard fails", pair(" t", ok),
          error="does not exist")

    def after_listing() -> None:
        (folder / f"{cases[missing].stem}.tar").unlink()

    return cases, after_listing


def test_emilia_bad_input_catalogue(tmp_path: Path):
    root, out = tmp_path / "src", tmp_path / "out"
    cases, after_listing = build_emilia(root)

    @dataclass(frozen=True)
    class Listed(EmiliaRecipe):
        def tasks(self):
            tasks = super().tasks()
            after_listing()
            return tasks

    recipe = Listed(source=str(root), subsets=("emilia",), max_member_bytes=250_000)
    result = run_recipe(recipe, PipelineConfig(out=str(out), codec=CODEC, max_utterance_seconds=6.0), SERIAL)
    observe(cases, out, "emilia/en", result, lambda row: [u["id"] for u in json.loads(row["metadata"])["utterances"]])
    check_and_publish("bad-input-emilia", "Emilia (plain tar of JSON + MP3)", cases, out,
                      [["truncated tar.gz", "n/a: Emilia shards are plain tars (see Yodas2)", ""],
                       ["zstd truncated mid-frame", "n/a: no zstd in Emilia (see Nemotron-CC)", ""]], root)


# --- Yodas2 ---------------------------------------------------------------------------------------------------


def build_yodas(root: Path) -> tuple[list[Case], Callable[[], None]]:
    cases: list[Case] = []

    def shard(label: str, expect: str, bad: Video | None, error: str = "", post: Callable[[Path], None] | None = None,
              target: str | None = None, extra: list[Video] = ()) -> None:
        n = len(cases)
        stem = f"{n:08d}"
        good = Video(f"good-{n:03d}_vd", 1.2, [Caption(0, 0, 60, "good zero"), Caption(1, 60, 120, "good one")])
        videos = [good, *([bad] if bad else []), *extra]
        write_shard(root, "en000", stem, videos, seed=n)
        ids = [c.key(v.id) for v in videos if v.in_json for c in v.captions]
        ids += [v.id for v in videos if not v.in_json]
        if target is None and bad is not None:
            target = bad.captions[0].key(bad.id) if bad.in_json else bad.id  # a WAV without JSON: one reject
        if post:
            post(root / "data" / "en000")
        cases.append(Case(label, expect, f"en000-{stem}", target=target, items=ids, error=error))

    def video(vid: str, caps: list[Caption] | None = None, **kw) -> Video:
        return Video(vid, 1.2, caps or [Caption(0, 0, 60, "bad zero"), Caption(1, 60, 120, "bad one")], **kw)

    wave = speechlike(1.2, 3)
    nan = wave.copy()
    nan[10:20] = np.nan
    shard("corrupt WAV", "reject undecodable_audio", video("corrupt_wav", wav=b"RIFF\x24\x00\x00\x00WAVEjunk" * 8))
    shard("zero-length WAV", "reject undecodable_audio", video("empty_wav_0", wav=b""))
    shard("NaN samples (float WAV)", "reject nonfinite_audio", video("nan_samples", wav=wav_bytes(nan, subtype="FLOAT")))
    shard("wrong sample rate (16 kHz WAV)", "written", video("sixteen_khz", rate=16_000))
    shard("stereo WAV", "written", video("stereo_wav0", wav=wav_bytes(np.stack([wave, wave], axis=1))))
    shard("WAV member over the 2 GiB cap (scaled: 120 kB)", "reject video_too_large",
          Video("too_large_v", 3.0, [Caption(0, 0, 100, "x")]))
    shard("caption null (missing text)", "reject empty_transcript", video("null_captn", [Caption(0, 0, 60, None)]))
    shard("caption with an audio-range character", "reject audio_range_character",
          video("audio_char0", [Caption(0, 0, 60, "a \ue001 b")]))
    shard("caption with a marker string", "reject transcript_has_marker",
          video("marker_capt", [Caption(0, 0, 60, "a <|audio_start|> b")]))
    shard("caption with fullwidth punctuation (folded)", "written",
          video("fullwidth_c", [Caption(0, 0, 60, "本当に？　はい！")]))
    shard("caption with a lone surrogate escape (\\ud800)", "reject invalid_unicode",
          video("surrogate_c", [Caption(0, 0, 60, "cut \ud83d emoji")]))
    dup = [Caption(0, 0, 60, "first"), Caption(0, 0, 60, "second copy", last=True)]
    shard("duplicate id (a caption key twice)", "reject duplicate_id", video("dup_key_vid", dup))
    shard("caption with start == end", "reject empty_segment", video("empty_seg_0", [Caption(0, 50, 50, "x")]))
    shard("caption past the end of the audio", "reject caption_past_end",
          video("past_end_vd", [Caption(0, 100, 300, "x")]))
    shard("malformed caption key", "reject bad_key",
          video("bad_key_vid", [Caption(0, 0, 60, "x", raw_key="bad_key_vid-zz-1-2")]))
    shard("video in the JSON, not in the tar", "reject video_missing_from_tar", video("not_in_tar0", in_tar=False))
    shard("video in the tar, not in the JSON", "reject video_missing_from_json", video("not_in_json", in_json=False))

    def cut_gz(folder: Path) -> None:
        p = folder / "audio" / f"{len(cases):08d}.tar.gz"
        p.write_bytes(p.read_bytes()[: p.stat().st_size * 2 // 3])

    def tar_cut_in_valid_gzip(folder: Path) -> None:
        p = folder / "audio" / f"{len(cases):08d}.tar.gz"
        raw = gzip.decompress(p.read_bytes())
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            first = tar.getmembers()[0]
        p.write_bytes(gzip.compress(raw[: first.offset_data + -(-first.size // 512) * 512]))

    def not_gzip(folder: Path) -> None:
        (folder / "audio" / f"{len(cases):08d}.tar.gz").write_bytes(b"this is not gzip\n" * 100)

    def latin1_json(folder: Path) -> None:
        p = folder / "text" / f"{len(cases):08d}.json"
        p.write_bytes(p.read_text(encoding="utf-8").replace("bad zero", "caf\xe9").encode("latin-1"))

    def entry_without_id(folder: Path) -> None:
        p = folder / "text" / f"{len(cases):08d}.json"
        p.write_text(p.read_text().replace('"audio_id": "no_audio_id"', '"id": "no_audio_id"'))

    shard("truncated tar.gz (gzip stream cut)", "shard fails", video("cut_gzip_00"), error="EOFError", post=cut_gz)
    shard("tar cut at a member boundary inside a complete gzip", "shard fails", video("cut_tar_000"),
          error="truncated tar", post=tar_cut_in_valid_gzip)
    shard("not gzip at all", "shard fails", video("not_gzip_00"), error="BadGzipFile", post=not_gzip)
    shard("non-UTF-8 JSON", "shard fails", video("latin1_json"), error="UnicodeDecodeError", post=latin1_json)
    shard("JSON entry missing a field (audio_id)", "shard fails", video("no_audio_id"), error="entry 1 is not",
          post=entry_without_id)
    missing = len(cases)
    shard("a shard missing from the source (tar listed, then gone)", "shard fails", video("gone_tar_00"),
          error="does not exist")

    def after_listing() -> None:
        (root / "data" / "en000" / "audio" / f"{missing:08d}.tar.gz").unlink()

    return cases, after_listing


def test_yodas2_bad_input_catalogue(tmp_path: Path):
    root, out = tmp_path / "src", tmp_path / "out"
    cases, after_listing = build_yodas(root)

    @dataclass(frozen=True)
    class Listed(Yodas2Recipe):
        def tasks(self):
            tasks = super().tasks()
            after_listing()
            return tasks

    recipe = Listed(source=str(root), subsets=("en000",), max_wav_bytes=120_000)
    result = run_recipe(recipe, PipelineConfig(out=str(out), codec=CODEC), SERIAL)
    observe(cases, out, "yodas2/en", result, lambda row: [u["id"] for u in json.loads(row["metadata"])["utterances"]])
    check_and_publish("bad-input-yodas2", "Yodas2 (tar.gz of WAVs + JSON + durations)", cases, out,
                      [["corrupt MP3 / FLAC", "n/a: Yodas2 audio is WAV (Emilia covers MP3 and FLAC)", ""],
                       ["zstd truncated mid-frame", "n/a: no zstd in Yodas2 (see Nemotron-CC)", ""]], root)


# --- Nemotron-CC ----------------------------------------------------------------------------------------------


def build_nemotron(root: Path) -> tuple[list[Case], Callable[[], None]]:
    write_sample_marker(root, "nemotron-cc")  # a corpus of test cases, not a mirror of the catalog's 2,755 files
    cases: list[Case] = []
    listed: list[str] = []
    folder = root / BASE / "data-jsonl" / KEPT

    def shard(label: str, expect: str, bad_line: bytes | None, target: str | None = None, error: str = "",
              blob: Callable[[bytes], bytes] | None = None) -> None:
        n = len(cases)
        stem = f"CC-MAIN-2024-10-part-{n:05d}"
        good = [{"warc_record_id": f"<urn:uuid:good-{n}-{i}>", "url": "https://example.org/", "text": f"good {i}"}
                for i in range(2)]
        lines = [record_line(g) for g in good] + ([bad_line] if bad_line is not None else [])
        data = b"\n".join(lines) + b"\n"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.jsonl.zstd").write_bytes(blob(data) if blob else compress_frames(data, []))
        listed.append(f"{BASE}/data-jsonl/{KEPT}/{stem}.jsonl.zstd")
        items = [g["warc_record_id"] for g in good] + ([target] if target else [])
        cases.append(Case(label, expect, stem, target=target, items=items, error=error))

    def rec(rid: str, **kw) -> bytes:
        return record_line({"warc_record_id": rid, "url": "https://example.org/x", "text": "fine text", **kw})

    shard("non-UTF-8 line", "reject invalid_json", rec("<urn:uuid:latin1>")[:-2] + b' caf\xe9"}', "<urn:uuid:latin1>")
    shard("malformed JSON line", "reject invalid_json", rec("<urn:uuid:cut>")[:40], "<urn:uuid:cut>")
    shard("missing field (warc_record_id)", "reject missing_id", record_line({"text": "no id"}),
          "CC-MAIN-2024-10-part-00002:3")
    shard("missing field (text)", "reject missing_text", record_line({"warc_record_id": "<urn:uuid:notext>"}),
          "<urn:uuid:notext>")
    shard("duplicate id", "reject duplicate_id", rec("<urn:uuid:good-4-0>"), "<urn:uuid:good-4-0>")
    shard("text with an audio-range character", "reject audio_range_character", rec("<urn:uuid:pua>", text="x \ue000 y"),
          "<urn:uuid:pua>")
    shard("text with a marker string", "reject text_has_marker", rec("<urn:uuid:mark>", text="a <|begin_of_text|>"),
          "<urn:uuid:mark>")
    shard("empty text", "reject empty_text", rec("<urn:uuid:empty>", text=""), "<urn:uuid:empty>")
    shard("lone surrogate escape", "reject invalid_unicode", rec("<urn:uuid:surr>").replace(b"fine", b"\\ud800"),
          "<urn:uuid:surr>")
    shard("blank line", "reject blank_line", b"   ", "CC-MAIN-2024-10-part-00009:3")
    shard("lone surrogate escape in a metadata field", "reject invalid_unicode",
          rec("<urn:uuid:msurr>").replace(b"example.org", b"\\udc9f"), "<urn:uuid:msurr>")
    shard("text with ligatures and a BOM (folded)", "written", rec("<urn:uuid:lig>", text="\ufeffﬁne ﬂow"),
          "<urn:uuid:lig>")
    bomb_bytes = 64 * 1024 * 1024

    def bomb(data: bytes) -> bytes:
        # a 64 MiB line of zeros in ~2 kB: stopped by --max-line-bytes while it streams past
        c = zstandard.ZstdCompressor(level=3)
        return compress_frames(data, []) + c.compress(b'{"warc_record_id": "<urn:uuid:bomb>", "text": "'
                                                      + b"0" * bomb_bytes + b'"}\n')

    shard("zstd bomb: one line of 64 MiB (in a 3 kB frame)", "reject line_too_long", None, "<urn:uuid:bomb>", blob=bomb)

    def cut_mid_frame(data: bytes) -> bytes:
        blob = compress_frames(data, [])
        return blob[: len(blob) - 5]

    shard("zstd truncated mid-frame", "shard fails", rec("<urn:uuid:t1>"), error="truncated", blob=cut_mid_frame)
    shard("not zstd at all", "shard fails", rec("<urn:uuid:t2>"), error="not valid zstd",
          blob=lambda d: b"plain text, not zstd " * 10)
    cut_between = len(cases)
    shard("file cut between two frames after listing", "shard fails", rec("<urn:uuid:t3>"), error="cut short",
          blob=lambda d: compress_frames(d, [len(d) // 2]))
    missing = len(cases)
    shard("a shard missing from the source (listed, then gone)", "shard fails", rec("<urn:uuid:t4>"),
          error="does not exist")
    write_paths_file(root, listed)

    def after_listing() -> None:
        (folder / f"{cases[missing].stem}.jsonl.zstd").unlink()
        p = folder / f"{cases[cut_between].stem}.jsonl.zstd"
        blob = p.read_bytes()
        dobj = zstandard.ZstdDecompressor().decompressobj()
        dobj.decompress(blob)
        p.write_bytes(blob[: len(blob) - len(dobj.unused_data)])  # the first frame only

    return cases, after_listing


def test_nemotron_cc_bad_input_catalogue(tmp_path: Path):
    root, out = tmp_path / "src", tmp_path / "out"
    cases, after_listing = build_nemotron(root)

    @dataclass(frozen=True)
    class Listed(NemotronCCRecipe):
        def tasks(self):
            tasks = super().tasks()
            after_listing()
            return tasks

    recipe = Listed(source=str(root), max_line_bytes=1024 * 1024)
    result = run_recipe(recipe, PipelineConfig(out=str(out)), SERIAL)
    observe(cases, out, "nemotron-cc/hq-actual", result, lambda row: [row["id"]])
    na = "n/a: text only"
    check_and_publish("bad-input-nemotron-cc", "Nemotron-CC (JSONL in zstd frames)", cases, out,
                      [[x, na, ""] for x in ("corrupt MP3/WAV/FLAC", "zero-length audio, NaN samples",
                                             "wrong sample rate, stereo", "truncated tar / tar.gz")], root)


# --- MLS ------------------------------------------------------------------------------------------------------


def test_mls_bad_input_catalogue(tmp_path: Path):
    """One Parquet file per case (a good recording of two segments plus the bad row); tasks of one document each."""
    root, out = tmp_path / "src", tmp_path / "out"
    data = root / "data"
    data.mkdir(parents=True)
    write_sample_marker(root, "mls")  # a corpus of test cases, not a mirror of the catalog's 1,416 files
    flac = [encode_audio(speechlike(1.0, 50 + i, sr=MLS_SR), MLS_SR, "FLAC") for i in range(2)]
    wave = speechlike(1.0, 60, sr=MLS_SR)
    nan = wave.copy()
    nan[5:9] = np.nan
    specs: list[tuple[str, str, dict, str]] = []  # (label, expected, bad row overrides, error)

    def case(label: str, expect: str, error: str = "", **bad) -> None:
        specs.append((label, expect, bad, error))

    case("corrupt FLAC", "reject undecodable_audio", audio=b"fLaC" + bytes(300))
    case("zero-length audio", "reject empty_audio", audio=b"")
    case("NaN samples (float WAV bytes)", "reject nonfinite_audio", audio=wav_bytes(nan, MLS_SR, "FLOAT"))
    case("wrong sample rate (44.1 kHz FLAC)", "written",
         audio=encode_audio(speechlike(1.0, 61, sr=44_100), 44_100, "FLAC"))
    case("stereo FLAC", "written", audio=encode_audio(np.stack([wave, wave], 1), MLS_SR, "FLAC"))
    case("missing field (original_path null)", "reject missing_metadata", original_path=None)
    case("missing field (begin_time null)", "reject missing_metadata", begin_time=None)
    case("missing field (transcript null)", "reject empty_transcript", transcript=None)
    case("transcript with an audio-range character", "reject audio_range_character", transcript="a  b")
    case("transcript with a marker string", "reject transcript_has_marker", transcript="a <|text_start|> b")
    case("transcript with a ligature (folded)", "written", transcript="the ﬁrst chapter")
    case("transcript not UTF-8 (a surrogate's bytes)", "reject invalid_unicode", transcript_bytes=b"a \xed\xa0\x80 b")
    case("duplicate id (a row twice)", "reject duplicate_id", duplicate=True)
    case("segment with begin == end", "reject empty_segment", end_time=20.0)
    case("segment with begin > end", "reject start_after_end", end_time=19.0)
    case("audio column corrupt (pages overwritten)", "shard fails", "cannot read", corrupt=True)
    case("file cut short after listing", "shard fails", "cannot read", truncate=True)
    case("a shard missing from the source (listed, then gone)", "shard fails", "does not exist", missing=True)

    cases: list[Case] = []
    files: dict[str, Path] = {}
    for n, (label, expect, bad, error) in enumerate(specs):
        spk, book, path = f"{n + 1}", "77", f"http://www.archive.org/download/case_{n}/part.mp3"
        rows = [{"audio": {"bytes": flac[i], "path": "x.flac"}, "original_path": path, "begin_time": 10.0 + 1.1 * i,
                 "end_time": 11.0 + 1.1 * i, "transcript": f"good {i}", "audio_duration": 1.0, "speaker_id": spk,
                 "book_id": book} for i in range(2)]
        row = {**rows[0], "original_path": f"{path}#bad", "begin_time": 20.0, "end_time": 21.0, "transcript": "bad",
               "audio": {"bytes": flac[0], "path": "x.flac"}}
        for key in ("original_path", "begin_time", "end_time", "transcript"):
            if key in bad:
                row[key] = bad[key]
        if "audio" in bad:
            row["audio"] = {"bytes": bad["audio"], "path": "x"}
        # The bad row first: a row rejected by the metadata pass joins the task of the document after it, which is
        # then this file's own, so each case's tasks read only its file.
        rows = [row, *([dict(row)] if bad.get("duplicate") else []), *rows]
        name = f"train-{n:05d}-of-{len(specs):05d}.parquet"
        table = pa.Table.from_pylist(rows, schema=MLS_SCHEMA)
        if "transcript_bytes" in bad:  # bytes Arrow would refuse from Python: a writer that did not validate
            table = with_raw_strings(table, "transcript", {0: bad["transcript_bytes"]})
        pq.write_table(table, data / name, row_group_size=2)
        if bad.get("corrupt"):
            corrupt_column(data / name, "audio")
        files[label] = data / name
        begin, end = row["begin_time"], row["end_time"]
        target = (f"{spk}-{book}-{round(begin * 100):08d}-{round(end * 100):08d}" if begin is not None
                  else f"{name}#row0")
        goods = [f"{spk}-{book}-{round(r['begin_time'] * 100):08d}-{round(r['end_time'] * 100):08d}" for r in rows[-2:]]
        cases.append(Case(label, expect, "", target=target, items=[*goods, target], error=error))
    stems_of: dict[str, list[str]] = {}

    @dataclass(frozen=True)
    class Listed(MLSRecipe):
        def tasks(self):
            tasks = super().tasks()
            for label, (_, _, bad, _) in zip(files, specs, strict=True):
                stems_of[label] = [t.stem for t in tasks if any(f.url == str(files[label]) for f in t.inputs)]
                if bad.get("missing"):
                    files[label].unlink()
                if bad.get("truncate"):
                    files[label].write_bytes(files[label].read_bytes()[:-200])
            return tasks

    result = run_recipe(Listed(source=str(root), shard_hours=1e-6), PipelineConfig(out=str(out), codec=CODEC), SERIAL)
    failed = {f.task.rsplit("/", 1)[-1]: f.error for f in result.failures}
    written: dict[str, str] = {}
    rejected: dict[str, list[tuple[str, str]]] = {}
    for shard in (out / "mls/en").glob("*.parquet"):
        for row in pq.read_table(shard).to_pylist():
            if row["format"] == "text_first":
                for u in json.loads(row["metadata"])["utterances"]:
                    written[u["id"]] = shard.stem
    for shard in (out / "mls/en/rejects").glob("*.parquet"):
        for r in pq.read_table(shard).to_pylist():
            rejected.setdefault(r["id"], []).append((r["reason"], r["detail"]))
    for c in cases:
        mine = stems_of[c.input]
        bad_failed = [s for s in mine if s in failed]
        if bad_failed:
            c.observed, c.detail = "shard fails", failed[bad_failed[0]]
            continue
        lost = [i for i in c.items if i not in written and i not in rejected]
        assert not lost, f"{c.input}: items neither written nor rejected: {lost}"
        if c.target in rejected:
            c.observed = f"reject {rejected[c.target][-1][0]}" + (" (first copy written)" if c.target in written else "")
            c.detail = rejected[c.target][-1][1]
        elif c.target in written:
            c.observed, c.detail = "written", "1 document row pair"
        else:
            c.observed = "LOST"
    # A file that cannot be read when the tasks are planned (the metadata pass reads every file first).
    early = tmp_path / "early"
    shutil.copytree(root / "data", early / "data", ignore=shutil.ignore_patterns(
        *(files[c.input].name for c in cases if c.expect == "shard fails")))
    broken = early / "data" / sorted(p.name for p in (early / "data").iterdir())[0]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    with pytest.raises(RuntimeError, match="cannot read the metadata columns") as info:
        run_recipe(MLSRecipe(source=str(early), shard_hours=1e-6), PipelineConfig(out=str(tmp_path / "o2"),
                                                                                 codec=CODEC), SERIAL)
    check_and_publish("bad-input-mls", "MLS English (Parquet with FLAC bytes)", cases, out,
                      [["truncated file before the run (the metadata pass reads every file)",
                        "the run stops before any task: one error line (exit 2)",
                        _short(str(info.value).replace(str(early), "SRC"))],
                       ["non-UTF-8 transcript", "n/a: Parquet string columns are UTF-8 by type", ""],
                       ["truncated tar / tar.gz, zstd", "n/a: MLS files are Parquet", ""]], root)


# --- the CLI when a listed shard is gone ----------------------------------------------------------------------


def test_a_shard_missing_from_the_source_fails_alone_and_a_rerun_completes(tmp_path: Path, capsys):
    """Listed, then gone: exit 1 with one line naming it, the other shards finish; back again: the rerun completes."""
    root, out = tmp_path / "src", tmp_path / "out"
    write_sample_marker(root, "emilia")
    good = encode_audio(speechlike(0.5, 1))
    for n in range(3):
        key = f"EN_B{n:05d}_S00000_W000000"
        write_tar(root / "Emilia" / "EN" / f"EN-B{n:06d}.tar", [(f"{key}.json", b'{"text": " hi"}'),
                                                                (f"{key}.mp3", good)])
    gone = root / "Emilia" / "EN" / "EN-B000001.tar"
    kept = tmp_path / "kept.tar"
    runs = []

    @dataclass(frozen=True)
    class Listed(EmiliaRecipe):
        def tasks(self):
            tasks = super().tasks()
            if not runs:  # the first run only: the file goes away between listing and reading
                shutil.move(gone, kept)
            runs.append(1)
            return tasks

    argv = ["--source", str(root), "--subset", "emilia", "--out", str(out), "--codec", "tiny-random",
            "--torch-threads", "1", "--serial", "--no-progress", "--retries", "1"]
    assert cli_recipe.main(Listed, argv, prog="emilia", description="") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: 1 of 3 shards failed: emilia/en/EN-B000001: ShardError: cannot read tar "), err[-1]
    assert "does not exist" in err[-1] and "rerun the same command" in err[-1]
    assert sorted(p.name for p in (out / "emilia/en").glob("*.json")) == ["EN-B000000.json", "EN-B000002.json"]
    shutil.move(kept, gone)
    assert cli_recipe.main(Listed, argv, prog="emilia", description="") == 0
    assert "3 in this run, 2 already finished, 1 done now, 0 failed" in capsys.readouterr().out
    assert validate(out, stream=open(os.devnull, "w")).violations == 0


# --- LibriSpeech ----------------------------------------------------------------------------------------------


def test_librispeech_bad_input_catalogue(tmp_path: Path):
    """The extracted layout, one speaker (= one task) per case: a chapter of two good utterances plus the bad item."""
    root, out = tmp_path / "src", tmp_path / "out"
    split_dir = root / "LibriSpeech" / "dev-clean"
    write_sample_marker(root, "librispeech")  # a corpus of test cases, not a mirror of dev-clean's 40 speakers
    sr = 16_000
    good = [encode_audio(speechlike(0.5, 70 + i, sr=sr), sr, "FLAC") for i in range(2)]
    wave = speechlike(0.5, 80, sr=sr)
    nan = wave.copy()
    nan[5:9] = np.nan
    cases: list[Case] = []
    gone: list[Path] = []

    def case(label: str, expect: str, flac: bytes | None = None, line: str | None = "BAD ITEM",
             extra: tuple[str, bytes] | None = None, lines: list[str] | None = None, trans: bool = True,
             error: str = "", target: str | None = None, remove_after_listing: bool = False) -> None:
        speaker = str(100 + len(cases))
        doc = f"{speaker}-7"
        folder = split_dir / speaker / "7"
        folder.mkdir(parents=True)
        bad = f"{doc}-0002"
        text = [f"{doc}-{k:04d} GOOD UTTERANCE {k}" for k in range(2)]
        if line is not None:
            text.append(f"{bad} {line}" if line else bad)
        text += [extra_line.format(doc=doc) for extra_line in lines or []]
        for k in range(2):
            (folder / f"{doc}-{k:04d}.flac").write_bytes(good[k])
        if flac is not None:
            (folder / f"{bad}.flac").write_bytes(flac)
            if remove_after_listing:
                gone.append(folder / f"{bad}.flac")
        if extra is not None:
            (folder / extra[0]).write_bytes(extra[1])
        if trans:
            (folder / f"{doc}.trans.txt").write_bytes("\n".join(text).encode("utf-8", "surrogateescape") + b"\n")
        target = (target or bad).format(doc=doc, speaker=speaker)
        cases.append(Case(label, expect, speaker, target=target,
                          items=[f"{doc}-0000", f"{doc}-0001", target], error=error))

    ok = good[0]
    case("corrupt FLAC", "reject undecodable_audio", b"fLaC\x00\x00\x00\x22" + bytes(200))
    case("zero-length FLAC", "reject empty_audio", b"")
    case("NaN samples (float WAV bytes in a .flac)", "reject nonfinite_audio", wav_bytes(nan, sr, "FLOAT"))
    case("wrong sample rate (44.1 kHz FLAC)", "written", encode_audio(speechlike(0.5, 81, sr=44_100), 44_100, "FLAC"))
    case("stereo FLAC", "written", encode_audio(np.stack([wave, wave[::-1]], 1), sr, "FLAC"))
    case("FLAC larger than the 64 MB cap (scaled: 40 kB)", "reject file_too_large",
         encode_audio(speechlike(3.0, 82, sr=sr), sr, "FLAC"))
    case("a transcript line without its FLAC", "reject missing_flac", None)
    case("a FLAC without its transcript line", "reject missing_transcript", ok, line=None)
    case("a chapter without its .trans.txt", "reject missing_transcript", ok, trans=False)
    case("transcript line not UTF-8 (a surrogate's bytes)", "reject invalid_unicode", ok, line="A \udced\udca0\udc80 B")
    case("transcript line of another chapter's id", "reject bad_transcript_line", ok,
         lines=["1-2-0003 NOT THIS CHAPTER"], target="{doc}.trans.txt:4")
    case("duplicate id (a line twice)", "reject duplicate_id", ok, lines=["{doc}-0002 AGAIN"])
    case("blank transcript (an id alone)", "reject empty_transcript", ok, line="")
    case("transcript with an audio-range character", "reject audio_range_character", ok, line="A \U00011000 B")
    case("transcript with a marker string", "reject transcript_has_marker", ok, line="A <|audio_start|> B")
    case("unexpected file in a chapter folder", "reject unexpected_file", None, line=None,
         extra=("notes.txt", b"hello"), target="{speaker}/7/notes.txt")
    case("a FLAC missing from the source (listed, then gone)", "shard fails", ok, error="does not exist",
         remove_after_listing=True)

    @dataclass(frozen=True)
    class Listed(LibriSpeechRecipe):
        def tasks(self):
            tasks = super().tasks()
            for path in gone:
                path.unlink()
            return tasks

    recipe = Listed(split="dev-clean", source=str(root), max_file_bytes=40_000)
    result = run_recipe(recipe, PipelineConfig(out=str(out), codec=CODEC), SERIAL)
    observe(cases, out, "librispeech/dev-clean", result, lambda row: [u["id"] for u in json.loads(row["metadata"])["utterances"]])
    check_and_publish("bad-input-librispeech", "LibriSpeech (an extracted split: FLACs and .trans.txt per chapter)",
                      cases, out, [["truncated or corrupt .tar.gz (the streamed source)", "shard fails",
                                    "tests/test_librispeech.py::test_a_cut_archive_fails_its_task"]], root)
