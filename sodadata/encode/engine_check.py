"""The chunked engine's check, done once per machine, model and software, and remembered where workers find it.

What the check protects against: the chunked CPU engine (``sodadata.encode.chunked_engine``) computes MimiModel.encode's
latents bit for bit only while oneDNN picks the same kernels for its 1 s chunks as for the whole signal. That
choice depends on the CPU (model, instruction sets), the torch/oneDNN/MKL build, the thread count, the dtype and
the shapes (the model's architecture, the chunk, the width of the batch). So the first batch of each width class
is also run through the reference and the latents compared (and, where the engine runs ``lean_mimi``'s restatement
of the model rather than transformers' modules, the codes of every codebook too); a mismatch sends the process to
the reference path for good. That costs up to seven reference encodes (the slower path) per process: ~8 s of the first shard of
every worker for full-size Mimi on Emilia-like audio.

The verdicts are facts about an environment, so they are cached, keyed by everything above (:func:`check_key`),
in ``$SODADATA_CACHE/engine-check/`` (default ``~/.cache/sodadata``; ``SODADATA_CACHE=off`` turns the cache off),
one JSON file per key, written atomically (``write_json_atomic``: temporary file, then rename): two workers that
race both check and both write a valid file; the later write may drop a width class the other added, which only
costs a recheck.

A cache entry is never trusted blindly: it must parse, carry its own checksum (a truncated or edited file fails
it), and hold exactly the key this process computed. And before a process trusts an entry that says "the chunked
engine agrees", it encodes a fixed probe (2.5 s of seeded noise: two chunks, the second absorbing a tail) through
the chunked engine and compares the SHA-256 of its latents and codes with the reference's recorded with the entry: an entry
written elsewhere (another machine, other weights, a key that misses a factor) or forged fails that and is
checked again from scratch. The probe costs a fraction of one chunked second per process, and needs no
transformers: a worker whose check is cached never imports it (``sodadata.encode.lean_mimi``). A verdict "the chunked
engine differs" is trusted without it: the reference path it sends the process to is MimiModel.encode itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sodadata.locations import write_json_atomic

log = logging.getLogger(__name__)

CACHE_ENV = "SODADATA_CACHE"
FORMAT = 2  # 2: the probe's digest covers the codes as well as the latents
PROBE_SECONDS = 2.5
# oneDNN/MKL/OpenMP settings that can change which kernels run (ISA caps, JIT, conditional numerical reproducibility)
_KERNEL_ENV_PREFIXES = ("ONEDNN_", "DNNL_", "MKL_", "ATEN_CPU_CAPABILITY", "KMP_", "OMP_")


def cache_dir() -> Path | None:
    """Where sodadata keeps what it measured about this machine; None when ``SODADATA_CACHE`` is off/0/empty."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "0", "off", "none") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sodadata"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _cpu() -> dict:
    """The CPU as the kernel reports it: model name and instruction-set flags (of the first processor)."""
    info = {"machine": platform.machine(), "model": platform.processor(), "flags": ""}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            name = name.strip()
            if name == "model name" and info["model"] in ("", platform.processor()):
                info["model"] = value.strip()
            elif name in ("flags", "Features") and not info["flags"]:
                info["flags"] = _sha256(" ".join(sorted(value.split())).encode())
    except OSError:
        pass
    return info


def _engine_source() -> str:
    """SHA-256 of the code whose arithmetic the check vouches for: any edit of it is a new key. (lean_mimi's source
    is read, not imported: it imports torch, and this runs in processes that may not need it.)"""
    from sodadata.encode import chunked_engine, padding_repair

    files = [Path(m.__file__) for m in (chunked_engine, padding_repair)]
    files.append(Path(chunked_engine.__file__).with_name("lean_mimi.py"))
    return _sha256(b"".join(f.read_bytes() for f in files))


# Bookkeeping a config carries that is not the architecture: where it was loaded from, what saved it. With them in
# the key, the same model drawn, saved and loaded again (or kyutai/mimi from the Hub cache and from a copy) missed.
_NOT_ARCHITECTURE = frozenset({"_name_or_path", "architectures", "dtype", "torch_dtype", "transformers_version",
                               "_commit_hash"})


def architecture_digest(model_config) -> str:
    """SHA-256 of a model config's architecture: every field, nested configs too, but :data:`_NOT_ARCHITECTURE`."""

    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in _NOT_ARCHITECTURE}
        return obj

    return _sha256(_canonical(strip(model_config.to_dict())))


def check_key(model, config, chunk: int, threads: int) -> dict:
    """Everything the check's outcome could depend on (see the module docstring). ``model``: the one the chunked
    engine runs, transformers' MimiModel or ``lean_mimi``'s restatement of it (``modules``); transformers' version is
    read from its metadata, not by importing it (the lean path exists to avoid that import)."""
    from importlib import metadata

    import torch

    param = next(model.parameters())
    return {
        "format": FORMAT,
        "engine": _engine_source(),
        "chunk": chunk,
        "threads": threads,
        "dtype": str(param.dtype),
        "device": str(param.device),
        "codec": {"name": config.codec, "revision": config.revision,
                  "architecture": architecture_digest(model.config)},
        "torch": torch.__version__,
        "torch_build": _sha256(torch.__config__.show().encode()),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "modules": "sodadata.encode.lean_mimi" if getattr(model, "lean", False) else "transformers",
        "transformers": metadata.version("transformers"),
        "numpy": np.__version__,
        "cpu": _cpu(),
        "host": platform.node(),
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_KERNEL_ENV_PREFIXES)},
    }


def probe_audio() -> np.ndarray:
    """The fixed probe: seeded noise at speech level, the same bytes on every machine (PCG64 is specified)."""
    n = round(PROBE_SECONDS * 24_000)
    return (0.1 * np.random.default_rng(20261202).standard_normal(n)).astype(np.float32)


def outputs_digest(tensors) -> str:
    """SHA-256 of tensors' shapes, dtypes and bytes, in order (any dtype: bfloat16 has no NumPy twin, so read as
    bytes); what the probe's outputs (latents, codes) are remembered and compared by."""
    import torch

    digest = hashlib.sha256()
    for t in tensors:
        raw = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        digest.update(f"{tuple(t.shape)} {t.dtype} {len(raw)} ".encode() + raw)
    return digest.hexdigest()


def _read_entry(path: Path, key: dict) -> tuple[dict[int, bool], str]:
    """The verdicts and probe digest of an intact entry for ``key``; ValueError saying why not, FileNotFoundError."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot be read ({exc})") from None
    if not isinstance(entry, dict):
        raise ValueError("is not a JSON object")
    body = {k: v for k, v in entry.items() if k != "checksum"}
    if entry.get("checksum") != _sha256(_canonical(body)):
        raise ValueError("fails its checksum")
    if body.get("key") != key:
        raise ValueError("was written for another machine, model or software")
    try:
        return {int(c): bool(v) for c, v in body["classes"].items()}, str(body["probe"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ValueError("lacks its verdicts") from None


class EngineCheck:
    """The verdicts of one encoder's check: read from the cache (on first use), confirmed by the probe, recorded as
    they come."""

    def __init__(self, key: dict, chunked: Callable, reference: Callable) -> None:
        """``chunked`` / ``reference``: (latents, codes of every codebook) of a 1-D waveform through the chunked engine
        and its model's quantizer / through transformers' MimiModel."""
        self.key = key
        self._chunked, self._reference = chunked, reference
        self.classes: dict[int, bool] = {}  # width class -> the chunked engine's latents equal the reference's
        self.probe: str | None = None  # SHA-256 of the reference's latents and codes on the probe
        root = cache_dir()
        self.path = None if root is None else root / "engine-check" / f"{_sha256(_canonical(key))[:32]}.json"
        self.source: str | None = None  # none (no cache), miss, hit, corrupt, wrong; None: not read yet

    def _load(self) -> None:
        self.source = "none"
        if self.path is None:
            return
        try:
            classes, probe = _read_entry(self.path, self.key)
        except FileNotFoundError:
            self.source = "miss"
            return
        except ValueError as exc:
            self._distrust("corrupt" if "another" not in str(exc) else "wrong", str(exc))
            return
        if all(classes.values()) and outputs_digest(self._chunked(probe_audio())) != probe:
            self._distrust("wrong", "does not hold here: the chunked engine's outputs on the probe differ from the "
                           "reference's it recorded")
            return
        self.classes, self.probe, self.source = classes, probe, "hit"

    def _distrust(self, source: str, why: str) -> None:
        log.info("ignoring the chunked engine's cached check %s: it %s; checking again", self.path, why)
        self.source = source

    def verdict(self, width_class: int) -> bool | None:
        """True/False when this width class was checked (here or, confirmed, by another process); None: check it."""
        if self.source is None:
            self._load()
        return self.classes.get(width_class)

    def any_differs(self) -> bool:
        """A class is known where the chunked engine differs: use the reference for everything."""
        if self.source is None:
            self._load()
        return not all(self.classes.values())

    def record(self, width_class: int, equal: bool) -> None:
        """Remember a verdict; write the entry (merged with what another process wrote meanwhile) atomically."""
        self.classes[width_class] = equal
        if self.path is None:
            return
        try:
            if self.probe is None:
                self.probe = outputs_digest(self._reference(probe_audio()))
            if self.source in ("miss", "hit"):  # never the verdicts of an entry found wrong or corrupt
                try:
                    theirs, probe = _read_entry(self.path, self.key)  # written by another process meanwhile?
                    if probe == self.probe:
                        self.classes = {**theirs, **self.classes}
                except (FileNotFoundError, ValueError):
                    pass
            body = {"key": self.key, "classes": {str(c): v for c, v in sorted(self.classes.items())},
                    "probe": self.probe}
            write_json_atomic(self.path, {**body, "checksum": _sha256(_canonical(body))})
        except OSError as exc:  # a read-only or full home: the check still holds for this process
            log.info("could not record the chunked engine's check in %s (%s); each process checks for itself",
                     self.path, exc)
            self.path = None
