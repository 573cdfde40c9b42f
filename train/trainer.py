"""The training loop: mixture stream -> global batches -> jitted steps; logging, checkpoints, exact resume."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jax
import numpy as np

from train import checkpoint
from train.config import TrainConfig
from train.data import fill_defaults, open_stream
from train.evaluation import Evaluator
from train.schedule import recorded_schedule, resolve
from train.sharding import check_batch_size, describe, global_batch, make_mesh
from train.step import BATCH_KEYS, build

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished invocation did (the CLI logs it; tests and the bench read it)."""

    start_step: int
    end_step: int
    losses: list[float] = field(default_factory=list)
    tokens_per_second: float | None = None  # all positions of the windows, steps after the first (compile) one
    component_tokens: dict[str, int] = field(default_factory=dict)  # non-padding tokens consumed, whole run
    evals: list[dict] = field(default_factory=list)  # each evaluation's metrics (train/evaluation.py) and step
    checkpoint: str | None = None


def fingerprint(batch: dict[str, np.ndarray]) -> str:
    """A short digest of this host's batch: equal digests mean the model saw the same tokens and documents."""
    h = hashlib.sha1()
    for k in ("input_ids", "segment_ids", "component"):
        h.update(np.ascontiguousarray(batch[k]).tobytes())
    return h.hexdigest()[:16]


class _Metrics:
    """Writes JSON lines (process 0 only) and keeps the log readable."""

    def __init__(self, path: str | None):
        self._f = None
        if path and jax.process_index() == 0:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._f = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        if self._f:
            self._f.write(json.dumps(record) + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f:
            self._f.close()


def train(cfg: TrainConfig) -> RunResult:
    cfg = fill_defaults(cfg)
    mesh = make_mesh(cfg.mesh)
    check_batch_size(cfg.batch_size, mesh)
    # The schedule is settled before any data is read or anything compiled: a refused resume costs nothing.
    resume = checkpoint.latest(cfg.ckpt_dir) if cfg.ckpt_dir else None
    meta = checkpoint.load_meta(resume) if resume is not None else None
    schedule, extended = resolve(cfg.optimizer, cfg.steps, cfg.extend, None if meta is None else int(meta["step"]),
                                 None if meta is None else recorded_schedule(meta),
                                 where=str(resume) if resume else f"--ckpt {cfg.ckpt_dir}")
    if extended:
        log.info("--steps %d instead of the checkpoint's %d, --extend %s: LR schedule %s", cfg.steps,
                 schedule.extensions[-1]["from_steps"], cfg.extend, schedule.describe())
    stream, names, seq_len = open_stream(cfg)
    model_cfg = cfg.model
    setup = build(model_cfg, cfg, mesh, n_components=len(names), schedule=schedule)
    # The validation windows are read before any step: a bad --eval costs no training.
    evaluator = (Evaluator(cfg, model_cfg, mesh, setup.state_shardings["params"], stream.encoder, seq_len)
                 if cfg.eval_path else None)
    metrics_out = _Metrics(cfg.metrics_path)
    local_rows = cfg.batch_size // jax.process_count()

    totals = dict.fromkeys(names, 0)
    if resume is not None:
        state, stream_state, meta = checkpoint.restore(resume, setup.abstract_state)
        stream.load_state_dict(stream_state)
        totals.update(meta.get("component_tokens", {}))
        start = int(meta["step"])
        log.info("resumed from %s at step %d", resume, start)
    else:
        state = setup.init(jax.random.key(cfg.seed))
        start = 0
    if int(state["step"]) != start:
        raise RuntimeError(f"checkpoint step {start} does not match the state's step counter {int(state['step'])}")

    end = cfg.steps if cfg.stop_after is None else min(cfg.steps, start + cfg.stop_after)
    result = RunResult(start_step=start, end_step=start)
    batches = stream.batches(cfg.batch_size)
    first_batch = None
    tokens_per_step = cfg.batch_size * seq_len
    clock: dict = {}  # wall time and step when the first step's metrics arrived (compile excluded after that)

    def finish(step: int, metrics, fp: str) -> None:
        m = jax.device_get(metrics)  # blocks until that step has run
        now = time.perf_counter()
        loss = float(m["loss"])
        result.losses.append(loss)
        for name, n in zip(names, m["component_tokens"].tolist()):
            totals[name] += int(n)
        if not clock:
            clock.update(t=now, step=step)
        elif step > clock["step"]:
            result.tokens_per_second = tokens_per_step * (step - clock["step"]) / (now - clock["t"])
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {step}")
        if step % cfg.log_every == 0 or step == end:
            tps = f"{result.tokens_per_second:,.0f}" if result.tokens_per_second else "-"
            log.info("step %d/%d loss %.4f ce %.4f lr %.3g grad_norm %.3f tokens/s %s | %s", step, cfg.steps, loss,
                     float(m["ce"]), float(m["lr"]), float(m["grad_norm"]), tps,
                     " ".join(f"{k}={v:,}" for k, v in totals.items()))
        metrics_out.write({
            "step": step, "loss": loss, "ce": float(m["ce"]), "lr": float(m["lr"]),
            "grad_norm": float(m["grad_norm"]), "predicted_tokens": int(m["predicted_tokens"]),
            "tokens_per_second": result.tokens_per_second, "batch_sha1": fp,
            "batch_component_tokens": dict(zip(names, m["component_tokens"].tolist())),
            "component_tokens": dict(totals),
        })

    def evaluate(step: int) -> None:
        m = evaluator.run(state["params"])
        result.evals.append({"step": step, **m})
        metrics_out.write({"event": "eval", "step": step, **m})
        log.info("eval step %d: nll %.4f (%s tokens) | %s", step, m["eval_nll"], f"{m['eval_tokens']['all']:,}",
                 " ".join(f"{k.removeprefix('eval_nll_')} {v:.4f}" for k, v in m.items()
                          if k.startswith("eval_nll_")))

    def save(step: int) -> str:
        return str(checkpoint.save(
            cfg.ckpt_dir, step, state, stream.state_dict(),
            {"component_tokens": dict(totals), "config": _jsonable(cfg), "schedule": schedule.to_dict()},
            keep=cfg.keep_checkpoints,
        ))

    pending = None
    try:
        for step in range(start + 1, end + 1):
            if cfg.repeat_batch and first_batch is not None:
                local = first_batch
            else:
                local = next(batches)
                if first_batch is None:
                    first_batch = local
            _check_local(local, local_rows, seq_len)
            batch = global_batch({k: local[k] for k in BATCH_KEYS}, mesh, cfg.batch_size)
            if step == start + 1:
                record = {"event": "setup", "devices": jax.device_count(), "processes": jax.process_count(),
                          "mesh": dict(mesh.shape), "model": model_cfg.name, "params": model_cfg.n_params(),
                          "seq_len": seq_len, "batch_size": cfg.batch_size, "components": names,
                          "batch": {k: describe(v) for k, v in batch.items()},
                          "params_sharding": {k: describe(v) for k, v in
                                              _flat(state["params"]).items()}, "resumed_from": str(resume or ""),
                          "schedule": schedule.to_dict(), "extended": extended,
                          "eval": None if evaluator is None else {
                              "path": cfg.eval_path, "components": evaluator.data.components,
                              "rows": evaluator.data.rows, "tokens": evaluator.data.tokens,
                              "windows": len(evaluator.data.input_ids), "windows_sha1": evaluator.data.sha1}}
                metrics_out.write(record)
                log.info("mesh %s, %d devices on %d hosts; model %s (%s params); batch %d x %d, sharded %s",
                         dict(mesh.shape), jax.device_count(), jax.process_count(), model_cfg.name,
                         f"{model_cfg.n_params():,}", cfg.batch_size, seq_len, batch["input_ids"].sharding.spec)
            # Dispatch this step, then fetch the previous step's metrics: the host never idles the devices.
            state, metrics = setup.step(state, batch)
            if pending:
                finish(*pending)
            pending = (step, metrics, fingerprint(local))
            at_ckpt = cfg.ckpt_dir and cfg.ckpt_every and step % cfg.ckpt_every == 0 and step != end
            at_eval = evaluator and cfg.eval_every and step % cfg.eval_every == 0 and step != end
            if at_ckpt or at_eval:
                finish(*pending)
                pending = None
                if at_eval:
                    evaluate(step)
                if at_ckpt:
                    save(step)
        if pending:
            finish(*pending)
            pending = None
        if evaluator and end > start:
            evaluate(end)
        result.end_step = end
        if cfg.ckpt_dir and end > start:
            result.checkpoint = save(end)
        result.component_tokens = dict(totals)
        # The stream counts what it handed out on this host; ours counts what the steps consumed on all hosts.
        metrics_out.write({"event": "end", "step": end, "component_tokens": dict(totals),
                           "stream_component_tokens": dict(stream.component_tokens), "epochs": stream.epochs,
                           "tokens_per_second": result.tokens_per_second, "checkpoint": result.checkpoint})
    finally:
        metrics_out.close()
    log.info("done: steps %d..%d, component tokens consumed %s; epochs started %s", start, result.end_step,
             result.component_tokens, stream.epochs)
    return result


def _check_local(local: dict, rows: int, seq_len: int) -> None:
    ids = local["input_ids"]
    if ids.shape != (rows, seq_len):
        raise RuntimeError(f"stream gave a batch of shape {ids.shape}, expected {(rows, seq_len)}")


def _flat(tree) -> dict:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(p, simple=True, separator="/"): leaf for p, leaf in flat}


def _jsonable(cfg: TrainConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg), default=str))
