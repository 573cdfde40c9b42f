"""A real S3 API on loopback for tests: moto's server, reached through s3fs the way a user's run reaches S3.

:func:`s3_store` (the ``s3_store`` fixture of conftest.py) starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1
(a free port), creates a bucket, and sets the environment a user would set (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY`` = :data:`SECRET`, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``): the code under test is
given nothing else, and subprocesses (CLIs, ``dask worker``) inherit it. fsspec's cached filesystem instances are
cleared before and after, so no test sees another's endpoint or credentials.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

# A recognisable secret: tests grep everything written and printed for it.
SECRET = "sodadataTESTsecretKEY0123456789abcdefXYZ"
ACCESS_KEY = "AKIASODADATATEST0001"
BUCKET = "sodadata-test"


@dataclass(frozen=True)
class S3Store:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    env: dict[str, str]  # the variables set for this test (also what a subprocess needs)

    def url(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *(p.strip("/") for p in parts if p)])

    def fs(self):
        """An s3fs filesystem on the store (fresh, not cached), for tests to look inside the bucket."""
        import s3fs

        return s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET, endpoint_url=self.endpoint,
                                 skip_instance_cache=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clear_fsspec_cache() -> None:
    """Drop fsspec's cached filesystem instances (each holds the endpoint and credentials it was made with)."""
    import fsspec

    for cls in [*fsspec.registry.values(), fsspec.AbstractFileSystem]:
        clear = getattr(cls, "clear_instance_cache", None)
        if clear is not None:
            clear()
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
    except ImportError:
        pass


def _require_credentials() -> float:
    """Make moto check signatures like S3 (by default it accepts any key): an IAM user holding
    :data:`ACCESS_KEY` / :data:`SECRET`, allowed everything. Returns the setting to restore."""
    import json

    from moto import settings
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends

    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam.create_user("us-east-1", "sodadata-test")
    iam.put_user_policy("sodadata-test", "all", json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key("sodadata-test")
    key.access_key_id, key.secret_access_key = ACCESS_KEY, SECRET
    before = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    return before


def s3_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Store]:
    from moto import settings
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINT_URL": endpoint,
           "AWS_DEFAULT_REGION": "us-east-1"}
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    clear_fsspec_cache()
    store = S3Store(endpoint, BUCKET, env)
    # moto's backends live in this process and outlive a server: start each test from an empty store
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30).close()
    auth_before = _require_credentials()
    try:
        store.fs().mkdir(BUCKET)
        yield store
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = auth_before
        clear_fsspec_cache()
        server.stop()
