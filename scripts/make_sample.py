"""Build the bundled samples (``sample/<corpus>/``): every recipe's source in its real on-disk layout (SPEC.md §5).

    sample/emilia/        Emilia/EN/EN-B000000.tar, Emilia-YODAS/EN/EN-B000000.tar (key.json + key.mp3 pairs)
    sample/yodas2/        data/en000/{audio,text,duration}/00000000.*, data/en100/... (a WAV per video, captions)
    sample/mls/           data/train-0000N-of-00002.parquet, data/dev-00000-of-00001.parquet (16 kHz FLAC rows)
    sample/nemotron-cc/   contrib/Nemotron/Nemotron-CC/data-jsonl.paths.gz + one kept .jsonl.zstd and one
                          listed file of a partition the recipe skips
    sample/librispeech/   LibriSpeech/dev-clean/<speaker>/<chapter>/ (FLACs + .trans.txt), as the archive extracts

Speech is real synthesized speech from espeak-ng (a Debian package), so the samples are reproducible offline.
They are committed; this script documents and regenerates them: ``python scripts/make_sample.py [corpus ...]``.
The layout writers are the tests' (tests/fixtures*.py): one home for each corpus's on-disk format.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
import soxr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from the checkout
sys.path.insert(0, str(REPO / "tests"))  # the layout writers live with the tests' fixtures

from fixtures import encode_audio, write_tar  # noqa: E402
from fixtures_librispeech import layout as librispeech_layout  # noqa: E402
from fixtures_librispeech import write_folder as write_librispeech_folder  # noqa: E402
from fixtures_mls import SCHEMA as MLS_SCHEMA  # noqa: E402
from fixtures_mls import mls_row  # noqa: E402
from fixtures_nemotron import BASE as NEMOTRON_BASE  # noqa: E402
from fixtures_nemotron import DECOYS, KEPT, compress_frames, record_line, write_paths_file  # noqa: E402
from fixtures_yodas2 import Caption, Video, write_shard  # noqa: E402

from sodadata.read.completeness import write_sample_marker  # noqa: E402

SAMPLE = REPO / "sample"
SENTENCES = [
    "Open speech data makes open audio models possible.",
    "Each recording is cut into utterances of a few seconds.",
    "The codec turns every eighty milliseconds of sound into eight tokens.",
    "A document interleaves what was said with how it sounded.",
    "Text first rows teach the model to speak.",
    "Audio first rows teach the model to listen.",
    "Nothing is lost: bad inputs are counted and listed.",
    "A killed run resumes where it stopped.",
    "The mixture weights are shares of tokens, not of rows.",
    "This is a small sample for a first run on a laptop.",
    "Real Mimi codes need the kyutai mimi weights.",
    "The tiny random codec is only for tests and demos.",
]
VIDEO_SENTENCES = [  # Yodas2: captions of whole videos
    ["Welcome back to the channel.", "Today we build a bird feeder from one board.",
     "First, measure twice and cut once."],
    ["Here is the weather for the coming week.", "Expect rain on Tuesday and sun by the weekend."],
    ["In this lesson we count from one to ten.", "One, two, three, four, five.", "Six, seven, eight, nine, ten."],
]
BOOK_SENTENCES = [  # MLS: audiobook segments, read in order
    "It was late in the autumn when the travellers reached the village.",
    "The road had been long and the horses were tired.",
    "An old woman stood at the door of the inn and watched them come.",
    "She said nothing, but she lit a lamp in the window.",
    "The next morning the snow had covered every path.",
    "Nobody in the house could remember such a winter.",
    "The children ran outside to see the white fields.",
]
WEB_TEXTS = [  # Nemotron-CC: web pages (text only)
    "How to keep basil fresh. Trim the stems, stand the bunch in a glass of water and leave it on the counter, "
    "away from direct sun. Change the water every other day. Basil kept in the fridge turns black within a day.",
    "The town library will be closed on Monday for the public holiday. Books due that day can be returned on "
    "Tuesday without a fine. The reading room reopens at nine in the morning.",
    "A beginner's guide to sourdough. A starter is flour and water left to ferment; wild yeast and bacteria "
    "make it rise and give the bread its sour taste. Feed it daily and keep it warm.",
    "Results of the regional chess tournament: forty players took part over three days. The junior section "
    "was won by a twelve year old who lost only one game.",
    "Why do cats purr? Purring usually means a cat is relaxed, but cats also purr when they are hurt or "
    "frightened. The sound comes from the muscles of the larynx.",
    "Changing a bicycle tyre takes ten minutes with two levers and a pump. Deflate the tube completely, "
    "lever one side of the tyre off the rim, pull out the tube and check the tyre for thorns.",
    "The museum's new wing displays tools from the bronze age, including a bronze axe found by a farmer in "
    "1962. Entry is free on the first Sunday of every month.",
    "Tips for a job interview: read about the company, prepare two questions of your own, arrive ten minutes "
    "early, and follow up with a short thank-you note.",
]
VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb+m3"]


def speak(text: str, voice: str, rate: int = 24_000) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", f.name, text], check=True)
        x, sr = sf.read(f.name, dtype="float32")
    return soxr.resample(x, sr, rate).astype(np.float32)


def make_emilia(root: Path) -> None:
    k = 0
    for folder, docs in (
        ("Emilia", ["EN_B00000_S00000", "EN_B00000_S00001", "EN_B00000_S00002"]),
        ("Emilia-YODAS", ["EN_dQw4-w9_WgXcQ", "EN_a-b_c-D3f"]),  # video ids hold '_' and '-'
    ):
        members = []
        for d, doc in enumerate(docs):
            for w in range(2):
                key = f"{doc}_W{w:06d}"
                text = SENTENCES[k % len(SENTENCES)]
                wave = speak(text, VOICES[d % len(VOICES)])
                meta = {"id": key, "wav": f"{key}.mp3", "text": " " + text, "duration": round(len(wave) / 24000, 3),
                        "speaker": doc, "language": "en", "dnsmos": 3.2}
                if folder == "Emilia-YODAS" and w == 0:
                    del meta["id"], meta["wav"]  # as in the real Emilia-YODAS records
                members += [(f"{key}.json", json.dumps(meta).encode()), (f"{key}.mp3", encode_audio(wave))]
                k += 1
        write_tar(root / folder / "EN" / "EN-B000000.tar", members)


def make_yodas2(root: Path) -> None:
    """Two subsets, one shard each; a video is its captions spoken in turn with pauses, captioned in centiseconds."""
    videos = []
    for n, (vid, sentences) in enumerate(zip(("Xk3-_pQ9aZw", "-Lm_8tRv2Yc", "q_7Hn-Ee1Bo"), VIDEO_SENTENCES)):
        pause = np.zeros(int(0.4 * 24_000), np.float32)
        pieces, captions, pos = [pause], [], len(pause)
        for i, text in enumerate(sentences):
            wave = speak(text, VOICES[n % len(VOICES)])
            captions.append(Caption(i, pos * 100 // 24_000, -(-(pos + len(wave)) * 100 // 24_000), text))
            pieces += [wave, pause]
            pos += len(wave) + len(pause)
        audio = np.concatenate(pieces)
        videos.append(Video(vid, round(len(audio) / 24_000, 3), captions, wav=encode_audio(audio, 24_000, "WAV")))
    write_shard(root, "en000", "00000000", videos[:2])
    write_shard(root, "en100", "00000000", videos[2:])


def make_mls(root: Path) -> None:
    """A train split of two files (one recording's segments spread over both, out of order) and a dev file."""
    speaker, book = "10214", "10108"
    recording = f"http://www.archive.org/download/sample_book/chapter_01_{book}_64kb.mp3"

    def segments(texts: list[str], path: str, spk: str, bk: str, voice: str, begin: float) -> list[dict]:
        rows = []
        for text in texts:
            wave = speak(text, voice, rate=16_000)
            end = round(begin + len(wave) / 16_000, 2)
            # MLS transcripts are lower case and unpunctuated
            words = re.sub(r"[^a-z' ]", "", text.lower()).split()
            rows.append(mls_row(spk, bk, path, begin, end, " ".join(words), encode_audio(wave, 16_000, "FLAC"),
                                f"{spk}_{bk}_{round(begin * 100):06d}.flac"))
            begin = round(end + 0.1, 2)  # a gap under 0.2 s: one document
        return rows

    train = segments(BOOK_SENTENCES[:5], recording, speaker, book, "en-gb", 12.5)
    dev = segments(BOOK_SENTENCES[5:], "http://www.archive.org/download/dev_book/part_1_64kb.mp3", "2277", "149",
                   "en-us", 3.0)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train-00000-of-00002", [train[3], train[0], train[4]]),
                       ("train-00001-of-00002", [train[2], train[1]]), ("dev-00000-of-00001", dev)):
        pq.write_table(pa.Table.from_pylist(rows, schema=MLS_SCHEMA), data / f"{name}.parquet")


def make_nemotron_cc(root: Path) -> None:
    """One kept HQ-Actual file (two zstd frames) and one listed file of another partition, which is skipped."""
    stem = "CC-MAIN-2024-10-part-00000"
    lines = [record_line({"warc_record_id": f"<urn:uuid:5a3f0c2e-0000-4000-8000-{i:012d}>",
                          "url": f"https://example.org/page/{i}", "text": text})
             for i, text in enumerate(WEB_TEXTS)]
    data = b"\n".join(lines) + b"\n"
    kept = f"{NEMOTRON_BASE}/data-jsonl/{KEPT}/{stem}.jsonl.zstd"
    skipped = f"{NEMOTRON_BASE}/data-jsonl/{DECOYS[0]}/{stem}.jsonl.zstd"
    for rel, blob in ((kept, compress_frames(data, [len(data) // 2])), (skipped, compress_frames(lines[0] + b"\n", []))):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(blob)
    write_paths_file(root, [skipped, kept])


def make_librispeech(root: Path) -> None:
    """dev-clean as an extracted archive: two speakers, a chapter each, upper-case transcripts, 16 kHz FLAC."""
    def transcript(text: str) -> str:  # LibriSpeech's: upper case, no punctuation but apostrophes
        return " ".join(re.sub(r"[^a-z' ]", "", text.lower()).split()).upper()

    chapters = {("2277", "149874"): [(k, transcript(t)) for k, t in enumerate(BOOK_SENTENCES[:2])],
                ("3752", "4943"): [(k, transcript(t)) for k, t in enumerate(BOOK_SENTENCES[2:4])]}
    files, _ = librispeech_layout(chapters, faults=False,
                                  speaker=lambda text, n: speak(text.lower(), VOICES[n % len(VOICES)], 16_000))
    write_librispeech_folder(root, files)


MAKERS = {"emilia": make_emilia, "yodas2": make_yodas2, "mls": make_mls, "nemotron-cc": make_nemotron_cc,
          "librispeech": make_librispeech}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpora", nargs="*", metavar="CORPUS",
                        help=f"which samples to rebuild: {', '.join(MAKERS)} (default: all)")
    parser.add_argument("--out", type=Path, default=SAMPLE, help="where to write them (default: sample/)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.corpora) - set(MAKERS))
    if unknown:
        parser.error(f"unknown corpus {', '.join(unknown)}; choose from {', '.join(MAKERS)}")
    for name in args.corpora or MAKERS:
        MAKERS[name](args.out / name)
        # a few shards, not the catalog's thousands: declared, so a full run over it is not an incomplete mirror
        write_sample_marker(args.out / name, name, "the bundled sample, written by scripts/make_sample.py")
        files = sorted(p for p in (args.out / name).rglob("*") if p.is_file())
        print(f"{name}: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e3:.0f} kB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
