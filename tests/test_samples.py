"""The bundled samples (sample/<corpus>/): what scripts/make_sample.py writes, in every recipe's real layout.

The recipes running on them, as README and ``--help`` print, is tests/test_docs.py.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures_nemotron import BASE, KEPT

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample"


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_recipe_has_a_small_sample_in_its_real_layout() -> None:
    files = _files(SAMPLE)
    assert sorted({f.split("/")[0] for f in files}) == ["emilia", "librispeech", "mls", "nemotron-cc", "yodas2"]
    assert sum(files.values()) < 4_000_000  # a few MB in all: it is committed
    for corpus in ("emilia", "yodas2", "mls", "nemotron-cc", "librispeech"):  # declared samples: not compared with the catalog
        assert f"sample_of: {corpus}\n" in (SAMPLE / corpus / "sodadata-sample.yaml").read_text()
    assert {"emilia/Emilia/EN/EN-B000000.tar", "emilia/Emilia-YODAS/EN/EN-B000000.tar",
            "yodas2/data/en000/audio/00000000.tar.gz", "yodas2/data/en000/text/00000000.json",
            "yodas2/data/en000/duration/00000000.txt", "yodas2/data/en100/audio/00000000.tar.gz",
            "mls/data/train-00000-of-00002.parquet", "mls/data/train-00001-of-00002.parquet",
            "mls/data/dev-00000-of-00001.parquet",
            f"nemotron-cc/{BASE}/data-jsonl.paths.gz",
            "librispeech/LibriSpeech/dev-clean/2277/149874/2277-149874-0000.flac",
            "librispeech/LibriSpeech/dev-clean/2277/149874/2277-149874.trans.txt"} <= set(files)
    # LibriSpeech: "<utt id> UPPER CASE TEXT" lines, one per FLAC of the chapter folder
    for trans in (SAMPLE / "librispeech/LibriSpeech/dev-clean").glob("*/*/*.trans.txt"):
        ids = [line.split(" ", 1)[0] for line in trans.read_text().splitlines()]
        assert ids == sorted(p.stem for p in trans.parent.glob("*.flac")) and len(ids) == 2
        assert all(line == line.upper() for line in trans.read_text().splitlines())
    # Yodas2: one JSON array of {audio_id, text: {"<vid>-<idx>-<start cs>-<end cs>": caption}}, as SPEC §5 says
    videos = json.loads((SAMPLE / "yodas2/data/en000/text/00000000.json").read_text())
    assert [sorted(v) for v in videos] == [["audio_id", "text"]] * len(videos) and len(videos) == 2
    for v in videos:
        for key in v["text"]:
            vid, idx, start, end = key.rsplit("-", 3)
            assert vid == v["audio_id"] and len(idx) == 5 and len(start) == len(end) == 8 and int(start) < int(end)
    # MLS: the parler-tts/mls_eng columns; one recording's segments spread over both train files
    tables = [pq.read_table(SAMPLE / f"mls/data/train-0000{i}-of-00002.parquet") for i in (0, 1)]
    assert tables[0].column_names == ["audio", "original_path", "begin_time", "end_time", "transcript",
                                      "audio_duration", "speaker_id", "book_id"]
    assert set(tables[0]["original_path"].to_pylist()) == set(tables[1]["original_path"].to_pylist())
    assert all(t == t.lower() and "." not in t for t in tables[0]["transcript"].to_pylist())
    # Nemotron-CC: the paths list names a kept file and one of a partition the recipe must skip
    listed = gzip.decompress((SAMPLE / "nemotron-cc" / BASE / "data-jsonl.paths.gz").read_bytes()).decode().split()
    assert len(listed) == 2 and sum(KEPT in p for p in listed) == 1
    assert all((SAMPLE / "nemotron-cc" / p).is_file() for p in listed)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="scripts/make_sample.py speaks with espeak-ng")
def test_make_sample_regenerates_the_committed_samples(tmp_path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "make_sample.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _files(tmp_path).keys() == _files(SAMPLE).keys()
    # Text is the script's own, so byte-exact; audio depends on the espeak-ng build, so only its texts are compared.
    nemotron = [p for p in _files(SAMPLE) if p.startswith("nemotron-cc/")]
    assert all((tmp_path / p).read_bytes() == (SAMPLE / p).read_bytes() for p in nemotron)
    for rel in ("yodas2/data/en000/text/00000000.json", "yodas2/data/en100/text/00000000.json"):
        captions = [sorted(v["text"].values()) for v in json.loads((SAMPLE / rel).read_text())]
        assert [sorted(v["text"].values()) for v in json.loads((tmp_path / rel).read_text())] == captions
    text = [p for p in _files(SAMPLE) if p.startswith("librispeech/") and not p.endswith(".flac")]
    assert all((tmp_path / p).read_bytes() == (SAMPLE / p).read_bytes() for p in text)
    for rel in [p for p in _files(SAMPLE) if p.startswith("mls/") and p.endswith(".parquet")]:
        assert (pq.read_table(tmp_path / rel, columns=["transcript", "original_path"])
                == pq.read_table(SAMPLE / rel, columns=["transcript", "original_path"]))
