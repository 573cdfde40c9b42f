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
from train.schedule import Schedule, recorded_schedule, resolve
from train.sharding import check_batch_size, describe, global_batch, make_mesh
from train.step import BATCH_KEYS, Setup, build

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
    resume, schedule, extended = _settle_schedule(cfg)
    stream, names, seq_len = open_stream(cfg)
    setup = build(cfg.model, cfg, mesh, n_components=len(names), schedule=schedule)
    # The validation windows are read before any step: a bad --eval costs no training.
    evaluator = (Evaluator(cfg, cfg.model, mesh, setup.state_shardings["params"], stream.encoder, seq_len)
                 if cfg.eval_path else None)
    run = _Run(cfg, mesh, setup, stream, names, seq_len, evaluator, resume, schedule, extended)
    start = run.restore_or_init()
    end = cfg.steps if cfg.stop_after is None else min(cfg.steps, start + cfg.stop_after)
    try:
        run.steps(start, end)
        run.conclude(start, end)
    finally:
        run.metrics_out.close()
    log.info("done: steps %d..%d, component tokens consumed %s; epochs started %s", start, run.result.end_step,
             run.result.component_tokens, stream.epochs)
    return run.result


def _settle_schedule(cfg: TrainConfig) -> tuple[Path | None, Schedule, bool]:
    """(the checkpoint to resume from, the LR schedule, whether --extend lengthened it): a resumed run keeps the
    schedule its checkpoint recorded (train/schedule.py says when --steps may change it)."""
    resume = checkpoint.latest(cfg.ckpt_dir) if cfg.ckpt_dir else None
    meta = checkpoint.load_meta(resume) if resume is not None else None
    schedule, extended = resolve(cfg.optimizer, cfg.steps, cfg.extend, None if meta is None else int(meta["step"]),
                                 None if meta is None else recorded_schedule(meta),
                                 where=str(resume) if resume else f"--ckpt {cfg.ckpt_dir}")
    if extended:
        log.info("--steps %d instead of the checkpoint's %d, --extend %s: LR schedule %s", cfg.steps,
                 schedule.extensions[-1]["from_steps"], cfg.extend, schedule.describe())
    return resume, schedule, extended


class _Run:
    """One invocation of the loop and what it keeps between steps: the train state, the tokens consumed per
    component, the step clock, the metrics file and the result."""

    def __init__(self, cfg: TrainConfig, mesh, setup: Setup, stream, names: list[str], seq_len: int,
                 evaluator: Evaluator | None, resume: Path | None, schedule: Schedule, extended: bool) -> None:
        self.cfg, self.mesh, self.setup, self.stream, self.names, self.seq_len = cfg, mesh, setup, stream, names, seq_len
        self.evaluator, self.resume, self.schedule, self.extended = evaluator, resume, schedule, extended
        self.metrics_out = _Metrics(cfg.metrics_path)
        self.totals = dict.fromkeys(names, 0)
        self.clock: dict = {}  # wall time and step when the first step's metrics arrived (compile excluded after that)
        self.state: dict = {}
        self.result = RunResult(start_step=0, end_step=0)
        self.end = cfg.steps

    def restore_or_init(self) -> int:
        """The train state, the stream's position and the token totals, from the checkpoint or new; the step to
        start from."""
        if self.resume is not None:
            state, stream_state, meta = checkpoint.restore(self.resume, self.setup.abstract_state)
            self.stream.load_state_dict(stream_state)
            self.totals.update(meta.get("component_tokens", {}))
            start = int(meta["step"])
            log.info("resumed from %s at step %d", self.resume, start)
        else:
            state = self.setup.init(jax.random.key(self.cfg.seed))
            start = 0
        if int(state["step"]) != start:
            raise RuntimeError(f"checkpoint step {start} does not match the state's step counter {int(state['step'])}")
        self.state = state
        self.result = RunResult(start_step=start, end_step=start)
        return start

    def steps(self, start: int, end: int) -> None:
        """Steps ``start + 1`` to ``end``, with the evaluations and checkpoints that fall between."""
        cfg = self.cfg
        self.end = end
        batches = self.stream.batches(cfg.batch_size)
        local_rows = cfg.batch_size // jax.process_count()
        first_batch = None
        pending = None
        for step in range(start + 1, end + 1):
            if cfg.repeat_batch and first_batch is not None:
                local = first_batch
            else:
                local = next(batches)
                if first_batch is None:
                    first_batch = local
            _check_local(local, local_rows, self.seq_len)
            batch = global_batch({k: local[k] for k in BATCH_KEYS}, self.mesh, cfg.batch_size)
            if step == start + 1:
                self.record_setup(batch)
            # Dispatch this step, then fetch the previous step's metrics: the host never idles the devices.
            self.state, metrics = self.setup.step(self.state, batch)
            if pending:
                self.record_step(*pending)
            pending = (step, metrics, fingerprint(local))
            at_ckpt = cfg.ckpt_dir and cfg.ckpt_every and step % cfg.ckpt_every == 0 and step != end
            at_eval = self.evaluator and cfg.eval_every and step % cfg.eval_every == 0 and step != end
            if at_ckpt or at_eval:
                self.record_step(*pending)
                pending = None
                if at_eval:
                    self.evaluate(step)
                if at_ckpt:
                    self.save(step)
        if pending:
            self.record_step(*pending)

    def conclude(self, start: int, end: int) -> None:
        """The last evaluation and checkpoint, the result and the metrics file's end record."""
        if self.evaluator and end > start:
            self.evaluate(end)
        self.result.end_step = end
        if self.cfg.ckpt_dir and end > start:
            self.result.checkpoint = self.save(end)
        self.result.component_tokens = dict(self.totals)
        # The stream counts what it handed out on this host; ours counts what the steps consumed on all hosts.
        self.metrics_out.write({"event": "end", "step": end, "component_tokens": dict(self.totals),
                                "stream_component_tokens": dict(self.stream.component_tokens),
                                "epochs": self.stream.epochs, "tokens_per_second": self.result.tokens_per_second,
                                "checkpoint": self.result.checkpoint})

    def record_setup(self, batch: dict) -> None:
        """The run's layout (mesh, model, batch and parameter shardings, schedule, eval set), once, before step 1."""
        cfg, model_cfg, mesh, evaluator = self.cfg, self.cfg.model, self.mesh, self.evaluator
        self.metrics_out.write({
            "event": "setup", "devices": jax.device_count(), "processes": jax.process_count(),
            "mesh": dict(mesh.shape), "model": model_cfg.name, "params": model_cfg.n_params(),
            "seq_len": self.seq_len, "batch_size": cfg.batch_size, "components": self.names,
            "batch": {k: describe(v) for k, v in batch.items()},
            "params_sharding": {k: describe(v) for k, v in _flat(self.state["params"]).items()},
            "resumed_from": str(self.resume or ""), "schedule": self.schedule.to_dict(), "extended": self.extended,
            "eval": None if evaluator is None else {
                "path": cfg.eval_path, "components": evaluator.data.components, "rows": evaluator.data.rows,
                "tokens": evaluator.data.tokens, "windows": len(evaluator.data.input_ids),
                "windows_sha1": evaluator.data.sha1},
        })
        log.info("mesh %s, %d devices on %d hosts; model %s (%s params); batch %d x %d, sharded %s",
                 dict(mesh.shape), jax.device_count(), jax.process_count(), model_cfg.name,
                 f"{model_cfg.n_params():,}", cfg.batch_size, self.seq_len, batch["input_ids"].sharding.spec)

    def record_step(self, step: int, metrics, fp: str) -> None:
        """A step's metrics, once they have arrived: totals, tokens/s, the log line and the metrics record."""
        m = jax.device_get(metrics)  # blocks until that step has run
        now = time.perf_counter()
        loss = float(m["loss"])
        self.result.losses.append(loss)
        for name, n in zip(self.names, m["component_tokens"].tolist()):
            self.totals[name] += int(n)
        tokens_per_step = self.cfg.batch_size * self.seq_len
        if not self.clock:
            self.clock.update(t=now, step=step)
        elif step > self.clock["step"]:
            self.result.tokens_per_second = tokens_per_step * (step - self.clock["step"]) / (now - self.clock["t"])
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {step}")
        if step % self.cfg.log_every == 0 or step == self.end:
            tps = f"{self.result.tokens_per_second:,.0f}" if self.result.tokens_per_second else "-"
            log.info("step %d/%d loss %.4f ce %.4f lr %.3g grad_norm %.3f tokens/s %s | %s", step, self.cfg.steps, loss,
                     float(m["ce"]), float(m["lr"]), float(m["grad_norm"]), tps,
                     " ".join(f"{k}={v:,}" for k, v in self.totals.items()))
        self.metrics_out.write({
            "step": step, "loss": loss, "ce": float(m["ce"]), "lr": float(m["lr"]),
            "grad_norm": float(m["grad_norm"]), "predicted_tokens": int(m["predicted_tokens"]),
            "tokens_per_second": self.result.tokens_per_second, "batch_sha1": fp,
            "batch_component_tokens": dict(zip(self.names, m["component_tokens"].tolist())),
            "component_tokens": dict(self.totals),
        })

    def evaluate(self, step: int) -> None:
        m = self.evaluator.run(self.state["params"])
        self.result.evals.append({"step": step, **m})
        self.metrics_out.write({"event": "eval", "step": step, **m})
        log.info("eval step %d: nll %.4f (%s tokens) | %s", step, m["eval_nll"], f"{m['eval_tokens']['all']:,}",
                 " ".join(f"{k.removeprefix('eval_nll_')} {v:.4f}" for k, v in m.items()
                          if k.startswith("eval_nll_")))

    def save(self, step: int) -> str:
        return str(checkpoint.save(
            self.cfg.ckpt_dir, step, self.state, self.stream.state_dict(),
            {"component_tokens": dict(self.totals), "config": _jsonable(self.cfg), "schedule": self.schedule.to_dict()},
            keep=self.cfg.keep_checkpoints,
        ))


def _check_local(local: dict, rows: int, seq_len: int) -> None:
    ids = local["input_ids"]
    if ids.shape != (rows, seq_len):
        raise RuntimeError(f"stream gave a batch of shape {ids.shape}, expected {(rows, seq_len)}")


def _flat(tree) -> dict:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(p, simple=True, separator="/"): leaf for p, leaf in flat}


def _jsonable(cfg: TrainConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg), default=str))
