"""Outputs and sources on object stores (SPEC §6): locations, their checks before any work, the write path.

The store is moto's S3 server on 127.0.0.1 reached through s3fs (tests/object_store.py), with the environment a
user would set; ``memory://`` is fsspec's in-process store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from object_store import SECRET
from processes import stop_processes

from sodadata.locations import as_location, check_location, display, is_remote
from sodadata.read.recipe import ConfigError

REPO = Path(__file__).resolve().parent.parent


def _cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


# --- locations ----------------------------------------------------------------------------------------------


def test_local_paths_stay_paths_and_urls_never_become_local_folders(tmp_path):
    assert as_location(str(tmp_path)) == tmp_path and isinstance(as_location(str(tmp_path)), Path)
    assert as_location(f"file://{tmp_path}/x") == tmp_path / "x"
    loc = as_location("memory://bucket/out")
    assert not isinstance(loc, Path) and is_remote(loc) and str(loc) == "memory://bucket/out"
    assert not is_remote(tmp_path) and not is_remote(f"file://{tmp_path}")
    assert display("s3://AKIA:hunter2secret@bucket/x?X-Amz-Signature=abc&part=1") == \
        "s3://***@bucket/x?X-Amz-Signature=***&part=1"


def test_gs_url_without_gcsfs_is_one_line_before_any_work(tmp_path):
    pytest.importorskip("sodadata.recipes.emilia")
    try:
        import gcsfs  # noqa: F401
        pytest.skip("gcsfs is installed here: the missing-backend message cannot be shown")
    except ImportError:
        pass
    source = tmp_path / "src"
    source.mkdir()
    proc = _cli(["sodadata.recipes.emilia", "--source", str(source), "--out", "gs://bucket/soda",
                 "--codec", "tiny-random"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: gs://bucket/soda: the gs:// backend is not installed: pip install 'sodadata[gcs]'"]
    assert not any(p.name.startswith("gs:") for p in tmp_path.rglob("*")), "a local folder named after the URL"


def test_memory_store_passes_the_checks_and_a_missing_prefix_is_named():
    check_location("memory://sodadata-test/out", write=True)
    with pytest.raises(ConfigError, match=r"^memory://sodadata-test/nothing-here does not exist$"):
        check_location("memory://sodadata-test/nothing-here", write=False)


def test_bad_credentials_are_one_line(s3_store, monkeypatch, tmp_path):
    check_location(s3_store.url("out"), write=True)  # the good ones pass
    assert s3_store.fs().ls(s3_store.bucket) == [], "the probe object was left behind"
    for env in ({"AWS_ACCESS_KEY_ID": "AKIANOBODYHASTHISKEY"}, {"AWS_SECRET_ACCESS_KEY": SECRET[::-1]}):
        proc = _cli(["sodadata.recipes.emilia", "--source", str(tmp_path), "--out", s3_store.url("out"),
                     "--codec", "tiny-random"], cwd=tmp_path, env=env)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"error: cannot write to {s3_store.url('out')}: the credentials were refused"), line
        assert SECRET not in proc.stderr + proc.stdout and SECRET[::-1] not in proc.stderr + proc.stdout


def test_missing_bucket_and_unreachable_store_are_one_line_quickly(s3_store, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist"):
        check_location("s3://no-such-bucket/out", write=True)
    with socket_closed() as port:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        t0 = time.monotonic()
        with pytest.raises(ConfigError, match=r"cannot be reached|did not answer") as info:
            check_location(s3_store.url("out"), write=True)
        assert "\n" not in str(info.value)
        assert time.monotonic() - t0 < 60  # not botocore's minutes of retries (a bound, not a speed claim)


class socket_closed:
    """A loopback port nothing listens on."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc) -> None:
        return None


# --- the write path -------------------------------------------------------------------------------------------


def _rows_by_shard(found) -> dict[str, list[tuple[str, str]]]:
    """(id, text) of every row of every finished shard, by component/stem: what a rerun must reproduce."""
    import pyarrow.parquet as pq

    rows = {}
    for shard in found.shards:
        with shard.parquet.open("rb") as f:
            table = pq.read_table(f, columns=["id", "text"])
        rows[f"{shard.component}/{shard.stem}"] = list(zip(table["id"].to_pylist(), table["text"].to_pylist()))
    return rows


def test_commit_on_a_store_record_last_with_sizes_and_stale_uploads_never_read(s3_store, tmp_path):
    """Serial runs into the bucket: the record names the sizes of the files beside it; a shard whose Parquet was
    replaced by a killed attempt's (other size) is not finished, not read, and a rerun makes it again, identical;
    a record without ``files`` counts on a local disk only; an aborted writer leaves no object."""
    import pyarrow.parquet as pq
    from fixtures import make_emilia_source

    from sodadata.encode.codec import CodecConfig
    from sodadata.recipes.emilia import EmiliaRecipe
    from sodadata.run.pipeline import PipelineConfig
    from sodadata.run.runner import RunnerConfig, run_recipe
    from sodadata.write.outputs import find_shards
    from sodadata.write.shards import ROW_SCHEMA, ShardWriter, read_record, record_matches_files

    src = tmp_path / "src"
    make_emilia_source(src, seed=3, tars_per_subset=1, docs_per_tar=2, utts_per_doc=2, seconds=(1.0, 1.5))
    fs = s3_store.fs()
    fs.put(str(src), f"{s3_store.bucket}/src", recursive=True)
    out = s3_store.url("out")
    config = PipelineConfig(out=out, codec=CodecConfig(codec="tiny-random", threads=1))
    runner = RunnerConfig(serial=True, retries=0, progress=False)
    first = run_recipe(EmiliaRecipe(source=s3_store.url("src")), config, runner)
    assert first.done == 2 and not first.failures
    found = find_shards(out)
    assert [f"{s.component}/{s.stem}" for s in found.shards] == ["emilia-yodas/en/EN-B000000", "emilia/en/EN-B000000"]
    before = _rows_by_shard(found)
    shard = found.shards[1]
    record = read_record(shard.record_path)
    assert record["files"] == {"EN-B000000.parquet": fs.size(shard.parquet.path),
                               "rejects/EN-B000000.parquet": fs.size(shard.rejects.path)}
    assert record["source"]["inputs"][0]["url"] == s3_store.url("src/Emilia/EN/EN-B000000.tar")
    assert fs.ls(f"{s3_store.bucket}/out/_runs"), "no run summary in the bucket"

    # a killed attempt of a rerun uploaded other bytes under the final name: the old record no longer matches
    fs.pipe_file(shard.parquet.path, b"PAR1 partial upload of a killed attempt")
    stale = find_shards(out)
    assert [s.stem for s in stale.shards if s.component == "emilia/en"] == []
    assert stale.problems == [f"{out}/emilia/en/EN-B000000.json: the files beside it are not the sizes its record "
                              "names (unfinished or changed since): not read; rerun the recipe to make it again"]
    again = run_recipe(EmiliaRecipe(source=s3_store.url("src")), config, runner)
    assert (again.done, again.skipped) == (1, 1)
    assert _rows_by_shard(find_shards(out)) == before

    # records written before `files` existed: trusted on a local disk (temp+rename), not on a store
    old = {k: v for k, v in record.items() if k != "files"}
    assert not record_matches_files(old, shard.record_path.parent)
    local_dir = tmp_path / "local" / "emilia" / "en"
    local_dir.mkdir(parents=True)
    (local_dir / "EN-B000000.parquet").write_bytes(fs.cat(shard.parquet.path))
    assert record_matches_files(old, local_dir)
    assert not record_matches_files(record, local_dir)  # the rejects it names are not there

    # an aborted writer leaves nothing under the final name (the upload is discarded, never committed)
    target = f"{out}/emilia/en/aborted.parquet"
    with shard.parquet.open("rb") as f:
        rows = pq.read_table(f).to_pylist()
    with pytest.raises(RuntimeError, match="boom"), ShardWriter(target, schema=ROW_SCHEMA, row_group_bytes=1) as w:
        w.write_all(rows)  # a row group per row: bytes go to the store before the failure
        raise RuntimeError("boom")
    assert not fs.exists(target.removeprefix("s3://"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_emilia_bucket_to_bucket_on_a_cluster_without_shared_disk_killed_and_rerun(s3_store, tmp_path):
    """The Emilia recipe from ``s3://bucket/src`` to ``s3://bucket/out`` on a real ``dask scheduler`` with two
    ``dask worker`` processes, each in its own working directory, sharing no disk with the driver or each other:
    they get the URLs, and the credentials of their own environment. The run and a worker are SIGKILLed once the
    first shard is committed; a rerun (a replacement worker in a third directory) gives exactly the rows of an
    uninterrupted serial run from a local copy of the source. The known secret in AWS_SECRET_ACCESS_KEY appears in
    nothing written (bucket, disks) or printed, a shard that fails (a cut tar) included."""
    import signal

    from fixtures import make_emilia_source

    from sodadata.encode.codec import CodecConfig
    from sodadata.recipes.emilia import EmiliaRecipe
    from sodadata.run.pipeline import PipelineConfig
    from sodadata.run.runner import RunnerConfig, run_recipe
    from sodadata.write.outputs import find_shards

    src = tmp_path / "src"
    make_emilia_source(src, seed=11, tars_per_subset=2, docs_per_tar=2, utts_per_doc=2, seconds=(1.0, 1.5))
    cut = src / "Emilia" / "EN" / "EN-B000060.tar"
    cut.write_bytes(cut.read_bytes()[:5000])  # a failing shard: its error passes through logs and the summary
    fs = s3_store.fs()
    fs.put(str(src), f"{s3_store.bucket}/src", recursive=True)
    ref = run_recipe(EmiliaRecipe(source=str(src)), PipelineConfig(out=str(tmp_path / "ref"), codec=CodecConfig(
        codec="tiny-random", threads=1)), RunnerConfig(serial=True, retries=0, progress=False))
    assert [f.task for f in ref.failures] == ["emilia/en/EN-B000060"] and ref.done == 3
    expected = _rows_by_shard(find_shards(tmp_path / "ref"))

    dirs = {name: tmp_path / name for name in ("driver", "w1", "w2", "w3", "logs")}
    for d in dirs.values():
        d.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0", "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}
    address = f"tcp://127.0.0.1:{_free_port()}"
    dask = str(Path(sys.executable).parent / "dask")
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, cmd: list[str], cwd: Path) -> subprocess.Popen:
        log = open(dirs["logs"] / f"{name}.log", "w")
        procs[name] = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        return procs[name]

    def worker(name: str) -> subprocess.Popen:
        return start(name, [dask, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                            "--name", name, "--local-directory", str(dirs[name] / "scratch")], cwd=dirs[name])

    run = [sys.executable, "-m", "sodadata.recipes.emilia", "--source", s3_store.url("src"), "--out",
           s3_store.url("out"), "--scheduler", address, "--codec", "tiny-random", "--torch-threads", "1",
           "--retries", "0", "--no-progress"]
    outputs = []
    try:
        start("scheduler", [dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                            "--no-dashboard"], cwd=dirs["logs"])
        workers = [worker("w1"), worker("w2")]
        from distributed import Client

        with Client(address, timeout=120) as client:
            client.wait_for_workers(2, timeout=180)
        first = start("run1", run, cwd=dirs["driver"])
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            fs.invalidate_cache()
            if fs.glob(f"{s3_store.bucket}/out/*/en/*.json"):
                break
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before a shard was committed: nothing was interrupted"
        committed_then = len(fs.glob(f"{s3_store.bucket}/out/*/en/*.json"))
        first.send_signal(signal.SIGKILL)
        workers[0].send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        workers[0].wait(timeout=30)
        worker("w3")
        second = subprocess.run(run, env=env, cwd=dirs["driver"], capture_output=True, text=True, timeout=420)
        outputs += [second.stdout, second.stderr]
    finally:
        stop_processes(reversed(procs.values()))  # the workers, then their scheduler
    assert second.returncode == 1, second.stderr  # the cut tar, as in the serial run
    assert "emilia/en/EN-B000060" in second.stderr
    assert committed_then < 4
    found = find_shards(s3_store.url("out"))
    assert not found.problems
    assert _rows_by_shard(found) == expected, "the bucket's rows differ from the uninterrupted run's"
    for shard in found.shards:
        assert shard.record["source"]["inputs"][0]["url"].startswith(s3_store.url("src/"))

    # nothing of the run on the driver's or the workers' disks (besides Dask's own scratch space and our logs)
    assert list(dirs["driver"].iterdir()) == []
    for name in ("w1", "w2", "w3"):
        assert [p.name for p in dirs[name].iterdir()] in ([], ["scratch"]), name
    assert not list(tmp_path.rglob("s3:*"))

    # the secret: in no object of the bucket, no local file, nothing printed
    fs.invalidate_cache()
    objects = fs.find(s3_store.bucket)
    assert any("/_runs/" in o for o in objects)
    leaked = [o for o in objects if SECRET.encode() in fs.cat_file(o)]
    leaked += [str(p) for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    leaked += ["printed"] if any(SECRET in text for text in outputs) else []
    assert not leaked, f"the secret appears in {leaked}"


@pytest.mark.filterwarnings("ignore:Your installed version of s3fs is very old")  # fsspec's own, beside ours
def test_an_s3fs_from_before_fsspec_calendar_versions_is_one_line(monkeypatch) -> None:
    """pip backtracks s3fs to 0.4 (2020) when another package pins a newer botocore than today's s3fs allows; that
    s3fs imports but cannot serve today's fsspec: one line naming the fix, before any work."""
    import fsspec
    import s3fs

    monkeypatch.setattr(s3fs, "__version__", "0.4.2")
    with pytest.raises(ConfigError) as exc:
        check_location("s3://bucket/out", write=True)
    assert str(exc.value) == (f"s3://bucket/out: s3fs 0.4.2 is too old for fsspec {fsspec.__version__}: "
                              "pip install 'sodadata[s3]'")
