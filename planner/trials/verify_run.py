"""The verification run: a short real training run of the plan, measured (child side).

A trial measures the train step alone, on synthetic tensors. Before a plan is written,
one child runs the plan the way `fitplan train` will: `trainer.train.fit.train` on the
real files through the real `tf.data` pipeline (decode, crop, augment; streamed), at the
plan's micro-batch, accumulation, precision and BatchNorm mode, for `updates` optimizer
updates, then one validation pass over the real validation split (tiled as in training,
at most `validation_batches` batches: the peak depends on the batch, not on how many),
then a checkpoint write. Its peak is the whole process's (CPU: peak RSS since the child
started, TensorFlow and the model included, as `fitplan train` holds them; GPU: the
allocator's peak, with the host peak beside it). `planner.verified_choice` runs it as
the target of a trial child (`spec.target_args`: `plan`, `updates`,
`validation_batches`); an out-of-memory error or a soft-OOM kill is reported as
`oom`, because the run is told not to step down itself.

Bound: `updates` x accumulation micro-batches, at most `validation_batches` validation
batches and one checkpoint, plus TensorFlow's start-up and two traces (train and
validation); the child's timeout (`presets.VERIFY_TIMEOUT_S`) caps it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras  # this module runs only in the child (the parent names it as a target string)

from planner.trials.child import ChildContext, configure_gpu
from planner.trials.spec import TrialResult, TrialSpec
from trainer.train.memory import cpu_tensor_bytes, peak_rss_bytes, reset_cpu_tensor_peak


def run(spec: TrialSpec, ctx: ChildContext) -> None:
    """Train the plan in `spec.target_args["plan"]` briefly and report its peak."""
    t0 = time.monotonic()
    import tensorflow as tf

    from trainer.plan import Plan
    from trainer.train.fit import train
    from trainer.train.memory import gpu_peak_bytes

    args = spec.target_args
    plan = Plan.from_dict(args["plan"])
    gpu = configure_gpu(tf, spec, ctx.memory_limit_bytes)
    counter = _Counter(
        int(args["validation_batches"]),
        tensors=None if gpu else cpu_tensor_bytes,
        reset_tensors=None if gpu else reset_cpu_tensor_peak,
    )
    ctx.emit("ready", build_time_s=0.0, device=spec.device)
    ctx.start(plan.micro_batch)
    with tempfile.TemporaryDirectory(prefix="fitplan-verify-") as tmp:
        result = train(
            plan,
            Path(tmp) / "run",
            max_epochs=1,
            max_steps=int(args["updates"]),
            callbacks=[counter],
            step_down=False,
        )
        checkpoint_bytes = sum(p.stat().st_size for p in Path(tmp).rglob("*.weights.h5"))
    host = ctx.host_peak()
    counter.mark("end")
    details: dict[str, Any] = {
        **host,
        "verification_run": True,
        "micro_batches": counter.train_batches,
        "updates": counter.train_batches // plan.accumulation_steps,
        "accumulation_steps": plan.accumulation_steps,
        "validation_batches": counter.val_batches,
        "checkpoint_bytes": checkpoint_bytes,
        "seconds": round(time.monotonic() - t0, 2),
        "phases_s": counter.phases(t0),
        "phase_peak_bytes": counter.phase_peaks(),
        "train_step_s": [round(t, 4) for t in counter.step_times],
        # the resident set where every run records it (trainer.train.fit.run_prediction)
        "start_rss_bytes": result.metrics.get("start_rss_bytes"),
    }
    if counter.tensor_peaks:
        details["tensor_step_peak_bytes"] = counter.tensor_peaks
    peak = host["peak_bytes"]
    if gpu:
        peak = gpu_peak_bytes() or 0
        details.update(peak_source="tf_allocator", host_peak_bytes=host["peak_bytes"])
    images_per_s = float(result.metrics.get("images_per_s") or 0.0)
    step_time = plan.micro_batch * plan.replicas / images_per_s if images_per_s else 0.0
    ctx.result(
        TrialResult(
            "ok",
            plan.micro_batch,
            peak_bytes=int(peak),
            step_time_s=step_time,
            trace_time_s=counter.first_step_s,
            traces=2 if counter.val_batches else 1,
            details=details,
        )
    )


# The mark at which each phase of the run ends, and the phase's name, in order.
_PHASE_ENDS = (
    ("train_begin", "startup"),
    ("first_step_end", "first_step"),
    ("train_end", "train_steps"),
    ("test_end", "validation"),
    ("end", "checkpoint"),
)


class _Counter(keras.callbacks.Callback):
    """Counts training and validation batches; ends validation after `max_val` batches.

    Also notes when each phase of the run ends (`phases`), to say where its seconds go,
    and the process's peak so far at each end (`phase_peaks`, host peak RSS), to say
    which phase set the peak: the train steps, the validation pass or the checkpoint write.
    On the CPU, each train batch's peak of tensor bytes (`tensor_peaks`, TensorFlow's
    allocator, reset at each batch): with the same shapes in every step it still differs
    from step to step, and a long run's peak is the highest of many steps (docs/runs.md,
    "Where a long run's rise comes from").
    """

    def __init__(
        self,
        max_val: int,
        peak: Callable[[], int | None] = peak_rss_bytes,
        tensors: Callable[[], tuple[int, int] | None] | None = None,
        reset_tensors: Callable[[], bool] | None = None,
    ):
        super().__init__()
        self._peak = peak
        self._tensors = tensors
        self._reset_tensors = reset_tensors
        self.tensor_peaks: list[int] = []  # bytes, one per train batch (CPU only)
        self._peaks: dict[str, int | None] = {}
        self.max_val = max_val
        self.train_batches = 0
        self.step_times: list[float] = []  # each train batch's seconds, the first included
        self.val_batches = 0
        self.first_step_s = 0.0
        self._t = 0.0
        self._marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        if name not in self._marks:
            self._marks[name] = time.monotonic()
            self._peaks[name] = self._peak()

    def _update(self, name: str) -> None:
        """Move mark `name` to now (a phase whose end is its last batch's end)."""
        self._marks[name] = time.monotonic()
        self._peaks[name] = self._peak()

    def phases(self, t0: float) -> dict[str, float]:
        """Seconds of: start-up (TensorFlow, pipeline, model), the first train step (its
        trace), the other train steps, validation (its trace and batches), and the rest
        (checkpoint write, end of `train`). Phases not reached are left out."""
        out, last = {}, t0
        for mark, name in _PHASE_ENDS:
            if mark in self._marks:
                out[f"{name}_s"] = round(self._marks[mark] - last, 2)
                last = self._marks[mark]
        return out

    def phase_peaks(self) -> dict[str, int]:
        """The host peak so far (bytes) at the end of each phase reached, by the names of
        `phases`: where it rises most is the phase that set the run's peak."""
        return {
            name: int(self._peaks[mark])
            for mark, name in _PHASE_ENDS
            if self._peaks.get(mark) is not None
        }

    def on_train_begin(self, logs=None):
        self.mark("train_begin")

    def on_train_batch_begin(self, batch, logs=None):
        if self._reset_tensors is not None and not self._reset_tensors():
            self._tensors = self._reset_tensors = None  # this allocator keeps no peak
        self._t = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        self.step_times.append(time.monotonic() - self._t)
        stats = self._tensors() if self._tensors is not None else None
        if stats is not None:
            self.tensor_peaks.append(stats[1])
        if self.train_batches == 0:
            self.first_step_s = time.monotonic() - self._t
            self.mark("first_step_end")
        self.train_batches += 1
        self._update("train_end")  # the last train batch's end

    def on_test_batch_end(self, batch, logs=None):
        self.val_batches += 1
        self._update("test_end")
        if self.val_batches >= self.max_val:
            self.model.stop_evaluating = True  # Keras 3: ends this evaluation pass
