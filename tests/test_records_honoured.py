"""The tools honour the records (issue 13, point 2), replayed on the README's own demo.

The README runs ``python -m sodadata.recipes.emilia --lang en --source sample/emilia --codec tiny-random --out
out/sample`` and then points every tool at ``out/``. Each symptom the issue reports is replayed here on that real
output: ``push --dry-run`` raised nothing and the card said ``kyutai/mimi`` whatever the records said; after it,
``decode`` found the row twice (the ``_hub`` staged copy) and fell back to ``kyutai/mimi``; ``validate out/``
reported 12 false violations and ``stats out/`` accepted the folder. Two output roots under one folder, records
without ``made_by`` and a shard made with a local model are covered too.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from sodadata.cli import main as cli
from sodadata.encode.codec import build_random_mimi, weights_sha256
from sodadata.recipes import emilia
from sodadata.tools.row_lookup import find_rows
from sodadata.write.outputs import find_shards

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample" / "emilia"
ROW = "EN_B00000_S00000_type1"  # the first row of the sample's emilia/en shard
COMPONENTS = ("emilia-yodas/en", "emilia/en")
TINY_MADE_BY_CODEC = {"id": "tiny-random", "revision": None, "weights_sha256": None, "random": True}


def demo(out: Path, codec: str | Path = "tiny-random", *extra: str) -> list[str]:
    """The README's first command, one torch thread and no cluster (same rows, faster in a test)."""
    return ["--lang", "en", "--source", str(SAMPLE), "--codec", str(codec), "--out", str(out), "--no-progress",
            "--torch-threads", "1", "--serial", *extra]


@pytest.fixture(scope="module")
def readme_out(tmp_path_factory) -> Path:
    """``out/`` after the README's demo: it holds one output root, ``out/sample``."""
    out = tmp_path_factory.mktemp("readme") / "out"
    assert emilia.main(demo(out / "sample")) == 0
    return out


@pytest.fixture
def out(readme_out: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "out"
    shutil.copytree(readme_out, dst)
    return dst


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def push(out: Path, *extra: str) -> int:
    return cli(["push", str(out), "--repo", "ORG/NAME", "--dry-run", "--utterance-shards", "0", *extra])


def test_the_demo_records_say_a_random_codec_made_them(readme_out):
    shards = find_shards(readme_out).shards
    assert [(s.root, s.component) for s in shards] == [(readme_out / "sample", c) for c in COMPONENTS]
    assert {json.dumps(s.made_by["codec"]) for s in shards} == {json.dumps(TINY_MADE_BY_CODEC)}


def test_push_refuses_the_random_codec_before_staging_anything(out, caplog):
    assert push(out / "sample") == 2
    assert errors(caplog) == ["refusing to push:\n" + "\n".join(
        f"{c}: encoded with tiny-random, a RANDOM test codec: its audio codes are noise, not Mimi codes. Rebuild "
        "with the real codec, or pass --allow-random-codec (the card then says so at the top)" for c in COMPONENTS)]
    assert not (out / "sample" / "_hub").exists()


def test_the_card_says_so_loudly_and_states_the_records_not_kyutai_mimi(out):
    assert push(out / "sample", "--allow-random-codec") == 0
    card = (out / "sample" / "_hub" / "ORG--NAME" / "README.md").read_text()
    assert "> **WARNING: RANDOM CODEC.** `emilia-yodas_en` (tiny-random), `emilia_en` (tiny-random) were encoded " \
           "with a seeded random test codec" in card
    table = card.split("## How the audio was encoded\n", 1)[1].split("\n## ", 1)[0]
    for config in ("emilia-yodas_en", "emilia_en"):
        assert (f"| `{config}` | `tiny-random` (**RANDOM test codec: noise, not Mimi codes**) | - | 8 | `float32` on "
                "cpu | `text_first`, `audio_first` |") in table.splitlines()
    assert "kyutai/mimi" not in card  # nothing in the records names it
    assert "keeping the first 8 of its codebooks" in card and "N = 8\n" in card


def test_after_a_staged_push_every_tool_sees_each_row_once(out, tmp_path, capsys, caplog):
    """The issue's sequence: demo, push --dry-run, decode, validate out/, stats out/ (and inspect out/)."""
    assert push(out / "sample", "--allow-random-codec") == 0
    staged = out / "sample" / "_hub" / "ORG--NAME" / "data" / "emilia" / "en" / "EN-B000000.parquet"
    assert staged.exists()  # a hard link to the shard, without a record beside it
    capsys.readouterr()

    # decode: one row, from the shard, with the codec its record names
    (hit,) = find_rows(out, [ROW])
    assert hit.path == out / "sample" / "emilia" / "en" / "EN-B000000.parquet"
    assert [h.path for h in find_rows(hit.path, [ROW])] == [hit.path]  # one shard given: found there
    assert find_rows(staged, [ROW]) == []  # a staged copy has no record: not a finished shard
    caplog.clear()
    caplog.set_level(logging.INFO)
    wav = tmp_path / "row.wav"
    assert cli(["decode", str(out / "sample"), "--id", ROW, "--out", str(wav)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{wav}\t{ROW}\t7.04 s\t2 utterance(s)"
    assert "decoding with tiny-random, the codec recorded for this shard" in caplog.text
    assert "kyutai/mimi" not in caplog.text.replace("use --codec kyutai/mimi for training data", "")
    assert sf.info(wav).frames == 7.04 * 24_000

    # validate out/: the README's folder holds one root; no false violations
    assert cli(["validate", str(out)]) == 0
    summary = capsys.readouterr().out.splitlines()
    assert summary[-2] == f"output roots: {out / 'sample'}"
    assert summary[-1].startswith("2 components, 2 shards, 10 rows,") and summary[-1].endswith(": clean")

    # stats out/: the one root below, never its _hub copy; the report goes to that root's _stats
    assert cli(["stats", str(out), "--utterance-shards", "0"]) == 0
    stats = json.loads((out / "sample" / "_stats" / "stats.json").read_text())
    assert {c["component"]: (c["shards"], c["rows"]) for c in stats["components"]} == {
        "emilia-yodas/en": (1, 4), "emilia/en": (1, 6)}
    assert not (out / "_stats").exists()

    # inspect out/: the same root, one shard per component
    html = tmp_path / "report"
    assert cli(["inspect", str(out), "--html", str(html), "--per-component", "1"]) == 0
    report = json.loads((html / "report.json").read_text())
    assert [(c["name"], c["totals"]["shards"], c["codec"]) for c in report["components"]] == [
        ("emilia-yodas/en", 1, "tiny-random"), ("emilia/en", 1, "tiny-random")]


def test_a_folder_holding_two_roots(out, capsys, caplog):
    """``out/full`` beside ``out/sample`` (same corpus, same ids): each root on its own, or named."""
    shutil.copytree(out / "sample", out / "full")
    capsys.readouterr()
    assert cli(["validate", str(out)]) == 0  # the same ids in two roots are not duplicates
    summary = capsys.readouterr().out.splitlines()
    assert summary[-2] == f"output roots: {out / 'full'}, {out / 'sample'}"
    assert summary[-1].startswith("4 components, 4 shards, 20 rows,") and summary[-1].endswith(": clean")

    named = f"{out} holds 2 output roots ({out / 'full'}, {out / 'sample'})"
    for command in ("stats", "push", "inspect"):
        caplog.clear()
        argv = {"stats": ["stats", str(out)], "push": ["push", str(out), "--repo", "ORG/NAME", "--dry-run"],
                "inspect": ["inspect", str(out), "--html", str(out.parent / "report")]}[command]
        rc = cli(argv)
        said = errors(caplog) + capsys.readouterr().err.splitlines()
        assert rc in (1, 2) and len(said) == 1 and said[0].endswith(
            f"{named}: run `sodadata {command}` on one of them"), (command, said)

    assert cli(["decode", str(out), "--id", ROW]) == 1
    shard = Path("emilia") / "en" / "EN-B000000.parquet"
    assert capsys.readouterr().err.splitlines() == [
        f"sodadata decode: row {ROW} is in 2 shards: {out / 'full' / shard} and {out / 'sample' / shard}; pass the "
        "output root (or shard) to decode from"]
    assert len(find_rows(out / "full", [ROW])) == 1


def test_records_without_made_by(out, capsys, caplog):
    """An output made before format 2: push refuses (or publishes with the override, saying so), validate names it,
    decode still finds the codec in the old settings."""
    for shard in find_shards(out).shards:
        record = dict(shard.record)
        del record["made_by"]
        shard.record_path.write_text(json.dumps(record))
    sample = out / "sample"
    assert push(sample) == 2
    (line,) = errors(caplog)
    assert ("emilia/en: 1 of 1 shards have no made_by (made before format 2, e.g. EN-B000000): rebuild them with "
            "this sodadata, or pass --allow-unknown-made-by to publish them as they are (the card then says so)"
            ) in line.splitlines()
    # the old settings still name the random codec: that refusal stands too
    assert "emilia/en: encoded with tiny-random, a RANDOM test codec" in line

    assert push(sample, "--allow-unknown-made-by", "--allow-random-codec") == 0
    card = (sample / "_hub" / "ORG--NAME" / "README.md").read_text()
    assert ("| `emilia_en` | not recorded (made before format 2; their settings name `tiny-random`) | not recorded "
            "| not recorded | not recorded | not recorded |") in card
    assert "**WARNING: RANDOM CODEC.**" in card

    capsys.readouterr()
    assert cli(["validate", str(out)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [x for x in lines if "made_by" in x and ":" in x.split()[0]] == [
        f"{sample / c}: 1 of 1 shards have no made_by (made before format 2, e.g. EN-B000000)" for c in COMPONENTS]

    caplog.clear()
    assert cli(["decode", str(sample), "--id", ROW, "--out", str(out.parent / "old.wav")]) == 0
    assert "has no made_by (made before format 2): decoding with tiny-random" in caplog.text


@pytest.mark.slow
def test_decode_needs_the_local_model_that_made_the_shard(tmp_path, capsys):
    model, other = tmp_path / "mimi-seed5", tmp_path / "mimi-seed6"
    build_random_mimi("tiny-random", seed=5).save_pretrained(model)
    build_random_mimi("tiny-random", seed=6).save_pretrained(other)
    out = tmp_path / "local"
    assert emilia.main(demo(out, model, "--subset", "emilia")) == 0
    sha = weights_sha256(model)
    (shard,) = find_shards(out).shards
    assert shard.made_by["codec"] == {"id": "local", "revision": None, "weights_sha256": sha, "random": False}
    capsys.readouterr()

    assert cli(["decode", str(out), "--id", ROW]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"sodadata decode: {shard.parquet}: this shard was encoded with a local codec (weights sha256 {sha}): pass "
        "--codec DIR, the MimiModel.save_pretrained folder holding those weights"]
    assert cli(["decode", str(out), "--id", ROW, "--codec", str(other)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"sodadata decode: {shard.parquet}: --codec {other}: its weights hash to sha256 {weights_sha256(other)}, but "
        f"this shard was encoded with weights {sha}: pass the folder that encoded it"]
    wav = tmp_path / "row.wav"
    assert cli(["decode", str(out), "--id", ROW, "--codec", str(model), "--out", str(wav)]) == 0
    assert capsys.readouterr().out.startswith(f"{wav}\t{ROW}\t7.04 s\t2 utterance(s)\n")
