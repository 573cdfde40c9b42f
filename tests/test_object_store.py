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

from sodadata.locations import as_location, check_location, display, is_remote
from sodadata.recipe import ConfigError

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
