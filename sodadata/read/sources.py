"""Where source files come from: a local path, the Hugging Face Hub (``hf://``), plain HTTP(S), or an object store
(``s3://``, ``gs://``, ``az://`` ... any fsspec URL, SPEC §6).

Every recipe takes ``--source`` as any of these, so tests pass local paths to the very code that reads the Hub.
Hub reads go through ``HfFileSystem`` (streamed, pinned to a commit); HTTP through ``urllib`` (streamed); object
stores through fsspec (streamed, listed by glob; ``sodadata.locations`` checks them before any work). Tokens and
keys come from the environment / the HF login, never from URLs, and are never logged.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from sodadata import locations
from sodadata.read.recipe import ShardError, SourceFile

log = logging.getLogger(__name__)

HF_PREFIX = "hf://"
_HF_RE = re.compile(r"^hf://(?P<type>datasets|models|spaces)/(?P<repo>[^/@]+/[^/@]+)(?:@(?P<rev>[^/]+))?(?P<path>/.*)?$")
HTTP_RETRIES = 5
READ_BLOCK = 8 * 1024 * 1024


def url_credentials(url: str) -> str | None:
    """What in a URL would carry a secret (user info, a token-like query parameter), or ``None``."""
    if is_hf(url) or locations.scheme(url) is None:
        return None  # hf:// cannot hold a token; a local path is a path
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.username is not None or parts.password is not None:
            return "user info (user:password@)"
        params = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return None
    for key, _ in params:
        if locations.SECRET_PARAM_RE.search(key):
            return f"query parameter {key!r}"
    return None


def redact_url(url: str) -> str:
    """``url`` with user info and the values of token-like query parameters replaced by ``***``."""
    return locations.display(url)


def check_no_credentials(url: str) -> None:
    """Refuse a URL that carries credentials: it would be written into shard records, run summaries and logs
    (Dask logs a failed task's arguments). Secrets come from the environment (HF_TOKEN), never from URLs."""
    what = url_credentials(url)
    if what:
        raise ValueError(
            f"the source URL {redact_url(url)} carries credentials ({what}); they would end up in shard records "
            "and logs. Remove them: the Hub token comes from HF_TOKEN or `hf auth login`."
        )


# Where secrets can come from: the Hub token (huggingface_hub also reads the `hf auth login` file, get_token below)
# and the object stores' usual variables (SPEC §6). Their values are replaced wherever a message could quote them.
_TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
              "AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_CONNECTION_STRING",
              "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_SECRET", "GOOGLE_OAUTH_ACCESS_TOKEN")
REDACTED = "<redacted>"


@functools.lru_cache(maxsize=8)
def _secrets(env_values: tuple[str | None, ...]) -> tuple[str, ...]:
    values = set(env_values)
    try:
        from huggingface_hub import get_token

        values.add(get_token())
    except Exception:  # no huggingface_hub, no token file: the environment is all there is
        pass
    # Short values are not tokens (and replacing them would mangle ordinary text).
    return tuple(sorted((v for v in values if v and len(v) >= 8), key=len, reverse=True))


def redact_secrets(text: str) -> str:
    """``text`` with every known secret value (the Hub token) replaced by ``<redacted>``.

    For messages built from other libraries' exceptions: an HTTP error can quote what a server or proxy sent
    back, and a careless one echoes the request's Authorization header.
    """
    for secret in _secrets(tuple(os.environ.get(k) for k in _TOKEN_ENV)):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def is_hf(url: str) -> bool:
    return url.startswith(HF_PREFIX)


def is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def is_store(url: str) -> bool:
    """An object-store (any fsspec) URL read through fsspec: not a local path, ``file://``, ``hf://`` or http(s)."""
    return locations.is_remote(url) and not is_hf(url) and not is_http(url)


def _local(url: str) -> Path:
    return Path(locations.as_location(url))


def _store(url: str):
    """(filesystem, path) of an object-store URL; credentials from the store's usual environment."""
    import fsspec

    return fsspec.core.url_to_fs(url)


def check_source(url: str) -> None:
    """Before any work: a source URL carries no credentials, and an object store's backend is installed and its
    prefix readable (one :class:`~sodadata.read.recipe.ConfigError` line otherwise)."""
    check_no_credentials(url)
    if is_store(url):
        locations.check_location(url, write=False)


def hf_url(repo: str, path: str = "", revision: str | None = None, repo_type: str = "datasets") -> str:
    rev = f"@{revision}" if revision else ""
    return f"hf://{repo_type}/{repo}{rev}" + (f"/{path.lstrip('/')}" if path else "")


def parse_hf_url(url: str) -> tuple[str, str, str | None, str]:
    """(repo_type, repo, revision, path) of an ``hf://`` URL."""
    m = _HF_RE.match(url)
    if not m:
        raise ValueError(f"not an hf:// URL of the form hf://datasets/ORG/NAME[@REV]/path: {url!r}")
    return m["type"], m["repo"], m["rev"], (m["path"] or "").lstrip("/")


def resolve_hf_revision(repo: str, revision: str | None, repo_type: str = "dataset") -> str:
    """The commit a branch/tag points to now, so every task of a run reads the same files."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    from huggingface_hub import HfApi

    try:
        info = HfApi().repo_info(repo, repo_type=repo_type, revision=revision)
    except Exception as exc:
        raise RuntimeError(
            f"cannot reach {repo_type} {repo!r} on the Hugging Face Hub ({type(exc).__name__}). If it is gated, "
            f"accept its terms at https://huggingface.co/{repo_type}s/{repo} and set HF_TOKEN; offline, pass "
            "--source with a local copy."
        ) from None  # the original error may quote request headers; it is not chained
    return info.sha


def with_revision(url: str, revision: str) -> str:
    """``hf://datasets/org/name/path`` -> ``hf://datasets/org/name@<revision>/path``."""
    kind, repo, _, path = parse_hf_url(url)
    return hf_url(repo, path, revision, kind)


def _hf_fs():
    from huggingface_hub import HfFileSystem

    return HfFileSystem()


def _hf_fs_path(url: str) -> str:
    kind, repo, rev, path = parse_hf_url(url)
    prefix = "" if kind == "models" else f"{kind}/"
    rev = f"@{rev.replace('/', '%2F')}" if rev else ""
    return f"{prefix}{repo}{rev}" + (f"/{path}" if path else "")


def list_files(base: str, pattern: str) -> list[SourceFile]:
    """Files under ``base`` matching the glob ``pattern`` (relative), sorted, with sizes."""
    check_no_credentials(base)
    if is_hf(base):
        fs = _hf_fs()
        root = _hf_fs_path(base).rstrip("/")
        found = []
        for p in sorted(fs.glob(f"{root}/{pattern}")):
            info = fs.info(p)
            rel = p[len(root) :].lstrip("/")
            found.append(SourceFile(url=f"{base.rstrip('/')}/{rel}", size=info.get("size")))
        return found
    if is_http(base):
        raise ValueError(f"cannot list files over plain HTTP ({base}); give a file list or a local mirror")
    if is_store(base):
        fs, root = _store(base)
        root = root.rstrip("/")
        found = []
        for p, info in sorted(fs.glob(f"{root}/{pattern}", detail=True).items()):
            if info.get("type") == "file":
                found.append(SourceFile(url=f"{base.rstrip('/')}/{p[len(root):].lstrip('/')}", size=info.get("size")))
        return found
    root = _local(base)
    if not root.exists():
        raise FileNotFoundError(f"source {base!r} does not exist")
    return [SourceFile(url=str(p), size=p.stat().st_size) for p in sorted(root.glob(pattern)) if p.is_file()]


def join(base: str, *parts: str) -> str:
    if is_hf(base) or is_http(base) or is_store(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(_local(base).joinpath(*parts))


def file_size(url: str) -> int | None:
    """The size of a local or object-store file, None when there is none."""
    if is_store(url):
        fs, path = _store(url)
        try:
            return fs.size(path)
        except FileNotFoundError:
            return None
    path = _local(url)
    return path.stat().st_size if path.is_file() else None


def is_dir(url: str) -> bool:
    """Whether ``url`` is a folder to list (the Hub and HTTP are taken at their word: their listing says)."""
    if is_hf(url) or is_http(url):
        return True
    if is_store(url):
        fs, path = _store(url)
        return fs.isdir(path)
    return _local(url).is_dir()


def exists(url: str) -> bool:
    check_no_credentials(url)
    if is_hf(url):
        return _hf_fs().exists(_hf_fs_path(url))
    if is_http(url):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=30):
                return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise
    if is_store(url):
        fs, path = _store(url)
        return fs.exists(path)
    return _local(url).exists()


def open_binary(url: str) -> BinaryIO:
    """A streaming binary file object for a local path, ``hf://``, ``http(s)://`` or object-store URL. Close it
    when done."""
    check_no_credentials(url)
    if is_hf(url):
        return _hf_fs().open(_hf_fs_path(url), "rb", block_size=READ_BLOCK)
    if is_http(url):
        return _open_http(url)
    if is_store(url):
        fs, path = _store(url)
        try:
            return fs.open(path, "rb", block_size=READ_BLOCK)
        except FileNotFoundError:
            raise FileNotFoundError(f"source file {locations.display(url)} does not exist") from None
    path = _local(url)
    if not path.is_file():
        raise FileNotFoundError(f"source file {url!r} does not exist")
    return open(path, "rb", buffering=READ_BLOCK)


@contextmanager
def open_shard_source(url: str, faults: tuple[type[Exception], ...], what: str = "") -> Iterator[BinaryIO]:
    """``url`` opened (:func:`open_binary`) as the source file of a recipe's task, whose faults fail the task: a
    ``ShardError`` raised while it is read gets ``url`` in front of its message, and the ``faults`` of reading it
    (``OSError``, ``tarfile.TarError`` ...) become a ``ShardError`` naming ``url`` and ``what`` it is (``"tar"``),
    so that the run's report names the file."""
    try:
        with open_binary(url) as fileobj:
            yield fileobj
    except ShardError as exc:
        raise ShardError(f"{url}: {exc}") from exc
    except faults as exc:
        raise ShardError(f"cannot read {what + ' ' if what else ''}{url}: {type(exc).__name__}: {exc}") from exc


def _open_http(url: str) -> BinaryIO:
    delay = 1.0
    for attempt in range(1, HTTP_RETRIES + 1):
        try:
            return urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "sodadata"}), timeout=120)
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 500, 502, 503, 504) or attempt == HTTP_RETRIES:
                raise
            log.warning("HTTP %d for %s (attempt %d/%d); retrying in %.0fs", exc.code, url, attempt, HTTP_RETRIES, delay)
        except urllib.error.URLError as exc:
            if attempt == HTTP_RETRIES:
                raise
            log.warning("%s for %s (attempt %d/%d); retrying in %.0fs", exc.reason, url, attempt, HTTP_RETRIES, delay)
        time.sleep(delay)
        delay = min(delay * 2, 60)
    raise AssertionError("unreachable")


def copy_to(url: str, dest: Path) -> Path:
    """Download (or copy) one file to ``dest`` atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    with open_binary(url) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, READ_BLOCK)
    os.replace(tmp, dest)
    return dest
