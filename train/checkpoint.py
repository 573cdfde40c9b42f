"""Checkpoints: train state (parameters, optimizer state, step) + every host's stream state, written atomically.

Layout (a directory per checkpoint; ``meta.json`` is written last, so a directory without it is incomplete)::

    <ckpt>/step_00000100/arrays/<i>.npy      one file per leaf of the train state, full (unsharded) array
    <ckpt>/step_00000100/stream_p00000.json  host 0's ``MixtureStream.state_dict()`` (one file per host)
    <ckpt>/step_00000100/meta.json           step, leaf names/shapes/dtypes, per-component token counts, config

One file per leaf bounds host memory by the largest leaf, and restoring memory-maps each file so a host reads only
the slices its devices hold. On several hosts the directory must be on a file system they all see (NFS, a
gcsfuse mount): host 0 writes the arrays, every host writes its own stream state. This is deliberately plain
numpy; for multi-terabyte states use Orbax, which shards writes across hosts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step_(\d{8})$")
FORMAT_VERSION = 1


def _leaves(tree) -> list[tuple[str, object]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in flat]


def _to_host(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(x)
    # Several hosts: every host gathers the full array (collective); only host 0 keeps and writes it.
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def latest(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (``meta.json`` present), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / "meta.json").is_file()]
    return max(done, key=lambda p: int(_STEP_DIR.match(p.name).group(1))) if done else None


def save(root: str | Path, step: int, state, stream_state: dict, extra: dict, keep: int = 2) -> Path:
    """Write a checkpoint of ``state`` at ``step``; every host calls this (it contains collectives)."""
    root = Path(root)
    final = step_dir(root, step)
    tmp = root / f".{final.name}.tmp"
    is_main = jax.process_index() == 0
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "arrays").mkdir(parents=True)
    _barrier(f"ckpt-mkdir-{step}")
    leaves = []
    for i, (name, leaf) in enumerate(_leaves(state)):
        arr = _to_host(leaf)
        leaves.append({"name": name, "file": f"arrays/{i}.npy", "shape": list(arr.shape), "dtype": str(arr.dtype)})
        if is_main:
            np.save(tmp / "arrays" / f"{i}.npy", arr)
    (tmp / f"stream_p{jax.process_index():05d}.json").write_text(json.dumps(stream_state))
    _barrier(f"ckpt-written-{step}")
    if is_main:
        meta = {"format_version": FORMAT_VERSION, "step": step, "process_count": jax.process_count(),
                "leaves": leaves, **extra}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _prune(root, keep)
        log.info("checkpoint saved: %s", final)
    _barrier(f"ckpt-done-{step}")
    return final


def _prune(root: Path, keep: int) -> None:
    if keep <= 0:
        return
    done = sorted((p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / "meta.json").is_file()),
                  key=lambda p: p.name)
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_meta(path: str | Path) -> dict:
    return json.loads((Path(path) / "meta.json").read_text())


def restore(path: str | Path, abstract_state) -> tuple[object, dict, dict]:
    """Load a checkpoint into arrays laid out like ``abstract_state`` (ShapeDtypeStructs with shardings).

    Returns ``(state, this host's stream state, meta)``. A checkpoint of another model shape, optimizer or host
    count is refused with a message rather than half-loaded.
    """
    path = Path(path)
    meta = load_meta(path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {meta.get('format_version')} is not {FORMAT_VERSION}")
    if meta["process_count"] != jax.process_count():
        raise ValueError(
            f"{path} was written by {meta['process_count']} hosts and this run has {jax.process_count()}: "
            "each host resumes its own slice of the stream, so the host count must match"
        )
    by_name = {leaf["name"]: leaf for leaf in meta["leaves"]}
    flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_state)
    names = [jax.tree_util.keystr(p) for p, _ in flat]
    if set(names) != set(by_name):
        missing, unexpected = sorted(set(names) - set(by_name)), sorted(set(by_name) - set(names))
        raise ValueError(f"{path} does not match this model/optimizer: missing {missing[:5]}, unexpected {unexpected[:5]}")
    arrays = []
    for name, (_, target) in zip(names, flat):
        entry = by_name[name]
        if tuple(entry["shape"]) != tuple(target.shape) or entry["dtype"] != str(np.dtype(target.dtype)):
            raise ValueError(f"{path}: {name} is {entry['dtype']}{entry['shape']}, expected "
                             f"{np.dtype(target.dtype)}{list(target.shape)}")
        data = np.load(path / entry["file"], mmap_mode="r")
        arrays.append(jax.make_array_from_callback(target.shape, target.sharding,
                                                   lambda idx, data=data: np.asarray(data[idx])))
    state = jax.tree_util.tree_unflatten(treedef, arrays)
    stream_state = json.loads((path / f"stream_p{jax.process_index():05d}.json").read_text())
    return state, stream_state, meta
