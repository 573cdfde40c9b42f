"""Where data lives: a location is a local path or an fsspec URL (SPEC §6).

- :func:`as_location` turns what a user typed into the object every module reads and writes through: a local path
  stays a :class:`pathlib.Path` (so local writes keep temp-name + rename + fsync); a URL (``s3://``, ``gs://``,
  ``az://``/``abfs://``, ``memory://``, ``hf://`` ...) becomes a :class:`upath.UPath`, pathlib's API over fsspec.
  A string holding ``://`` is never made a ``Path``: ``Path("gs://b/x")`` is the local folder ``gs:/b/x``.
  ``file://`` URLs are local paths.
- :func:`is_remote` says which of the two a location is; :func:`display` is what may be printed or recorded (user
  info and token-like query parameters replaced by ``***``).
- :func:`check_location` is the driver's check before any work: the backend is installed, the credentials are
  accepted, the store answers (in seconds, not after endless retries) and, to write, a probe object can be written
  and deleted under the prefix. Each fault is one :class:`~sodadata.read.recipe.ConfigError` line.
- :func:`write_json_atomic` writes a small JSON file whole or not at all, locally (temp name + fsync + rename) or as
  one object upload; every stage uses it (shard records, run summaries, the random codec's stamp), so it lives here
  rather than in a stage.

Credentials are never part of a location: they come from the store's usual environment (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_*``), on the
driver and on every worker alike, so a Dask task carries only the URL.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import urllib.parse
import uuid
from pathlib import Path

from upath import UPath

from sodadata.read.recipe import ConfigError

Location = Path | UPath

_URL_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
# The extra of pyproject.toml that installs each scheme's backend.
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure",
          "adl": "azure"}
CHECK_TIMEOUT_S = 20.0  # the driver's whole check of a store: an unreachable one is one line after this
# How fsspec backends are told to give up quickly during the check (the run itself keeps their own defaults).
_QUICK_OPTIONS = {
    "s3": {"config_kwargs": {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 1}}},
}
# Query parameters that carry credentials in signed or token-authenticated URLs (S3/GCS signatures, ?token=...).
SECRET_PARAM_RE = re.compile(r"token|signature|sig|secret|passw|key|credential|auth", re.IGNORECASE)


def scheme(loc: str | os.PathLike) -> str | None:
    """The URL scheme of ``loc`` (``s3``, ``memory`` ...), or None for a local path."""
    if isinstance(loc, Path):
        return None
    if isinstance(loc, UPath):
        return loc.protocol or None
    m = _URL_RE.match(os.fspath(loc))
    return m["scheme"].lower() if m else None


def as_location(loc: str | os.PathLike) -> Location:
    """A local path as a :class:`Path` (``~`` expanded), a URL as a :class:`UPath`; a location passes through."""
    if isinstance(loc, (Path, UPath)):
        return loc
    text = os.fspath(loc)
    kind = scheme(text)
    if kind is None:
        return Path(text).expanduser()
    if kind == "file":
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(text).path))
    _check_backend(kind, text)
    return UPath(text)


def local_path(text: str) -> Path:
    """argparse ``type`` of an option that only a local file or folder can serve (a tokenizer folder, a catalog
    folder, a recipe YAML): a URL is refused on one line, instead of becoming a local folder named ``s3:``."""
    kind = scheme(text)
    if kind not in (None, "file"):
        raise argparse.ArgumentTypeError(f"takes a local path, not a {kind}:// URL ({display(text)})")
    return as_location(text)


def is_remote(loc: str | os.PathLike) -> bool:
    """True for an fsspec URL other than ``file://`` (no rename, no directories: commit by upload order)."""
    return scheme(loc) not in (None, "file")


def fresh(loc: Location) -> Location:
    """``loc`` with what its filesystem remembers of it forgotten (s3fs caches listings and sizes per process: files
    another process wrote since, a Dask worker's shards, would read as absent or short)."""
    if isinstance(loc, UPath) and is_remote(loc):
        loc.fs.invalidate_cache(loc.path)
    return loc


def display(loc: str | os.PathLike) -> str:
    """``loc`` as it may be printed, logged or recorded: a URL without user info or token-like query values."""
    text = str(loc)
    if scheme(text) is None:
        return text
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    if "@" in parts.netloc:
        netloc = "***@" + netloc
    query = "&".join(f"{k}={'***' if SECRET_PARAM_RE.search(k) else v}"
                     for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


_CALENDAR_VERSIONED = ("s3fs", "gcsfs", "adlfs")


def _check_backend(kind: str, url: str) -> None:
    """One line when the fsspec backend of ``kind`` is unknown or not installed."""
    import fsspec

    try:
        fsspec.get_filesystem_class(kind)
    except ValueError:
        raise ConfigError(f"{display(url)}: unknown URL scheme {kind}:// (expected a local path or an fsspec URL "
                          "such as s3://, gs://, az://)") from None
    except ImportError:
        extra = EXTRAS.get(kind)
        how = f"pip install 'sodadata[{extra}]'" if extra else f"install the fsspec backend for {kind}://"
        raise ConfigError(f"{display(url)}: the {kind}:// backend is not installed: {how}") from None
    # s3fs/gcsfs/adlfs before fsspec's calendar versions (s3fs 0.4, 2020) load but cannot serve today's fsspec
    # (pip picks one when another package pins a newer botocore): a clear line instead of errors deep in a task
    cls = fsspec.get_filesystem_class(kind)
    package = cls.__module__.partition(".")[0]
    version = getattr(sys.modules.get(package), "__version__", "")
    if package in _CALENDAR_VERSIONED and version and int(version.split(".")[0]) < 2023:
        extra = EXTRAS.get(kind, kind)
        raise ConfigError(f"{display(url)}: {package} {version} is too old for fsspec {fsspec.__version__}: "
                          f"pip install 'sodadata[{extra}]'")


def _store_error(url: str, exc: BaseException, action: str) -> ConfigError:
    """One line for what a store answered, with no credential in it."""
    from sodadata.read.sources import redact_secrets

    name = type(exc).__name__
    detail = redact_secrets(str(exc).strip().splitlines()[0] if str(exc).strip() else name)
    if isinstance(exc, PermissionError) or "credential" in name.lower() or "Credential" in detail:
        why = "the credentials were refused or are missing (set the store's usual environment variables, e.g. " \
              "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
    elif isinstance(exc, FileNotFoundError):
        why = "the bucket or container does not exist"
    elif isinstance(exc, TimeoutError):
        why = f"the store did not answer within {CHECK_TIMEOUT_S:.0f} s (check the endpoint and the network)"
    elif "connect" in name.lower() or "Connect" in detail or isinstance(exc, (ConnectionError, OSError)):
        why = "the store cannot be reached (check the endpoint, e.g. AWS_ENDPOINT_URL, and the network)"
    else:
        why = "the store refused it"
    return ConfigError(f"cannot {action} {display(url)}: {why} ({name}: {detail})")


def _quick_fs(kind: str, url: str):
    """A fresh filesystem for ``url`` that gives up fast (not the cached instance the run uses)."""
    import fsspec

    options = dict(_QUICK_OPTIONS.get(kind, {}))
    fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True, **options)
    return fs, path


def check_location(url: str | os.PathLike, *, write: bool) -> None:
    """Before any work, on the driver: can ``url`` be read (``write=False``: it exists) or written (a probe object
    ``_probe-<uuid>`` is written under it and deleted)? A :class:`ConfigError` of one line otherwise.

    Local paths are left to their callers' checks (a file where a folder is wanted, a read-only disk).
    """
    text = str(url)
    kind = scheme(text)
    if kind is None or kind == "file":
        return
    _check_backend(kind, text)
    outcome: dict[str, object] = {}

    def probe() -> None:
        try:
            fs, path = _quick_fs(kind, text)
            if write:
                target = f"{path.rstrip('/')}/_probe-{uuid.uuid4().hex}"
                fs.pipe_file(target, b"sodadata write probe\n")
                fs.rm_file(target)
            elif not fs.exists(path):
                outcome["missing"] = True
        except BaseException as exc:  # reported in the caller's thread, as one line
            outcome["error"] = exc

    thread = threading.Thread(target=probe, name="sodadata-check-location", daemon=True)
    thread.start()
    thread.join(CHECK_TIMEOUT_S)
    if thread.is_alive():
        raise _store_error(text, TimeoutError("no answer"), "write to" if write else "read")
    if "error" in outcome:
        raise _store_error(text, outcome["error"], "write to" if write else "read")  # type: ignore[arg-type]
    if outcome.get("missing"):
        raise ConfigError(f"{display(text)} does not exist")


def temp_name(final: Path) -> Path:
    """A temp name beside ``final`` for a local write that is renamed into place when whole."""
    # Hidden and not ending in .parquet/.json, so no glob of finished shards ever matches a partial file.
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def fsync_dir(path: Path) -> None:
    """Make a rename inside the local folder ``path`` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (network mounts) refuse directory fsync; the rename is still atomic
    finally:
        os.close(fd)


def write_json_atomic(path: Location | str, obj: dict) -> None:
    """Write ``obj`` as JSON whole or not at all: a local file by temp+fsync+rename, an object by one upload."""
    path = as_location(path)
    data = (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    if is_remote(path):
        path.fs.pipe_file(path.path, data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


__all__ = ["Location", "as_location", "check_location", "display", "fresh", "fsync_dir", "is_remote", "scheme",
           "temp_name", "write_json_atomic"]
