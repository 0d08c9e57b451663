"""End-to-end training on a tiny synthetic set: run folder, bounds, limits, resume, step-down."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.plans import minimal_plan
from trainer.errors import DataError, DiskFullError, RunDirError, WeightsError
from trainer.plan import Plan, save_plan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from planner.app.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "data", n=10, size=(64, 64), seed=1)


def _plan(data_dir: Path, **over) -> Plan:
    fit = dict(accumulation_steps=2, epochs=2, steps_per_epoch=4, lr_schedule={"patience": 1})
    return minimal_plan(data_dir, data={"val_fraction": 0.3}, **{**fit, **over})


def test_train_writes_a_complete_bounded_run(tmp_path, data_dir):
    from trainer.train.fit import train
    from trainer.train.run_dir import read_history

    out = tmp_path / "run"
    result = train(_plan(data_dir), out)
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "best.weights.h5",
        "history.csv",
        "last-e0002.weights.h5",
        "metrics.json",
        "plan.json",
        "state.json",
        "tensorboard",
        "train.log",
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("best_val_dice", "epochs", "wall_time_s", "images_per_s", "peak_memory_bytes"):
        assert key in metrics, key
    assert metrics["epochs"] == 2
    assert metrics["peak_memory_bytes"] > 100 * 2**20  # TF alone is ~0.5 GiB of RSS
    assert 0.0 <= metrics["best_val_dice"] <= 1.0
    rows = read_history(out / "history.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"loss", "val_loss", "val_dice", "learning_rate"} <= set(rows[0])
    assert result.model.output_shape == (None, 32, 32, 1)


def test_checkpoint_byte_limit_refuses_and_keeps_nothing_torn(tmp_path, data_dir):
    from trainer.train.fit import train

    out = tmp_path / "run"
    with pytest.raises(DiskFullError, match="checkpoints.max_bytes"):
        train(_plan(data_dir, checkpoints={"max_bytes": 1000}), out)
    assert not list(out.glob("*.h5")) and not list(out.glob(".*tmp*"))


def test_existing_run_is_refused(tmp_path, data_dir):
    from trainer.train.fit import train

    out = tmp_path / "run"
    out.mkdir()
    (out / "plan.json").write_text("{}")
    with pytest.raises(RunDirError, match="already holds a run"):
        train(_plan(data_dir), out)


def test_bad_data_leaves_no_run_folder(tmp_path):
    from trainer.train.fit import train

    out = tmp_path / "run"
    with pytest.raises(DataError):
        train(_plan(tmp_path / "missing"), out)
    assert not out.exists()


def test_missing_imagenet_weights_fail_before_anything(tmp_path, data_dir, monkeypatch):
    from trainer.train.fit import train

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("FITPLAN_OFFLINE", "1")  # never the network (tests/trainer/test_weights.py)
    out = tmp_path / "run"
    with pytest.raises(WeightsError, match=r"\.h5"):
        train(_plan(data_dir, backbone="mobilenet_v3_small", weights="imagenet"), out)
    assert not out.exists()


def test_out_of_memory_steps_down_keeps_effective_batch_and_the_time_limit_stops_cleanly(
    tmp_path, data_dir
):
    # One training run checks both: each run costs a model build and a trace. The time
    # limit (long past after the step-down) must still stop the retried run after its
    # first epoch, with best weights.
    import keras
    import tensorflow as tf

    from trainer.plan import load_plan
    from trainer.train.fit import train

    class OOMOnce(keras.callbacks.Callback):
        fired = False

        def on_train_batch_begin(self, batch, logs=None):
            if not OOMOnce.fired:
                OOMOnce.fired = True
                raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="stepping down"):
        result = train(
            _plan(data_dir, micro_batch=4, accumulation_steps=2, epochs=50, time_limit_s=0.001),
            out,
            callbacks=[OOMOnce()],
        )
    plan = load_plan(out / "plan.json")
    assert (plan.micro_batch, plan.accumulation_steps) == (2, 4)
    assert result.metrics["effective_batch"] == 8
    assert result.metrics["adjustments"][0]["micro_batch"] == [4, 2]
    assert result.metrics["stopped_by"] == "time_limit"
    assert result.metrics["epochs"] == 1
    assert (out / "best.weights.h5").exists()


def test_freeze_then_finetune_records_both_phases_and_keep_best_writes_one_checkpoint(
    tmp_path, data_dir
):
    # One training run checks two plan fields: each run costs a model build and a trace.
    from trainer.train.fit import train
    from trainer.train.run_dir import read_history

    out = tmp_path / "run"
    train(_plan(data_dir, epochs=3, freeze_encoder_epochs=1, checkpoints={"keep": "best"}), out)
    rows = read_history(out / "history.csv")
    assert [r["phase_frozen"] for r in rows] == [1.0, 0.0, 0.0]
    assert rows[1]["learning_rate"] == pytest.approx(rows[0]["learning_rate"] * 0.1, rel=1e-5)
    assert sorted(p.name for p in out.glob("*.h5")) == ["best.weights.h5"]


def test_resume_after_kill_9_continues_from_last_epoch(tmp_path, data_dir):
    from trainer.train.fit import resume
    from trainer.train.run_dir import read_history

    plan_path = tmp_path / "plan.json"
    save_plan(_plan(data_dir, epochs=4, steps_per_epoch=8), plan_path)
    out = tmp_path / "run"
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "planner.app.cli",
            "train",
            "--plan",
            str(plan_path),
            "--out",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    state = out / "state.json"
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if state.exists() and json.loads(state.read_text())["epochs_done"] >= 1:
                break
            time.sleep(0.2)
        assert child.poll() is None, "training finished or died before it could be killed"
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
    done_before = json.loads(state.read_text())["epochs_done"]
    assert 1 <= done_before < 4
    result = resume(out)
    assert result.metrics["epochs"] == 4
    rows = read_history(out / "history.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert len(list(out.glob("last-e*.weights.h5"))) == 1
    assert not list(out.glob(".*tmp*"))


def test_host_memory_budget_is_enforced_by_stepping_down_then_refusing(tmp_path, data_dir):
    from trainer.errors import TrainingOOMError
    from trainer.train.fit import train

    out = tmp_path / "run"
    plan = _plan(data_dir, micro_batch=2, target={"device": "cpu", "budget_bytes": 50 * 2**20})
    with pytest.warns(UserWarning, match="stepping down"):
        with pytest.raises(TrainingOOMError, match="passed the plan's memory budget 0.05 GiB"):
            train(plan, out)
    assert not out.exists()  # failed before its first epoch: nothing left behind
