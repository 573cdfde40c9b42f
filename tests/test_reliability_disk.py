"""Disk full and read-only output, on real filesystems: small tmpfs mounts, remounted read-only or bind-mounted
read-only. Each time: a clear error (one ``error:`` line, no traceback), no corrupt or partial shard left behind
(no temp file either, hidden or not), and once space or write access is back, a rerun completes with output
identical to an undisturbed run, without redoing the shards that had finished.

Needs root (or CAP_SYS_ADMIN) to mount; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures import make_emilia_source
from test_reliability_report import publish, table

from sodadata.recipes.emilia import EmiliaRecipe
from sodadata.run import cli_recipe
from sodadata.tools.validate import validate

VOLATILE = {"elapsed_seconds", "timings", "finished_at"}


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)  # never leave a mount behind


def open_files_under(path: Path) -> list[str]:
    """Files under ``path`` this process still holds open (a leaked descriptor keeps a deleted file's space)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path) + "/"):
            found.append(target)
    return found


@contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    try:
        _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {getattr(exc, 'stderr', exc)}")
    try:
        yield path
    finally:
        _umount(path)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("disk-src")
    make_emilia_source(root, seed=8, quirks=True, tars_per_subset=3, docs_per_tar=2, utts_per_doc=2,
                       seconds=(0.6, 1.4))
    return root


def argv(src: Path, out: Path, *extra: str) -> list[str]:
    return ["--source", str(src), "--out", str(out), "--codec", "tiny-random", "--torch-threads", "1", "--serial",
            "--no-progress", "--retries", "1", *extra]


def run_cli(src: Path, out: Path, capsys, *extra: str) -> tuple[int, str, str]:
    rc = cli_recipe.main(EmiliaRecipe, argv(src, out, *extra), prog="emilia", description="")
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("disk-ref")
    rc = cli_recipe.main(EmiliaRecipe, argv(source, out), prog="emilia", description="")
    assert rc == 0
    return snapshot(out)


def snapshot(out: Path) -> dict:
    result = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if not p.is_file() or p.name.startswith(".") or rel.parts[0] == "_runs":
            continue
        if p.suffix == ".parquet":
            result[str(rel)] = pq.read_table(p).to_pylist()
        else:
            result[str(rel)] = {k: v for k, v in json.loads(p.read_text()).items() if k not in VOLATILE}
    return result


def temp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".tmp-" in p.name or "write-probe" in p.name]


def finished(out: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in out.rglob("*.json")
            if "_runs" not in p.parts and p.with_suffix(".parquet").exists()}


def assert_nothing_partial(out: Path) -> dict:
    """Every visible file reads completely; only 'unfinished run' findings from validate."""
    for p in out.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            pq.read_table(p) if p.suffix == ".parquet" else json.loads(p.read_text())
    report = validate(out, stream=open(os.devnull, "w"))
    assert set(report.counts) <= {"files"}, dict(report.counts)  # e.g. a reject list whose shard did not finish
    return dict(report.counts)


FREE_KB = (8, 16, 24, 32, 44, 56, 68)
READ_ONLY_ROWS: list[list[object]] = []  # filled by the two read-only tests, published by the second


def test_disk_full_at_many_points_then_space_comes_back(source, reference, tmp_path, capsys):
    rows = []
    for free_kb in FREE_KB:
        mnt = tmp_path / f"full-{free_kb}"
        with tmpfs(mnt, "1m"):
            filler = mnt / "filler"
            filler.write_bytes(b"\0" * (1024 * 1024 - free_kb * 1024))  # tmpfs refuses beyond its size: the rest
            out = mnt / "out"
            rc, _, stderr = run_cli(source, out, capsys)
            assert rc == 1, (free_kb, stderr[-2000:])
            last = stderr.strip().splitlines()[-1]
            assert last.startswith("error: ") and "No space left on device" in last, last
            assert "Traceback" not in stderr
            assert temp_files(mnt) == [], temp_files(mnt)
            assert open_files_under(mnt) == [], open_files_under(mnt)
            findings = assert_nothing_partial(out)
            done_before = finished(out)
            failed = last.split(" shards failed")[0].removeprefix("error: ")
            filler.unlink()  # space is back
            rc2, stdout2, stderr2 = run_cli(source, out, capsys)
            assert rc2 == 0, stderr2[-2000:]
            assert f"{len(done_before)} already finished" in stdout2
            assert {p: finished(out)[p] for p in done_before} == done_before, "a finished shard was redone"
            assert snapshot(out) == reference
            assert validate(out, stream=open(os.devnull, "w")).violations == 0
            rows.append([f"{free_kb} KiB", len(done_before), failed, sum(findings.values()), 0, 0, "exit 0",
                         "identical"])
    publish("disk-full", table(
        ["free space at start", "shards finished on the full disk", "shards failed (ENOSPC)",
         "unfinished-shard findings (validate)", "temp files left", "descriptors left open", "rerun with space back",
         "output vs undisturbed"],
        rows) + "\n\nEvery full-disk run ended with one `error: … No space left on device … rerun the same command` "
        "line (exit 1), no traceback, no temp file; the only validate findings were reject lists of shards that "
        "had not finished (files check), which the rerun replaced.")


def test_read_only_output_fails_at_once_and_resumes_when_writable(source, reference, tmp_path, capsys):
    mnt = tmp_path / "ro"
    rows = READ_ONLY_ROWS
    with tmpfs(mnt, "8m"):
        out = mnt / "out"
        rc, _, _ = run_cli(source, out, capsys, "--limit-shards", "2")
        assert rc == 0
        before = snapshot(out)
        done_before = finished(out)
        _mount("-o", "remount,ro", str(mnt))
        try:
            rc, stdout, stderr = run_cli(source, out, capsys)
        finally:
            _mount("-o", "remount,rw", str(mnt))
        assert rc == 2
        line = stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: cannot write to the output directory {out}: Read-only file system"), line
        assert "Traceback" not in stderr and snapshot(out) == before and temp_files(mnt) == []
        rows.append(["whole output read-only (tmpfs remounted ro)", "exit 2", line.replace(str(out), "OUT"),
                     "exit 0, 2 shards kept", "identical"])
        rc, stdout, stderr = run_cli(source, out, capsys)
        assert rc == 0 and "2 already finished" in stdout, stderr[-2000:]
        assert {p: finished(out)[p] for p in done_before} == done_before
        assert snapshot(out) == reference


def test_read_only_component_folder_fails_its_shards_only(source, reference, tmp_path, capsys):
    """A folder read-only below a writable root (e.g. a bind mount): its shards fail, the others finish."""
    mnt = tmp_path / "bind"
    rows = READ_ONLY_ROWS
    with tmpfs(mnt, "8m"):
        out = mnt / "out"
        rc, _, _ = run_cli(source, out, capsys, "--limit-shards", "1")
        assert rc == 0
        folder = out / "emilia" / "en"
        try:
            _mount("--bind", str(folder), str(folder))
            _mount("-o", "remount,bind,ro", str(folder))
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot bind-mount read-only here: {exc.stderr}")
        try:
            rc, stdout, stderr = run_cli(source, out, capsys)
        finally:
            _umount(folder)
        assert rc == 1, stderr[-2000:]
        line = stderr.strip().splitlines()[-1]
        assert line.startswith("error: 2 of 6 shards failed: emilia/en/EN-B000060: OSError: [Errno 30]"), line
        assert "Traceback" not in stderr and temp_files(mnt) == []
        assert len(list((out / "emilia-yodas" / "en").glob("*.json"))) == 3
        assert_nothing_partial(out)
        rows.append(["one component folder read-only (bind mount)", "exit 1, 2 of 6 shards failed, 4 finished",
                     line.replace(str(out), "OUT")[:150] + "…", "exit 0, 4 shards kept", "identical"])
        rc, stdout, stderr = run_cli(source, out, capsys)
        assert rc == 0 and "4 already finished" in stdout
        assert snapshot(out) == reference
    publish("read-only", table(["case", "run", "error line (shortened)", "rerun when writable", "output"], rows))
