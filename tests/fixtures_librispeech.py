"""LibriSpeech (OpenSLR resource 12) in its real layout, as an extracted folder and as ``<split>.tar.gz``.

    <root>/LibriSpeech/{CHAPTERS,LICENSE,README,SPEAKERS}.TXT
    <root>/LibriSpeech/dev-clean/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac   16 kHz mono FLAC
    <root>/LibriSpeech/dev-clean/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt        "<utt id> UPPER CASE TEXT"

Speech is real synthesized speech (espeak-ng, resampled to 16 kHz as LibriSpeech's FLACs are), a second or two an
utterance. The faults the recipe must turn into rejects: a transcript line whose FLAC is missing, a FLAC without a
line. Speakers ``84`` and ``1272`` sort differently as numbers and as strings. In the archive one chapter's
``.trans.txt`` comes after its FLACs (tar order inside a folder is arbitrary).
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from fixtures import encode_audio

from sodadata.read.completeness import write_sample_marker

SR = 16_000
SPLIT = "dev-clean"
# (speaker, chapter) -> [(utterance number, text)] written with a FLAC and a line
CHAPTERS = {
    ("1272", "128104"): [(0, "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES"),
                         (1, "NOR IS MISTER QUILTER'S MANNER LESS INTERESTING THAN HIS MATTER"),
                         (2, "HE TELLS US THAT AT THIS FESTIVE SEASON OF THE YEAR")],
    ("1272", "135031"): [(0, "BECAUSE YOU WERE SLEEPING INSTEAD OF CONQUERING"),
                         (1, "THE LOVELY ROSE PRINCESS HAS BECOME A FIDDLE")],
    ("84", "121123"): [(0, "GO DO YOU HEAR"),
                       (1, "BUT IN LESS THAN FIVE MINUTES THE STAIRCASE GROANED")],
}
LINE_WITHOUT_FLAC = ("1272-135031-0002", "THE WINDOW WAS OPEN")  # a line in the transcript, no FLAC
FLAC_WITHOUT_LINE = ("84-121123-0002", "WHAT IS IT")  # spoken and written as FLAC, no line in the transcript
METADATA_FILES = ("CHAPTERS.TXT", "LICENSE.TXT", "README.TXT", "SPEAKERS.TXT")


@dataclass
class LibriSpeechExpected:
    documents: dict[str, list[str]] = field(default_factory=dict)  # chapter -> utterance ids written, in order
    transcripts: dict[str, str] = field(default_factory=dict)  # utterance id -> text
    rejects: dict[str, str] = field(default_factory=dict)  # id -> reason
    waves: dict[str, np.ndarray] = field(default_factory=dict)  # utterance id -> 16 kHz audio before FLAC
    read: int = 0  # items the recipe reads: utterances and rejects


@cache
def speak(text: str, voice: str = "en-us") -> np.ndarray:
    """``text`` spoken by espeak-ng, at 16 kHz."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", voice, "-s", "190", "-w", f.name, text.lower()], check=True,
                       capture_output=True)
        x, sr = sf.read(f.name, dtype="float32")
    return soxr.resample(x, sr, SR).astype(np.float32)


def layout(chapters: dict[tuple[str, str], list[tuple[int, str]]], split: str = SPLIT, faults: bool = True,
           speaker: Callable[[str, int], np.ndarray] | None = None) -> tuple[dict[str, bytes], LibriSpeechExpected]:
    """Relative path below ``LibriSpeech/`` -> bytes, and what the recipe must make of them. ``faults``: add
    :data:`LINE_WITHOUT_FLAC` and :data:`FLAC_WITHOUT_LINE` to their chapters. ``speaker(text, n)`` gives the
    16 kHz audio of chapter ``n``'s sentence (default: espeak-ng)."""
    speak_as = speaker or (lambda text, n: speak(text, ("en-us", "en-gb", "en-us+f3")[n % 3]))
    exp = LibriSpeechExpected()
    files: dict[str, bytes] = {name: f"LibriSpeech {name}\n".encode() for name in METADATA_FILES}
    for n, ((spk, chapter), utts) in enumerate(chapters.items()):
        doc = f"{spk}-{chapter}"
        folder = f"{split}/{spk}/{chapter}"
        lines = []
        for k, text in utts:
            utt = f"{doc}-{k:04d}"
            wave = speak_as(text, n)
            files[f"{folder}/{utt}.flac"] = encode_audio(wave, SR, "FLAC")
            lines.append(f"{utt} {text}")
            exp.documents.setdefault(doc, []).append(utt)
            exp.transcripts[utt] = text
            exp.waves[utt] = wave
        if faults and doc == LINE_WITHOUT_FLAC[0].rsplit("-", 1)[0]:
            lines.append(" ".join(LINE_WITHOUT_FLAC))
            exp.rejects[LINE_WITHOUT_FLAC[0]] = "missing_flac"
        if faults and doc == FLAC_WITHOUT_LINE[0].rsplit("-", 1)[0]:
            utt, text = FLAC_WITHOUT_LINE
            files[f"{folder}/{utt}.flac"] = encode_audio(speak_as(text, n), SR, "FLAC")
            exp.rejects[utt] = "missing_transcript"
        files[f"{folder}/{doc}.trans.txt"] = ("\n".join(lines) + "\n").encode()
    exp.read = len(exp.transcripts) + len(exp.rejects)
    return files, exp


def write_folder(root: Path, files: dict[str, bytes]) -> None:
    """``files`` (from :func:`layout`) under ``root/LibriSpeech/``, as ``tar xzf <split>.tar.gz`` leaves them."""
    for rel, data in files.items():
        path = root / "LibriSpeech" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def make_librispeech_folder(root: Path, sample: bool = True) -> LibriSpeechExpected:
    """``root/LibriSpeech/...`` as ``tar xzf dev-clean.tar.gz`` leaves it; ``sample``: declared a deliberate sample
    (``sodadata-sample.yaml``), so full runs do not compare it with the catalog's counts."""
    files, exp = layout(CHAPTERS)
    if sample:
        write_sample_marker(root, "librispeech", "tests/fixtures_librispeech.py: 2 speakers of dev-clean")
    write_folder(root, files)
    return exp


def make_librispeech_archive(path: Path) -> LibriSpeechExpected:
    """``path`` (``dev-clean.tar.gz``) as OpenSLR publishes it: folders as members, each chapter's files together,
    and in chapter 84-121123 the ``.trans.txt`` after the FLACs."""
    files, exp = layout(CHAPTERS)
    late = f"{SPLIT}/84/121123/84-121123.trans.txt"
    order = [r for r in files if r != late]
    order.insert(max(i for i, r in enumerate(order) if r.startswith(f"{SPLIT}/84/121123/")) + 1, late)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        folders_done: set[str] = set()
        for rel in order:
            parts = f"LibriSpeech/{rel}".split("/")
            for i in range(1, len(parts)):
                folder = "/".join(parts[:i])
                if folder not in folders_done:
                    folders_done.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
                    tar.addfile(info)
            info = tarfile.TarInfo(f"LibriSpeech/{rel}")
            info.size, info.mtime = len(files[rel]), 1_700_000_000
            tar.addfile(info, io.BytesIO(files[rel]))
    return exp
