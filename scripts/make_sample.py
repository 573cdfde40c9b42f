"""Build the bundled sample (sample/emilia/): real synthesized speech in Emilia's exact tar layout.

Speech comes from espeak-ng (Debian package), so the sample is reproducible offline; it is committed, and this
script only documents and regenerates it: ``python scripts/make_sample.py``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the checkout
from sodadata.completeness import write_sample_marker

ROOT = Path(__file__).resolve().parent.parent / "sample" / "emilia"
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
VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb+m3"]


def speak(text: str, voice: str) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", f.name, text], check=True)
        x, sr = sf.read(f.name, dtype="float32")
    return soxr.resample(x, sr, 24000).astype(np.float32)


def mp3(wave: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, 24000, format="MP3", subtype="MPEG_LAYER_III")
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))


def main() -> int:
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
                members += [(f"{key}.json", json.dumps(meta).encode()), (f"{key}.mp3", mp3(wave))]
                k += 1
        write_tar(ROOT / folder / "EN" / "EN-B000000.tar", members)
    # one tar a subset, not the catalog's 1,140 + 1,362: declared, so a full run over it is not an incomplete mirror
    write_sample_marker(ROOT, "emilia", "the bundled sample, written by scripts/make_sample.py")
    print(f"wrote {sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob('*.tar'))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
