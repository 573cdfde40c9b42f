"""The default layout is the fast one for the machine and the shards to do (sodadata.run.worker_layout), and the run
says which it chose."""

from __future__ import annotations

import json
import re

import pytest
from fixtures import make_emilia_source

from sodadata.run.runner import RunResult, format_summary
from sodadata.run.worker_layout import Layout, choose_layout, usable_cores


@pytest.mark.parametrize("cores, shards, expected", [
    (2, 4, (2, 1)),  # one worker per core, one torch thread each
    (16, 100, (16, 1)),
    (2, 2, (2, 1)),
    (2, 1, (1, 2)),  # fewer shards than cores: one worker per shard, the cores as torch threads
    (16, 3, (3, 5)),  # 16 // 3: a core left over stays idle
    (16, 1, (1, 16)),
    (1, 8, (1, 1)),
])
def test_cpu_default_is_a_worker_per_core_with_one_torch_thread(cores, shards, expected):
    layout = choose_layout(shards, device="cpu", cores=cores)
    assert (layout.workers, layout.torch_threads) == expected and layout.threads_per_worker == 1


def test_what_the_user_sets_wins_and_torch_threads_follow():
    assert choose_layout(10, cores=8, workers=2).torch_threads == 4
    assert choose_layout(10, cores=8, workers=2, threads_per_worker=2).torch_threads == 2
    assert choose_layout(10, cores=8, threads_per_worker=2).workers == 4  # a core per task at once
    assert choose_layout(10, cores=8, torch_threads=3).workers == 8  # --torch-threads alone keeps the workers
    assert choose_layout(1, cores=8, workers=4).workers == 4  # asked for: not reduced to the shards
    assert choose_layout(10, cores=1, workers=3).torch_threads == 1


@pytest.mark.parametrize("gpus, shards, device, workers", [
    (4, 10, "cuda", 4), (4, 2, "cuda", 2), (1, 10, "cuda", 1), (8, 10, "cuda:3", 1), (0, 10, "cuda", 1),
])
def test_cuda_default_is_a_worker_per_gpu(gpus, shards, device, workers):
    layout = choose_layout(shards, device=device, cores=16, gpus=gpus)
    assert layout.workers == workers and layout.torch_threads == 16 // workers


def test_a_cluster_of_its_own_keeps_its_layout_and_serial_uses_every_core():
    external = choose_layout(10, cores=8, external=True)
    assert (external.workers, external.threads_per_worker, external.torch_threads) == (None, None, None)
    assert choose_layout(10, cores=8, external=True, torch_threads=1).torch_threads == 1
    serial = choose_layout(10, cores=8, serial=True)
    assert (serial.workers, serial.torch_threads) == (1, 8)
    assert choose_layout(10, device="", cores=8).torch_threads is None  # a text-only recipe runs no torch


def test_usable_cores_are_this_process_affinity():
    import os

    assert usable_cores() == len(os.sched_getaffinity(0))


def test_the_summary_line_says_the_layout():
    result = RunResult(tasks=4, skipped=0, done=4, elapsed_seconds=12.34,
                       layout=Layout(2, 1, 1, "cpu", cores=2))
    assert format_summary(result).splitlines()[0] == (
        "shards: 4 in this run, 0 already finished, 4 done now, 0 failed (12.3 s; 2 workers x 1 torch thread, cpu)")
    for layout, words in ((Layout(1, 1, 2, "cpu", 2), "1 worker x 2 torch threads, cpu"),
                          (Layout(1, 1, 2, "cpu", 2, serial=True), "in this process x 2 torch threads, cpu"),
                          (Layout(None, None, None, "cuda", 2, external=True),
                           "the scheduler's workers x the workers' torch threads, cuda"),
                          (Layout(2, 1, None, "", 2), "2 workers")):
        assert layout.describe() == words


@pytest.mark.slow
def test_the_default_command_lays_out_one_worker_per_core(tmp_path, monkeypatch, capsys, sodadata_cache):
    """The recipe CLI without layout options, on a LocalCluster: as many workers as cores (here: as the two shards),
    one torch thread each, said in the summary line and the run summary; the workers record the engine check in
    the cache folder they inherit."""
    from sodadata.recipes import emilia

    make_emilia_source(tmp_path / "src", quirks=False, tars_per_subset=1, docs_per_tar=1, utts_per_doc=2)
    monkeypatch.setattr("sodadata.run.worker_layout.usable_cores", lambda: 2)
    out = tmp_path / "out"
    rc = emilia.main(["--source", str(tmp_path / "src"), "--out", str(out), "--codec", "tiny-random",
                      "--no-progress"])
    assert rc == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert re.fullmatch(r"shards: 2 in this run, 0 already finished, 2 done now, 0 failed "
                        r"\(\d+\.\d s; 2 workers x 1 torch thread, cpu\)", first), first
    (summary,) = [json.loads(p.read_text()) for p in (out / "_runs").glob("*.json")]
    assert summary["layout"] == {"workers": 2, "threads_per_worker": 1, "torch_threads": 1, "device": "cpu",
                                 "cores": 2, "serial": False, "external": False}
    assert summary["startup"]["cluster_start"] > 0 and summary["startup"]["model_load"]["max"] > 0
    records = [json.loads(p.read_text()) for p in out.glob("*/*/*.json")]
    assert [r["codec"]["threads"] for r in records] == [1, 1]
    assert all({"model_load", "engine_check", "encode"} <= set(r["timings"]) for r in records)
    assert list((sodadata_cache / "engine-check").glob("*.json")), "the workers recorded their check"


def test_each_local_worker_takes_its_own_gpu(monkeypatch):
    """One worker per GPU: LocalCluster worker k (named k) encodes on cuda:k; a `dask worker` (named by its
    address) and cuda:N keep the device as given. (The GPU itself is not needed to choose.)"""
    from types import SimpleNamespace

    import distributed
    import torch

    from sodadata.encode.codec import CodecConfig, own_gpu

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    config = CodecConfig(codec="tiny-random", device="cuda")
    assert own_gpu(config) is config  # not in a worker
    for name, device in ((1, "cuda:1"), (6, "cuda:2"), ("tcp://10.0.0.5:4242", "cuda")):
        monkeypatch.setattr(distributed, "get_worker", lambda name=name: SimpleNamespace(name=name))
        assert own_gpu(config).device == device
    assert own_gpu(CodecConfig(codec="tiny-random", device="cuda:3")).device == "cuda:3"
