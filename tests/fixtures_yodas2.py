"""Yodas2 shards in the real layout (SPEC.md §5) with the real faults, for tests/test_yodas2.py and bench/memory.py.

    <root>/data/<subset>/audio/NNNNNNNN.tar.gz   members "<video_id>.wav"
    <root>/data/<subset>/text/NNNNNNNN.json      one JSON array of {"audio_id", "text": {key: caption}}
    <root>/data/<subset>/duration/NNNNNNNN.txt   "<video_id> <seconds>" lines

The JSON is written by hand (not ``json.dumps`` of a dict) so that key order is shuffled and a key can repeat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from fixtures import encode_audio, speechlike, write_tar

from sodadata.document import AUDIO_END, AUDIO_START, TEXT_END, TEXT_START


@dataclass
class Caption:
    index: int
    start_cs: int
    end_cs: int
    text: str
    vid: str = ""  # the video the key names; "" = the video it is listed under
    raw_key: str | None = None  # a malformed key, used as is
    last: bool = False  # written after the shuffled others (a repeated key: the first one is the one kept)

    def key(self, vid: str) -> str:
        return self.raw_key or f"{self.vid or vid}-{self.index:05d}-{self.start_cs:08d}-{self.end_cs:08d}"


@dataclass
class Video:
    id: str
    seconds: float
    captions: list[Caption]
    rate: int = 24_000
    in_json: bool = True
    in_tar: bool = True
    wav: bytes | None = None  # None: generated speech-like PCM_16 WAV; else these bytes (a corrupt WAV)


@dataclass
class Yodas2Expected:
    """What the recipe must make of a fixture."""

    documents: dict[str, list[str]] = field(default_factory=dict)  # video id -> written keys, in index order
    transcripts: dict[str, str] = field(default_factory=dict)  # key -> caption as written (stripped)
    rejects: dict[str, str] = field(default_factory=dict)  # id -> reason
    read: dict[str, int] = field(default_factory=dict)  # stem -> items the shard yields (written + rejected)
    splits: dict[str, str] = field(default_factory=dict)  # video id -> split of its rows
    stems: list[str] = field(default_factory=list)


def write_shard(root: Path, subset: str, shard: str, videos: list[Video], seed: int = 0, duration_file: bool = True,
                json_order: list[str] | None = None) -> None:
    """One Yodas2 shard: tar.gz of the WAVs (tar order = list order), the JSON (shuffled keys), the durations."""
    rng = np.random.default_rng(seed)
    base = root / "data" / subset
    members = []
    for n, v in enumerate(videos):
        if not v.in_tar:
            continue
        data = v.wav if v.wav is not None else encode_audio(speechlike(v.seconds, seed * 100 + n, sr=v.rate), v.rate, "WAV")
        members.append((f"{v.id}.wav", data))
    write_tar(base / "audio" / f"{shard}.tar.gz", members, mode="w:gz")
    entries = []
    by_id = {v.id: v for v in videos}
    for vid in json_order or [v.id for v in videos]:
        v = by_id[vid]
        if not v.in_json:
            continue
        pairs = [(c.key(v.id), c.text) for c in v.captions]
        # key order is not guaranteed in the real files
        order = [i for i in rng.permutation(len(pairs)) if not v.captions[i].last]
        order += [i for i, c in enumerate(v.captions) if c.last]
        body = ", ".join(f"{json.dumps(pairs[i][0])}: {json.dumps(pairs[i][1])}" for i in order)
        entries.append(f'{{"audio_id": {json.dumps(v.id)}, "text": {{{body}}}}}')
    (base / "text").mkdir(parents=True, exist_ok=True)
    (base / "text" / f"{shard}.json").write_text("[" + ", ".join(entries) + "]", encoding="utf-8")
    if duration_file:
        (base / "duration").mkdir(parents=True, exist_ok=True)
        lines = [f"{v.id} {v.seconds:.3f}" for v in videos if v.in_json]
        (base / "duration" / f"{shard}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_yodas2_source(root: Path, seed: int = 0) -> Yodas2Expected:
    """Three shards (en000/00000000 with every known fault, en000/00000001 without a duration file, en100/00000000)."""
    exp = Yodas2Expected()

    def ok(vid: str, caps: list[Caption], split: str) -> None:
        exp.splits[vid] = split
        for c in sorted(caps, key=lambda c: c.index):
            exp.documents.setdefault(vid, []).append(c.key(vid))
            exp.transcripts[c.key(vid)] = c.text.strip()

    # Video ids as YouTube has them: 11 characters of [A-Za-z0-9_-], may start with '-'.
    v1, v2, v3, v4, v5 = "-aB3_x-9Zq_", "Qw_e-R-t_y1", "missing-V_1", "bad-wav_0-X", "orphan_-Vid"
    good1 = [Caption(0, 0, 150, " first caption of v1"), Caption(1, 150, 320, "second caption"),
             Caption(2, 300, 460, "overlaps the second"), Caption(3, 470, 700, "fourth"),
             # ends 0.5 cs past the 8.005 s audio: centisecond rounding, clipped and kept
             Caption(7, 700, 801, "ends at the very end")]
    bad1 = [
        (Caption(4, 500, 500, "start equals end"), "empty_segment"),
        (Caption(5, 760, 900, "runs past the end"), "caption_past_end"),
        (Caption(6, 650, 600, "starts after it ends"), "start_after_end"),
        (Caption(8, 810, 850, "starts past the end"), "caption_past_end"),
        (Caption(9, 0, 10, "not a number", raw_key=f"{v1}-0000x-00000000-00000010"), "bad_key"),
        (Caption(10, 0, 10, "names another video", vid="someone_els"), "bad_key"),
    ]
    good2 = [Caption(0, 20, 210, "sixteen kilohertz wav"), Caption(1, 210, 480, "is resampled")]
    dup2 = Caption(1, 210, 480, "the same key again", last=True)  # json.loads would silently keep only one of the two
    shard0 = [
        Video(v2, 5.0, [*good2, dup2], rate=16_000),  # a broken shard: not 24 kHz
        Video(v1, 8.005, [*good1, *(c for c, _ in bad1)]),
        Video(v3, 3.0, [Caption(0, 0, 100, "a"), Caption(1, 100, 200, "b")], in_tar=False),
        Video(v4, 2.0, [Caption(0, 0, 100, "c"), Caption(1, 100, 150, "d")], wav=b"RIFF\x24\x00\x00\x00WAVEjunk" * 8),
        Video(v5, 2.0, [], in_json=False),
    ]
    write_shard(root, "en000", "00000000", shard0, seed=seed, json_order=[v1, v3, v4, v2])
    ok(v2, good2, "en000/00000000")
    ok(v1, good1, "en000/00000000")
    exp.rejects.update({c.key(v1): r for c, r in bad1})
    exp.rejects[dup2.key(v2)] = "duplicate_id"
    exp.rejects.update({c.key(v3): "video_missing_from_tar" for c in shard0[2].captions})
    exp.rejects.update({c.key(v4): "undecodable_audio" for c in shard0[3].captions})
    exp.rejects[v5] = "video_missing_from_json"
    exp.read["en000-00000000"] = len(good1) + len(bad1) + 3 + 2 + 2 + 1

    v6, v7 = "z_Z-z_Z-z_Z", "0123456789-"
    caps6 = [Caption(1, 100, 250, "second"), Caption(0, 0, 100, "first")]
    write_shard(root, "en000", "00000001", [Video(v6, 3.0, caps6)], seed=seed + 1, duration_file=False)
    ok(v6, caps6, "en000/00000001")
    exp.read["en000-00000001"] = 2
    caps7 = [Caption(0, 10, 190, "another subset")]
    write_shard(root, "en100", "00000000", [Video(v7, 2.0, caps7)], seed=seed + 2)
    ok(v7, caps7, "en100/00000000")
    exp.read["en100-00000000"] = 1
    exp.stems = ["en000-00000000", "en000-00000001", "en100-00000000"]
    return exp


def make_uniform_shard(root: Path, n_videos: int, video_seconds: float, caption_seconds: float, seed: int = 0,
                       subset: str = "en000", shard: str = "00000000") -> int:
    """A clean shard of ``n_videos`` videos of the same length, each cut into consecutive captions.

    Returns the number of captions. Used to show that a task's memory does not grow with the number of videos.
    """
    per_video = int(video_seconds // caption_seconds)
    step = round(caption_seconds * 100)
    videos = [
        Video(f"vid-{n:03d}_abcd", video_seconds,
              [Caption(i, i * step, (i + 1) * step, f"caption {i} of video {n}") for i in range(per_video)])
        for n in range(n_videos)
    ]
    write_shard(root, subset, shard, videos, seed=seed)
    return per_video * n_videos


# --- reading what a recipe wrote (used by test_yodas2 and test_mls) ---------------------------------------------


def read_rows(out: Path) -> dict[str, dict]:
    rows = {}
    for p in sorted(out.glob("*/*/*.parquet")):
        for r in pq.read_table(p).to_pylist():
            assert r["id"] not in rows
            rows[r["id"]] = r
    return rows


def parse_text_first(text: str) -> list[tuple[str, str]]:
    """[(transcript, audio span)] of a text-first row."""
    body = text.removeprefix("<|begin_of_text|>").removesuffix("<|end_of_text|>")
    pairs = []
    while body:
        assert body.startswith(TEXT_START)
        t, body = body[len(TEXT_START):].split(TEXT_END, 1)
        assert body.startswith(AUDIO_START)
        a, body = body[len(AUDIO_START):].split(AUDIO_END, 1)
        pairs.append((t, a))
    return pairs
