"""Stepping down after out of memory: a fresh process on a GPU, a fresh baseline on a CPU.

`trainer.train.fit._run` is replaced by a function that runs out of memory once (the
class name is what trainer.oom matches); the real `_train_with_stepdown`, `RunDir`,
`resume` bookkeeping and peak-RSS reading run.
"""

from __future__ import annotations

import numpy as np
import pytest

from planner.app import cli_train
from tests.plans import minimal_plan
from trainer.plan import Plan
from trainer.train import fit, stepdown
from trainer.train.memory import peak_rss_bytes
from trainer.train.run_dir import RunDir

MiB = 2**20


class ResourceExhaustedError(Exception):
    """Stands in for tf.errors.ResourceExhaustedError."""


def plan(device="gpu", mb=4, k=4) -> Plan:
    return minimal_plan(micro_batch=mb, accumulation_steps=k, target={"device": device})


def test_on_a_gpu_the_step_down_is_recorded_and_the_run_restarts_fresh(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path / "run", plan())
    calls = []

    def oom_once(run_, plan_, *args):
        calls.append(plan_.micro_batch)
        raise ResourceExhaustedError("OOM when allocating tensor with shape[4,64,64,32]")

    monkeypatch.setattr(fit, "_run", oom_once)
    monkeypatch.setattr(stepdown, "restart_needed", lambda: True)  # TF sees a GPU
    with pytest.raises(stepdown.RestartRequired) as info, pytest.warns(UserWarning):
        fit._train_with_stepdown(run, plan(), None, None, (), 0.0)
    assert calls == [4]  # not retried in this process
    assert info.value.run_path == run.path and info.value.exit_code == 10
    # What `fitplan train --resume` will read: the smaller plan, the adjustment, no epoch.
    _, resumed, state = RunDir.open_for_resume(run.path)
    assert (resumed.micro_batch, resumed.accumulation_steps) == (2, 8)
    assert resumed.effective_batch == 16
    assert state["epochs_done"] == 0
    assert state["adjustments"][0]["micro_batch"] == [4, 2]
    assert "OOM when allocating" in state["adjustments"][0]["reason"]
    run.remove_if_no_epoch()  # what train() does on an exception: the folder stays
    assert run.plan_path.exists()


def test_the_cli_resumes_a_stepped_down_run_in_a_fresh_process(tmp_path, monkeypatch):
    execs = []
    monkeypatch.setattr(cli_train.os, "execv", lambda path, argv: execs.append(argv))
    with cli_train._fresh_process_on_step_down(tmp_path / "data", None, True):
        raise stepdown.RestartRequired("out of memory", tmp_path / "run")
    assert execs[0][1:] == [
        "-m", "planner", "train", "--resume", str(tmp_path / "run"),
        "--data", str(tmp_path / "data"), "--json",
    ]  # fmt: skip


def test_on_a_cpu_the_step_down_measures_from_a_fresh_baseline(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path / "run", plan(device="cpu"))
    seen = {}

    def oom_after_a_spike(run_, plan_, *args):
        if plan_.micro_batch == 4:
            spike = np.ones(400 * MiB, dtype=np.uint8)  # touched: resident
            seen["spike_peak"] = peak_rss_bytes()
            del spike
            raise ResourceExhaustedError("OOM when allocating tensor")
        seen["peak_after_step_down"] = peak_rss_bytes()
        return "trained"

    monkeypatch.setattr(fit, "_run", oom_after_a_spike)
    monkeypatch.setattr(fit, "_datasets", lambda p: None)
    with pytest.warns(UserWarning, match="stepping down"):
        assert fit._train_with_stepdown(run, plan(device="cpu"), None, None, (), 0.0) == "trained"
    # The failed attempt's 400 MiB are not in the peak the smaller run starts from.
    assert seen["peak_after_step_down"] < seen["spike_peak"] - 300 * MiB
    assert RunDir.open_for_resume(run.path)[1].micro_batch == 2


def test_at_micro_batch_1_nothing_smaller_is_left():
    with pytest.raises(stepdown.TrainingOOMError, match="nothing smaller"):
        stepdown.next_plan(plan(mb=1, k=16), ResourceExhaustedError("OOM"))
