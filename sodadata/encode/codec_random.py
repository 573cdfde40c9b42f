"""The seeded random Mimi models: ``tiny-random`` (small: tests, the offline demo) and ``full-random`` (the real
architecture with random weights: benchmarks). Deterministic across processes and machines for the same torch;
their codes are NOT real Mimi codes.

Drawing full-random's 96 M weights costs a second per process on an idle core (several on a busy one), more than
loading the real ``kyutai/mimi`` with ``from_pretrained``; so the first process on a machine saves the weights it
drew in ``$SODADATA_CACHE/random-codecs/`` (see :func:`sodadata.encode.engine_check.cache_dir`) and later ones
load them the way the real codec loads, after checking the file's SHA-256 against the one recorded beside it: a
benchmark then times the start-up a user of the real codec meets. The hash (0.26 s of an idle core for 385 MB, in
every worker) is taken once per version of the file: a stamp beside it records the file's identity and times
(inode, size, mtime, ctime) when it last matched, and while they are unchanged the file is the one that was hashed
(any write changes its ctime, which no one can set back). The entry's name holds everything the weights
depend on (name, seed, torch and transformers versions): another version draws and saves its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from sodadata.encode.codec_config import RANDOM_CODECS
from sodadata.encode.codes import NUM_CODEBOOKS
from sodadata.locations import write_json_atomic

log = logging.getLogger(__name__)

CACHED = ("full-random",)  # tiny-random draws in milliseconds: a cache would cost more than it saves
_WEIGHTS = "model.safetensors"
_VERIFIED = f"{_WEIGHTS}.verified"  # the stamp: the weights' stat when their SHA-256 last matched the recorded one
_FORMAT = 1


def tiny_random_config():
    """A small Mimi with the real framing (24 kHz, 1920 samples a frame, 2048 codes a codebook)."""
    from transformers import MimiConfig

    kwargs = dict(
        hidden_size=32,
        num_filters=4,
        num_residual_layers=1,
        codebook_dim=16,
        vector_quantization_hidden_dimension=16,
        num_quantizers=NUM_CODEBOOKS,
        num_semantic_quantizers=1,
        num_hidden_layers=2,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=2,
        upsample_groups=32,
    )
    return MimiConfig(**kwargs)


def _fill_codebooks(model, seed: int) -> None:
    """Give every codebook seeded random centroids: a fresh MimiModel's are all zero, so every code would be 0."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    for name, buf in model.named_buffers():
        if name.endswith("embed_sum"):
            buf.copy_(torch.randn(buf.shape, generator=gen, dtype=buf.dtype))
        elif name.endswith("cluster_usage"):
            buf.fill_(1.0)
    for module in model.modules():
        if hasattr(module, "_embed"):
            module._embed = None


def build_random_mimi(name: str, seed: int = 0, encoder_only: bool = False, cache: bool = True):
    """``tiny-random`` or ``full-random``: deterministic across processes and machines for the same torch.

    ``full-random`` comes from the machine's cache when an intact entry is there (``cache=False``: always draw).
    """
    model = None
    entry = _cache_entry(name, seed) if cache and name in CACHED else None
    if entry is not None:
        model = _load_cached(entry)
    if model is None:
        model = draw_random_mimi(name, seed)
        if entry is not None:
            _save_cached(model, entry)
    if encoder_only:  # built whole first so the weights do not depend on encoder_only
        model.decoder = None
    return model.eval()


def draw_random_mimi(name: str, seed: int = 0):
    """Draw the whole model from its seed (what the cache holds, and what it is checked against in the tests)."""
    import torch
    from transformers import MimiConfig, MimiModel

    if name == "tiny-random":
        config = tiny_random_config()
    elif name == "full-random":
        config = MimiConfig()
    else:
        raise ValueError(f"unknown random codec {name!r}; expected one of {RANDOM_CODECS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MimiModel(config)
    with torch.no_grad():
        _fill_codebooks(model, seed)
    return model.eval()


def _cache_entry(name: str, seed: int) -> Path | None:
    """This process's cache folder for ``name``/``seed``: None when the cache is off. (transformers' version is read
    from its metadata: importing it is what a worker with a cached entry avoids, lean_mimi.)"""
    from importlib import metadata

    import torch

    from sodadata.encode.engine_check import cache_dir

    root = cache_dir()
    if root is None:
        return None
    key = json.dumps([_FORMAT, name, seed, torch.__version__, metadata.version("transformers")])
    return root / "random-codecs" / f"{name}-seed{seed}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def cached_random_dir(name: str, seed: int = 0) -> Path | None:
    """The folder of ``name``'s intact cached weights (a MimiModel ``save_pretrained``), or None: not a cached
    random codec, the cache off, nothing saved yet, or an entry that fails its SHA-256 (drawn again on load)."""
    if name not in CACHED:
        return None
    entry = _cache_entry(name, seed)
    return entry if entry is not None and _entry_intact(entry) else None


def _entry_intact(entry: Path) -> bool:
    """``entry`` holds weights whose SHA-256 is the one recorded beside them (said at INFO when it does not)."""
    from sodadata.encode.codec_loading import weights_sha256

    recorded = entry / f"{_WEIGHTS}.sha256"
    try:
        expected = recorded.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError) as exc:
        log.info("ignoring the cached random codec in %s (%s); drawing it again", entry, exc)
        return False
    stamp = _file_identity(entry / _WEIGHTS)
    if stamp is not None and _read_stamp(entry) == {"stat": stamp, "sha256": expected}:
        return True  # the very file whose SHA-256 matched: unchanged since (its ctime moves with any write)
    try:
        actual = weights_sha256(entry)
    except (OSError, RuntimeError) as exc:  # RuntimeError: no weight file left in the folder
        log.info("ignoring the cached random codec in %s (%s); drawing it again", entry, exc)
        return False
    if actual != expected:
        log.info("ignoring the cached random codec in %s: its weights fail their SHA-256; drawing it again", entry)
        return False
    _write_stamp(entry, stamp, actual)
    return True


def _file_identity(path: Path) -> list[int] | None:
    """What changes whenever the file's bytes may have: device, inode, size, mtime and ctime (ns); None if absent."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _read_stamp(entry: Path) -> dict | None:
    try:
        return json.loads((entry / _VERIFIED).read_text(encoding="ascii"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # a damaged stamp costs one hash, and is rewritten
        log.info("ignoring the stamp of the cached random codec in %s (%s); hashing its weights", entry, exc)
        return None


def _write_stamp(entry: Path, stat: list[int] | None, sha256: str) -> None:
    """Record that the weights with ``stat`` hashed to ``sha256`` (atomically; racing workers write the same)."""
    if stat is None:
        return
    try:
        write_json_atomic(entry / _VERIFIED, {"stat": stat, "sha256": sha256})
    except OSError as exc:  # a read-only cache: every process hashes, as before
        log.info("could not stamp the cached random codec in %s (%s); each process hashes its weights", entry, exc)


def _load_cached(entry: Path):
    """The model saved in ``entry``, or None (missing, or failing its checksum: then it is drawn again)."""
    from transformers import MimiModel
    from transformers.utils import logging as hf_logging

    if not _entry_intact(entry):
        return None
    hf_logging.disable_progress_bar()  # one "Loading weights" bar per worker would tear the run's own bar
    return MimiModel.from_pretrained(str(entry)).eval()


def _save_cached(model, entry: Path) -> None:
    """Save ``model`` as ``entry`` atomically (a folder renamed into place, the checksum last); racing processes
    each write their own temporary folder and the first rename wins. A failure only costs the next process a draw."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
        model.save_pretrained(str(tmp))
        from sodadata.encode.codec_loading import weights_sha256

        sha256 = weights_sha256(tmp)
        (tmp / f"{_WEIGHTS}.sha256").write_text(sha256 + "\n", encoding="ascii")
        _write_stamp(tmp, _file_identity(tmp / _WEIGHTS), sha256)  # the inode and its times survive the rename
        try:
            os.rename(tmp, entry)
        except OSError:  # another process saved it first (the folder exists and is not empty)
            shutil.rmtree(tmp)
    except OSError as exc:
        log.info("could not cache the random codec in %s (%s); each process draws it", entry, exc)

