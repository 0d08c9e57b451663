"""MemoryGuard: host RAM held to the plan's budget on CPU and GPU plans; the GPU peak
restarted after the first step (cuDNN autotuning), in training as in the trial children."""

from __future__ import annotations

import numpy as np
import pytest

from planner.trials.child import run_steps
from planner.trials.spec import TrialSpec
from tests.gpu.fake_tf import FakeTF
from tests.plans import minimal_plan
from trainer.train.callbacks import BudgetExceeded, MemoryGuard
from trainer.train.fit import _host_budget
from trainer.train.memory import peak_rss_bytes

MiB = 2**20


def test_the_guard_raises_an_oom_the_step_down_understands_once_over_budget():
    from trainer.oom import is_oom_error

    guard = MemoryGuard(peak_rss_bytes() + 200 * MiB)
    guard.on_train_begin()
    guard.on_train_batch_end(0)  # under budget: nothing
    block = np.ones(300 * MiB, dtype=np.uint8)  # resident: the peak passes the budget
    with pytest.raises(BudgetExceeded, match="passed the plan's memory budget") as info:
        guard.on_train_batch_end(1)
    del block
    assert is_oom_error(info.value)


def test_a_new_fit_starts_a_new_peak():
    block = np.ones(300 * MiB, dtype=np.uint8)
    del block
    guard = MemoryGuard(peak_rss_bytes() - 100 * MiB)  # below the old peak, above RSS now
    guard.on_train_begin()  # resets the kernel's mark: the freed block no longer counts
    guard.on_train_batch_end(0)


def test_without_a_budget_the_guard_never_raises():
    guard = MemoryGuard(None)
    guard.on_train_begin()
    guard.on_train_batch_end(0)


def plan(device, **target):
    return minimal_plan(target={"device": device, "budget_bytes": 8 * 2**30, **target})


def test_gpu_plans_guard_host_ram_with_their_host_budget():
    assert _host_budget(plan("gpu", host_budget_bytes=20 * 2**30)) == 20 * 2**30
    assert _host_budget(plan("gpu")) is None  # an older plan: nothing to hold it to
    assert _host_budget(plan("cpu")) == 8 * 2**30


def test_training_restarts_the_gpu_peak_after_the_first_step_of_each_fit():
    tf = FakeTF()
    guard = MemoryGuard(None, tf=tf)
    guard.on_train_begin()
    guard.on_train_batch_end(0)
    guard.on_train_batch_end(1)
    assert tf.events == ["reset GPU:0"]
    guard.on_train_begin()  # the next phase traces (and autotunes) again
    guard.on_train_batch_end(0)
    assert tf.events == ["reset GPU:0", "reset GPU:0"]


def test_trial_children_restart_the_gpu_peak_after_the_warm_up():
    events = []
    spec = TrialSpec("unet_small", (64, 64), (1,), warmup_steps=2, measured_steps=3)
    times = run_steps(lambda: events.append("step"), spec, lambda: events.append("reset"))
    assert events == ["step", "step", "reset", "step", "step", "step"]
    assert len(times) == 5
    run_steps(lambda: events.append("cpu step"), spec, None)  # CPU: no reset
    assert "reset" not in events[6:]
