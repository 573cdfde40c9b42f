"""The LibriSpeech recipe on the OpenSLR layout, as a folder and as a streamed .tar.gz (local and over HTTP)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from fixtures_librispeech import (
    FLAC_WITHOUT_LINE,
    LINE_WITHOUT_FLAC,
    SPLIT,
    make_librispeech_archive,
    make_librispeech_folder,
)
from fixtures_nemotron import serve
from fixtures_yodas2 import parse_text_first, read_rows

from sodadata import chars_to_codes
from sodadata.encode.audio import to_mono_24k
from sodadata.encode.codec import CodecConfig, build_random_mimi, reference_encode
from sodadata.recipes import librispeech
from sodadata.recipes.librispeech import LibriSpeechRecipe
from sodadata.run.pipeline import PipelineConfig
from sodadata.run.runner import RunnerConfig, run_recipe

CODEC = CodecConfig(codec="tiny-random", threads=1)  # one thread: codes compared across runs bit for bit
COMPONENT = f"librispeech/{SPLIT}"


# encoding in this process (the codec, the serial runner) sets torch's thread count: give it back after the module
pytestmark = pytest.mark.usefixtures("restore_torch_threads")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("librispeech-folder")
    return root, make_librispeech_folder(root)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("librispeech-tar") / f"{SPLIT}.tar.gz"
    return path, make_librispeech_archive(path)


def _run(source: str, out: Path):
    result = run_recipe(LibriSpeechRecipe(split=SPLIT, source=source), PipelineConfig(out=str(out), codec=CODEC),
                        RunnerConfig(serial=True, progress=False))
    assert result.ok, result.failures
    return result


@pytest.fixture(scope="module")
def folder_out(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("librispeech-folder-out")
    _run(str(folder[0]), out)
    return out


@pytest.fixture(scope="module")
def archive_out(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("librispeech-tar-out")
    _run(str(archive[0]), out)
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / COMPONENT).glob("*.json"))]


def _rejects(out: Path) -> dict[str, str]:
    rows = [r for p in sorted((out / COMPONENT / "rejects").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    return {r["id"]: r["reason"] for r in rows}


def test_folder_tasks_are_speakers_in_numeric_order(folder):
    tasks = LibriSpeechRecipe(split=SPLIT, source=str(folder[0])).tasks()
    assert [t.stem for t in tasks] == ["84", "1272"]
    assert {t.component for t in tasks} == {COMPONENT} and {t.split for t in tasks} == {SPLIT}
    names = sorted(Path(f.url).name for f in tasks[0].inputs)
    assert names == ["84-121123-0000.flac", "84-121123-0001.flac", "84-121123-0002.flac", "84-121123.trans.txt"]


def test_archive_is_one_task_and_the_default_source_is_openslr(archive):
    (task,) = LibriSpeechRecipe(split=SPLIT, source=str(archive[0])).tasks()
    assert (task.stem, task.split, task.component) == (SPLIT, SPLIT, COMPONENT)
    assert task.inputs[0].size == archive[0].stat().st_size
    default = LibriSpeechRecipe(split="train-clean-100")
    assert default.url == "https://www.openslr.org/resources/12/train-clean-100.tar.gz" and default.is_archive
    assert default.component == "librispeech/train-clean-100"


def test_folder_rows_documents_rejects_and_codes(folder, folder_out):
    root, exp = folder
    rows = read_rows(folder_out)
    assert sorted(rows) == sorted(f"{d}_type{k}" for d in exp.documents for k in (1, 2))
    model = build_random_mimi("tiny-random")
    for doc, utts in exp.documents.items():
        tf, af = rows[f"{doc}_type1"], rows[f"{doc}_type2"]
        assert tf["split"] == af["split"] == SPLIT and tf["corpus"] == COMPONENT
        assert (tf["format"], af["format"]) == ("text_first", "audio_first")
        assert tf["n_utterances"] == len(utts)
        pairs = parse_text_first(tf["text"])
        assert [t for t, _ in pairs] == [exp.transcripts[u] for u in utts]  # chapter's utterances in id order
        assert [u["id"] for u in json.loads(tf["metadata"])["utterances"]] == utts
        for (_, span), utt in zip(pairs, utts, strict=True):
            # the 16 kHz FLAC (lossless: the fixture's audio in 16 bits), resampled to 24 kHz by the audio path,
            # encoded as MimiModel.encode would
            speaker, chapter, _ = utt.split("-")
            samples, rate = sf.read(root / "LibriSpeech" / SPLIT / speaker / chapter / f"{utt}.flac", dtype="float32")
            assert rate == 16_000
            np.testing.assert_allclose(samples, exp.waves[utt], atol=1 / 32768)
            np.testing.assert_array_equal(chars_to_codes(span), reference_encode(model, to_mono_24k(samples, rate)))
    assert _rejects(folder_out) == exp.rejects
    assert exp.rejects == {LINE_WITHOUT_FLAC[0]: "missing_flac", FLAC_WITHOUT_LINE[0]: "missing_transcript"}


def test_records_balance_and_say_what_made_them(folder, folder_out, archive, archive_out):
    for out, stems in ((folder_out, ["1272", "84"]), (archive_out, [SPLIT])):
        records = _records(out)
        assert sorted(r["shard"] for r in records) == stems
        assert sum(r["read"] for r in records) == folder[1].read == archive[1].read
        assert sum(r["written"] for r in records) == len(folder[1].transcripts)
        assert sum(r["documents"] for r in records) == len(folder[1].documents)
        for r in records:
            assert r["read"] == r["written"] + r["rejected"] and r["split"] == SPLIT
            assert r["made_by"] == {
                "format_version": 2,
                "codec": {"id": "tiny-random", "revision": None, "weights_sha256": None, "random": True},
                "dtype": "float32", "device": "cpu", "codebooks": 8, "formats": ["text_first", "audio_first"],
                "text_rule": 2, "params": {"max_file_bytes": librispeech.MAX_FILE_BYTES, "max_utterance_seconds": 600.0},
            }
        by_shard = {r["shard"]: r for r in records}
        if out is folder_out:
            assert by_shard["84"]["rejects"] == {"missing_transcript": 1}
            assert by_shard["1272"]["rejects"] == {"missing_flac": 1}


def test_the_archive_gives_the_same_rows_and_rejects_as_the_folder(folder_out, archive_out):
    assert read_rows(archive_out) == read_rows(folder_out)
    assert _rejects(archive_out) == _rejects(folder_out)


def test_an_http_archive_streams_like_the_local_one(archive, archive_out, tmp_path):
    with serve(archive[0].parent) as base:
        out = tmp_path / "out"
        _run(f"{base}{archive[0].name}", out)
    assert read_rows(out) == read_rows(archive_out)


def test_cli_runs_and_resumes(archive, tmp_path, capsys):
    argv = ["--split", SPLIT, "--source", str(archive[0]), "--codec", "tiny-random", "--torch-threads", "1",
            "--serial", "--no-progress", "--out", str(tmp_path)]
    assert librispeech.main(argv) == 0
    assert (tmp_path / COMPONENT / f"{SPLIT}.parquet").is_file()
    assert librispeech.main(argv) == 0
    assert "1 already finished" in capsys.readouterr().out


def test_wrong_archive_or_missing_folder_is_one_clear_error(folder, tmp_path, capsys):
    # an archive of another split fails its task with a line naming what it holds
    other = tmp_path / "dev-other.tar.gz"
    make_librispeech_archive(other)
    result = run_recipe(LibriSpeechRecipe(split="dev-other", source=str(other)),
                        PipelineConfig(out=str(tmp_path / "o"), codec=CODEC),
                        RunnerConfig(serial=True, progress=False, retries=0))
    assert not result.ok and "holds nothing under LibriSpeech/dev-other/ (it holds dev-clean)" in str(result.failures)
    # a folder without the split: exit 2, one line, before any work
    assert librispeech.main(["--split", "test-clean", "--source", str(folder[0]), "--codec", "tiny-random",
                             "--serial", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "no LibriSpeech/test-clean/ under" in err and not (tmp_path / "o2" / "librispeech").exists()


def test_chapter_pairs_lines_and_flacs_in_any_order():
    ch = librispeech.Chapter(("7", "9"))
    out = list(ch.add_flac("7-9-0001.flac", b"one")) + list(ch.add_flac("7-9-0003.flac", b"three"))
    assert out == [] and set(ch.waiting) == {"7-9-0001", "7-9-0003"}  # waiting for the transcript
    out = list(ch.add_transcript(b"7-9-0001 A\n7-9-0002 B\nbad line\n7-9-0001 AGAIN\n"))
    assert [(type(x).__name__, x.id, getattr(x, "reason", None)) for x in out] == [
        ("Reject", "7-9.trans.txt:3", "bad_transcript_line"), ("Reject", "7-9-0001", "duplicate_id"),
        ("RawUtterance", "7-9-0001", None)]
    out = list(ch.add_flac("7-9-0004.flac", b"four")) + list(ch.finish())
    assert [(x.id, x.reason) for x in out] == [("7-9-0004", "missing_transcript"), ("7-9-0002", "missing_flac"),
                                                ("7-9-0003", "missing_transcript")]
    # a line that is not UTF-8 rejects its utterance once, whether its FLAC came before the transcript or after
    ch = librispeech.Chapter(("7", "9"))
    out = [*ch.add_flac("7-9-0001.flac", b"one"), *ch.add_transcript(b"7-9-0001 \xff\n7-9-0002 \xfe\n"),
           *ch.add_flac("7-9-0002.flac", b"two"), *ch.add_flac("7-9-0002.flac", b"again"), *ch.finish()]
    assert [(x.id, x.reason) for x in out] == [("7-9-0001", "invalid_unicode"), ("7-9-0002", "invalid_unicode"),
                                                ("7-9-0002", "duplicate_id")]


def test_a_full_run_of_a_partial_folder_stops_before_any_work(tmp_path, capsys):
    make_librispeech_folder(tmp_path / "mirror", sample=False)  # a mirror that lacks most of dev-clean
    argv = ["--split", SPLIT, "--source", str(tmp_path / "mirror"), "--codec", "tiny-random", "--serial",
            "--no-progress", "--out", str(tmp_path / "out")]
    assert librispeech.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "split dev-clean: 2 of the 40 speakers catalogs/librispeech.yaml lists" in err
    assert "split dev-clean: 8 of the 2703 utterances (FLAC files)" in err
    assert not (tmp_path / "out" / "librispeech").exists()
    # a partial run (--limit-shards) is not compared with the catalog; --allow-missing runs and records it
    assert librispeech.main([*argv, "--limit-shards", "1"]) == 0
    assert librispeech.main([*argv, "--allow-missing"]) == 0
    summary = json.loads(sorted((tmp_path / "out" / "_runs").glob("*.json"))[-1].read_text())
    assert len(summary["completeness"]["missing"]) == 2


def test_a_cut_archive_fails_its_task(archive, tmp_path):
    cut = tmp_path / f"{SPLIT}.tar.gz"
    cut.write_bytes(archive[0].read_bytes()[: archive[0].stat().st_size // 2])
    result = run_recipe(LibriSpeechRecipe(split=SPLIT, source=str(cut)), PipelineConfig(out=str(tmp_path / "o"), codec=CODEC),
                        RunnerConfig(serial=True, progress=False, retries=0))
    assert not result.ok and "cannot read archive" in str(result.failures)
    assert not list((tmp_path / "o").glob(f"{COMPONENT}/*.parquet"))  # nothing written
