"""train/: the decoder, its document-boundary mask, the loss and the checkpoint, each checked against a reference.

Every JAX computation runs in a subprocess (``run_scenario``): XLA's device count is fixed when a process
first uses JAX, so this keeps these tests (8 simulated devices where needed) independent of the rest of the suite.
Scenarios are the ``scenario_*`` functions below; each prints one JSON line that the test then asserts on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def run_scenario(module: str, name: str, *args: str, devices: int = 1, timeout: int = 300) -> dict:
    """Run ``<module>.scenario_<name>(*args)`` in a subprocess with ``devices`` simulated CPU devices."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
    }
    code = f"import json, sys, {module} as m; print(json.dumps(m.scenario_{name}(*sys.argv[1:])))"
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"scenario {name} failed (rc {proc.returncode}):\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------- scenarios (child)


def _small(vocab: int = 512, **kw):
    from dataclasses import replace

    from train.config import MODELS

    return replace(MODELS["tiny"], vocab_size=vocab, **kw)


def scenario_hf_parity() -> dict:
    """Our forward pass vs transformers' Qwen3ForCausalLM with Llama-3 RoPE, same weights (untied, random norms)."""
    import jax
    import jax.numpy as jnp
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from train import model as M

    cfg = _small(vocab=300, tie_embeddings=False)
    params = M.init_params(cfg, jax.random.key(1))
    rng = np.random.default_rng(0)
    # Norm gains of one would hide a misplaced norm: perturb them.
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.2 * rng.standard_normal(x.shape).astype(np.float32)
        if any(getattr(k, "key", None) in M.NORMS for k in p) else x, params)
    hc = Qwen3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.dim_per_head, rope_theta=cfg.rope.theta, rms_norm_eps=cfg.rms_eps, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": cfg.rope.factor, "low_freq_factor": cfg.rope.low_freq_factor,
                      "high_freq_factor": cfg.rope.high_freq_factor,
                      "original_max_position_embeddings": cfg.rope.original_max_position_embeddings},
    )
    hf = Qwen3ForCausalLM(hc).eval()
    p = jax.tree.map(np.asarray, params)
    sd = {"model.embed_tokens.weight": p["embed"], "lm_head.weight": p["lm_head"].T, "model.norm.weight": p["final_norm"]}
    names = {"wq": "self_attn.q_proj", "wk": "self_attn.k_proj", "wv": "self_attn.v_proj", "wo": "self_attn.o_proj",
             "w_gate": "mlp.gate_proj", "w_up": "mlp.up_proj", "w_down": "mlp.down_proj"}
    gains = {"q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm", "attn_norm": "input_layernorm",
             "mlp_norm": "post_attention_layernorm"}
    for i in range(cfg.layers):
        for ours, theirs in names.items():
            sd[f"model.layers.{i}.{theirs}.weight"] = p["layers"][ours][i].T
        for ours, theirs in gains.items():
            sd[f"model.layers.{i}.{theirs}.weight"] = p["layers"][ours][i]
    hf.load_state_dict({k: torch.tensor(np.array(v)) for k, v in sd.items()}, strict=True)
    ids = rng.integers(0, cfg.vocab_size, (2, 96))
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    ours = np.asarray(M.logits(params, jnp.asarray(ids, jnp.int32), jnp.ones(ids.shape, jnp.int32), cfg))
    return {"max_abs_diff": float(np.abs(ref - ours).max()), "max_abs_logit": float(np.abs(ref).max())}


def scenario_document_mask() -> dict:
    """Logits of document B in a window [A | B | padding] before and after replacing every token of A."""
    import jax
    import jax.numpy as jnp

    from train import model as M

    cfg = _small()
    params = M.init_params(cfg, jax.random.key(0))
    rng = np.random.default_rng(0)
    a, b, pad = 20, 24, 4
    ids = rng.integers(0, cfg.vocab_size, (1, a + b + pad)).astype(np.int32)
    changed = ids.copy()
    changed[0, :a] = (ids[0, :a] + 1 + rng.integers(0, cfg.vocab_size - 1, a)) % cfg.vocab_size
    two_docs = np.array([[1] * a + [2] * b + [0] * pad], np.int32)
    one_doc = np.array([[1] * (a + b) + [0] * pad], np.int32)

    def diff(seg):
        x = M.logits(params, jnp.asarray(ids), jnp.asarray(seg), cfg)
        y = M.logits(params, jnp.asarray(changed), jnp.asarray(seg), cfg)
        d = np.abs(np.asarray(x) - np.asarray(y)).max(axis=-1)[0]
        return d[:a].max(), d[a:a + b].max()

    a_two, b_two = diff(two_docs)
    _, b_one = diff(one_doc)
    mask = np.asarray(M.attention_mask(jnp.asarray(two_docs)))[0]
    return {"doc_a_change_two_docs": float(a_two), "doc_b_change_two_docs": float(b_two),
            "doc_b_change_one_doc": float(b_one), "mask": mask.astype(int).tolist(), "a": a, "b": b}


def scenario_loss() -> dict:
    """Chunked cross-entropy (any chunk size) vs a plain full-logits reference, with boundary/padding weights."""
    import jax
    import jax.numpy as jnp

    from train import model as M

    rng = np.random.default_rng(0)
    bsz, t, d, v = 3, 37, 16, 101
    h = jnp.asarray(rng.standard_normal((bsz, t, d)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((d, v)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, v, (bsz, t)), jnp.int32)
    seg = np.ones((bsz, t + 1), np.int32)
    seg[0, 10:] = 2
    seg[1, 30:] = 0
    weights = M.loss_weights(jnp.asarray(seg))
    lg = jnp.einsum("btd,dv->btv", h, w)
    lse = jax.nn.logsumexp(lg, -1)
    tl = jnp.take_along_axis(lg, targets[..., None], -1)[..., 0]
    ref_ce, ref_z = float(jnp.sum((lse - tl) * weights)), float(jnp.sum(1e-4 * lse**2 * weights))
    out = {"ref_ce": ref_ce, "ref_z": ref_z, "weights": np.asarray(weights).tolist(), "chunks": {}, "grads": {}}
    for chunk in (1, 8, 37, 64):
        ce, z, n = M.chunked_cross_entropy(h, w, targets, weights, chunk, 1e-4)
        out["chunks"][chunk] = [float(ce), float(z), float(n)]

    # The gradients the step uses, for chunks sized by tokens per device as train.step sizes them (3 rows here):
    # budgets below one row's worth, not dividing the length, and above the whole batch.
    def full(h, w):
        lg = jnp.einsum("btd,dv->btv", h, w)
        lse = jax.nn.logsumexp(lg, -1)
        tl = jnp.take_along_axis(lg, targets[..., None], -1)[..., 0]
        return jnp.sum((lse - tl) * weights) + jnp.sum(1e-4 * lse**2 * weights)

    ref = jax.grad(full, argnums=(0, 1))(h, w)
    for tokens in (2, 24, 100, 1000):
        chunk = M.loss_chunk_positions(tokens, bsz)
        got = jax.grad(lambda h, w, c=chunk: sum(M.chunked_cross_entropy(h, w, targets, weights, c, 1e-4)[:2]),
                       argnums=(0, 1))(h, w)
        out["grads"][tokens] = {"positions": chunk, "loss": float(full(h, w)),
                                "chunked": float(sum(M.chunked_cross_entropy(h, w, targets, weights, chunk, 1e-4)[:2])),
                                "max_diff": [float(jnp.max(jnp.abs(a - b))) for a, b in zip(got, ref)],
                                "max_abs": [float(jnp.max(jnp.abs(b))) for b in ref]}
    return out


def scenario_rope() -> dict:
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from train.config import RopeConfig
    from train.model import rope_inv_freq

    rope = RopeConfig()
    hc = LlamaConfig(hidden_size=2048, num_attention_heads=16, head_dim=128, rope_theta=rope.theta,
                     rope_scaling={"rope_type": "llama3", "factor": rope.factor, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    ref, _ = ROPE_INIT_FUNCTIONS["llama3"](hc, "cpu")
    ours = rope_inv_freq(128, rope)
    return {"ref": ref.numpy().tolist(), "ours": ours.tolist()}


def scenario_param_sharding() -> dict:
    """Shardings of every parameter of tiny and of 600m (abstract: no memory) on a data=2 x fsdp=4 mesh."""
    import jax

    from train import model as M
    from train.config import MODELS, MeshConfig
    from train.sharding import make_mesh, param_shardings

    mesh = make_mesh(MeshConfig(data=2, fsdp=4))
    out = {}
    for name in ("tiny", "600m"):
        cfg = MODELS[name]
        abstract = jax.eval_shape(lambda k, c=cfg: M.init_params(c, k), jax.random.key(0))
        sh = param_shardings(abstract, mesh)
        flat, _ = jax.tree_util.tree_flatten_with_path(abstract)
        flat_sh = jax.tree_util.tree_leaves(sh)
        out[name] = {
            jax.tree_util.keystr(p, simple=True, separator="/"): {
                "shape": list(x.shape), "spec": [str(s) for s in s_.spec], "shard": list(s_.shard_shape(x.shape)),
                "devices": len(s_.device_set)}
            for (p, x), s_ in zip(flat, flat_sh)
        }
    out["n_params"] = {k: v.n_params() for k, v in MODELS.items()}
    out["counted_600m"] = int(sum(np.prod(v["shape"]) for v in out["600m"].values()))
    return out


def scenario_units() -> dict:
    """The single-device scenarios in one process (one JAX start instead of four)."""
    return {"hf_parity": scenario_hf_parity(), "rope": scenario_rope(), "document_mask": scenario_document_mask(),
            "loss": scenario_loss()}


# ------------------------------------------------------------------------------------------------- tests (parent)


@pytest.fixture(scope="module")
def units() -> dict:
    return run_scenario("test_train_model", "units")


def test_decoder_matches_transformers_qwen3(units):
    r = units["hf_parity"]
    assert r["max_abs_logit"] > 0.1  # a real comparison, not of two zero tensors
    assert r["max_abs_diff"] < 1e-4, r


def test_rope_frequencies_match_llama3_scaling(units):
    r = units["rope"]
    np.testing.assert_allclose(r["ours"], r["ref"], rtol=1e-6)
    # Llama-3 scaling really changed the low frequencies (else this would test plain RoPE only).
    plain = 1.0 / (500_000.0 ** (np.arange(0, 128, 2) / 128))
    assert not np.allclose(r["ours"], plain)


def test_document_boundary_mask(units):
    r = units["document_mask"]
    a, b = r["a"], r["b"]
    # Changing document A changes A's own outputs...
    assert r["doc_a_change_two_docs"] > 1e-3
    # ...but not one logit of document B, which follows it in the same window:
    assert r["doc_b_change_two_docs"] == 0.0
    # Control: if A and B were one document, B would see A (so the check above can fail).
    assert r["doc_b_change_one_doc"] > 1e-3
    mask = np.array(r["mask"], bool)
    assert not mask[a:a + b, :a].any()  # B's queries never see A's keys
    assert mask[a:a + b, a:a + b].sum() == b * (b + 1) // 2  # causal inside B
    assert not mask[: a + b, a + b:].any()  # no real token sees padding
    assert not np.triu(mask, 1).any()  # nothing sees the future


def test_chunked_loss_matches_full_softmax(units):
    r = units["loss"]
    w = np.array(r["weights"])
    assert w.shape == (3, 37)
    assert w[0, 9] == 0 and w[0, 8] == 1 and w[0, 10] == 1  # 9 -> 10 crosses the boundary of documents 1 and 2
    assert w[1, 29] == 0 and w[1, 28] == 1 and w[1, 30:].sum() == 0  # into padding and within padding
    for chunk, (ce, z, n) in r["chunks"].items():
        assert n == w.sum(), chunk
        assert ce == pytest.approx(r["ref_ce"], rel=1e-5), chunk
        assert z == pytest.approx(r["ref_z"], rel=1e-5), chunk
    # Chunks sized by tokens per device (3 rows): the loss and both gradients equal the unchunked ones.
    assert {int(k): g["positions"] for k, g in r["grads"].items()} == {2: 1, 24: 8, 100: 33, 1000: 333}
    for tokens, g in r["grads"].items():
        assert g["chunked"] == pytest.approx(g["loss"], rel=1e-5), tokens
        for diff, scale in zip(g["max_diff"], g["max_abs"]):
            assert scale > 1e-3 and diff < 1e-5 * scale, (tokens, diff, scale)


def test_parameters_are_sharded_over_fsdp_axis():
    r = run_scenario("test_train_model", "param_sharding", devices=8)
    for name in ("tiny", "600m"):
        params = r[name]
        for key, p in params.items():
            assert p["devices"] == 8, key
            if key.startswith("layers/"):
                assert p["spec"][0] == "None", key  # the scanned layer axis stays whole
        big = {k: p for k, p in params.items() if np.prod(p["shape"]) >= 4096}
        # Every matrix is split 4 ways over "fsdp": each device holds a quarter.
        for key, p in big.items():
            assert np.prod(p["shard"]) * 4 == np.prod(p["shape"]), key
    # 600m: untied (SODA), head_dim 128, 144,644 vocab
    assert "lm_head" in r["600m"] and "lm_head" not in r["tiny"]
    assert r["600m"]["layers/wq"]["shape"] == [28, 1024, 16 * 128]
    assert r["counted_600m"] == r["n_params"]["600m"]
    assert r["600m"]["embed"]["shape"] == [144_644, 1024]
