"""Validation NLL (train/evaluation.py): ``python -m train --eval`` on 8 simulated CPU devices, checked against a
direct computation (full logits, float64 log-softmax) on windows rebuilt here from the Parquet files with the
plain tokenizer, and against a second evaluation of the checkpointed parameters in another process."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from synthetic import ComponentSpec, make_output_dir
from test_train import COMPONENTS, RECIPE, SEQ_LEN, _env, train_cli
from test_train_model import REPO, run_scenario

EVAL_COMPONENTS = (
    ComponentSpec("emilia/en", shards=2, docs_per_shard=2, utterances=(1, 2), seconds=(0.3, 0.7)),
    ComponentSpec("nemotron-cc/hq-actual", shards=1, docs_per_shard=3, text_only=True),
)
MAX_TOKENS = 1100  # of 1,170: cuts a text row of the second component (the bound is exercised)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    import yaml
    from synthetic import WORDS

    from sodadata.mix.tokenizer import build_tokenizer, save_tokenizer, train_small_base

    root = tmp_path_factory.mktemp("train-eval")
    make_output_dir(root / "data", COMPONENTS, seed=3)
    make_output_dir(root / "eval", EVAL_COMPONENTS, seed=11)
    corpus = [" ".join(WORDS[i:] + WORDS[:i]).capitalize() + "." for i in range(len(WORDS))] * 4
    save_tokenizer(build_tokenizer(train_small_base(corpus, vocab_size=400)), root / "tok")
    lanes = yaml.safe_load(RECIPE.read_text())["lanes"]
    return {"root": root, "data": root / "data", "eval": root / "eval", "tok": root / "tok",
            "cache": root / "jax-cache", "batch": math.lcm(lanes, 8)}


# --------------------------------------------------------------------------------------------- scenario (child)


def _direct(eval_dir: str, tok_dir: str, params: dict, max_tokens: int, seq_len: int) -> dict:
    """NLL sums and counts per (format, class) from the Parquet files, the plain tokenizer and full logits."""
    import jax
    import jax.numpy as jnp
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    from train import model as M
    from train.config import MODELS

    tok = Tokenizer.from_file(str(Path(tok_dir) / "tokenizer.json"))
    audio_base = tok.token_to_id("\ue000")
    markers = {tok.token_to_id(t) for t in ("<|begin_of_text|>", "<|end_of_text|>", "<|text_start|>",
                                            "<|text_end|>", "<|audio_start|>", "<|audio_end|>")}
    ids, rows, fmts = [], [], []
    for path in sorted(Path(eval_dir).glob("*/*/*.parquet")):  # components in name order, shards by name
        table = pq.read_table(path, columns=["text", "format"])
        for text, fmt in zip(table.column("text").to_pylist(), table.column("format").to_pylist()):
            row = tok.encode(text, add_special_tokens=False).ids
            ids += row
            rows += [len(fmts)] * len(row)
            fmts.append(fmt)
    ids, rows = np.array(ids[:max_tokens]), np.array(rows[:max_tokens])
    windows = -(-len(ids) // seq_len)
    pad = windows * seq_len - len(ids)
    ids = np.concatenate([ids, np.zeros(pad, int)]).reshape(windows, seq_len)
    rows = np.concatenate([rows, np.full(pad, -1)]).reshape(windows, seq_len)
    seg = np.where(rows >= 0, rows - rows[:, :1] + 1, 0)
    cfg = MODELS["tiny"]
    logits_fn = jax.jit(lambda p, i, s: M.logits(p, i, s, cfg))
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for w in range(windows):
        logits = np.asarray(logits_fn(params, jnp.asarray(ids[w:w + 1], jnp.int32),
                                      jnp.asarray(seg[w:w + 1], jnp.int32)), np.float64)[0]
        top = logits.max(-1, keepdims=True)
        logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
        for t in range(seq_len - 1):
            if rows[w, t] < 0 or rows[w, t] != rows[w, t + 1]:
                continue  # padding, or the next token starts another row
            target = int(ids[w, t + 1])
            cls = ("audio" if audio_base <= target < audio_base + 16384 else "markers" if target in markers
                   else "text")
            fmt = {"text": "text_only"}.get(fmts[rows[w, t]], fmts[rows[w, t]])
            for key in ("", f"_{cls}", f"_{fmt}", f"_{fmt}_{cls}"):
                sums[key] = sums.get(key, 0.0) - float(logp[t, target])
                counts[key] = counts.get(key, 0) + 1
    return {"nll": {f"eval_nll{k}": sums[k] / counts[k] for k in sums}, "counts": counts, "windows": windows}


def scenario_eval_check(data: str, tok: str, eval_dir: str, ckpt: str, batch: str) -> dict:
    """Restore the checkpoint on the 8-device mesh, evaluate it twice, and compute the same numbers directly."""
    import jax

    from sodadata.mix.tokenizer import RowEncoder, load_tokenizer
    from train import checkpoint
    from train.config import MODELS, TrainConfig
    from train.data import fill_defaults
    from train.evaluation import Evaluator
    from train.schedule import Schedule
    from train.sharding import make_mesh
    from train.step import build

    cfg = fill_defaults(TrainConfig(recipe=str(RECIPE), model=MODELS["tiny"], steps=3, data=data, tokenizer=tok,
                                    batch_size=int(batch), seq_len=SEQ_LEN, eval_path=eval_dir,
                                    eval_max_tokens=MAX_TOKENS))
    mesh = make_mesh(cfg.mesh)
    setup = build(cfg.model, cfg, mesh, n_components=4, schedule=Schedule.fresh(cfg.optimizer, cfg.steps))
    state, _, _ = checkpoint.restore(ckpt, setup.abstract_state)
    evaluator = Evaluator(cfg, cfg.model, mesh, setup.state_shardings["params"],
                          RowEncoder(load_tokenizer(tok)), SEQ_LEN)
    runs = [evaluator.run(state["params"]) for _ in range(2)]
    params = jax.tree.map(np.asarray, jax.device_get(state["params"]))
    return {"runs": runs, "direct": _direct(eval_dir, tok, params, MAX_TOKENS, SEQ_LEN),
            "param_spec": str(state["params"]["embed"].sharding.spec)}


# --------------------------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_eval_nll_matches_a_direct_computation_and_repeats_exactly(work):
    """3 steps with --eval every 2 steps on 8 devices; then, in another process, the step-3 checkpoint evaluated
    twice on the same mesh (identical, and identical to the run's own record) and every number recomputed."""
    ckpt, metrics = work["root"] / "ckpt", work["root"] / "m.jsonl"
    proc = train_cli(work, "--steps", "3", "--lr", "1e-2", "--warmup", "1", "--eval", str(work["eval"]),
                     "--eval-every", "2", "--eval-max-tokens", str(MAX_TOKENS), "--ckpt", str(ckpt),
                     "--metrics", str(metrics))
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    evals = [r for r in lines if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [2, 3]  # every 2 steps, and at the end
    setup = lines[0]
    assert setup["eval"]["components"] == ["emilia/en", "nemotron-cc/hq-actual"]
    assert setup["eval"]["tokens"] == MAX_TOKENS and setup["eval"]["windows"] == -(-MAX_TOKENS // SEQ_LEN)
    assert evals[0]["eval_nll"] != evals[1]["eval_nll"]  # the parameters moved between them
    assert "eval step 3: nll" in proc.stderr

    r = run_scenario("test_train_eval", "eval_check", str(work["data"]), str(work["tok"]), str(work["eval"]),
                     str(ckpt / "step_00000003"), str(work["batch"]), devices=8, timeout=600)
    assert "fsdp" in r["param_spec"]  # evaluated with the parameters sharded as the train state holds them
    first, second = r["runs"]
    assert first == second  # the same windows, the same numbers, bit for bit
    # ... and the training process's own evaluation of these parameters is the same too.
    assert {k: v for k, v in evals[1].items() if k not in ("event", "step")} == first

    direct = r["direct"]
    assert first["eval_windows"] == direct["windows"]
    counts = {("all" if k == "" else k[1:]): v for k, v in direct["counts"].items()}
    assert first["eval_tokens"] == counts
    for fmt in ("text_first", "audio_first", "text_only"):  # every format of the eval set is in the window budget
        assert counts[fmt] > 0 and counts[f"{fmt}_markers"] > 0
    assert counts["audio"] > counts["text"] > 0 and "audio_only" not in counts
    assert set(first) - {"eval_tokens", "eval_windows", "eval_windows_sha1"} == set(direct["nll"])
    for key, value in direct["nll"].items():
        assert first[key] == pytest.approx(value, rel=2e-5), key
    # A tiny model after 3 steps is still near uniform over the 144,644 ids, but not at it.
    assert 8.0 < first["eval_nll"] < math.log(144_644) + 0.5


def test_eval_rows_are_the_same_from_the_root_a_component_and_a_glob(work):
    """The same rows in the same order whichever way the eval set is named (root, component, glob, published
    copy); a folder of two roots is refused, a folder without shards too."""
    from sodadata.mix.tokenizer import RowEncoder, load_tokenizer
    from sodadata.write.published import shard_path
    from train.evaluation import load_eval_set

    enc = RowEncoder(load_tokenizer(work["tok"]))
    root = load_eval_set(str(work["eval"]), enc, SEQ_LEN, 10**9)
    comp = load_eval_set(str(work["eval"] / "emilia" / "en"), enc, SEQ_LEN, 10**9)
    glob = load_eval_set(str(work["eval"] / "emilia" / "en" / "*.parquet"), enc, SEQ_LEN, 10**9)
    assert root.components == ["emilia/en", "nemotron-cc/hq-actual"]
    assert comp.sha1 == glob.sha1 and comp.rows == 8 and root.rows == 8 + 3
    n = comp.tokens
    assert np.array_equal(root.input_ids.ravel()[:n], comp.input_ids.ravel()[:n])
    assert np.array_equal(root.category.ravel()[:n], comp.category.ravel()[:n])
    assert (root.segment_ids.ravel()[root.tokens:] == 0).all() and (root.segment_ids.ravel()[:root.tokens] > 0).all()
    again = load_eval_set(str(work["eval"]), enc, SEQ_LEN, 10**9)
    assert again.sha1 == root.sha1
    # A published copy (push's layout, sodadata/write/published.py), flat and in hashed buckets: the same windows.
    for bucketed in (False, True):
        copy = work["root"] / f"published-{int(bucketed)}"
        for parquet in work["eval"].glob("*/*/*.parquet"):
            component = parquet.parent.relative_to(work["eval"]).as_posix()
            target = copy / shard_path(component, parquet.stem, bucketed)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(parquet, target)
        published = load_eval_set(str(copy), enc, SEQ_LEN, 10**9)
        assert published.components == root.components and published.sha1 == root.sha1
    # Two output roots below one folder: which one is meant is not guessed.
    make_output_dir(work["root"] / "two" / "a", EVAL_COMPONENTS[:1], seed=1)
    make_output_dir(work["root"] / "two" / "b", EVAL_COMPONENTS[:1], seed=2)
    with pytest.raises(ValueError, match="holds 2 output roots"):
        load_eval_set(str(work["root"] / "two"), enc, SEQ_LEN, 100)
    with pytest.raises(FileNotFoundError, match="no finished shards"):
        load_eval_set(str(work["root"] / "nothing-here"), enc, SEQ_LEN, 100)


def test_row_formats_and_token_classes():
    from train.evaluation import metrics_from_sums, row_format

    assert row_format("audio_first", "x_type1") == "audio_first"  # the column wins over the id
    assert [row_format(None, i) for i in ("d_type1", "d_type2", "d_type3", "<urn:uuid:1>")] == [
        "text_first", "audio_first", "audio_only", "text"]
    with pytest.raises(ValueError, match="has format 'tts'"):
        row_format("tts", "d")
    # 4 formats x 3 classes (text, audio, markers): text_first has text 2 tokens (sum 4) and audio 2 (sum 10).
    sums, counts = np.zeros(12), np.zeros(12)
    sums[[0, 1]], counts[[0, 1]] = [4.0, 10.0], [2, 2]
    m = metrics_from_sums(sums, counts)
    assert m["eval_nll"] == 3.5 and m["eval_nll_text"] == 2.0 and m["eval_nll_audio"] == 5.0
    assert m["eval_nll_text_first"] == 3.5 and m["eval_nll_text_first_audio"] == 5.0
    assert "eval_nll_markers" not in m and "eval_nll_audio_first" not in m
    assert m["eval_tokens"] == {"all": 4, "text": 2, "audio": 2, "text_first": 4, "text_first_text": 2,
                                "text_first_audio": 2}


def test_eval_options_need_eval(work):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "train", "--recipe", str(RECIPE), "--steps", "1", "--eval-every",
                           "2"], cwd=REPO, env=_env(work, 1), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--eval-every and --eval-max-tokens need --eval" in proc.stderr
