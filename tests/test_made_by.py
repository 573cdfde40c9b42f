"""``made_by`` in every shard record, and no silent mixing on a rerun (SPEC §2; issue 13, point 1).

The README's demo (the bundled ``sample/emilia`` with ``--codec tiny-random``) is run through the recipe's command
line; reruns into its output with another codec identity or dtype stop before any work with one line, and
``--redo-mismatched`` rebuilds those shards, each replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures_mls import make_mls_source
from fixtures_nemotron import make_nemotron_source

from sodadata.encode.codec import CodecConfig, build_random_mimi, codec_identity
from sodadata.read.recipe import ShardError
from sodadata.recipes import emilia, mls
from sodadata.recipes.emilia import EmiliaRecipe
from sodadata.recipes.nemotron_cc import NemotronCCRecipe
from sodadata.run import pipeline as pipeline_module
from sodadata.run import runner as runner_module
from sodadata.run.pipeline import PipelineConfig
from sodadata.run.runner import RunnerConfig, execute_task, run_recipe
from sodadata.write.made_by import FORMAT_VERSION, describe, differences, prepare
from sodadata.write.shards import ShardPaths

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample" / "emilia"
COMPONENTS = ("emilia-yodas/en", "emilia/en")
TINY_MADE_BY = {
    "format_version": 2,
    "codec": {"id": "tiny-random", "revision": None, "weights_sha256": None, "random": True},
    "dtype": "float32",
    "device": "cpu",
    "codebooks": 8,
    "formats": ["text_first", "audio_first"],
    "text_rule": 2,
    "params": {"max_member_bytes": 64 * 2**20, "max_utterance_seconds": 600.0},
}


def demo(out: Path, *extra: str, codec: str | Path = "tiny-random") -> list[str]:
    """The README's first command (bundled sample, tiny random codec), one torch thread for reproducible codes."""
    return ["--lang", "en", "--source", str(SAMPLE), "--codec", str(codec), "--out", str(out), "--no-progress",
            "--torch-threads", "1", *extra]


def records(out: Path) -> dict[str, dict]:
    found = {}
    for component in COMPONENTS:
        for p in sorted((out / component).glob("*.json")):
            found[f"{component}/{p.stem}"] = json.loads(p.read_text())
    return found


def rows(out: Path) -> dict[str, str]:
    return {r["id"]: r["text"] for c in COMPONENTS for p in sorted((out / c).glob("*.parquet"))
            for r in pq.read_table(p).to_pylist()}


def snapshot(out: Path) -> dict[str, tuple]:
    """Every file and folder under ``out``: size, mtime (ns) and content hash for files; mtime for folders."""
    state = {}
    for path in [out, *sorted(out.rglob("*"))]:
        st = path.stat()
        if path.is_dir():
            state[str(path.relative_to(out))] = ("dir", st.st_mtime_ns)
        else:
            state[str(path.relative_to(out))] = (st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("made-by") / "sample"
    assert emilia.main(demo(out, "--serial")) == 0
    return out


@pytest.fixture
def copy_of_demo(demo_out, tmp_path):
    out = tmp_path / "sample"
    shutil.copytree(demo_out, out)
    return out


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> Path:
    """A local save_pretrained directory: the tiny model's architecture, seeded differently."""
    path = tmp_path_factory.mktemp("codec") / "mimi-seed5"
    build_random_mimi("tiny-random", seed=5).save_pretrained(path)
    return path


def test_every_record_of_the_readme_demo_holds_the_full_made_by(demo_out):
    found = records(demo_out)
    assert sorted(found) == ["emilia-yodas/en/EN-B000000", "emilia/en/EN-B000000"]
    for record in found.values():
        assert record["made_by"] == TINY_MADE_BY


def test_the_default_dask_path_records_the_same_made_by(demo_out, tmp_path, capsys):
    out = tmp_path / "dask"
    assert emilia.main(demo(out)) == 0  # no --serial: a LocalCluster with one worker process
    assert "2 done now" in capsys.readouterr().out
    dask_records = records(out)
    assert {k: r["made_by"] for k, r in dask_records.items()} == {k: TINY_MADE_BY for k in records(demo_out)}
    assert rows(out) == rows(demo_out)


def test_another_codec_stops_before_any_work_with_one_line(copy_of_demo, other_model, monkeypatch, capsys):
    before = snapshot(copy_of_demo)

    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(runner_module, "start_local_cluster", no_cluster)
    rc = emilia.main(demo(copy_of_demo, codec=other_model))
    err = capsys.readouterr().err
    assert rc == 2
    sha = hashlib.sha256(b"model.safetensors\0" + (other_model / "model.safetensors").read_bytes()).hexdigest()
    (line,) = error_lines(err)
    assert line == (
        "error: emilia-yodas/en, emilia/en: 2 finished shards were made with codec.id tiny-random, "
        "codec.weights_sha256 null and codec.random true, this run uses codec.id local, "
        f"codec.weights_sha256 {sha[:12]}… and codec.random false. Nothing was done. Write to another --out, or add "
        "--redo-mismatched to rebuild these 2 shards (each replaced atomically)."
    )
    assert snapshot(copy_of_demo) == before  # no shard, record, run summary or probe file; mtimes included


def test_another_dtype_names_only_the_dtype(copy_of_demo, capsys):
    before = snapshot(copy_of_demo)
    assert emilia.main(demo(copy_of_demo, "--serial", "--dtype", "bfloat16")) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "2 finished shards were made with dtype float32, this run uses dtype bfloat16." in line
    assert "codec" not in line.split("Nothing was done")[0]
    assert snapshot(copy_of_demo) == before


def test_redo_mismatched_rebuilds_them_and_a_same_rerun_skips(copy_of_demo, other_model, capsys):
    old_rows = rows(copy_of_demo)
    args = demo(copy_of_demo, "--serial", codec=other_model)
    assert emilia.main([*args, "--redo-mismatched"]) == 0
    out = capsys.readouterr().out
    assert "2 done now (2 of them redone: made otherwise before)" in out
    sha = hashlib.sha256(b"model.safetensors\0" + (other_model / "model.safetensors").read_bytes()).hexdigest()
    expected = {**TINY_MADE_BY, "codec": {"id": "local", "revision": None, "weights_sha256": sha, "random": False}}
    assert all(r["made_by"] == expected for r in records(copy_of_demo).values())
    new_rows = rows(copy_of_demo)
    assert new_rows.keys() == old_rows.keys()
    assert all(new_rows[k] != old_rows[k] for k in new_rows)  # other weights, other codes in every row
    summary = json.loads(sorted((copy_of_demo / "_runs").glob("*.json"))[-1].read_text())  # names are times
    assert summary["redone"] == 2 and summary["pipeline"]["made_by"] == expected

    before = snapshot(copy_of_demo)
    assert emilia.main(args) == 0
    assert "2 already finished, 0 done now, 0 failed" in capsys.readouterr().out
    after = snapshot(copy_of_demo)
    assert {k: v for k, v in after.items() if not k.startswith("_runs")} == \
        {k: v for k, v in before.items() if not k.startswith("_runs")}


def test_a_shard_failing_during_the_redo_stays_the_old_one(copy_of_demo, monkeypatch, capsys):
    old = snapshot(copy_of_demo)
    real_read = EmiliaRecipe.read

    def read(self, task):
        if task.component == "emilia/en":
            yield from list(real_read(self, task))[:2]
            raise ShardError("source cut")
        yield from real_read(self, task)

    monkeypatch.setattr(EmiliaRecipe, "read", read)
    assert emilia.main(demo(copy_of_demo, "--serial", "--dtype", "bfloat16", "--redo-mismatched", "--retries", "0")) == 1
    assert "1 failed" in capsys.readouterr().out
    now = snapshot(copy_of_demo)
    kept = [k for k in old if k.startswith("emilia/en/") and not k.endswith("rejects")]
    assert kept and all(now[k] == old[k] for k in kept)  # the old record, rows and rejects, untouched
    found = records(copy_of_demo)
    assert found["emilia/en/EN-B000000"]["made_by"] == TINY_MADE_BY
    assert found["emilia-yodas/en/EN-B000000"]["made_by"]["dtype"] == "bfloat16"
    assert not list(copy_of_demo.rglob(".*tmp-*"))


def test_a_kill_between_the_renames_leaves_an_unfinished_shard_never_a_mix(copy_of_demo, monkeypatch, capsys):
    real_write = pipeline_module.write_json_atomic

    def killed_before_the_record(path, obj):
        if obj.get("component") == "emilia/en":
            raise OSError("killed")
        real_write(path, obj)

    monkeypatch.setattr(pipeline_module, "write_json_atomic", killed_before_the_record)
    args = demo(copy_of_demo, "--serial", "--dtype", "bfloat16", "--retries", "0")
    assert emilia.main([*args, "--redo-mismatched"]) == 1
    capsys.readouterr()
    paths = ShardPaths(copy_of_demo, "emilia/en", "EN-B000000")
    assert paths.parquet.exists() and not paths.record.exists()  # the new rows, no record: not finished
    monkeypatch.setattr(pipeline_module, "write_json_atomic", real_write)
    assert emilia.main(args) == 0  # no --redo-mismatched needed: nothing finished there is made otherwise
    assert "1 already finished, 1 done now, 0 failed" in capsys.readouterr().out
    assert all(r["made_by"]["dtype"] == "bfloat16" for r in records(copy_of_demo).values())


def test_a_record_without_made_by_is_made_before_format_2(copy_of_demo, capsys):
    record_path = copy_of_demo / "emilia" / "en" / "EN-B000000.json"
    record = json.loads(record_path.read_text())
    del record["made_by"]
    record_path.write_text(json.dumps(record))
    before = snapshot(copy_of_demo)
    assert emilia.main(demo(copy_of_demo, "--serial")) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("error: emilia/en: 1 finished shard was made before format 2 (no made_by in the record). ")
    assert "emilia-yodas" not in line and "--redo-mismatched" in line and "--out" in line
    assert snapshot(copy_of_demo) == before
    # only the shards this run would touch are compared
    assert emilia.main(demo(copy_of_demo, "--serial", "--subset", "emilia-yodas")) == 0
    assert "1 already finished, 0 done now" in capsys.readouterr().out


def test_a_shard_finished_meanwhile_by_another_run_is_not_added_to(demo_out):
    recipe = EmiliaRecipe(source=str(SAMPLE))
    task = recipe.tasks()[0]
    config = prepare(recipe, PipelineConfig(out=str(demo_out), codec=CodecConfig(codec="tiny-random", dtype="float16")))
    with pytest.raises(ShardError, match="finished meanwhile by another run, made with dtype float32, this run uses"):
        execute_task(recipe, task, config)


def test_mls_shard_hours_are_part_of_made_by(tmp_path, capsys):
    """Another --shard-hours puts other documents under the same shard names: a rerun must not resume into them."""
    make_mls_source(tmp_path / "src")
    argv = ["--split", "dev", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--codec",
            "tiny-random", "--serial", "--no-progress", "--torch-threads", "1"]
    assert mls.main(argv) == 0
    record = json.loads((tmp_path / "out" / "mls" / "en" / "dev-00000.json").read_text())
    assert record["made_by"]["params"] == {"max_utterance_seconds": 600.0, "shard_hours": 10.0}
    capsys.readouterr()
    assert mls.main([*argv, "--shard-hours", "5"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("error: mls/en: 1 finished shard was made with params.shard_hours 10.0, this run uses "
                           "params.shard_hours 5.0. Nothing was done.")


def test_nemotron_records_the_text_only_made_by(tmp_path):
    root = tmp_path / "src"
    make_nemotron_source(root, records_per_file=3, long_line_bytes=1000)
    result = run_recipe(NemotronCCRecipe(source=str(root), max_line_bytes=4096), PipelineConfig(out=str(tmp_path / "o")),
                        RunnerConfig(serial=True, progress=False))
    assert result.ok and result.done >= 2
    expected = {"format_version": FORMAT_VERSION, "codec": None, "dtype": None, "device": None, "codebooks": None,
                "formats": ["text"], "text_rule": 2, "params": {"max_line_bytes": 4096}}
    on_disk = [json.loads(p.read_text()) for p in (tmp_path / "o" / "nemotron-cc" / "hq-actual").glob("*.json")]
    assert len(on_disk) == result.done and all(r["made_by"] == expected for r in on_disk)


# --- codec identity ---------------------------------------------------------------------------------------------


def test_a_hub_codec_is_pinned_to_the_commit_its_revision_names(monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    asked = []

    def resolve(repo, revision, repo_type="dataset"):
        asked.append((repo, revision, repo_type))
        return commit

    monkeypatch.setattr("sodadata.encode.codec_loading.resolve_hf_revision", resolve)
    config = prepare(EmiliaRecipe(source=str(SAMPLE)),
                     PipelineConfig(out="unused", codec=CodecConfig(codec="kyutai/mimi", device="cuda:3", dtype="bfloat16")))
    assert asked == [("kyutai/mimi", None, "model")]
    assert config.codec.revision == commit  # every task loads that commit
    assert config.made_by["codec"] == {"id": "kyutai/mimi", "revision": commit, "weights_sha256": None, "random": False}
    assert (config.made_by["device"], config.made_by["dtype"]) == ("cuda", "bfloat16")


def test_offline_a_hub_codec_resolves_from_the_local_cache_or_says_what_to_do(monkeypatch, tmp_path):
    import huggingface_hub.constants

    def unreachable(repo, revision, repo_type="dataset"):
        raise RuntimeError("cannot reach model 'kyutai/mimi' on the Hugging Face Hub (ConnectError)")

    monkeypatch.setattr("sodadata.encode.codec_loading.resolve_hf_revision", unreachable)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="not in the local Hugging Face cache"):
        codec_identity(CodecConfig(codec="kyutai/mimi"))
    commit = "fe" * 20
    repo = tmp_path / "models--kyutai--mimi"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    assert codec_identity(CodecConfig(codec="kyutai/mimi"))["revision"] == commit


def test_a_local_model_is_known_by_its_weights_not_its_path(other_model, tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(other_model, copy)
    same = codec_identity(CodecConfig(codec=str(copy)))
    assert same == codec_identity(CodecConfig(codec=str(other_model)))
    assert same["id"] == "local" and len(same["weights_sha256"]) == 64
    build_random_mimi("tiny-random", seed=6).save_pretrained(tmp_path / "seed6")
    assert codec_identity(CodecConfig(codec=str(tmp_path / "seed6")))["weights_sha256"] != same["weights_sha256"]
    os.remove(copy / "model.safetensors")
    with pytest.raises(RuntimeError, match="no weight files"):
        codec_identity(CodecConfig(codec=str(copy)))


def test_differences_name_the_keys_in_the_schemas_order():
    other = {**TINY_MADE_BY, "dtype": "bfloat16", "params": {"max_utterance_seconds": 30.0}}
    assert [k for k, *_ in differences(TINY_MADE_BY, other)] == [
        "dtype", "params.max_utterance_seconds", "params.max_member_bytes"]
    assert describe(TINY_MADE_BY, other) == (
        "made with dtype float32, params.max_utterance_seconds 600.0 and params.max_member_bytes 67108864, this run "
        "uses dtype bfloat16, params.max_utterance_seconds 30.0 and params.max_member_bytes (absent)"
    )
    assert differences(TINY_MADE_BY, json.loads(json.dumps(TINY_MADE_BY))) == []
    assert describe(None, TINY_MADE_BY) == "made before format 2 (no made_by in the record)"
