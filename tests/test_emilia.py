"""The Emilia recipe end to end on fixtures in the real layout: content, rejects, counts, Dask, resume."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dask
import numpy as np
import pyarrow.parquet as pq
import pytest
from fixtures import make_emilia_source
from fixtures_yodas2 import parse_text_first
from processes import stop_processes

from sodadata import chars_to_codes
from sodadata.encode.audio import decode_audio
from sodadata.encode.codec import CodecConfig, build_random_mimi, reference_encode
from sodadata.recipes.emilia import EmiliaRecipe
from sodadata.run.pipeline import PipelineConfig
from sodadata.run.runner import CLUSTER_CONFIG, WORKER_SATURATION, RunnerConfig, largest_first, run_recipe
from sodadata.write.document import AUDIO_END, AUDIO_START, TEXT_END, TEXT_START

REPO = Path(__file__).resolve().parent.parent
# Codes are bit-exact for a given thread count; near-ties in the quantizer can flip between 1 and 2 threads.
# Comparisons across runners (serial, LocalCluster, remote workers) therefore pin one torch thread everywhere.
CODEC = CodecConfig(codec="tiny-random", threads=1)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("emilia-src")
    return root, make_emilia_source(root)


@pytest.fixture(scope="module")
def serial_out(source, tmp_path_factory):
    root, _ = source
    out = tmp_path_factory.mktemp("emilia-out")
    result = run_recipe(EmiliaRecipe(source=str(root)), PipelineConfig(out=str(out), codec=CODEC), RunnerConfig(serial=True))
    assert result.ok, result.failures
    return out


def read_rows(out: Path) -> dict[str, dict]:
    rows = {}
    for p in sorted(out.glob("*/*/*.parquet")):
        for r in pq.read_table(p).to_pylist():
            assert r["id"] not in rows
            rows[r["id"]] = r
    return rows


def test_tasks_follow_the_real_layout(source):
    root, _ = source
    tasks = EmiliaRecipe(source=str(root)).tasks()
    assert [t.name for t in tasks] == [
        "emilia/en/EN-B000000", "emilia/en/EN-B000060", "emilia-yodas/en/EN-B000000", "emilia-yodas/en/EN-B000060",
    ]
    assert tasks[1].split == "Emilia-EN-B000060" and tasks[3].split == "Emilia-YODAS-EN-B000060"
    assert [t.name for t in EmiliaRecipe(source=str(root), subsets=("emilia-yodas",)).tasks()] == [
        "emilia-yodas/en/EN-B000000", "emilia-yodas/en/EN-B000060"
    ]


def test_documents_rows_and_transcripts(source, serial_out):
    _, exp = source
    rows = read_rows(serial_out)
    expected_ids = {f"{doc}_type{k}" for comp in exp.documents.values() for doc in comp for k in (1, 2)}
    assert set(rows) == expected_ids
    for comp, docs in exp.documents.items():
        for doc, utt_ids in docs.items():
            r1, r2 = rows[f"{doc}_type1"], rows[f"{doc}_type2"]
            assert r1["corpus"] == r2["corpus"] == comp
            assert (r1["format"], r2["format"]) == ("text_first", "audio_first")
            pairs = parse_text_first(r1["text"])
            # utterances in W order, transcripts stripped of the leading space, nothing else changed
            assert [t for t, _ in pairs] == [exp.transcripts[u] for u in utt_ids]
            assert r1["n_utterances"] == len(utt_ids)
            assert r1["n_audio_tokens"] == sum(len(a) for _, a in pairs)
            assert abs(r1["audio_seconds"] - sum(len(a) for _, a in pairs) / 100) < 0.08 * len(utt_ids)
            # the audio-first row holds the same utterances in the other order
            expected2 = "<|begin_of_text|>" + "".join(
                f"{AUDIO_START}{a}{AUDIO_END}{TEXT_START}{t}{TEXT_END}" for t, a in pairs
            ) + "<|end_of_text|>"
            assert r2["text"] == expected2
            meta = json.loads(r1["metadata"])
            assert [u["id"] for u in meta["utterances"]] == utt_ids
            assert all(u["speaker"] == doc for u in meta["utterances"])


def test_every_bad_item_is_rejected_with_its_reason_and_counts_balance(source, serial_out):
    _, exp = source
    for comp, expected in exp.rejects.items():
        got = {}
        records = []
        for p in sorted((serial_out / comp / "rejects").glob("*.parquet")):
            for r in pq.read_table(p).to_pylist():
                got[r["id"]] = r["reason"]
                assert r["detail"], r
        for rec_path in sorted((serial_out / comp).glob("*.json")):
            records.append(json.loads(rec_path.read_text()))
        assert got == expected
        assert sum(r["read"] for r in records) == exp.read[comp]
        for rec in records:
            assert rec["read"] == rec["written"] + rec["rejected"]
            assert rec["rejected"] == sum(rec["rejects"].values())
            assert rec["source"]["inputs"][0]["size"] > 0
        written = sum(len(v) for v in exp.documents[comp].values())
        assert sum(r["written"] for r in records) == written


def test_written_codes_are_the_codec_codes_of_the_decoded_audio(source, serial_out):
    """Every row's audio decodes back to exactly the codes Mimi gives for that utterance's audio."""
    root, exp = source
    model = build_random_mimi("tiny-random")
    rows = read_rows(serial_out)
    import tarfile

    mp3 = {}
    for tar_path in root.rglob("*.tar"):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".mp3"):
                    mp3[m.name[:-4]] = tar.extractfile(m).read()
    checked = 0
    for docs in exp.documents.values():
        for doc, utt_ids in list(docs.items())[:2]:
            for uid, (_, audio) in zip(utt_ids, parse_text_first(rows[f"{doc}_type1"]["text"])):
                codes = chars_to_codes(audio)
                np.testing.assert_array_equal(codes, reference_encode(model, decode_audio(mp3[uid])))
                assert len(np.unique(codes[0])) > 3
                checked += 1
    assert checked >= 8


def test_datasets_reads_the_shards_and_text_decodes_to_the_written_codes(serial_out):
    datasets = pytest.importorskip("datasets")
    files = sorted(str(p) for p in serial_out.glob("*/*/*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    rows = read_rows(serial_out)
    assert len(ds) == len(rows)
    assert set(ds.column_names) >= {"id", "split", "text", "corpus", "format", "n_utterances", "audio_seconds",
                                   "n_audio_tokens", "metadata"}
    for r in ds:
        assert r["text"] == rows[r["id"]]["text"]
        audio = [a for _, a in parse_text_first(r["text"])] if r["format"] == "text_first" else []
        assert sum(chars_to_codes(a).shape[1] * 8 for a in audio) == (r["n_audio_tokens"] if audio else 0)


def test_rerun_skips_finished_shards(source, serial_out):
    root, _ = source
    before = {p: p.stat().st_mtime_ns for p in serial_out.glob("*/*/*.parquet")}
    result = run_recipe(EmiliaRecipe(source=str(root)), PipelineConfig(out=str(serial_out), codec=CODEC), RunnerConfig(serial=True))
    assert result.skipped == 4 and result.done == 0
    assert {p: p.stat().st_mtime_ns for p in serial_out.glob("*/*/*.parquet")} == before


def test_local_cluster_gives_the_same_rows(source, serial_out, tmp_path):
    root, _ = source
    result = run_recipe(
        EmiliaRecipe(source=str(root)), PipelineConfig(out=str(tmp_path), codec=CODEC),
        RunnerConfig(workers=2, threads_per_worker=1, progress=False),
    )
    assert result.ok and result.done == 4
    assert read_rows(tmp_path) == read_rows(serial_out)


def test_shards_are_handed_out_largest_first(source, tmp_path):
    """One worker takes one shard at a time, largest first (end-of-run balance); completion order shows it."""
    root, _ = source
    recipe = EmiliaRecipe(source=str(root))
    tasks = recipe.tasks()
    sizes = {t.name: sum(f.size for f in t.inputs) for t in tasks}
    expected = [t.name for t in largest_first(tasks)]
    assert len(set(sizes.values())) == len(tasks) and expected != [t.name for t in tasks]  # the test can fail
    assert [sizes[n] for n in expected] == sorted(sizes.values(), reverse=True)
    result = run_recipe(recipe, PipelineConfig(out=str(tmp_path), codec=CODEC),
                        RunnerConfig(workers=1, threads_per_worker=1, progress=False))
    assert result.ok and list(result.records) == expected


def test_a_cluster_with_dask_defaults_is_named_in_warnings(source, tmp_path, caplog):
    """Dask's default saturation (1.1) and worker profiler each get a warning naming the variable to set."""
    from distributed import LocalCluster

    root, _ = source
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with caplog.at_level(logging.WARNING, logger="sodadata.run.runner"):
            result = run_recipe(EmiliaRecipe(source=str(root)), PipelineConfig(out=str(tmp_path / "a"), codec=CODEC),
                                RunnerConfig(scheduler=cluster.scheduler_address, progress=False), limit_shards=1)
    assert result.ok
    assert "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION=1.0" in caplog.text
    assert "1 of the workers run Dask's statistical profiler" in caplog.text
    assert "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False" in caplog.text
    caplog.clear()
    with dask.config.set(CLUSTER_CONFIG):
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    with cluster, caplog.at_level(logging.WARNING, logger="sodadata.run.runner"):
        result = run_recipe(EmiliaRecipe(source=str(root)), PipelineConfig(out=str(tmp_path / "b"), codec=CODEC),
                            RunnerConfig(scheduler=cluster.scheduler_address, progress=False), limit_shards=1)
    assert result.ok and "WORKER_SATURATION" not in caplog.text and "profiler" not in caplog.text


def test_the_runners_local_cluster_has_its_settings_in_the_worker_processes():
    from distributed import Client

    from sodadata.run.runner import _scheduler_saturation, _worker_profiling, start_local_cluster

    with start_local_cluster(RunnerConfig(workers=1)) as cluster, Client(cluster) as client:
        assert client.run_on_scheduler(_scheduler_saturation) == WORKER_SATURATION
        (profiling,) = client.run(_worker_profiling).values()  # asked inside the worker process
        assert profiling is False
        (pid,) = client.run(os.getpid).values()
        assert pid != os.getpid()


def test_largest_first_puts_unknown_sizes_last_and_keeps_recipe_order_among_equals():
    from sodadata.read.recipe import ShardTask, SourceFile

    def task(stem, *sizes):
        return ShardTask(component="c", stem=stem, split=stem, inputs=tuple(SourceFile(f"/{stem}{i}", s)
                                                                            for i, s in enumerate(sizes)))

    tasks = [task("a", 5), task("b", None), task("c", 3, 4), task("d", 5), task("e", 1, None)]
    assert [t.stem for t in largest_first(tasks)] == ["c", "a", "d", "b", "e"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_workers(address: str, n: int, timeout: float = 90) -> None:
    from distributed import Client

    with Client(address, timeout=timeout) as client:
        client.wait_for_workers(n, timeout=timeout)


@pytest.mark.slow
def test_real_dask_scheduler_and_two_worker_processes(source, serial_out, tmp_path):
    root, _ = source
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([bin_dir / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen([bin_dir / "dask", "worker", address, "--nthreads", "1", "--nworkers", "1",
                                           "--no-dashboard"], env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        _wait_for_workers(address, 2)
        cmd = [sys.executable, "-m", "sodadata.recipes.emilia", "--lang", "en", "--source", str(root), "--out",
               str(tmp_path), "--codec", "tiny-random", "--torch-threads", "1", "--scheduler", address, "--no-progress"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "NOT real Mimi codes" in done.stderr
        assert "emilia-yodas/en" in done.stdout and "rejects in emilia/en" in done.stdout
        from distributed import Client

        with Client(address) as client:  # the user's workers: still there, and not given our exit plugin
            plugins = client.run(lambda dask_worker: sorted(dask_worker.plugins))
        assert len(plugins) == 2 and not any("sodadata" in name for names in plugins.values() for name in names)
    finally:
        stop_processes(reversed(procs))
    assert read_rows(tmp_path) == read_rows(serial_out)


def _visible_parquets_are_complete(out: Path) -> list[Path]:
    files = [p for p in out.rglob("*.parquet") if not p.name.startswith(".")]
    for p in files:
        assert pq.ParquetFile(p).metadata.num_rows >= 0  # opening raises on a partial file
    return files


@pytest.mark.slow
@pytest.mark.usefixtures("restore_torch_threads")
def test_sigkill_partway_then_rerun_resumes_without_redoing_finished_shards(tmp_path):
    from sodadata.cli import main as cli

    root = tmp_path / "src"
    make_emilia_source(root, seed=3, quirks=False, tars_per_subset=4, docs_per_tar=2, utts_per_doc=3)
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    options = ["--source", str(root), "--codec", "tiny-random", "--serial", "--no-progress"]
    cmd = [sys.executable, "-m", "sodadata.recipes.emilia", *options]
    # The uninterrupted reference: the same command in this process (only the killed run and its rerun need
    # fresh interpreters; a third would only repeat their 5 s of imports).
    assert cli(["emilia", *options, "--out", str(ref_out)]) == 0

    proc = subprocess.Popen([*cmd, "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finished_before_kill: dict[Path, int] = {}
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        _visible_parquets_are_complete(out) if out.exists() else None
        records = list(out.glob("*/*/*.json")) if out.exists() else []
        if 2 <= len(records) < 8:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed; make the fixture bigger"
    for rec in out.glob("*/*/*.json"):
        finished_before_kill[rec.with_suffix(".parquet")] = rec.with_suffix(".parquet").stat().st_mtime_ns
    _visible_parquets_are_complete(out)
    assert 2 <= len(finished_before_kill) < 8

    rerun = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(finished_before_kill)} already finished" in rerun.stdout
    for p, mtime in finished_before_kill.items():
        assert p.stat().st_mtime_ns == mtime, f"{p.name} was redone"
    assert read_rows(out) == read_rows(ref_out)
    for p in out.rglob("*"):
        assert not (p.is_file() and ".tmp-" in p.name and not p.name.startswith(".")), p


def test_a_corrupt_tar_fails_its_shard_with_a_clear_line_and_exit_code(tmp_path):
    root = tmp_path / "src"
    make_emilia_source(root, seed=4, quirks=False, tars_per_subset=2, docs_per_tar=1, utts_per_doc=2)
    bad = root / "Emilia" / "EN" / "EN-B000060.tar"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 3])  # truncated mid-member
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "sodadata.recipes.emilia", "--source", str(root), "--out", str(tmp_path / "out"),
         "--codec", "tiny-random", "--serial", "--retries", "1", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 4 shards failed: emilia/en/EN-B000060: ShardError")
    assert "rerun" in last
    assert not (tmp_path / "out" / "emilia" / "en" / "EN-B000060.parquet").exists()
    assert (tmp_path / "out" / "emilia" / "en" / "EN-B000000.json").exists()


def test_help_explains_every_option():
    done = subprocess.run([sys.executable, "-m", "sodadata.recipes.emilia", "--help"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0
    for opt in ("--lang", "--subset", "--source", "--out", "--limit-shards", "--workers", "--threads-per-worker",
                "--scheduler", "--codec", "--device", "--dtype", "--batch-size", "--retries"):
        assert opt in done.stdout
