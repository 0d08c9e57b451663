"""Runs that are killed, interrupted, starved of disk or of memory (docs/reliability.md, Runs).

One run is killed by SIGKILL in the middle of a checkpoint write (a real child whose
writer stalls half-way), then resumed into a full disk (an injected ENOSPC), then
resumed to the end: three faults on one run, and nothing of it is lost. Ctrl-C goes
to a real `fitplan train` child. kill -9 during an epoch and the out-of-memory
step-down are tests/trainer/test_fit.py's.
"""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest

from tests.faults.common import (
    assert_run_intact,
    cli,
    epochs_done,
    fitplan_child,
    h5_opens,
    plan_dict,
    same_tensors,
    wait_for,
    write_plan,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from planner.app.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("runs") / "data", n=6, size=(64, 64), seed=1)


@pytest.fixture(scope="module")
def killed_mid_write(data, tmp_path_factory) -> tuple[Path, Path]:
    """A 3-epoch run killed by SIGKILL while it wrote its epoch-2 resume checkpoint."""
    root = tmp_path_factory.mktemp("killed")
    plan = write_plan(root / "plan.json", plan_dict(data, epochs=3))
    run, marker = root / "run", root / "writing"
    child = fitplan_child(
        marker, "last-e0002", "train", "--plan", plan, "--out", run,
        module="tests.faults.slow_writer",
    )  # fmt: skip
    try:
        wait_for(child, marker.exists)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    return run, Path(marker.read_text())


def test_kill_9_during_a_checkpoint_write_leaves_the_last_good_state(killed_mid_write):
    run, torn = killed_mid_write
    assert torn.exists() and not h5_opens(torn)  # the fault was real: a half-written file
    assert torn.name.startswith(".")  # ...under a temporary name, never the real one
    state = json.loads((run / "state.json").read_text())
    assert state["epochs_done"] == 1 and state["last_weights"] == "last-e0001.weights.h5"
    assert h5_opens(run / "best.weights.h5") and h5_opens(run / "last-e0001.weights.h5")
    assert not (run / "last-e0002.weights.h5").exists()
    # The best file is epoch 1's, as state.json says, even when epoch 2 wrote a better one
    # (best-next-e0002, a leftover that resume deletes) before the kill.
    assert state["best_epoch"] == 1
    assert same_tensors(run / "best.weights.h5", run / "last-e0001.weights.h5")


def test_disk_full_during_a_checkpoint_write_exits_8_and_keeps_the_previous_one(
    killed_mid_write, monkeypatch
):
    run, _ = killed_mid_write
    original = os.posix_fallocate  # a checkpoint's space is reserved here (run_dir)

    def full_disk(fd, offset, length):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "last-e0002" in name:
            os.write(fd, b"\0" * 4096)  # what got written before the disk filled
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
        return original(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", full_disk)
    result = cli("train", "--resume", run)
    assert result.exit_code == 8, result.output
    assert "last-e0002.weights.h5: disk full while writing; the previous version was kept" in (
        result.stderr
    )
    state = assert_run_intact(run)  # resume also removed the torn file of the kill
    assert state["epochs_done"] == 1 and state["last_weights"] == "last-e0001.weights.h5"


def test_resume_after_the_kill_and_the_full_disk_finishes_with_nothing_torn(killed_mid_write):
    from trainer.train.run_dir import read_history

    run, _ = killed_mid_write
    result = cli("train", "--resume", run, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs"] == 3
    assert [r["epoch"] for r in read_history(run / "history.csv")] == [1, 2, 3]
    state = assert_run_intact(run)
    assert state["last_weights"] == "last-e0003.weights.h5"
    assert sorted(p.name for p in run.glob("*.h5")) == ["best.weights.h5", "last-e0003.weights.h5"]


def test_ctrl_c_exits_130_with_the_best_weights_and_a_resumable_state(data, tmp_path):
    from trainer.train.run_dir import RunDir

    plan = write_plan(tmp_path / "plan.json", plan_dict(data, epochs=50, steps_per_epoch=4))
    run = tmp_path / "run"
    child = fitplan_child("train", "--plan", plan, "--out", run)
    try:
        wait_for(child, lambda: epochs_done(run) >= 1)
        os.killpg(child.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(30)
    assert child.returncode == 130, err[-3000:]
    assert "interrupted" in err and "Traceback" not in err
    state = assert_run_intact(run)
    assert 1 <= state["epochs_done"] < 50 and state["best_epoch"] >= 1
    _, _, resumable = RunDir.open_for_resume(run)
    assert resumable["epochs_done"] == state["epochs_done"]


def test_ctrl_c_before_the_first_epoch_ends_leaves_no_run_folder(data, tmp_path, monkeypatch):
    import keras

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "fit", interrupted)
    plan = write_plan(tmp_path / "plan.json", plan_dict(data))
    result = cli("train", "--plan", plan, "--out", tmp_path / "run")
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert not (tmp_path / "run").exists()


def test_out_of_memory_at_micro_batch_1_exits_10_after_stepping_down(data, tmp_path, monkeypatch):
    import keras
    import tensorflow as tf

    tried = []

    def out_of_memory(self, *args, **kwargs):
        tried.append(self.input_shape)
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

    monkeypatch.setattr(keras.Model, "fit", out_of_memory)
    plan = write_plan(tmp_path / "plan.json", plan_dict(data, micro_batch=2))
    result = cli("train", "--plan", plan, "--out", tmp_path / "run")
    assert result.exit_code == 10, result.output
    assert "out of memory at micro_batch=1" in result.stderr
    assert "stepping down" in result.stderr and len(tried) == 2  # 2, then 1, then gave up
    assert not (tmp_path / "run").exists()
