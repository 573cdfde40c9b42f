"""A Qwen3-style decoder in plain JAX: parameters are a dict of arrays, layers are stacked and scanned.

Stacking the layers (leading axis = layer) keeps compile time flat in depth and lets one ``PartitionSpec`` rule
shard every layer the same way. Attention is blocked across document boundaries with the stream's segment ids:
a query sees a key only if both belong to the same document (same non-zero segment id) and the key is not later.
Positions are plain ``arange``: RoPE scores depend only on the query-key offset, so with the segment mask they are
identical to positions restarted at each document.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from train.config import ModelConfig, RopeConfig

Params = dict

# Parameters that are gains (no weight decay, initialized to one).
NORMS = ("attn_norm", "mlp_norm", "q_norm", "k_norm", "final_norm")


def init_params(cfg: ModelConfig, key: jax.Array) -> Params:
    """Normal(0, init_std) matrices, output projections scaled by 1/sqrt(2*layers) (GPT-2/Llama practice), unit norms."""
    d, hd, n, kv, f, layers = cfg.hidden, cfg.dim_per_head, cfg.heads, cfg.kv_heads, cfg.intermediate, cfg.layers
    keys = iter(jax.random.split(key, 9))
    std, out_std = cfg.init_std, cfg.init_std / math.sqrt(2 * layers)

    def normal(shape, s):
        return (s * jax.random.normal(next(keys), shape)).astype(jnp.float32)

    layer = {
        "attn_norm": jnp.ones((layers, d)),
        "wq": normal((layers, d, n * hd), std),
        "wk": normal((layers, d, kv * hd), std),
        "wv": normal((layers, d, kv * hd), std),
        "wo": normal((layers, n * hd, d), out_std),
        "mlp_norm": jnp.ones((layers, d)),
        "w_gate": normal((layers, d, f), std),
        "w_up": normal((layers, d, f), std),
        "w_down": normal((layers, f, d), out_std),
    }
    if cfg.qk_norm:
        layer["q_norm"] = jnp.ones((layers, hd))
        layer["k_norm"] = jnp.ones((layers, hd))
    params = {"embed": normal((cfg.vocab_size, d), std), "layers": layer, "final_norm": jnp.ones((d,))}
    if not cfg.tie_embeddings:
        params["lm_head"] = normal((d, cfg.vocab_size), std)
    return params


def rms_norm(x: jax.Array, gain: jax.Array, eps: float) -> jax.Array:
    # Statistics in float32 whatever the compute dtype: bf16 mean-of-squares loses too much over wide rows.
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (y * gain).astype(x.dtype)


def rope_inv_freq(head_dim: int, rope: RopeConfig) -> np.ndarray:
    """Inverse frequencies, with Llama-3 scaling when ``rope.factor`` is set (HF ``_compute_llama3_parameters``)."""
    inv = 1.0 / (rope.theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if rope.factor is None:
        return inv.astype(np.float32)
    old = rope.original_max_position_embeddings
    low_wavelen, high_wavelen = old / rope.low_freq_factor, old / rope.high_freq_factor
    wavelen = 2 * np.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / rope.factor, inv)
    smooth = (old / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
    smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """Rotate-half RoPE (HF/Levanter layout). ``x``: [B, S, heads, head_dim]; ``positions``: [B, S]."""
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, S, hd/2]
    cos = jnp.cos(jnp.concatenate([angles, angles], -1))[:, :, None, :]
    sin = jnp.sin(jnp.concatenate([angles, angles], -1))[:, :, None, :]
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], -1)
    return (x32 * cos + rotated * sin).astype(x.dtype)


def attention_mask(segment_ids: jax.Array) -> jax.Array:
    """[B, S, S] boolean: query i may attend to key j iff j <= i and both lie in the same document.

    Padding (segment 0) attends only to padding, so its rows are never empty (no NaN) and no real token sees it.
    """
    s = segment_ids.shape[-1]
    causal = jnp.tril(jnp.ones((s, s), dtype=bool))
    same_doc = segment_ids[:, :, None] == segment_ids[:, None, :]
    return causal[None] & same_doc


def _attention(x, p, cfg: ModelConfig, positions, mask, inv_freq):
    b, s, _ = x.shape
    hd, n, kv = cfg.dim_per_head, cfg.heads, cfg.kv_heads
    q = (x @ p["wq"].astype(x.dtype)).reshape(b, s, n, hd)
    k = (x @ p["wk"].astype(x.dtype)).reshape(b, s, kv, hd)
    v = (x @ p["wv"].astype(x.dtype)).reshape(b, s, kv, hd)
    if cfg.qk_norm:
        q, k = rms_norm(q, p["q_norm"], cfg.rms_eps), rms_norm(k, p["k_norm"], cfg.rms_eps)
    q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
    # Grouped-query attention: each of the kv heads serves n // kv query heads.
    q = q.reshape(b, s, kv, n // kv, hd)
    scores = jnp.einsum("bqkgd,btkd->bkgqt", q, k, preferred_element_type=jnp.float32) / math.sqrt(hd)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(x.dtype)
    out = jnp.einsum("bkgqt,btkd->bqkgd", probs, v).reshape(b, s, n * hd)
    return out @ p["wo"].astype(x.dtype)


def _mlp(x, p):
    gate = x @ p["w_gate"].astype(x.dtype)
    up = x @ p["w_up"].astype(x.dtype)
    return (jax.nn.silu(gate) * up) @ p["w_down"].astype(x.dtype)


def hidden_states(
    params: Params,
    input_ids: jax.Array,
    segment_ids: jax.Array,
    cfg: ModelConfig,
    *,
    dtype=jnp.float32,
    remat: bool = False,
    constrain=None,
) -> jax.Array:
    """Final-norm hidden states [B, S, hidden]. ``constrain`` pins activation sharding (see train.step)."""
    constrain = constrain or (lambda h: h)
    b, s = input_ids.shape
    positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
    mask = attention_mask(segment_ids)
    inv_freq = rope_inv_freq(cfg.dim_per_head, cfg.rope)
    x = constrain(jnp.take(params["embed"], input_ids, axis=0).astype(dtype))

    def layer(h, p):
        h = h + _attention(rms_norm(h, p["attn_norm"], cfg.rms_eps), p, cfg, positions, mask, inv_freq)
        h = h + _mlp(rms_norm(h, p["mlp_norm"], cfg.rms_eps), p)
        return constrain(h), None

    if remat:
        layer = jax.checkpoint(layer, policy=jax.checkpoint_policies.nothing_saveable)
    x, _ = jax.lax.scan(layer, x, params["layers"])
    return rms_norm(x, params["final_norm"], cfg.rms_eps)


def output_matrix(params: Params) -> jax.Array:
    """[hidden, vocab]: the untied head, or the transposed embedding when tied."""
    return params["lm_head"] if "lm_head" in params else params["embed"].T


def logits(params: Params, input_ids: jax.Array, segment_ids: jax.Array, cfg: ModelConfig, **kw) -> jax.Array:
    """Full [B, S, vocab] float32 logits (inspection and tests; training uses the chunked loss instead)."""
    h = hidden_states(params, input_ids, segment_ids, cfg, **kw)
    return jnp.einsum("bsd,dv->bsv", h, output_matrix(params).astype(h.dtype), preferred_element_type=jnp.float32)


def loss_weights(segment_ids: jax.Array) -> jax.Array:
    """[B, S-1] float32: 1 where token t+1 is predicted from its own document, 0 across a boundary or in padding."""
    cur, nxt = segment_ids[:, :-1], segment_ids[:, 1:]
    return ((cur == nxt) & (cur != 0)).astype(jnp.float32)


def loss_chunk_positions(tokens: int, rows: int) -> int:
    """Positions per chunk of :func:`chunked_cross_entropy` so that one chunk holds at most ``tokens`` positions of
    ``rows`` rows (a device's rows; at least one position, so more rows than ``tokens`` still run, one column at a
    time). A chunk's logits are ``tokens x vocab`` float32 and the backward pass holds about three such buffers."""
    return max(1, tokens // max(rows, 1))


def _sequence_chunks(chunk: int, *arrays: jax.Array) -> tuple[int, list[jax.Array]]:
    """``arrays`` ([B, T, ...], same B and T) cut into chunks of ``chunk`` positions along T: [n, B, chunk, ...].

    The tail is zero-padded (callers give it zero weight). Chunks run along the sequence, never the batch, so each
    step of a scan over them keeps the batch sharding.
    """
    t = arrays[0].shape[1]
    chunk = max(1, min(chunk, t))
    pad = (-t) % chunk
    n = (t + pad) // chunk
    out = []
    for x in arrays:
        if pad:
            x = jnp.pad(x, ((0, 0), (0, pad), *[(0, 0)] * (x.ndim - 2)))
        out.append(x.reshape(x.shape[0], n, chunk, *x.shape[2:]).swapaxes(0, 1))
    return chunk, out


def _chunk_nll(hc: jax.Array, w_out: jax.Array, tc: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per position of one chunk: the negative log-likelihood of the target and the log-normalizer (float32)."""
    lg = jnp.einsum("bcd,dv->bcv", hc, w_out.astype(hc.dtype), preferred_element_type=jnp.float32)
    lse = jax.nn.logsumexp(lg, axis=-1)
    return lse - jnp.take_along_axis(lg, tc[..., None], axis=-1)[..., 0], lse


def chunked_cross_entropy(
    h: jax.Array, w_out: jax.Array, targets: jax.Array, weights: jax.Array, chunk: int, z_loss_weight: float = 0.0
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sums of weighted cross-entropy, of weighted z-loss and of weights; ``h`` [B, T, hidden], ``targets`` [B, T].

    The [B, T, vocab] logits never exist at once: positions go through the output projection ``chunk`` at a time
    (``loss_chunk_positions`` sizes it by tokens per device) under ``jax.checkpoint``, so the backward pass
    recomputes one chunk's logits instead of keeping all of them (with a 144,644-token vocabulary the full logits
    would dwarf every other activation).
    """
    _, (h, targets, weights) = _sequence_chunks(chunk, h, targets, weights)

    @jax.checkpoint
    def one(carry, xs):
        hc, tc, wc = xs
        nll, lse = _chunk_nll(hc, w_out, tc)
        ce, z = carry
        return (ce + jnp.sum(nll * wc), z + z_loss_weight * jnp.sum(lse**2 * wc)), None

    zero = jnp.zeros((), jnp.float32)
    (ce, z), _ = jax.lax.scan(one, (zero, zero), (h, targets, weights))
    return ce, z, jnp.sum(weights)


def chunked_nll_by_class(
    h: jax.Array, w_out: jax.Array, targets: jax.Array, weights: jax.Array, classes: jax.Array, n_classes: int,
    chunk: int,
) -> tuple[jax.Array, jax.Array]:
    """Per class ``k < n_classes``: the sum of the weighted NLL of the positions whose ``classes`` is ``k``, and
    the sum of their weights (both float32 [n_classes]). Chunked like :func:`chunked_cross_entropy` (forward only:
    the evaluation's per-token NLL, split by what the target token is)."""
    _, (h, targets, weights, classes) = _sequence_chunks(chunk, h, targets, weights, classes)

    def one(carry, xs):
        hc, tc, wc, kc = xs
        nll, _ = _chunk_nll(hc, w_out, tc)
        member = jax.nn.one_hot(kc, n_classes, dtype=jnp.float32) * wc[..., None]  # [B, chunk, n_classes]
        sums, counts = carry
        return (sums + jnp.einsum("bc,bck->k", nll, member), counts + member.sum(axis=(0, 1))), None

    zero = jnp.zeros((n_classes,), jnp.float32)
    (sums, counts), _ = jax.lax.scan(one, (zero, zero), (h, targets, weights, classes))
    return sums, counts
