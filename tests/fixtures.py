"""Source corpora in their real on-disk layouts (SPEC.md §5), with the real quirks, for the recipe tests.

Audio is speech-like (voiced harmonics under a syllable-rate envelope, plus noise) so codecs and MP3 behave
as on speech; it is generated, so the fixtures need nothing from the network.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 24_000


def speechlike(seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = max(1, int(seconds * sr))
    t = np.arange(n) / sr
    f0 = 110 + 60 * rng.random() + 20 * np.sin(2 * np.pi * 0.7 * t + rng.random() * 6)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * (3.5 + rng.random()) * t + rng.random() * 6), 0, None) ** 2
    x = 0.25 * voiced * envelope + 0.01 * rng.standard_normal(n)
    return (x / max(1e-3, np.abs(x).max()) * 0.5).astype(np.float32)


def encode_audio(wave: np.ndarray, sr: int = SR, fmt: str = "MP3") -> bytes:
    buf = io.BytesIO()
    subtype = {"MP3": "MPEG_LAYER_III", "WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}[fmt]
    sf.write(buf, wave, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


@dataclass
class EmiliaExpected:
    """What the recipe must make of a fixture: written utterances per document and rejects by id."""

    documents: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # component -> doc -> utterance ids
    transcripts: dict[str, str] = field(default_factory=dict)  # utterance id -> stripped transcript
    rejects: dict[str, dict[str, str]] = field(default_factory=dict)  # component -> id -> reason
    read: dict[str, int] = field(default_factory=dict)  # component -> items read
    waves: dict[str, np.ndarray] = field(default_factory=dict)  # utterance id -> 24 kHz source audio (pre-MP3)


def make_emilia_source(root: Path, seed: int = 0, quirks: bool = True, tars_per_subset: int = 2,
                       docs_per_tar: int = 2, utts_per_doc: int = 3, seconds: tuple[float, float] = (1.0, 3.0)
                       ) -> EmiliaExpected:
    """``root/Emilia/EN/EN-B*.tar`` and ``root/Emilia-YODAS/EN/EN-B*.tar`` in the real layout."""
    rng = np.random.default_rng(seed)
    exp = EmiliaExpected()
    counter = 0
    for subset, folder, component in (("emilia", "Emilia", "emilia/en"), ("emilia-yodas", "Emilia-YODAS", "emilia-yodas/en")):
        exp.documents[component] = {}
        exp.rejects[component] = {}
        exp.read[component] = 0
        for t in range(tars_per_subset):
            # Quirk: the tar name is not the batch (EN-B000060.tar holds EN_B00006_*).
            tar_index = t * 60
            batch = tar_index // 10
            members: list[tuple[str, bytes]] = []
            for d in range(docs_per_tar):
                if subset == "emilia":
                    doc = f"EN_B{batch:05d}_S{d:05d}"
                else:  # Quirk: video ids contain '_' and '-'
                    doc = f"EN_{'ab-C_d' if d % 2 == 0 else 'x_Y-z9'}{t}{d}q-_"
                for w in range(utts_per_doc):
                    key = f"{doc}_W{w:06d}"
                    secs = float(rng.uniform(*seconds))
                    wave = speechlike(secs, seed * 1000 + counter)
                    counter += 1
                    text = f" Utterance {w} of {doc} says hello."  # Quirk: leading space
                    meta = {"id": key, "wav": f"{key}.mp3", "text": text, "duration": round(secs, 3),
                            "speaker": doc, "language": "en", "dnsmos": 3.1}
                    if subset == "emilia-yodas" and w == 0:
                        meta.pop("id"), meta.pop("wav")  # Quirk: records lacking id/wav
                    members.append((f"{key}.json", json.dumps(meta).encode()))
                    members.append((f"{key}.mp3", encode_audio(wave)))
                    exp.documents[component].setdefault(doc, []).append(key)
                    exp.transcripts[key] = text.strip()
                    exp.waves[key] = wave
                    exp.read[component] += 1
            if quirks and t == 0:
                bad = f"EN_B{batch:05d}_S09999" if subset == "emilia" else "EN_bad-vid_eo_"
                # A corrupt MP3
                members += [(f"{bad}_W000000.json", json.dumps({"text": " fine text"}).encode()),
                            (f"{bad}_W000000.mp3", b"\xff\xfb\x90\x00" + bytes(rng.integers(0, 256, 3000, dtype=np.uint8)))]
                exp.rejects[component][f"{bad}_W000000"] = "undecodable_audio"
                # An MP3 with no JSON, and a JSON with no MP3
                members.append((f"{bad}_W000001.mp3", encode_audio(speechlike(1.0, 7))))
                exp.rejects[component][f"{bad}_W000001"] = "missing_json"
                members.append((f"{bad}_W000002.json", json.dumps({"text": " orphan"}).encode()))
                exp.rejects[component][f"{bad}_W000002"] = "missing_audio"
                # A transcript containing an audio-range character
                members += [(f"{bad}_W000003.json", json.dumps({"text": " sneaky \ue123 char"}).encode()),
                            (f"{bad}_W000003.mp3", encode_audio(speechlike(1.0, 8)))]
                exp.rejects[component][f"{bad}_W000003"] = "audio_range_character"
                # A transcript containing a marker string
                members += [(f"{bad}_W000004.json", json.dumps({"text": " a <|audio_start|> b"}).encode()),
                            (f"{bad}_W000004.mp3", encode_audio(speechlike(1.0, 9)))]
                exp.rejects[component][f"{bad}_W000004"] = "transcript_has_marker"
                exp.read[component] += 5
            # Quirk: pair by key, not position: members in shuffled order (pairs kept apart)
            order = rng.permutation(len(members))
            members = [members[i] for i in order]
            write_tar(root / folder / "EN" / f"EN-B{tar_index:06d}.tar", members)
    return exp


def write_emilia_language_tar(root: Path, lang: str, transcripts: list[str], seed: int = 0,
                              seconds: float = 0.4) -> list[str]:
    """``root/Emilia/<LANG>/<LANG>-B000000.tar``: one utterance per transcript, in the real layout; returns the keys.

    The JSON is written as the real files come, with Emilia's leading space; every other record with ASCII escapes
    (``json.dumps`` default: non-ASCII as ``\\uXXXX``, an emoji as a surrogate pair), the others as raw UTF-8. A
    transcript holding a lone surrogate can only be an escape, so it is always written escaped.
    """
    upper = lang.upper()
    members: list[tuple[str, bytes]] = []
    keys = []
    for w, text in enumerate(transcripts):
        key = f"{upper}_B00000_S{w // 3:05d}_W{w % 3:06d}"  # three utterances a document
        meta = {"id": key, "wav": f"{key}.mp3", "text": " " + text, "duration": seconds, "speaker": f"{upper}_S{w // 3}",
                "language": lang.lower(), "dnsmos": 3.2}
        has_surrogate = any(0xD800 <= ord(c) < 0xE000 for c in text)
        raw = json.dumps(meta, ensure_ascii=w % 2 == 0 or has_surrogate).encode("utf-8")
        members += [(f"{key}.json", raw), (f"{key}.mp3", encode_audio(speechlike(seconds, seed * 1000 + w)))]
        keys.append(key)
    write_tar(root / "Emilia" / upper / f"{upper}-B000000.tar", members)
    return keys
