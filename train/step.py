"""Optimizer, train state and the jitted train step (explicit in/out shardings, state donated)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding

from train import model as M
from train.config import ModelConfig, OptimizerConfig, TrainConfig
from train.schedule import Schedule
from train.sharding import BATCH_AXES, P, batch_sharding, param_shardings, replicated

# The batch arrays the step consumes (dtype int32, leading axis = rows).
BATCH_KEYS = ("input_ids", "segment_ids", "component")


def _decay_mask(params):
    # Decay matrices (embeddings, projections), not norm gains.
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any(getattr(k, "key", None) in M.NORMS for k in path), params
    )


def make_optimizer(cfg: OptimizerConfig, schedule: Schedule) -> optax.GradientTransformation:
    adamw = optax.adamw(
        schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=_decay_mask
    )
    if cfg.max_grad_norm is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), adamw)


@dataclass
class Setup:
    """Everything compiled for one run: the optimizer, state shardings and the jitted functions."""

    mesh: Mesh
    optimizer: optax.GradientTransformation
    state_shardings: dict
    abstract_state: dict  # ShapeDtypeStructs carrying their shardings (checkpoint restore target)
    init: Callable[[jax.Array], dict]
    step: Callable[[dict, dict], tuple[dict, dict]]
    schedule: Schedule


def build(model_cfg: ModelConfig, cfg: TrainConfig, mesh: Mesh, n_components: int, schedule: Schedule) -> Setup:
    optimizer = make_optimizer(cfg.optimizer, schedule)
    dtype = jnp.dtype(cfg.compute_dtype)

    def init_fn(key):
        params = M.init_params(model_cfg, key)
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer.init(params)}

    abstract = jax.eval_shape(init_fn, jax.random.key(0))
    p_shard = param_shardings(abstract["params"], mesh)
    # Optimizer moments mirror the parameters and take their shardings; counters are replicated.
    o_shard = optax.tree_map_params(
        optimizer,
        lambda _, s: s,
        abstract["opt_state"],
        p_shard,
        transform_non_params=lambda _: replicated(mesh),
        is_leaf=lambda x: isinstance(x, NamedSharding),
    )
    state_shardings = {"step": replicated(mesh), "params": p_shard, "opt_state": o_shard}
    abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_shardings
    )
    act = NamedSharding(mesh, P(BATCH_AXES, None, None))
    # The batch is split over every device, so a device's share of a chunk is its rows times the chunk's positions.
    chunk = M.loss_chunk_positions(cfg.loss_chunk_tokens, cfg.batch_size // mesh.devices.size)

    def constrain(h):
        return jax.lax.with_sharding_constraint(h, act)

    def loss_fn(params, batch):
        ids, seg = batch["input_ids"], batch["segment_ids"]
        h = M.hidden_states(params, ids, seg, model_cfg, dtype=dtype, remat=cfg.remat, constrain=constrain)
        weights = M.loss_weights(seg)
        ce, z, count = M.chunked_cross_entropy(
            h[:, :-1], M.output_matrix(params), ids[:, 1:], weights, chunk, cfg.z_loss_weight
        )
        denom = jnp.maximum(count, 1.0)
        return (ce + z) / denom, {"ce": ce / denom, "predicted_tokens": count}

    def step_fn(state, batch):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        real = (batch["segment_ids"] != 0).sum(axis=1)  # non-padding tokens per row
        metrics = {
            "loss": loss,
            "ce": aux["ce"],
            "predicted_tokens": aux["predicted_tokens"],
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(state["step"]),
            # Tokens of each mixture component in this global batch (all hosts' rows: the array is global).
            "component_tokens": jnp.zeros((n_components,), jnp.int32).at[batch["component"]].add(real),
        }
        return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics

    batch_shardings = {k: batch_sharding(mesh, 1 if k == "component" else 2) for k in BATCH_KEYS}
    init = jax.jit(init_fn, out_shardings=state_shardings)
    step = jax.jit(
        step_fn,
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, replicated(mesh)),
        donate_argnums=0,
    )
    return Setup(mesh, optimizer, state_shardings, abstract_state, init, step, schedule)
