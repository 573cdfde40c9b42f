"""train/ end to end: ``python -m train`` on 8 simulated CPU devices, fed by the real MixtureStream.

The shards come from tests/synthetic.py (four SODA-like components), the tokenizer is the extended one built on a
small BPE base (vocabulary 144,644, SPEC ids), the recipe is recipes/soda.yaml itself with ``--data`` pointing
at the shards. Every run is a subprocess (the device count is fixed when JAX starts); they share a persistent
compilation cache so each program compiles once per session. The resume tests share their runs (``uninterrupted``,
``stopped_at_2``): each is made once per module and copied where a test goes on from it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from synthetic import SODA_LIKE, WORDS, make_output_dir
from test_train_model import REPO, run_scenario

RECIPE = REPO / "recipes" / "soda.yaml"
SEQ_LEN = 32
DEVICES = 8
# SODA_LIKE with enough shards and rows that each of the recipe's lanes (16) gets rows of every component.
COMPONENTS = tuple(replace(c, shards=4, docs_per_shard=max(c.docs_per_shard, 8)) for c in SODA_LIKE)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    from sodadata.mix.tokenizer import build_tokenizer, save_tokenizer, train_small_base

    root = tmp_path_factory.mktemp("train")
    make_output_dir(root / "data", COMPONENTS, seed=3)
    corpus = [" ".join(WORDS[i:] + WORDS[:i]).capitalize() + "." for i in range(len(WORDS))] * 4
    save_tokenizer(build_tokenizer(train_small_base(corpus, vocab_size=400)), root / "tok")
    lanes = yaml.safe_load(RECIPE.read_text())["lanes"]
    return {"root": root, "data": root / "data", "tok": root / "tok", "cache": root / "jax-cache",
            "batch": math.lcm(lanes, DEVICES)}


def _env(work: dict, devices: int) -> dict:
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(REPO),
        "JAX_COMPILATION_CACHE_DIR": str(work["cache"]),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    }


def _cmd(work: dict, *args: str) -> list[str]:
    return [sys.executable, "-m", "train", "--recipe", str(RECIPE), "--data", str(work["data"]),
            "--tokenizer", str(work["tok"]), "--model", "tiny", "--seq-len", str(SEQ_LEN),
            "--batch-size", str(work["batch"]), *args]


def train_cli(work: dict, *args: str, devices: int = DEVICES, check: bool = True) -> subprocess.CompletedProcess:
    cmd = _cmd(work, *args)
    proc = subprocess.run(cmd, cwd=REPO, env=_env(work, devices), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed (rc {proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc


# The resume tests' schedule: 4 steps (the compiled step bakes the schedule in, so they share one program too).
RESUMABLE = ("--steps", "4", "--lr", "3e-3", "--warmup", "1", "--mesh-data", "2")


@pytest.fixture(scope="module")
def uninterrupted(work) -> dict:
    """RESUMABLE in one go, with a checkpoint at the end: what an interrupted run must equal."""
    ckpt, metrics = work["root"] / "ckpt-uninterrupted", work["root"] / "uninterrupted.jsonl"
    train_cli(work, *RESUMABLE, "--ckpt", str(ckpt), "--metrics", str(metrics))
    return {"ckpt": ckpt, "metrics": metrics}


@pytest.fixture(scope="module")
def stopped_at_2(work) -> dict:
    """RESUMABLE stopped after step 2 (``--stop-after 2``): its checkpoint and metrics, for a test to copy."""
    ckpt, metrics = work["root"] / "ckpt-stopped", work["root"] / "stopped.jsonl"
    train_cli(work, *RESUMABLE, "--ckpt", str(ckpt), "--metrics", str(metrics), "--stop-after", "2")
    assert (ckpt / "step_00000002" / "meta.json").is_file() and not (ckpt / "step_00000004").exists()
    return {"ckpt": ckpt, "metrics": metrics}


def copy_run(run: dict, ckpt: Path, metrics: Path) -> None:
    """A test's own copy of a shared run (its checkpoint folder and metrics file), to go on from."""
    shutil.copytree(run["ckpt"], ckpt)
    shutil.copyfile(run["metrics"], metrics)


def records(path: Path) -> tuple[dict, list[dict], dict]:
    """(setup record of the first invocation, step records in order, end record of the last invocation)."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    setups = [r for r in lines if r.get("event") == "setup"]
    ends = [r for r in lines if r.get("event") == "end"]
    return setups[0], [r for r in lines if "event" not in r], ends[-1]


def test_loss_falls_on_a_repeated_batch_sharded_over_8_devices(work):
    metrics = work["root"] / "overfit.jsonl"
    train_cli(work, "--steps", "8", "--repeat-batch", "--lr", "1e-2", "--warmup", "1", "--mesh-data", "2",
              "--metrics", str(metrics))
    setup, steps, _ = records(metrics)
    losses = [r["loss"] for r in steps]
    assert [r["step"] for r in steps] == list(range(1, 9))
    assert all(math.isfinite(x) for x in losses)
    # Starts near ln(144,644) = 11.88 (uniform over the full vocabulary) and falls well below it.
    assert losses[0] == pytest.approx(math.log(144_644), abs=0.3)
    assert losses[-1] < losses[0] - 2.0, losses
    assert len({r["batch_sha1"] for r in steps}) == 1  # really the same batch every step
    # The mesh and the batch: a global array spread over all 8 devices, one row-block per device.
    assert setup["devices"] == DEVICES and setup["mesh"] == {"data": 2, "fsdp": 4}
    for key in ("input_ids", "segment_ids"):
        b = setup["batch"][key]
        assert b["shape"] == [work["batch"], SEQ_LEN]
        assert b["devices"] == DEVICES
        assert b["shard_shape"] == [work["batch"] // DEVICES, SEQ_LEN]
        assert b["spec"] == [["data", "fsdp"], None]
    assert setup["batch"]["component"]["shard_shape"] == [work["batch"] // DEVICES]
    # Parameters are split over the 4-way fsdp axis (replicated over data): each device holds a quarter.
    embed = setup["params_sharding"]["embed"]
    assert embed["shape"] == [144_644, 64] and embed["devices"] == DEVICES
    assert np.prod(embed["shard_shape"]) * 4 == np.prod(embed["shape"])
    assert setup["params_sharding"]["layers/w_up"]["shard_shape"] == [2, 64, 192 // 4]


def test_resume_sees_the_same_batches_and_losses(work, uninterrupted, stopped_at_2):
    """An interrupted run (2 steps, checkpoint, new process, 2 more) equals an uninterrupted one, bit for bit."""
    a_metrics, a_ckpt = uninterrupted["metrics"], uninterrupted["ckpt"]
    b_metrics, b_ckpt = work["root"] / "b.jsonl", work["root"] / "ckpt-b"
    copy_run(stopped_at_2, b_ckpt, b_metrics)
    assert (b_ckpt / "step_00000002" / "meta.json").is_file() and not (b_ckpt / "step_00000004").exists()
    train_cli(work, *RESUMABLE, "--ckpt", str(b_ckpt), "--metrics", str(b_metrics))

    _, a, a_end = records(a_metrics)
    _, b, b_end = records(b_metrics)
    assert [r["step"] for r in b] == [1, 2, 3, 4]  # 1-2 from the first invocation, 3-4 after resuming
    # The stream moves on (else "same batches" would be trivial) ...
    assert len({r["batch_sha1"] for r in a}) == 4
    # ... and the resumed run gets exactly the batches, losses and counts the uninterrupted one got.
    for ra, rb in zip(a, b):
        assert ra["batch_sha1"] == rb["batch_sha1"], ra["step"]
        assert ra["loss"] == rb["loss"], ra["step"]
        assert ra["grad_norm"] == rb["grad_norm"], ra["step"]
        assert ra["component_tokens"] == rb["component_tokens"], ra["step"]
    assert all(math.isfinite(r["loss"]) for r in a)
    # Final parameters and optimizer state are identical too.
    meta = json.loads((a_ckpt / "step_00000004" / "meta.json").read_text())
    assert meta["component_tokens"] == a_end["component_tokens"]
    names = [leaf["name"] for leaf in meta["leaves"]]
    assert any("opt_state" in n and "mu" in n for n in names) and any("params" in n for n in names)
    for leaf in meta["leaves"]:
        x = np.load(a_ckpt / "step_00000004" / leaf["file"])
        y = np.load(b_ckpt / "step_00000004" / leaf["file"])
        np.testing.assert_array_equal(x, y, err_msg=leaf["name"])
    # Per-component tokens: what the steps consumed (counted in the step on the global batch) equals what the
    # stream handed out, and is the sum of the per-batch counts; every component of the recipe shows up.
    assert a_end["component_tokens"] == a_end["stream_component_tokens"] == b_end["stream_component_tokens"]
    total = {k: sum(r["batch_component_tokens"][k] for r in a) for k in a_end["component_tokens"]}
    assert total == a_end["component_tokens"]
    assert sum(total.values()) == 4 * work["batch"] * SEQ_LEN
    assert total["yodas2/en"] > total["nemotron-cc/hq-actual"]


def test_changed_steps_on_resume_need_extend_and_the_extension_is_recorded(work, stopped_at_2):
    """--steps 4 stopped at step 2, resumed with --steps 6: refused (one line, exit 2, before any step) until
    --extend says how the schedule goes on; the extended schedule is in the checkpoint and the metrics, the LR of
    every step is the recorded schedule's, and rerunning the same command does not extend twice."""
    from train.config import OptimizerConfig
    from train.schedule import Schedule

    ckpt, metrics = work["root"] / "ckpt-extend", work["root"] / "extend.jsonl"
    common = ("--lr", "3e-3", "--warmup", "1", "--mesh-data", "2", "--ckpt", str(ckpt), "--metrics", str(metrics))
    assert RESUMABLE[:2] == ("--steps", "4") and RESUMABLE[2:] == common[:6]  # stopped at 2 of these 4 steps
    copy_run(stopped_at_2, ckpt, metrics)
    before = metrics.read_text()
    refused = train_cli(work, "--steps", "6", *common, check=False)
    assert refused.returncode == 2, refused.stderr[-3000:]
    errors = [line for line in refused.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "4-step schedule" in errors[0] and "--extend constant|rewarm|stretch" in errors[0]
    assert "Traceback" not in refused.stderr and metrics.read_text() == before

    train_cli(work, "--steps", "6", "--extend", "stretch", *common)
    meta = json.loads((ckpt / "step_00000006" / "meta.json").read_text())
    schedule = Schedule.from_dict(meta["schedule"])
    assert schedule.steps == 6 and list(schedule.extensions) == [
        {"at": 2, "mode": "stretch", "from_steps": 4, "to_steps": 6}]
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    setups = [r for r in lines if r.get("event") == "setup"]
    assert [r["extended"] for r in setups] == [False, True] and setups[1]["schedule"] == meta["schedule"]
    steps = [r for r in lines if "event" not in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    # A step's record holds the LR of its update (index step - 1): the 2 steps left of 4 became 4.
    for r in steps:
        assert r["lr"] == pytest.approx(schedule.at(r["step"] - 1), rel=1e-5), r["step"]
    old = Schedule.fresh(OptimizerConfig(learning_rate=3e-3, warmup_steps=1), 4)
    assert schedule.at(4) == pytest.approx(old.at(3), rel=1e-9) and schedule.at(3) < old.at(2)

    again = train_cli(work, "--steps", "6", "--extend", "stretch", *common)
    assert "instead of the checkpoint's" not in again.stderr
    meta = json.loads((ckpt / "step_00000006" / "meta.json").read_text())
    assert len(meta["schedule"]["extensions"]) == 1
    assert [r["step"] for r in map(json.loads, metrics.read_text().splitlines()) if "event" not in r] == list(
        range(1, 7))


def test_cpu_defaults_fill_what_the_command_line_leaves_out():
    from train.config import MODELS, TrainConfig
    from train.data import fill_defaults

    base = TrainConfig(recipe=str(RECIPE), model=MODELS["tiny"], steps=1)
    filled = fill_defaults(base)  # this process sees one CPU device
    assert (filled.batch_size, filled.seq_len, filled.loss_chunk_tokens, filled.remat) == (16, 512, 256, True)
    given = replace(base, batch_size=32, seq_len=1024, loss_chunk_tokens=64, remat=False)
    assert fill_defaults(given) == given


@pytest.mark.slow
def test_the_cpu_defaults_train_in_under_2_gb(work, tmp_path):
    """SODA's mixture at the CPU defaults (its 16 lanes: 16 windows of 512 tokens, the full 144,644-token output
    layer; the README's sample step is one such window) on one CPU device: the process's peak resident memory, as
    the kernel counts it, stays under 2 GB (it was 8.5 GB at 16 x 1024 and over 24 GB at the old defaults).
    bench/train.py --only memory reports the figures."""
    from bench.train import peak_rss

    env = {k: v for k, v in _env(work, 1).items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, "-m", "train", "--recipe", str(RECIPE), "--data", str(work["data"]), "--tokenizer",
           str(work["tok"]), "--model", "tiny", "--steps", "1", "--metrics", str(tmp_path / "m.jsonl")]
    gb, _, rc = peak_rss(cmd, env, tmp_path / "train.log")
    assert rc == 0, (tmp_path / "train.log").read_text()[-3000:]
    setup = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert (setup["batch_size"], setup["seq_len"]) == (16, 512)
    assert 0.3 < gb < 2.0, gb


def scenario_mask_on_stream(data: str, tok: str) -> dict:
    """Real stream windows: perturb the first document piece of a window, see what changes in the rest."""
    import jax
    import jax.numpy as jnp

    from sodadata.mix.mixture import MixtureConfig
    from sodadata.mix.packing import MixtureStream
    from train import model as M
    from train.config import MODELS

    mixture = MixtureConfig.load(RECIPE, root=data)
    mixture.tokenizer, mixture.seq_len = tok, 256
    batch = next(MixtureStream(mixture).batches(mixture.lanes))
    seg = batch["segment_ids"]
    # A window holding the end of one document and a following document of at least 8 tokens.
    rows = [i for i in range(len(seg)) if seg[i].max() >= 2 and (seg[i] == 2).sum() >= 8]
    i = rows[0]
    ids, seg = batch["input_ids"][i:i + 1], seg[i:i + 1]
    first = seg[0] == 1
    changed = ids.copy()
    changed[0, first] = (ids[0, first] + 7919) % 144_644
    cfg = MODELS["tiny"]
    params = M.init_params(cfg, jax.random.key(0))

    def delta(segments):
        x = M.logits(params, jnp.asarray(ids), jnp.asarray(segments), cfg)
        y = M.logits(params, jnp.asarray(changed), jnp.asarray(segments), cfg)
        return np.abs(np.asarray(x) - np.asarray(y)).max(-1)[0]

    d = delta(seg)
    d_merged = delta(np.ones_like(seg))  # as if the window were one document
    return {"first_doc_tokens": int(first.sum()), "segments": int(seg.max()),
            "first_doc_change": float(d[first].max()), "later_docs_change": float(d[~first].max()),
            "later_docs_change_if_merged": float(d_merged[~first].max())}


def test_document_boundary_mask_on_stream_windows(work):
    r = run_scenario("test_train", "mask_on_stream", str(work["data"]), str(work["tok"]))
    assert r["segments"] >= 2 and r["first_doc_tokens"] >= 1
    assert r["first_doc_change"] > 1e-4
    assert r["later_docs_change"] == 0.0  # no token of a later document attends to the earlier one
    assert r["later_docs_change_if_merged"] > 1e-4  # the control: without the segment mask it would


def test_cli_reports_a_batch_that_does_not_fit_the_mesh(work):
    proc = train_cli(work, "--steps", "1", "--batch-size", str(work["batch"] + DEVICES // 2), check=False)
    assert proc.returncode == 1
    assert "must be a multiple of the device count" in proc.stderr


def train_two_hosts(work: dict, *args: str) -> None:
    """Two processes of 4 CPU devices each, joined by jax.distributed (gloo collectives): a 2-host 8-device mesh."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen(_cmd(work, *args, "--distributed", "--coordinator", f"localhost:{port}",
                              "--num-processes", "2", "--process-id", str(i)),
                         cwd=REPO, env=_env(work, DEVICES // 2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for i, (p, (_, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"host {i} failed (rc {p.returncode}):\n{err[-6000:]}"


@pytest.mark.slow
def test_two_hosts_train_like_one(work, uninterrupted):
    """Each host feeds only its half of every batch (make_array_from_process_local_data); the global batches,
    losses and token counts equal a one-host run's (``uninterrupted``, the same command), and the 2-host
    checkpoint (gathered arrays, one stream state per host) resumes on 2 hosts."""
    two, ckpt = work["root"] / "two.jsonl", work["root"] / "ckpt-two"
    train_two_hosts(work, *RESUMABLE, "--metrics", str(two), "--ckpt", str(ckpt), "--stop-after", "2")
    assert sorted(p.name for p in (ckpt / "step_00000002").glob("stream_*.json")) == [
        "stream_p00000.json", "stream_p00001.json"]
    train_two_hosts(work, *RESUMABLE, "--metrics", str(two), "--ckpt", str(ckpt))
    _, a, a_end = records(uninterrupted["metrics"])
    setup2, b, b_end = records(two)
    assert setup2["processes"] == 2 and setup2["devices"] == DEVICES
    assert setup2["batch"]["input_ids"]["shape"] == [work["batch"], SEQ_LEN]
    assert setup2["batch"]["input_ids"]["devices"] == DEVICES
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        # Same global batch: same tokens per component; same model: the same loss (collectives may reorder sums).
        assert ra["batch_component_tokens"] == rb["batch_component_tokens"], ra["step"]
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5, abs=1e-5), ra["step"]
    assert a_end["component_tokens"] == b_end["component_tokens"]
    # Host 0's stream handed out only its half of the rows.
    assert sum(b_end["stream_component_tokens"].values()) * 2 == sum(b_end["component_tokens"].values())
