"""Tracking in the run folder: TensorBoard events, train.log, versions, user callbacks, ETA."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import keras
import pytest

from tests.plans import minimal_plan
from trainer.errors import FitplanError, FitplanWarning
from trainer.train import tracking, user_callbacks


def _scalar_tags(folder: Path) -> set[str]:
    from tensorflow.python.summary.summary_iterator import summary_iterator

    tags = set()
    for events in folder.glob("events.out.tfevents.*"):
        for event in summary_iterator(str(events)):
            tags |= {v.tag for v in event.summary.value}
    return tags


class _Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs: list[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)


@pytest.mark.slow
def test_a_run_folder_has_tensorboard_curves_a_log_and_versions(tmp_path):
    import tensorflow as tf

    from planner.app.demo import make_demo_dataset
    from trainer.train.fit import train

    data = make_demo_dataset(tmp_path / "data", n=6, size=(48, 48), seed=2)
    plan = minimal_plan(data, data={"val_fraction": 0.34}, epochs=2, steps_per_epoch=2)
    recorder = _Recorder()
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(plan, out, callbacks=[recorder])

    assert recorder.epochs == [0, 1]  # a user callback runs
    train_tags = _scalar_tags(out / "tensorboard" / "train")
    assert {
        "epoch_loss",
        "epoch_dice",
        "epoch_learning_rate",
        "epoch_peak_memory_bytes",
        "epoch_images_per_s",
    } <= train_tags
    assert {"epoch_loss", "epoch_dice"} <= _scalar_tags(out / "tensorboard" / "validation")
    lines = (out / "train.log").read_text().splitlines()
    assert "training unet_small 32x32 into" in lines[0]
    epoch_lines = [line for line in lines if " epoch " in line and "img/s" in line]
    assert len(epoch_lines) == 2 and "val_dice" in epoch_lines[0] and "ETA" in epoch_lines[0]
    versions = json.loads((out / "metrics.json").read_text())["versions"]
    assert versions["tensorflow"] == tf.__version__
    assert versions["keras"] == keras.__version__
    assert versions["python"].count(".") == 2 and versions["device"]
    assert {"fitplan", "cuda", "cudnn"} <= set(versions)


def test_the_eta_is_bounded_by_the_time_limit(monkeypatch):
    clock = {"t": 1000.0}
    monkeypatch.setattr(tracking.time, "monotonic", lambda: clock["t"])
    cb = tracking.EpochLog(epochs=10, deadline=1000.0 + 130.0)
    cb._times, cb._done = [60.0], 1  # one epoch of 60 s done: 9 left would be 9 min
    clock["t"] = 1070.0
    seconds, by_limit = cb._eta()
    assert (seconds, by_limit) == (60.0, True)
    unbounded = tracking.EpochLog(epochs=10, deadline=None)
    unbounded._times, unbounded._done = [60.0], 1
    assert unbounded._eta() == (540.0, False)
    from types import SimpleNamespace

    resumed = tracking.EpochLog(epochs=10, deadline=None)  # a resumed run: 7 epochs done before
    resumed.set_model(SimpleNamespace(optimizer=SimpleNamespace(learning_rate=1e-3)))
    resumed.on_epoch_begin(7)
    clock["t"] += 60.0
    resumed.on_epoch_end(7, {"loss": 0.5})  # epoch 8 of 10 took 60 s: 2 left
    assert resumed._eta() == (120.0, False)
    line = tracking.epoch_line(2, 10, {"loss": 0.5, "images_per_s": 12.0}, 1e-3, 60.0, (60.0, True))
    assert "ETA 1.0 min (time limit)" in line and "12.0 img/s" in line


def test_train_log_gets_every_line_and_warning_as_it_happens(tmp_path):
    with tracking.run_log(tmp_path) as path:
        tracking.log.info("epoch 1/2  loss 0.5 " + "x" * 200)  # no wrapping at 80 columns
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("stepping down: out of memory", FitplanWarning, stacklevel=1)
        text = path.read_text()  # flushed while the run goes on
    assert "epoch 1/2  loss 0.5 " + "x" * 200 in text
    assert "WARNING stepping down: out of memory" in text
    tracking.log.info("after the run")
    assert "after the run" not in path.read_text()
    assert not any(isinstance(h, logging.FileHandler) for h in tracking.log.handlers)


def test_user_callbacks_load_from_module_factory_specs(tmp_path, monkeypatch):
    (tmp_path / "my_callbacks_mod.py").write_text(
        "import keras\n"
        "class Mine(keras.callbacks.Callback):\n    pass\n"
        "def make():\n    return [Mine(), Mine()]\n"
        "def wrong():\n    return 3\n"
    )
    monkeypatch.chdir(tmp_path)
    made = user_callbacks.load_callbacks(["my_callbacks_mod:make", "my_callbacks_mod:Mine"])
    assert [type(c).__name__ for c in made] == ["Mine", "Mine", "Mine"]
    for spec, words in [
        ("no_colon", "MODULE:FACTORY"),
        ("no_such_module_xyz:make", "cannot import 'no_such_module_xyz'"),
        ("my_callbacks_mod:absent", "has no 'absent'"),
        ("my_callbacks_mod:wrong", "Received: int"),
    ]:
        with pytest.raises(FitplanError, match="--callbacks") as info:
            user_callbacks.load_callbacks([spec])
        assert words in str(info.value), spec
