"""Device mesh, parameter and batch shardings, and global batch arrays built from each host's slice.

Mesh axes are ("data", "fsdp"). Every batch is split over *both* axes (each device holds its own rows); each
parameter is split over "fsdp" along one dimension and replicated over "data" (ZeRO-3 / FSDP: XLA all-gathers a
layer's weights just before using them and reduce-scatters its gradients).
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from train.config import MeshConfig

log = logging.getLogger(__name__)

DATA, FSDP = "data", "fsdp"
BATCH_AXES = (DATA, FSDP)


def make_mesh(cfg: MeshConfig, devices: list | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    data = jax.process_count() if cfg.data is None else cfg.data
    fsdp = cfg.fsdp
    if data == -1 and fsdp == -1:
        raise ValueError("at most one mesh axis may be -1")
    if data == -1:
        data = n // fsdp
    if fsdp == -1:
        fsdp = n // data
    if data * fsdp != n:
        raise ValueError(f"mesh data={data} x fsdp={fsdp} does not cover the {n} devices")
    # jax.make_mesh orders devices so that the inner (fsdp) axis follows the fastest interconnect.
    return jax.make_mesh((data, fsdp), (DATA, FSDP), axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def param_spec(path: tuple, shape: tuple[int, ...], fsdp_size: int) -> P:
    """Shard the largest dimension divisible by the fsdp axis size; never the stacked-layer axis.

    The layer axis is what ``lax.scan`` slices, so sharding it would move whole layers between devices each step.
    A parameter with no divisible dimension (a norm gain of odd width, say) is replicated: it is tiny.
    """
    stacked = any(getattr(k, "key", None) == "layers" for k in path)
    first = 1 if stacked else 0
    spec: list = [None] * len(shape)
    if fsdp_size > 1:
        candidates = [i for i in range(first, len(shape)) if shape[i] % fsdp_size == 0]
        if candidates:
            spec[max(candidates, key=lambda i: shape[i])] = FSDP
    return P(*spec)


def param_shardings(abstract_params, mesh: Mesh):
    """A NamedSharding per parameter (same tree as ``abstract_params``, leaves with ``.shape``)."""
    size = mesh.shape[FSDP]
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, param_spec(path, tuple(x.shape), size)), abstract_params
    )


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
    n = mesh.shape[DATA] * mesh.shape[FSDP]
    if global_batch % n or global_batch % jax.process_count():
        raise ValueError(
            f"--batch-size {global_batch} must be a multiple of the device count ({n}) and of the host count "
            f"({jax.process_count()})"
        )


def global_batch(local: dict[str, np.ndarray], mesh: Mesh, global_rows: int) -> dict[str, jax.Array]:
    """Global arrays from this host's rows (``global_rows // process_count`` of them), sharded over the batch axes.

    ``make_array_from_process_local_data`` places this host's rows on its own devices; on one host it is
    simply a sharded ``device_put``.
    """
    out = {}
    for name, arr in local.items():
        arr = np.ascontiguousarray(arr)
        sharding = batch_sharding(mesh, arr.ndim)
        out[name] = jax.make_array_from_process_local_data(sharding, arr, (global_rows, *arr.shape[1:]))
    return out


def describe(x: jax.Array) -> dict:
    """What a test or a log line needs to know about an array's placement."""
    sharding = x.sharding
    spec = getattr(sharding, "spec", ())
    return {
        "shape": list(x.shape),
        "spec": [list(s) if isinstance(s, tuple) else s for s in spec],  # JSON-able: [["data", "fsdp"], None]
        "devices": len(sharding.device_set),
        "shard_shape": list(sharding.shard_shape(x.shape)),
    }
