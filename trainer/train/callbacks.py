"""fitplan's own Keras callbacks: run-directory checkpoints, wall-time limit, throughput.

Keras' `EarlyStopping(restore_best_weights=True)` and `ReduceLROnPlateau` do the
learning-rate and stopping work; these callbacks only add what Keras lacks:
checkpoints that are atomic and bounded, and resume state that also carries those
two callbacks' counters (Keras' `BackupAndRestore` writes its files in place, so a
kill during a write can tear them; here every write is a rename).
"""

from __future__ import annotations

import math
import time
from typing import Any

import keras

from trainer.train.memory import gpu_peak_bytes, peak_rss_bytes, release_free_heap
from trainer.train.run_dir import RunDir

_COUNTERS = ("wait", "best", "cooldown_counter", "stopped_epoch")


def callback_counters(cb: keras.callbacks.Callback) -> dict[str, float]:
    """The resumable counters of an EarlyStopping / ReduceLROnPlateau callback."""
    out = {}
    for name in _COUNTERS:
        v = getattr(cb, name, None)
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[name] = float(v)
    return out


def restore_counters(cb: keras.callbacks.Callback, counters: dict[str, float] | None) -> None:
    """Put counters saved by `callback_counters` back (after Keras' on_train_begin reset)."""
    for name, value in (counters or {}).items():
        if hasattr(cb, name):
            setattr(cb, name, int(value) if name != "best" else value)


class RunCheckpointer(keras.callbacks.Callback):
    """After each epoch: best and last weights, history and resume state, atomically.

    Args:
        run: the run directory.
        monitor: the logged value that decides "best" (e.g. `"val_loss"`).
        mode: `"min"` or `"max"`.
        keep_last: write `last-eNNNN.weights.h5` for resume. `False`: best only.
        max_bytes: bound on all checkpoint bytes, or `None`.
        state: the resume state to continue from (best value, history, counters).
        watched: callbacks whose counters go into the resume state, by name.
        phase: freeze/fine-tune phase recorded in the state.
    """

    def __init__(
        self,
        run: RunDir,
        monitor: str,
        mode: str,
        keep_last: bool,
        max_bytes: int | None,
        state: dict[str, Any],
        watched: dict[str, keras.callbacks.Callback],
        phase: str,
    ):
        super().__init__()
        self.run, self.monitor, self.mode = run, monitor, mode
        self.keep_last, self.max_bytes = keep_last, max_bytes
        self.state, self.watched, self.phase = state, watched, phase

    def _improved(self, value: float) -> bool:
        best = self.state.get("best_value")
        if best is None:
            return True
        return value < best if self.mode == "min" else value > best

    def on_train_begin(self, logs=None):
        for name, cb in self.watched.items():
            restore_counters(cb, self.state.get("counters", {}).get(f"{self.phase}:{name}"))

    def on_epoch_end(self, epoch: int, logs=None):
        logs = dict(logs or {})
        value = logs.get(self.monitor)
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row["phase_frozen"] = 1.0 if self.phase == "frozen" else 0.0
        history = self.state.setdefault("history", [])
        history.append(row)
        if value is not None and math.isfinite(float(value)) and self._improved(float(value)):
            self.state["best_value"], self.state["best_epoch"] = float(value), epoch + 1
            # Under a new name: best.weights.h5 changes only once state.json says so.
            target = self.run.next_best_path(epoch + 1)
            self.run.save_weights(self.model, target, self.max_bytes, self._bytes_except("best"))
            self.state["best_pending"] = target.name
        self.state["epochs_done"] = epoch + 1
        self.state["phase"] = self.phase
        if self.keep_last:
            target = self.run.last_path(epoch + 1)
            self.run.save_weights(self.model, target, self.max_bytes, self._bytes_except("last"))
            self.state["last_weights"] = target.name
        counters = self.state.setdefault("counters", {})
        for name, cb in self.watched.items():
            counters[f"{self.phase}:{name}"] = callback_counters(cb)
        self.run.commit_state(self.state, history)

    def _bytes_except(self, which: str) -> int:
        if which == "best":
            files = self.run.path.glob("last-e*.weights.h5") if self.keep_last else []
            return sum(p.stat().st_size for p in files)
        # A new best written this epoch replaces the old one at the commit: count the new.
        files = [*self.run.path.glob("best-next-e*.weights.h5"), self.run.best_path]
        best = next((p for p in files if p.exists()), None)
        return best.stat().st_size if best is not None else 0


class TimeLimit(keras.callbacks.Callback):
    """Stop so that the run, its last validation pass and checkpoint included, ends by the deadline.

    Keras still validates and ends the epoch after `stop_training` is set (so the best
    weights stay consistent), and that takes time: stopping only once the deadline has
    passed ended a 10-minute `train --auto` 15 s late (2.4%, one validation pass and a
    checkpoint). So the callback keeps a reserve before the deadline (`reserve_seconds`:
    one validation pass and the epoch's tail, as last measured) and, at each optimizer
    update's end (every `accumulation_steps` micro-batches: an update is never cut in
    half), stops when the next update would end inside it. Past the deadline itself it
    stops after any micro-batch. Keras has no callback for this
    (`keras.callbacks.BackupAndRestore`/`EarlyStopping` do not read a clock).

    Args:
        deadline: `clock()` value at which the time budget ends, or `None` (never stop).
        accumulation_steps: micro-batches per optimizer update.
        val_batches: validation batches per pass, for the reserve before any validation
            pass has been timed (each costs at most a training step's time).
        clock: seconds, monotonic (tests pass a fake).
    """

    def __init__(
        self,
        deadline: float | None,
        *,
        accumulation_steps: int = 1,
        val_batches: int = 0,
        clock=time.monotonic,
    ):
        super().__init__()
        self.deadline = deadline
        self.k, self.val_batches, self.clock = max(1, accumulation_steps), val_batches, clock
        self.triggered = False
        self.micro_batches = 0  # seen in this process, for the update boundaries
        self.val_seconds: float | None = None  # the latest validation pass
        self.tail_seconds = 0.0  # end-of-epoch work after validation (checkpoints)
        self._step_seconds: list[float] = []
        self._t: dict[str, float] = {}

    # -- the reserve for the final validation and checkpoint ---------------------------

    def reserve_seconds(self) -> float:
        """Seconds kept free before the deadline: one validation pass plus the epoch's tail.

        Measured once a validation pass ran; before that, `val_batches` forward passes
        at the median training-step time (a training step costs about 3 forward passes,
        so this over-reserves until the first measurement).
        """
        if self.val_seconds is not None:
            return self.val_seconds + self.tail_seconds
        return self.val_batches * self._median_step()

    def _median_step(self) -> float:
        """The median of the latest training-step times (the trace excluded); 0 before any."""
        if not self._step_seconds:
            return 0.0
        steps = sorted(self._step_seconds)
        return steps[len(steps) // 2]

    def update_seconds(self) -> float:
        """One optimizer update's expected seconds: k x the median step time (0 unmeasured)."""
        return self.k * self._median_step()

    def end(self) -> float | None:
        """`clock()` value by which training steps must end (the deadline less the reserve)."""
        return None if self.deadline is None else self.deadline - self.reserve_seconds()

    def past(self) -> bool:
        """Whether to stop now: past the deadline, or the next update would end past `end`."""
        if self.deadline is None:
            return False
        now = self.clock()
        if now >= self.deadline:
            return True
        at_update_end = self.micro_batches % self.k == 0
        return at_update_end and now + self.update_seconds() > self.end()

    def _check(self):
        if self.past():
            self.triggered = True
            self.model.stop_training = True

    # -- Keras hooks ---------------------------------------------------------------

    def on_epoch_begin(self, epoch, logs=None):
        if "epoch_end" in self._t:
            self.tail_seconds = self.clock() - self._t.pop("epoch_end")

    def on_train_batch_begin(self, batch, logs=None):
        self._t["step"] = self.clock()

    def on_train_batch_end(self, batch, logs=None):
        self.micro_batches += 1
        if "step" in self._t and self.micro_batches > 1:  # the first traces the graph
            self._step_seconds = [*self._step_seconds[-49:], self.clock() - self._t.pop("step")]
        self._check()

    def on_test_begin(self, logs=None):
        self._t["test"] = self.clock()

    def on_test_end(self, logs=None):
        if "test" in self._t:
            self.val_seconds = self.clock() - self._t.pop("test")

    def on_epoch_end(self, epoch, logs=None):
        self._t["epoch_end"] = self.clock()
        self._check()


class ReleaseFreeHeap(keras.callbacks.Callback):
    """Give freed host memory back to the kernel before each validation pass and epoch end.

    Without it the resident set left after each epoch grew on a long run and the epoch
    peaks crept up with it (`trainer.train.memory`, benchmarks/creep.py).
    """

    def on_test_begin(self, logs=None):
        release_free_heap()

    def on_epoch_end(self, epoch, logs=None):
        release_free_heap()


class Throughput(keras.callbacks.Callback):
    """Training images per second (validation excluded) and the peak memory so far."""

    def __init__(self, micro_batch: int):
        super().__init__()
        self.micro_batch = micro_batch
        self.images = 0
        self.train_seconds = 0.0
        self._t0: float | None = None
        self.last_epoch_images_per_s: float | None = None
        self._epoch_images = 0
        self._epoch_seconds = 0.0
        self._skip = True

    def on_train_begin(self, logs=None):
        self._skip = True  # the first step of each fit() traces the graph (14-31 s here)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_images, self._epoch_seconds = 0, 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._skip:
            self._skip = False
        elif self._t0 is not None:
            dt = time.perf_counter() - self._t0
            self.train_seconds += dt
            self._epoch_seconds += dt
            self.images += self.micro_batch
            self._epoch_images += self.micro_batch

    def on_epoch_end(self, epoch, logs=None):
        if self._epoch_seconds > 0:
            self.last_epoch_images_per_s = self._epoch_images / self._epoch_seconds
        if logs is not None:
            logs["images_per_s"] = self.last_epoch_images_per_s or 0.0
            logs["peak_memory_bytes"] = float(peak_memory_bytes())

    @property
    def images_per_s(self) -> float:
        return self.images / self.train_seconds if self.train_seconds > 0 else 0.0


def peak_memory_bytes() -> int:
    """The allocator's peak on a GPU, else the process's peak RSS."""
    gpu = gpu_peak_bytes()
    return gpu if gpu is not None else peak_rss_bytes()


class BudgetExceeded(MemoryError):
    """The process's peak memory passed the plan's budget (treated as out of memory)."""


class MemoryGuard(keras.callbacks.Callback):
    """Treat a peak RSS above the plan's host budget as out of memory (CPU and GPU plans).

    A GPU reports its own out-of-memory errors; host RAM does not until the kernel
    kills the process (or the cgroup does), losing the epoch. Checking the peak after
    each step turns "over budget" into an error the trainer can step down from. On a
    GPU it also restarts the allocator's peak after the first step of each `fit`
    (`trainer.train.memory.reset_gpu_peak`: cuDNN autotuning is not the run's need).

    Args:
        budget_bytes: host RAM the run may use: a CPU plan's `target.budget_bytes`, a
            GPU plan's `target.host_budget_bytes`; `None` disables the check.
        tf: the `tensorflow` module (a fake in tests). Defaults to importing it.
    """

    def __init__(self, budget_bytes: int | None, tf: Any = None):
        super().__init__()
        self.budget_bytes = budget_bytes
        self._tf = tf
        self._first_step = True

    def on_train_begin(self, logs=None):
        from trainer.train.memory import reset_peak_rss

        reset_peak_rss()  # a step-down in this process must not see the old peak
        self._first_step = True

    def on_train_batch_end(self, batch, logs=None):
        if self._first_step:
            from trainer.train.memory import reset_gpu_peak

            self._first_step = False
            reset_gpu_peak(tf=self._tf)
        if self.budget_bytes is None:
            return
        peak = peak_rss_bytes()
        if peak > self.budget_bytes:
            raise BudgetExceeded(
                f"peak memory {peak / 2**30:.2f} GiB passed the plan's memory budget "
                f"{self.budget_bytes / 2**30:.2f} GiB"
            )


class WallClock(keras.callbacks.Callback):
    """Keeps `state["wall_time_s"]` current so a resumed run's time limit counts both parts."""

    def __init__(self, state: dict[str, Any], t0: float):
        super().__init__()
        self.state, self.t0 = state, t0

    def on_epoch_end(self, epoch, logs=None):
        self.state["wall_time_s"] = time.monotonic() - self.t0
