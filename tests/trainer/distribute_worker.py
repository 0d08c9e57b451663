"""One training process for tests/trainer/test_distribute.py.

Run as a child process, because `tf.config.set_logical_device_configuration` and
`MultiWorkerMirroredStrategy` must both come before TensorFlow initialises its
devices, and because each worker of a cluster is its own process:

    python -m tests.trainer.distribute_worker SPEC.json

SPEC is a JSON object:
    data: folder holding `train/` and `val/` demo sets (32x32 images)
    runs: list of {"name", "out", "plan": overrides of `base_plan`, "interrupt_after": k|null}
    result: where to write the result JSON (weights go next to it as NAME.npz)
    save_init: also write the untrained weights as init.npz (default strategy only)
    logical_cpus: split the CPU into this many logical devices first (0: leave it)

A run with `interrupt_after` stops after that many epochs (as a kill would, after the
epoch's checkpoint) and is then resumed with `trainer.train.fit.resume`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def base_plan(data: Path) -> dict[str, Any]:
    """8 training images of exactly `input_size`, no augmentation, one update per epoch.

    Every epoch is one optimizer update over all 8 images (global batch 4 x 2
    accumulation steps), and a 32x32 crop of a 32x32 image is the whole image, so the
    update is the same whatever order the shuffle (reseeded per iteration) gives.
    """
    return {
        "version": 1,
        "backbone": "unet_small",
        "input_size": [32, 32],
        "micro_batch": 4,
        "accumulation_steps": 2,
        "epochs": 3,
        "seed": 3,
        "augment": {"preset": "none"},
        # Frozen BatchNorm: training BatchNorm normalises each replica's micro-batch on
        # its own (tf.distribute does not synchronise it), so 2 replicas x 2 images and
        # one device x 4 images legitimately differ; the comparison is of the rest.
        "normalization": "frozen",
        # SGD: Adam divides each gradient by its own magnitude, so float rounding in
        # near-zero gradients (which differs with how a batch is split, on one device
        # too) moves weights by up to lr per step (docs/distributed.md).
        "optimizer": {"name": "sgd", "learning_rate": 0.02},
        "data": {"path": str(data / "train"), "val": str(data / "val"), "mask_values": [0, 255]},
    }


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    import tensorflow as tf

    if spec.get("logical_cpus"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        config = [tf.config.LogicalDeviceConfiguration()] * spec["logical_cpus"]
        tf.config.set_logical_device_configuration(cpu, config)
    import keras
    import numpy as np

    from trainer.plan import Plan
    from trainer.train.fit import resume, train

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []
            self.first = True

        def on_train_begin(self, logs=None):
            self.first = True  # each fit() traces its step function first

        def on_train_batch_begin(self, batch, logs=None):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if not self.first:
                self.times.append(time.perf_counter() - self.t0)
            self.first = False

    class Interrupt(keras.callbacks.Callback):
        def __init__(self, after: int):
            super().__init__()
            self.after = after

        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == self.after:
                raise KeyboardInterrupt  # after RunCheckpointer committed this epoch

    data = Path(spec["data"])
    results: dict[str, Any] = {}
    if spec.get("save_init"):  # the untrained weights, from the plan's seed (default strategy)
        from trainer.train.setup import build_model_for_plan

        init = build_model_for_plan(Plan.from_dict(base_plan(data)), 2, compile=False)
        np.savez(Path(spec["result"]).with_name("init.npz"), *init.get_weights())
    for run in spec["runs"]:
        raw = {**base_plan(data), **run["plan"]}
        plan = Plan.from_dict(raw)
        timer = StepTimes()
        t0 = time.monotonic()
        if run.get("interrupt_after"):
            try:
                train(plan, run["out"], callbacks=[timer, Interrupt(run["interrupt_after"])])
            except KeyboardInterrupt:
                pass
            result = resume(run["out"], callbacks=[timer])
        else:
            result = train(plan, run["out"], callbacks=[timer])
        weights = result.model.get_weights()
        np.savez(Path(spec["result"]).with_name(f"{run['name']}.npz"), *weights)
        results[run["name"]] = {
            "wall_s": time.monotonic() - t0,
            "step_times": timer.times,
            "metrics": result.metrics,
        }
    Path(spec["result"]).write_text(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
