"""The learning-rate schedule: warmup + cosine decay, and how it continues when a resumed run changes ``--steps``.

A schedule is a list of *pieces*. Piece ``k`` governs the optimizer steps from its ``start`` on (until the next
piece starts): a linear warmup from ``from_lr`` to the peak over ``warmup`` steps, then the cosine from phase
``phase`` (0: at the peak) to phase 1 (the floor, ``peak * min_lr_ratio``), reached at step ``end`` and held after.
A fresh run has one piece (start 0, from 0, phase 0): optax's ``warmup_cosine_decay_schedule``.

A resumed run whose ``--steps`` differ from the checkpoint's must say how the schedule continues (``--extend``):

- ``constant``: the schedule is left as it was; after its end the LR stays at the floor until the new last step
  (more training at the final LR, e.g. to use more data without touching what was already decayed).
- ``rewarm``: from the resumed step, a linear warmup from the current LR back to the peak (``--warmup`` steps,
  default 10 % of the steps left), then a fresh cosine to the floor at the new last step (continued pretraining).
- ``stretch``: the rest of the cosine is spread over the new length: the LR is continuous at the resumed step and
  reaches the floor at the new last step, as if the run had been planned that long from the step it resumes at
  (longer or shorter; during the warmup the warmup is kept and only the decay is re-planned).

The pieces are computed once, in Python, when the schedule changes and are stored in every checkpoint's
``meta.json`` (and the metrics' setup record), so a resumed run uses exactly the recorded numbers whatever the
command line of a later invocation says: a rerun of the same extending command does not extend twice.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import jax.numpy as jnp

from train.config import EXTEND_MODES, OptimizerConfig


class ScheduleError(ValueError):
    """A resumed run's schedule options contradict its checkpoint; the message says what to pass."""


@dataclass(frozen=True)
class Piece:
    start: int  # first step this piece governs
    end: int  # step at which the cosine reaches the floor (held after)
    warmup: int = 0  # steps of linear warmup from `from_lr` to the peak, from `start`
    from_lr: float = 0.0
    phase: float = 0.0  # cosine phase at the end of the warmup: 0 = peak, 1 = floor

    def lr(self, step, peak: float, floor: float, xp=math):
        """The LR at ``step`` (a Python int with ``xp=math``; a traced array with ``xp=jnp``)."""
        rel = step - self.start
        span = max(self.end - self.start - self.warmup, 1)
        if xp is math:
            if rel < self.warmup:
                return self.from_lr + (peak - self.from_lr) * rel / self.warmup
            phase = self.phase + (1 - self.phase) * min(max((rel - self.warmup) / span, 0.0), 1.0)
            return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * phase))
        rel = rel.astype(jnp.float32)
        phase = self.phase + (1 - self.phase) * jnp.clip((rel - self.warmup) / span, 0.0, 1.0)
        decay = floor + (peak - floor) * 0.5 * (1 + jnp.cos(jnp.pi * phase))
        if not self.warmup:
            return decay
        return jnp.where(rel < self.warmup, self.from_lr + (peak - self.from_lr) * rel / self.warmup, decay)

    def phase_at(self, step: int) -> float | None:
        """The cosine phase at ``step``, or None while still warming up."""
        rel = step - self.start
        if rel < self.warmup:
            return None
        return self.phase + (1 - self.phase) * min((rel - self.warmup) / max(self.end - self.start - self.warmup, 1),
                                                   1.0)


@dataclass(frozen=True)
class Schedule:
    peak: float
    min_lr_ratio: float
    steps: int  # the run's last step (the newest --steps)
    pieces: tuple[Piece, ...]
    extensions: tuple[dict, ...] = field(default=())  # history: {"at", "mode", "from_steps", "to_steps"}

    @classmethod
    def fresh(cls, cfg: OptimizerConfig, steps: int) -> Schedule:
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, steps // 10)
        warmup = min(warmup, max(steps - 1, 0))
        return cls(cfg.learning_rate, cfg.min_lr_ratio, steps, (Piece(0, max(steps, warmup + 1), warmup),))

    @property
    def floor(self) -> float:
        return self.peak * self.min_lr_ratio

    def _piece(self, step: int) -> Piece:
        return [p for p in self.pieces if p.start <= step][-1]

    def at(self, step: int) -> float:
        """The LR at ``step`` (Python float; what the jitted schedule computes, up to float32 rounding)."""
        return self._piece(step).lr(step, self.peak, self.floor)

    def __call__(self, count):
        """The optax schedule: LR of the update with index ``count`` (a traced int)."""
        lr = self.pieces[0].lr(count, self.peak, self.floor, xp=jnp)
        for p in self.pieces[1:]:
            lr = jnp.where(count >= p.start, p.lr(count, self.peak, self.floor, xp=jnp), lr)
        return lr

    def extend(self, at: int, steps: int, mode: str, warmup: int | None = None) -> Schedule:
        """The schedule continued from step ``at`` (the resumed checkpoint's) to ``steps`` as ``mode`` says."""
        if mode not in EXTEND_MODES:
            raise ScheduleError(f"--extend must be one of {', '.join(EXTEND_MODES)}, not {mode!r}")
        if steps <= at:
            raise ScheduleError(f"the checkpoint is at step {at} already: --steps must be larger than {at}")
        if warmup is not None and mode != "rewarm" and warmup != self.pieces[0].warmup:
            raise ScheduleError(f"--warmup on resume sets the warmup of --extend rewarm; with --extend {mode} the "
                                f"schedule keeps its own ({self.pieces[0].warmup}): leave --warmup out")
        last = self._piece(at)
        pieces = [p for p in self.pieces if p.start < at]
        if mode == "constant":
            if steps < self.steps:
                raise ScheduleError(f"--extend constant holds the final LR after the schedule's end (step "
                                    f"{self.steps}): --steps must be larger; --extend stretch shortens a schedule")
            pieces = list(self.pieces)  # every piece already holds its floor after its end
        elif mode == "rewarm":
            w = warmup if warmup is not None else max(1, (steps - at) // 10)
            w = min(w, steps - at - 1)
            pieces.append(Piece(at, steps, w, self.at(at), 0.0))
        else:
            phase = last.phase_at(at)
            if phase is None:  # still warming up: keep the warmup, re-plan the decay after it
                kept = [p for p in self.pieces if p.start < last.start]
                pieces = [*kept, replace(last, end=max(steps, last.start + last.warmup + 1))]
            else:
                pieces.append(Piece(at, steps, 0, 0.0, phase))
        history = {"at": at, "mode": mode, "from_steps": self.steps, "to_steps": steps}
        return replace(self, steps=steps, pieces=tuple(pieces), extensions=(*self.extensions, history))

    def to_dict(self) -> dict:
        return {"peak": self.peak, "min_lr_ratio": self.min_lr_ratio, "steps": self.steps,
                "pieces": [asdict(p) for p in self.pieces], "extensions": list(self.extensions)}

    @classmethod
    def from_dict(cls, d: dict) -> Schedule:
        return cls(float(d["peak"]), float(d["min_lr_ratio"]), int(d["steps"]),
                   tuple(Piece(**p) for p in d["pieces"]), tuple(d.get("extensions", ())))

    def describe(self) -> str:
        parts = []
        for p in self.pieces:
            warm = f"warmup {p.warmup} from {p.from_lr:.3g}, " if p.warmup else ""
            parts.append(f"from step {p.start}: {warm}cosine from phase {p.phase:.3f} to {self.floor:.3g} at step "
                         f"{p.end}")
        return f"peak {self.peak:.3g}; " + "; ".join(parts) + f"; last step {self.steps}"


def resolve(opt: OptimizerConfig, steps: int, extend: str | None, at: int | None, recorded: dict | None,
            where: str = "the checkpoint") -> tuple[Schedule, bool]:
    """The schedule of this invocation and whether it was extended now.

    ``at`` is the resumed checkpoint's step (None: a fresh run) and ``recorded`` its stored schedule. Without a
    change of ``--steps`` the recorded schedule is used as it is; a change needs ``extend``.
    """
    if at is None:
        if extend is not None:
            raise ScheduleError(f"--extend {extend} continues a checkpointed run, but {where} holds no checkpoint"
                                if where != "--ckpt None" else f"--extend {extend} continues a checkpointed run: "
                                "give its --ckpt directory")
        return Schedule.fresh(opt, steps), False
    old = Schedule.from_dict(recorded)
    for option, given, kept in (("--lr", opt.learning_rate, old.peak), ("--min-lr-ratio", opt.min_lr_ratio,
                                                                         old.min_lr_ratio)):
        if not math.isclose(given, kept, rel_tol=1e-9):
            raise ScheduleError(f"{option} {given:g} differs from {where}'s schedule ({kept:g}); a resumed run keeps "
                                f"its schedule: pass {option} {kept:g}")
    if steps == old.steps:
        warmup = opt.warmup_steps
        if warmup is not None and not old.extensions and warmup != old.pieces[0].warmup:
            raise ScheduleError(f"--warmup {warmup} differs from {where}'s schedule ({old.pieces[0].warmup}); a "
                                "resumed run keeps its schedule: leave --warmup out")
        return old, False
    if extend is None:
        raise ScheduleError(f"{where} (step {at}) belongs to a {old.steps}-step schedule and this run asks for "
                            f"--steps {steps}: say how the learning rate continues with --extend "
                            f"{'|'.join(EXTEND_MODES)} (docs/training.md, section 6) or pass --steps {old.steps}")
    return old.extend(at, steps, extend, opt.warmup_steps), True


def recorded_schedule(meta: dict) -> dict:
    """The schedule stored in a checkpoint's meta; checkpoints written before schedules were stored: the fresh
    schedule of the configuration they recorded."""
    if "schedule" in meta:
        return meta["schedule"]
    cfg = meta["config"]
    return Schedule.fresh(OptimizerConfig(**cfg["optimizer"]), int(cfg["steps"])).to_dict()
