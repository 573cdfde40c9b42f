"""Where a Mimi comes from: the driver's one-line check of ``--codec`` (:func:`check_codec`), loading it in a
worker (:func:`load_mimi`), and its identity as every shard records it (:func:`codec_identity`: Hub commit, local
weights hash, or a random model's name)."""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
from pathlib import Path

from sodadata.encode.codec_config import DEFAULT_CODEC, RANDOM_CODECS, CodecConfig
from sodadata.encode.codec_random import build_random_mimi
from sodadata.read.recipe import ConfigError
from sodadata.read.sources import resolve_hf_revision

log = logging.getLogger(__name__)


def check_codec(config: CodecConfig) -> None:
    """Fail with one line (:class:`ConfigError`) unless ``config.codec`` can be loaded: run once, in the driver,
    before any task, so a typo or an unreachable model is reported once instead of by every task and retry.

    Accepts the built-in random models; a local directory holding a Mimi ``save_pretrained`` (config.json with
    model_type mimi, and weights); a Hub id the Hub knows (one request, no retries; with ``HF_HUB_OFFLINE=1``, or
    when the Hub cannot be reached, a model already in the local Hugging Face cache). A name a few letters off a
    built-in one gets "did you mean".
    """
    name = config.codec
    if config.is_random:
        return
    hint = _did_you_mean(name)
    if _is_local(name):
        _check_local_codec(Path(name).expanduser(), name, hint)
        return
    if "/" not in name and hint:
        # no Hub model of ours is named without its organisation: a near-miss of a built-in name is a typo
        raise ConfigError(f"unknown codec {name!r}{hint}; the built-in ones are {', '.join(RANDOM_CODECS)}")
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        info = HfApi().model_info(name, revision=config.revision, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except HFValidationError:
        raise ConfigError(f"--codec {name!r} is neither a local directory nor a Hub model id{hint}") from None
    except GatedRepoError:
        raise ConfigError(f"--codec {name!r} is gated on the Hub: accept its terms there and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"--codec {name!r}: no such model on the Hub (or it is private: set HF_TOKEN){hint}") from None
    except RevisionNotFoundError:
        raise ConfigError(f"--codec {name!r} has no revision {config.revision!r} on the Hub") from None
    except (OfflineModeIsEnabled, OSError, *_transport_errors()) as exc:
        if _cached_commit(name, config.revision) is not None:
            log.info("could not reach the Hub (%s); using %s from the local Hugging Face cache", _first_line(exc), name)
            return
        why = "HF_HUB_OFFLINE is set" if isinstance(exc, OfflineModeIsEnabled) else _first_line(exc)
        raise ConfigError(
            f"--codec {name!r}: cannot reach the Hub ({why}) and the model is not in the local cache. Download it "
            f"where the Hub is reachable, pass a local MimiModel.save_pretrained directory, or use --codec "
            f"tiny-random for an offline demo{hint}"
        ) from None
    files = {s.rfilename for s in info.siblings or ()}
    if files and ("config.json" not in files or not any(f.endswith(WEIGHT_SUFFIXES) for f in files)):
        raise ConfigError(f"--codec {name!r}: the Hub repo has no config.json and weights: it is not a Mimi model")


def _is_local(name: str) -> bool:
    """A path, not a Hub id: it exists, or it is written as a path (a Hub id is ``name`` or ``org/name``).
    Wider than :func:`is_local_codec` (an existing directory) so that a missing folder is "no such directory"."""
    return Path(name).expanduser().exists() or name.startswith(("/", "./", "../", "~")) or name.count("/") > 1


def _check_local_codec(path: Path, name: str, hint: str = "") -> None:
    if not path.exists():
        raise ConfigError(f"--codec {name!r}: no such directory{hint}")
    if not path.is_dir():
        raise ConfigError(f"--codec {name!r} is a file: pass the directory MimiModel.save_pretrained wrote")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"--codec {name!r} has no config.json: not a directory written by MimiModel.save_pretrained")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"--codec {name!r}: config.json is not a JSON object ({exc})") from None
    if model_type != "mimi":
        raise ConfigError(f"--codec {name!r} holds a {model_type!r} model, not Mimi")
    if not any(p.is_file() and p.name.endswith(WEIGHT_SUFFIXES) for p in path.iterdir()):
        raise ConfigError(f"--codec {name!r} has no weights ({', '.join('*' + s for s in WEIGHT_SUFFIXES)})")


def _did_you_mean(name: str) -> str:
    """" (did you mean tiny-random?)" for a near-miss of a built-in name, else ""."""
    close = difflib.get_close_matches(name, (*RANDOM_CODECS, DEFAULT_CODEC), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close and close[0] != name else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's connection errors (huggingface_hub's client is httpx2 today, httpx before)."""
    found = []
    for module in ("httpx2", "httpx"):
        try:
            found.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _hub_not_found_errors() -> tuple[type[BaseException], ...]:
    # RemoteEntryNotFoundError, not EntryNotFoundError: its other subclass is a cache miss while the Hub is unreachable
    from huggingface_hub.errors import (
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    return (RepositoryNotFoundError, RevisionNotFoundError, RemoteEntryNotFoundError)


def _chain_has(exc: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, types):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def load_mimi(config: CodecConfig, encoder_only: bool = False):
    """Load the MimiModel named by ``config.codec`` on its device and dtype (not cached: see :func:`get_encoder`)."""
    import torch
    from transformers import MimiConfig, MimiModel

    if config.threads:
        torch.set_num_threads(config.threads)
    if config.is_random:
        # INFO, not WARNING: every process of a run loads the codec, and the command that chose it says
        # NOT_REAL_WARNING once for the run (cli_recipe, decode, inspect). Said here, it came once per worker.
        log.info("building the seeded random codec %s (its codes are not real Mimi codes)", config.codec)
        model = build_random_mimi(config.codec, encoder_only=encoder_only)
    else:
        source = config.codec
        local = Path(source).expanduser()
        if _is_local(source):  # as check_codec does in the driver: a worker (another machine) may lack the folder
            _check_local_codec(local, source)
        kwargs = {} if local.is_dir() else {"revision": config.revision}
        if local.is_dir():
            source = str(local)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a "Loading weights" bar from every worker would tear the run's own bar
        try:
            mcfg = MimiConfig.from_pretrained(source, **kwargs)
            if encoder_only:
                mcfg.decoder_config = None
            model = MimiModel.from_pretrained(source, config=mcfg, **kwargs)
        except OSError as exc:
            message = (f"could not load Mimi from {config.codec!r}: {exc}. Pass a Hub id you can reach, a local "
                       "directory written by MimiModel.save_pretrained, or --codec tiny-random for an offline demo.")
            # A directory that does not hold a model, or a repo, revision or file the Hub says does not exist, stays
            # so on every retry; a connection that failed may not.
            if local.is_dir() or _chain_has(exc, _hub_not_found_errors()):
                raise ConfigError(message) from exc
            raise RuntimeError(message) from exc
    dtype = {"float32": torch.float32, "tf32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        config.dtype
    ]
    if config.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = config.dtype == "tf32"
        torch.backends.cudnn.allow_tf32 = config.dtype == "tf32"
    return model.to(device=config.device, dtype=dtype).eval()


# SODADATA_LEAN_MIMI=0: always load transformers' MimiModel (to compare the two start-ups, or to rule lean_mimi out)
LEAN_ENV = "SODADATA_LEAN_MIMI"


def lean_model(config: CodecConfig):
    """``sodadata.encode.lean_mimi``'s restatement of the codec's encoder, loaded without importing transformers, where
    the chunked CPU engine will run it (CPU, float32, ``engine="auto"``) and its weights are in a local folder: a
    ``save_pretrained`` directory, the Hub model's snapshot in the local Hugging Face cache, full-random's cache.
    None otherwise, or when the checkpoint is not one it restates (said at INFO): then transformers loads it.
    Its codes are checked against transformers' MimiModel.encode like the chunked engine's (engine_check)."""
    if (config.device != "cpu" or config.dtype != "float32" or config.engine != "auto"
            or os.environ.get(LEAN_ENV, "1").strip() == "0"):
        return None
    if config.is_random:
        from sodadata.encode.codec_random import cached_random_dir

        directory = cached_random_dir(config.codec)
    elif is_local_codec(config.codec):
        directory = Path(config.codec).expanduser()
    elif _is_local(config.codec):  # a path but no directory: load_mimi says what is wrong with it
        directory = None
    else:
        directory = _hub_snapshot(config.codec, config.revision)
    if directory is None:
        return None
    import torch

    from sodadata.encode.lean_mimi import load_lean_mimi

    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return load_lean_mimi(directory)
    except (ValueError, OSError, RuntimeError) as exc:
        log.info("codec %s: loading it with transformers (%s is not a checkpoint lean_mimi restates: %s)",
                 config.codec, directory, exc)
        return None


def _hub_snapshot(repo: str, revision: str | None) -> Path | None:
    """The folder of ``repo``@``revision`` in the local Hugging Face cache, if its config.json is there."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        path = try_to_load_from_cache(repo, "config.json", revision=revision or "main", repo_type="model")
    except HFValidationError:  # not a Hub id: load_mimi says so
        return None
    return Path(path).parent if isinstance(path, str) else None


# What from_pretrained reads the weights from (sharded checkpoints add an index and more files of the same kinds).
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def is_local_codec(name: str) -> bool:
    """True when ``--codec`` names a local ``save_pretrained`` directory (the rule :func:`load_mimi` follows)."""
    return name not in RANDOM_CODECS and Path(name).expanduser().is_dir()


def weights_sha256(directory: str | Path) -> str:
    """SHA-256 over a ``save_pretrained`` directory's weight files: each name (sorted) and its bytes.

    Content, not path: the same weights copied elsewhere hash the same, other weights under the same path do not.
    """
    root = Path(directory).expanduser()
    files = sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise RuntimeError(
            f"--codec {directory}: no weight files ({', '.join('*' + s for s in WEIGHT_SUFFIXES)}) in that directory; "
            "pass a directory written by MimiModel.save_pretrained"
        )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode("utf-8") + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(8 * 2**20):
                digest.update(chunk)
    return digest.hexdigest()


def _cached_commit(repo: str, revision: str | None) -> str | None:
    """The commit of ``repo``@``revision`` in the local Hugging Face cache (what an offline load would use)."""
    snapshot = _hub_snapshot(repo, revision)
    return None if snapshot is None else snapshot.name


def codec_identity(config: CodecConfig) -> dict:
    """Which codec ``config`` names, as recorded in every shard's ``made_by["codec"]`` (SPEC §2).

    A Hub id with its revision resolved to a commit (asks the Hub, or its local cache offline: call it once, on the
    driver, and load that commit everywhere); a local ``save_pretrained`` directory as ``"local"`` with the SHA-256
    of its weights; a seeded random model by name with ``random: true``.
    """
    if config.is_random:
        return {"id": config.codec, "revision": None, "weights_sha256": None, "random": True}
    if is_local_codec(config.codec):
        return {"id": "local", "revision": None, "weights_sha256": weights_sha256(config.codec), "random": False}
    if _is_local(config.codec):  # a path that is no directory (missing, a file) is not a Hub id: say what it is
        _check_local_codec(Path(config.codec).expanduser(), config.codec)
    try:
        commit = resolve_hf_revision(config.codec, config.revision, repo_type="model")
    except RuntimeError as exc:
        commit = _cached_commit(config.codec, config.revision)
        if commit is None:
            raise RuntimeError(
                f"cannot resolve --codec {config.codec}@{config.revision or 'main'} to a commit, and it is not in the "
                f"local Hugging Face cache ({exc}). Connect to the Hub once, pass a local save_pretrained directory, "
                "or --codec tiny-random for an offline demo."
            ) from None
        log.info("codec %s: the Hub is not reachable; using commit %s from the local cache", config.codec, commit)
    return {"id": config.codec, "revision": commit, "weights_sha256": None, "random": False}

