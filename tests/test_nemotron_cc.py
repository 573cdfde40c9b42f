"""The Nemotron-CC recipe on a mirror in the real Common Crawl layout: listing, streaming, rows, rejects, HTTP,
Dask, failures, resume, memory."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import zstandard
from fixtures_nemotron import (
    DECOYS,
    KEPT,
    LINE_BREAKERS,
    PATHS_FILE,
    UNLISTED,
    compress_frames,
    make_nemotron_source,
    serve,
    write_large_file,
)

from sodadata import cli
from sodadata.read.recipe import Reject, ShardError, TextRecord
from sodadata.recipes.nemotron_cc import (
    LongLine,
    NemotronCCRecipe,
    decompressed_chunks,
    main,
    split_lines,
)
from sodadata.run.pipeline import PipelineConfig
from sodadata.run.runner import RunnerConfig, run_recipe
from sodadata.write.document import BOS, EOS
from sodadata.write.shards import ROW_SCHEMA

REPO = Path(__file__).resolve().parent.parent
COMPONENT = "nemotron-cc/hq-actual"
MAX_LINE = 256 * 1024  # below the fixture's long line (300 kB)
SERIAL = RunnerConfig(serial=True, progress=False, retries=1)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("nemotron-src")
    return root, make_nemotron_source(root)


@pytest.fixture(scope="module")
def serial_out(source, tmp_path_factory):
    root, _ = source
    out = tmp_path_factory.mktemp("nemotron-out")
    result = run_recipe(NemotronCCRecipe(source=str(root), max_line_bytes=MAX_LINE), PipelineConfig(out=str(out)), SERIAL)
    assert result.ok, result.failures
    return out


def read_rows(out: Path) -> dict[str, dict]:
    rows = {}
    for p in sorted((out / COMPONENT).glob("*.parquet")):
        for r in pq.read_table(p).to_pylist():
            assert r["id"] not in rows
            rows[r["id"]] = r
    return rows


def read_rejects(out: Path) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for p in sorted((out / COMPONENT / "rejects").glob("*.parquet")):
        for r in pq.read_table(p).to_pylist():
            assert r["source"] == p.stem
            found.setdefault(p.stem, {})[r["id"]] = r["reason"]
    return found


# --- streaming primitives -------------------------------------------------------------------------------------


def test_lines_split_on_newline_only_whatever_the_chunking():
    rng = random.Random(1)
    lines = [f"line {i} {LINE_BREAKERS} é 😀 {'x' * rng.randint(0, 50)}".encode() for i in range(40)] + [b"", b"  "]
    rng.shuffle(lines)
    data = b"\n".join(lines) + b"\n"
    assert data.decode().splitlines() != [x.decode() for x in lines]  # the trap: splitlines breaks U+2028 & co.
    for trial in range(200):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, 60))) if trial else list(range(1, len(data)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        assert list(split_lines(chunks, 10_000)) == lines
    assert list(split_lines([b"a\nlast without newline"], 100)) == [b"a", b"last without newline"]
    assert list(split_lines([b"a\n\nb\n"], 100)) == [b"a", b"", b"b"]  # a blank line is a line


def test_an_over_long_line_is_skipped_as_it_streams_and_the_next_lines_are_intact():
    assert list(split_lines([b"12345\n123456\n"], 5)) == [b"12345", LongLine(6, b"123456")]
    size = 20 * 2**20

    def chunks():  # a 20 MiB line arriving in 64 KiB pieces, then two normal lines
        yield b"ok\n" + b'{"warc_record_id": "<urn:uuid:big>", "text": "'
        for _ in range(size // 65536):
            yield b"y" * 65536
        yield b'"}\nafter\nlast'

    tracemalloc.start()
    out = list(split_lines(chunks(), 1 << 20))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out[0] == b"ok" and out[2:] == [b"after", b"last"]
    assert isinstance(out[1], LongLine) and out[1].size == size + 48
    assert out[1].head.startswith(b'{"warc_record_id": "<urn:uuid:big>"') and len(out[1].head) == 4096
    assert peak < 3 * 2**20  # the 1 MiB limit and a chunk, not the 20 MiB line


def _frames(*parts: bytes) -> bytes:
    return b"".join(zstandard.ZstdCompressor().compress(p) for p in parts)


@pytest.mark.parametrize("read_bytes,chunk_bytes", [(1, 1), (7, 3), (4096, 64), (1 << 20, 1 << 17)])
def test_every_frame_is_decompressed_whatever_the_block_sizes(read_bytes, chunk_bytes):
    parts = [b"first frame ends mid-cha\xe2\x80", b"\xa8racter\n", b"", b"third\n" * 1000]
    blob = compress_frames(b"".join(parts), [len(parts[0]), len(parts[0]) + len(parts[1])], skippable_after=1)
    got = b"".join(decompressed_chunks(io.BytesIO(blob), read_bytes, chunk_bytes))
    assert got == b"".join(parts)


def test_a_stream_that_ends_inside_a_frame_or_is_not_zstd_fails_as_a_whole():
    blob = _frames(b"a\n" * 5000, b"b\n" * 5000)
    first = len(_frames(b"a\n" * 5000))
    for cut in (3, first - 1, first + 2, first + 10, len(blob) - 1):  # in a header, in a block, in the checksum
        with pytest.raises(ShardError, match="truncated"):
            b"".join(decompressed_chunks(io.BytesIO(blob[:cut])))
    with pytest.raises(ShardError, match="not valid zstd"):
        b"".join(decompressed_chunks(io.BytesIO(b'{"warc_record_id": "plain json, not zstd"}\n')))
    with pytest.raises(ShardError, match="empty file"):
        b"".join(decompressed_chunks(io.BytesIO(b"")))
    # A cut exactly between frames is a valid zstd stream: only the file's size can tell (see the HTTP test).
    assert b"".join(decompressed_chunks(io.BytesIO(blob[:first]))) == b"a\n" * 5000


# --- listing ----------------------------------------------------------------------------------------------------


def test_tasks_are_the_listed_files_of_the_partition_only(source):
    root, exp = source
    tasks = NemotronCCRecipe(source=str(root)).tasks()
    assert [t.name for t in tasks] == [f"{COMPONENT}/{s}" for s in exp.stems]  # sorted, decoys and unlisted out
    digest = hashlib.sha256((root / PATHS_FILE).read_bytes()).hexdigest()
    for t, stem in zip(tasks, exp.stems):
        assert t.split == t.stem == stem
        (src,) = t.inputs
        assert Path(src.url) == exp.paths[stem] and src.size == exp.paths[stem].stat().st_size
        assert t.revision == f"sha256:{digest}" and f"/{KEPT}/" in src.url
    other = NemotronCCRecipe(source=str(root), quality="medium-high")
    assert other.component == "nemotron-cc/medium-high-actual" and len(other.tasks()) == 2
    synth = NemotronCCRecipe(source=str(root), partition_kind="synthetic", partition_kind2="distill")
    assert synth.component == "nemotron-cc/hq-synthetic-distill"
    assert all(f"/{DECOYS[0]}/" in t.inputs[0].url for t in synth.tasks())


def test_the_list_can_be_pinned_and_a_mirror_without_it_is_listed_from_its_directory(source, tmp_path):
    root, exp = source
    with pytest.raises(ValueError, match="SHA-256"):
        NemotronCCRecipe(source=str(root), paths_sha256="0" * 64).tasks()
    digest = hashlib.sha256((root / PATHS_FILE).read_bytes()).hexdigest()
    assert len(NemotronCCRecipe(source=str(root), paths_sha256=digest.upper()).tasks()) == 3
    with pytest.raises(RuntimeError, match="partitions listed: quality=high/kind=actual/kind2=actual"):
        NemotronCCRecipe(source=str(root), quality="medium").tasks()
    # a plain-text list elsewhere, with stray lines and a duplicate
    plain = tmp_path / "my.paths"
    rel = sorted(str(p.relative_to(root)) for p in exp.paths.values())
    plain.write_text("\n".join([rel[0], "README.txt", "", rel[0], "/" + rel[1]]) + "\n")
    assert [t.stem for t in NemotronCCRecipe(source=str(root), paths_file=str(plain)).tasks()] == [
        Path(r).name.removesuffix(".jsonl.zstd") for r in rel[:2]
    ]
    # a mirror without the list: its partition directory (here including the unlisted file), revision unknown
    mirror = tmp_path / "mirror"
    shutil.copytree(root, mirror)
    (mirror / PATHS_FILE).unlink()
    tasks = NemotronCCRecipe(source=str(mirror)).tasks()
    assert [t.stem for t in tasks] == sorted([*exp.stems, UNLISTED]) and tasks[0].revision is None
    with pytest.raises(FileNotFoundError):
        NemotronCCRecipe(source=str(mirror), paths_file=str(mirror / PATHS_FILE)).tasks()
    # over HTTP a missing list is an error (no directory listing to fall back on); so is a list that is not one
    (tmp_path / "empty").mkdir()
    with serve(tmp_path / "empty") as url, pytest.raises(FileNotFoundError, match="HTTP 404"):
        NemotronCCRecipe(source=url).tasks()
    broken = tmp_path / "broken.paths.gz"
    broken.write_bytes(gzip.compress(b"contrib/x\n")[:12])
    with pytest.raises(ValueError, match="not a gzip or UTF-8 list"):
        NemotronCCRecipe(source=str(root), paths_file=str(broken)).tasks()


# --- rows, metadata, rejects ------------------------------------------------------------------------------------


def test_rows_are_the_records_texts_with_their_ids_and_metadata(source, serial_out):
    _, exp = source
    rows = read_rows(serial_out)
    assert set(rows) == set(exp.texts)
    assert not exp.decoy_ids & set(rows)
    assert pq.read_schema(next((serial_out / COMPONENT).glob("*.parquet"))).remove_metadata() == ROW_SCHEMA
    for rid, row in rows.items():
        assert row["text"] == BOS + exp.texts[rid] + EOS  # byte-exact: nothing stripped or normalized
        assert json.loads(row["metadata"]) == exp.metadata[rid]  # every key but text and id, unknown ones too
        assert row["split"] == exp.stem_of[rid] and row["corpus"] == COMPONENT and row["format"] == "text"
        assert (row["n_utterances"], row["audio_seconds"], row["n_audio_tokens"]) == (0, 0.0, 0)
    breakers = [r for r in rows.values() if "\u2028" in r["text"]]
    assert len(breakers) == 1 and all(c in breakers[0]["text"] for c in LINE_BREAKERS)
    assert any(json.loads(r["metadata"]).get("new_field") == {"nested": [1, 2.5, None]} for r in rows.values())


def test_every_line_is_written_or_rejected_with_its_reason_and_counts_balance(source, serial_out):
    root, exp = source
    rejects = read_rejects(serial_out)
    expected = {stem: dict(r) for stem, r in exp.rejects.items() if r}
    expected[exp.stems[0]][exp.long_id] = "line_too_long"
    assert rejects == expected
    rows = read_rows(serial_out)
    digest = hashlib.sha256((root / PATHS_FILE).read_bytes()).hexdigest()
    for stem in exp.stems:
        rec = json.loads((serial_out / COMPONENT / f"{stem}.json").read_text())
        n_rows = sum(1 for r in rows.values() if r["split"] == stem)
        assert rec["read"] == exp.lines[stem] == rec["written"] + rec["rejected"]
        assert rec["written"] == rec["rows"] == rec["documents"] == n_rows
        assert rec["rejected"] == len(expected.get(stem, {}))
        assert sum(rec["rejects"].values()) == rec["rejected"]
        assert rec["unit"] == "record" and rec["codec"] is None and rec["audio_seconds"] == 0
        assert rec["source"]["revision"] == f"sha256:{digest}" and rec["source"]["inputs"][0]["url"].endswith(stem + ".jsonl.zstd")


def test_with_the_default_line_limit_the_long_record_is_kept(source):
    root, exp = source
    recipe = NemotronCCRecipe(source=str(root))
    items = list(recipe.read(recipe.tasks()[0]))
    long = [i for i in items if i.id == exp.long_id]
    assert len(long) == 1 and isinstance(long[0], TextRecord) and long[0].text == "x" * 300_000
    pipeline_reasons = {"empty_text", "duplicate_id", "text_has_marker", "audio_range_character", "invalid_unicode"}
    recipe_rejects = {i.id: i.reason for i in items if isinstance(i, Reject)}
    assert recipe_rejects == {k: v for k, v in exp.rejects[exp.stems[0]].items() if v not in pipeline_reasons}


# --- HTTP, Dask, failures, resume --------------------------------------------------------------------------------


def test_over_http_through_a_local_cluster_the_shards_are_the_same(source, serial_out, tmp_path):
    root, _ = source
    with serve(root) as url:
        rc = main(["--source", url, "--out", str(tmp_path), "--workers", "2", "--max-line-bytes", str(MAX_LINE),
                   "--no-progress"])
    assert rc == 0
    assert read_rows(tmp_path) == read_rows(serial_out)
    assert read_rejects(tmp_path) == read_rejects(serial_out)
    rec = json.loads(next((tmp_path / COMPONENT).glob("*.json")).read_text())
    assert rec["source"]["inputs"][0]["url"].startswith(url + "contrib/Nemotron/Nemotron-CC/data-jsonl/")
    (summary,) = (tmp_path / "_runs").glob("*.json")
    assert json.loads(summary.read_text())["recipe"]["source"] == url


def test_a_truncated_file_fails_only_its_shard_and_a_rerun_after_the_fix_resumes(source, tmp_path):
    root, exp = source
    mirror = tmp_path / "mirror"
    shutil.copytree(root, mirror)
    victim = mirror / exp.paths[exp.stems[1]].relative_to(root)
    whole = victim.read_bytes()
    victim.write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    recipe = NemotronCCRecipe(source=str(mirror), max_line_bytes=MAX_LINE)
    result = run_recipe(recipe, PipelineConfig(out=str(out)), SERIAL)
    assert [f.task for f in result.failures] == [f"{COMPONENT}/{exp.stems[1]}"]
    assert "ShardError" in result.failures[0].error and "truncated" in result.failures[0].error
    assert not list((out / COMPONENT).glob(f"*{exp.stems[1]}*")) and not list((out / COMPONENT).rglob(".*"))
    assert result.done == 2 and not list((out / COMPONENT / "rejects").glob(f"*{exp.stems[1]}*"))
    # a file replaced after the tasks were listed (here by a valid, longer one) is refused by its size
    task = recipe.tasks()[1]
    victim.write_bytes(whole + compress_frames(b"\n", []))
    with pytest.raises(ShardError, match="changed since it was listed"):
        list(recipe.read(task))

    victim.write_bytes(whole)
    result = run_recipe(recipe, PipelineConfig(out=str(out)), SERIAL)
    assert result.ok and (result.skipped, result.done) == (2, 1)
    assert json.loads((out / COMPONENT / f"{exp.stems[1]}.json").read_text())["read"] == exp.lines[exp.stems[1]]


def test_an_http_transfer_cut_between_two_frames_is_caught_by_its_length(source, tmp_path):
    root, exp = source
    stem = exp.stems[1]  # three data frames and a skippable one
    rel = "/" + str(exp.paths[stem].relative_to(root))
    blob = exp.paths[stem].read_bytes()
    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    dobj.decompress(blob)
    boundary = len(blob) - len(dobj.unused_data)  # end of the first frame
    assert 0 < boundary < len(blob)
    with serve(root, cut={rel: boundary}) as url:
        result = run_recipe(NemotronCCRecipe(source=url), PipelineConfig(out=str(tmp_path)),
                            RunnerConfig(serial=True, progress=False, retries=0))
    assert [f.task for f in result.failures] == [f"{COMPONENT}/{stem}"]
    assert "cut short" in result.failures[0].error
    assert not (tmp_path / COMPONENT / f"{stem}.json").exists() and result.done == 2


# --- CLI ---------------------------------------------------------------------------------------------------------


def test_cli_options_and_errors(source, tmp_path, capsys):
    root, exp = source
    with pytest.raises(SystemExit):
        main(["--help"])
    helptext = capsys.readouterr().out
    for opt in ("--quality", "--kind", "--kind2", "--source", "--paths-file", "--paths-sha256", "--max-line-bytes",
                "--limit-shards", "--workers", "--scheduler", "--retries", "--serial", "--out"):
        assert opt in helptext
    assert "--codec" not in helptext and "--device" not in helptext  # no codec for a text recipe
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path), "--codec", "tiny-random"])
    assert e.value.code == 2
    assert main(["--out", str(tmp_path), "--source", str(root), "--kind", "synthetic"]) == 2
    assert "needs --kind2" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--source", str(root), "--paths-sha256", "ab" * 32]) == 2
    assert "pinned" in capsys.readouterr().err
    # `sodadata nemotron-cc` is the same command; --limit-shards takes the first file in task order
    rc = cli.main(["nemotron-cc", "--quality", "high", "--kind", "actual", "--source", str(root), "--out",
                   str(tmp_path / "one"), "--limit-shards", "1", "--serial", "--no-progress"])
    assert rc == 0
    assert [p.stem for p in (tmp_path / "one" / COMPONENT).glob("*.parquet")] == [exp.stems[0]]


# --- memory -------------------------------------------------------------------------------------------------------


def test_peak_memory_of_a_task_does_not_grow_with_the_file(tmp_path):
    """Whole task (read + rows + Parquet), each size in a fresh process; 1 MiB row groups keep the test small."""
    peaks = {}
    for mb in (3, 30):
        path = tmp_path / f"CC-MAIN-2024-10-part-{mb:05d}.jsonl.zstd"
        n = write_large_file(path, mb * 1_000_000)
        assert path.stat().st_size > 1_000_000  # past the recipe's 1 MiB read block even for the small file
        proc = subprocess.run(
            [sys.executable, "-m", "bench.nemotron_memory", "--child", "task", str(path), str(tmp_path / f"out{mb}"),
             "--row-group-bytes", str(2**20)],
            cwd=REPO, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        assert res["records"] == n and res["rejects"] == 0
        assert res["codec"] is None and not res["codec_loaded"]  # neither torch nor transformers was imported
        peaks[mb] = res["heap_peak_mib"]
    # ten times the data, the same peak (within 1 MiB of noise); and far below the file itself
    assert peaks[30] < peaks[3] + 1.0, peaks
    assert peaks[30] < 30 / 2, peaks


def test_the_fixture_list_holds_paths_relative_to_the_base(source):
    root, exp = source
    entries = gzip.decompress((root / PATHS_FILE).read_bytes()).decode().split("\n")
    assert entries[-1] == "" and len(entries[:-1]) == len(exp.stems) + 2 * len(DECOYS)
    assert all(e.startswith("contrib/Nemotron/Nemotron-CC/data-jsonl/quality=") and (root / e).is_file()
               for e in entries[:-1])
