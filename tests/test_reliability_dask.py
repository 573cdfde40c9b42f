"""Worker loss: a real ``dask scheduler`` and ``dask worker`` processes on loopback; workers are SIGKILLed while
they write a shard. The run completes with output identical to a serial run.

The workers run without a nanny, so the process that holds a shard's temporary file (named with its pid) is the
worker itself: it is killed the moment its temporary file shows, i.e. mid-task. A replacement worker joins after
the first loss, and the second worker is killed mid-task too. One source shard is corrupt, so a task also fails
on a worker (Dask logs the failed task with its arguments); every process runs with a recognisable fake
``HF_TOKEN``, and the scheduler's and workers' logs are searched for it afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures import make_emilia_source
from processes import stop_processes
from test_reliability_report import publish, table

from sodadata.encode.codec import CodecConfig
from sodadata.recipes.emilia import EmiliaRecipe
from sodadata.run.pipeline import PipelineConfig
from sodadata.run.runner import RunnerConfig, run_recipe
from sodadata.tools.validate import validate

REPO = Path(__file__).resolve().parent.parent
FAKE_TOKEN = "hf_FAKEtokenDaskWorkerLoss0123456789abcdef"
VOLATILE = {"elapsed_seconds", "timings", "finished_at"}
CODEC = CodecConfig(codec="tiny-random", threads=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(out: Path) -> dict:
    result = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if not p.is_file() or p.name.startswith(".") or rel.parts[0] == "_runs":
            continue
        result[str(rel)] = pq.read_table(p).to_pylist() if p.suffix == ".parquet" else {
            k: v for k, v in json.loads(p.read_text()).items() if k not in VOLATILE}
    return result


def visible_files_are_complete(out: Path, seen: dict, problems: list) -> None:
    for p in out.rglob("*"):
        if not p.is_file() or p.name.startswith(".") or "_runs" in p.parts:
            continue
        try:
            key = p.stat().st_mtime_ns
            if seen.get(p) == key:
                continue
            seen[p] = key
            pq.read_table(p) if p.suffix == ".parquet" else json.loads(p.read_text())
        except FileNotFoundError:
            continue
        except Exception as exc:  # a visible file that does not read is the fault looked for
            problems.append(f"{p}: {type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_workers_killed_mid_task_and_the_run_completes_with_identical_output(tmp_path, monkeypatch):
    root = tmp_path / "src"
    make_emilia_source(root, seed=6, quirks=True, tars_per_subset=4, docs_per_tar=2, utts_per_doc=3,
                       seconds=(1.0, 2.0))
    corrupt = root / "Emilia" / "EN" / "EN-B000120.tar"
    corrupt.write_bytes(corrupt.read_bytes()[:5000])
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    recipe = EmiliaRecipe(source=str(root))
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    ref = run_recipe(recipe, PipelineConfig(out=str(ref_out), codec=CODEC), RunnerConfig(serial=True, retries=0,
                                                                                        progress=False))
    assert [f.task for f in ref.failures] == ["emilia/en/EN-B000120"]

    logs = tmp_path / "logs"
    logs.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_TOKEN": FAKE_TOKEN, "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "w")
        procs[name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        return procs[name]

    def worker(name: str) -> subprocess.Popen:
        return start(name, [str(bin_dir / "dask"), "worker", address, "--nthreads", "1", "--no-nanny",
                            "--no-dashboard", "--name", name])

    start("scheduler", [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                        "--no-dashboard"])
    kills: list[dict] = []
    problems: list[str] = []
    try:
        workers = [worker("w1"), worker("w2")]
        from distributed import Client

        with Client(address, timeout=120) as client:
            client.wait_for_workers(2, timeout=180)
        box: dict = {}

        def drive() -> None:
            try:
                box["result"] = run_recipe(recipe, PipelineConfig(out=str(out), codec=CODEC),
                                           RunnerConfig(scheduler=address, retries=2, progress=False))
            except BaseException as exc:  # handed to the test thread
                box["error"] = exc

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        seen: dict = {}
        deadline = time.monotonic() + 420
        while driver.is_alive() and time.monotonic() < deadline:
            visible_files_are_complete(out, seen, problems) if out.exists() else None
            if len(kills) < 2 and out.exists():
                for victim in workers:
                    temps = [p for p in out.rglob(f".*.parquet.tmp-{victim.pid}-*") if "rejects" not in p.parts]
                    if victim.poll() is None and temps:
                        victim.send_signal(signal.SIGKILL)
                        victim.wait(timeout=30)
                        kills.append({"worker": victim.pid, "shard": temps[0].name.split(".parquet")[0][1:],
                                      "finished_then": len(list(out.glob("*/*/*.json")))})
                        if len(kills) == 1:
                            workers = [w for w in workers if w is not victim] + [worker("w3")]
                        break
            time.sleep(0.01)
        driver.join(timeout=60)
        assert not driver.is_alive(), "the run did not finish"
    finally:
        stop_processes(reversed(procs.values()))  # the workers, then their scheduler
    assert "error" not in box, box.get("error")
    result = box["result"]
    assert len(kills) == 2, f"the workers were not caught mid-task: {kills}"
    assert [f.task for f in result.failures] == ["emilia/en/EN-B000120"]
    assert result.done == 7
    visible_files_are_complete(out, seen, problems)
    assert not problems, problems
    assert snapshot(out) == snapshot(ref_out)
    report = validate(out, stream=open(os.devnull, "w"))
    assert report.violations == 0, dict(report.counts)
    stale = [p.name for p in out.rglob(".*.tmp-*")]
    assert stale == [], f"the killed workers' partial files were not removed by the retries: {stale}"
    logs_text = {p.name: p.read_text(errors="replace") for p in logs.iterdir()}
    assert any("Compute Failed" in t or "EN-B000120" in t for t in logs_text.values()), "no worker logged the failure"
    leaked = [name for name, text in logs_text.items() if FAKE_TOKEN in text]
    assert not leaked, f"the token appears in {leaked}"
    publish("worker-loss", table(
        ["workers killed mid-task (SIGKILL)", "shards", "shards done", "failed (corrupt source, as serial)",
         "output vs serial run", "validate", "temp files left (killed workers' partials are removed by the retry)",
         "token in Dask logs"],
        [[len(kills), 8, result.done, len(result.failures), "identical", "clean", len(stale), "no"]])
        + "\n\nKills: " + "; ".join(f"worker pid {k['worker']} while writing {k['shard']} ({k['finished_then']} "
                                   "shards finished then)" for k in kills) + ".")
