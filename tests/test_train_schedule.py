"""train/schedule.py: the LR schedule, its continuations on resume (--extend) and what a resume refuses."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from train.config import OptimizerConfig
from train.schedule import Schedule, ScheduleError, recorded_schedule, resolve

OPT = OptimizerConfig(learning_rate=1e-3, warmup_steps=10, min_lr_ratio=0.1)


def jitted(schedule: Schedule, steps: int) -> np.ndarray:
    return np.asarray(jax.jit(jax.vmap(schedule))(jnp.arange(steps + 1, dtype=jnp.int32)))


def test_a_fresh_schedule_is_optax_warmup_cosine():
    s = Schedule.fresh(OPT, 100)
    ref = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100, 1e-4)
    want = np.asarray([ref(t) for t in range(120)])
    np.testing.assert_allclose(jitted(s, 119), want, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose([s.at(t) for t in range(120)], want, rtol=1e-5, atol=1e-9)
    # the default warmup is 10 % of the run
    assert Schedule.fresh(OptimizerConfig(), 200).pieces[0].warmup == 20


def test_constant_keeps_the_schedule_and_holds_the_floor():
    old = Schedule.fresh(OPT, 100)
    new = old.extend(60, 200, "constant")
    assert [new.at(t) for t in range(101)] == [old.at(t) for t in range(101)]
    assert new.at(150) == new.at(200) == pytest.approx(1e-4)
    with pytest.raises(ScheduleError, match="stretch shortens"):
        old.extend(60, 80, "constant")


def test_rewarm_climbs_back_to_the_peak_from_the_current_lr_then_decays_anew():
    old = Schedule.fresh(OPT, 100)
    new = old.extend(100, 200, "rewarm")
    assert [new.at(t) for t in range(100)] == [old.at(t) for t in range(100)]
    assert new.at(100) == pytest.approx(old.at(100)) == pytest.approx(1e-4)  # continuous: starts at the floor
    assert new.at(110) == pytest.approx(1e-3)  # default warmup: 10 % of the 100 steps left
    assert new.at(105) == pytest.approx((1e-4 + 1e-3) / 2)
    assert new.at(155) == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # halfway through the new cosine
    assert new.at(200) == pytest.approx(1e-4)
    assert old.extend(100, 200, "rewarm", warmup=4).at(104) == pytest.approx(1e-3)


def test_stretch_spreads_the_rest_of_the_cosine_over_the_new_length():
    old = Schedule.fresh(OPT, 100)
    longer = old.extend(60, 140, "stretch")  # the 40 steps left become 80
    assert [longer.at(t) for t in range(61)] == [old.at(t) for t in range(61)]
    for j in range(41):
        assert longer.at(60 + 2 * j) == pytest.approx(old.at(60 + j), rel=1e-9), j
    shorter = old.extend(60, 80, "stretch")  # or 20
    for j in range(21):
        assert shorter.at(60 + j) == pytest.approx(old.at(60 + 2 * j), rel=1e-9), j
    # still warming up: the warmup is kept, only the decay after it is re-planned
    early = old.extend(5, 200, "stretch")
    assert [early.at(t) for t in range(11)] == [old.at(t) for t in range(11)]
    assert early.at(10) == pytest.approx(1e-3) and early.at(200) == pytest.approx(1e-4)
    assert early.at(105) == pytest.approx(1e-4 + 0.9e-3 * 0.5)


def test_chained_extensions_round_trip_and_the_jitted_schedule_agrees():
    s = Schedule.fresh(OPT, 100).extend(60, 140, "stretch").extend(140, 200, "rewarm", 5).extend(150, 260, "constant")
    back = Schedule.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    assert [e["mode"] for e in back.extensions] == ["stretch", "rewarm", "constant"]
    assert back.extensions[1] == {"at": 140, "mode": "rewarm", "from_steps": 140, "to_steps": 200}
    np.testing.assert_allclose(jitted(back, 260), [s.at(t) for t in range(261)], rtol=1e-5, atol=1e-9)
    assert s.at(145) == pytest.approx(1e-3) and s.at(230) == pytest.approx(1e-4)


def test_resume_keeps_the_recorded_schedule_and_refuses_a_silent_change():
    recorded = Schedule.fresh(OPT, 100).to_dict()
    same, extended = resolve(OPT, 100, None, 40, recorded, where="ckpt/step_00000040")
    assert same == Schedule.from_dict(recorded) and not extended
    with pytest.raises(ScheduleError) as err:
        resolve(OPT, 200, None, 40, recorded, where="ckpt/step_00000040")
    msg = str(err.value)
    assert "\n" not in msg and "100-step schedule" in msg and "--extend constant|rewarm|stretch" in msg
    assert "--steps 100" in msg
    new, extended = resolve(OPT, 200, "rewarm", 40, recorded)
    assert extended and new.steps == 200 and new.extensions[-1]["mode"] == "rewarm"
    # a rerun of the extending command finds the extension recorded and does not extend again
    again, extended = resolve(OPT, 200, "rewarm", 120, new.to_dict())
    assert again == new and not extended
    with pytest.raises(ScheduleError, match="at step 40 already"):
        resolve(OPT, 30, "stretch", 40, recorded)
    with pytest.raises(ScheduleError, match=r"--lr 0\.002 differs"):
        resolve(OptimizerConfig(learning_rate=2e-3, warmup_steps=10, min_lr_ratio=0.1), 100, None, 40, recorded)
    with pytest.raises(ScheduleError, match="--warmup 3 differs"):
        resolve(OptimizerConfig(learning_rate=1e-3, warmup_steps=3, min_lr_ratio=0.1), 100, None, 40, recorded)
    with pytest.raises(ScheduleError, match="leave --warmup out"):
        resolve(OptimizerConfig(learning_rate=1e-3, warmup_steps=3, min_lr_ratio=0.1), 200, "stretch", 40, recorded)
    with pytest.raises(ScheduleError, match="give its --ckpt"):
        resolve(OPT, 100, "stretch", None, None, where="--ckpt None")
    assert resolve(OPT, 100, None, None, None) == (Schedule.fresh(OPT, 100), False)


def test_a_checkpoint_without_a_stored_schedule_gets_the_one_its_config_made():
    meta = {"step": 5, "config": {"steps": 50, "optimizer": {"learning_rate": 1e-3, "warmup_steps": None,
                                                            "min_lr_ratio": 0.1, "b1": 0.9, "b2": 0.95, "eps": 1e-8,
                                                            "weight_decay": 0.0, "max_grad_norm": 1.0}}}
    s = Schedule.from_dict(recorded_schedule(meta))
    assert s.steps == 50 and s.pieces[0].warmup == 5 and math.isclose(s.floor, 1e-4)
