"""Experiment tracking in every run folder: TensorBoard events, `train.log`, versions.

- `tensorboard_callback(run_path)`: Keras' own `TensorBoard` callback writing
  `RUN/tensorboard/{train,validation}`, one point per epoch. Keras already writes every
  value in the epoch's logs plus the optimizer's learning rate, so the trainer only has
  to put `images_per_s` and `peak_memory_bytes` into the logs before it runs
  (`callbacks.Throughput` does); no summary writer of our own (docs/runs.md).
- `EpochLog`: one line per epoch (losses, Dice, learning rate, images/s, peak memory,
  epoch time and an ETA bounded by the time limit) to the `fitplan` logger.
- `run_log(run_path)`: while training, everything the `fitplan` logger receives (and
  every `FitplanWarning`) is appended to `RUN/train.log`, flushed per line.
- `start_line(...)` and `run_summary(...)`: the first line of `train.log` and the
  summary in `metrics.json`.
- `software_versions()`: fitplan, TensorFlow, Keras, Python, CUDA/cuDNN (the versions
  TensorFlow was built with) and the device, for `metrics.json`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras

from trainer.errors import FitplanWarning
from trainer.plan import Plan
from trainer.train.callbacks import peak_memory_bytes
from trainer.train.run_dir import TENSORBOARD_DIR, TRAIN_LOG
from trainer.units import gib

LOGGER_NAME = "fitplan"

log = logging.getLogger(LOGGER_NAME)


def tensorboard_callback(run_path: str | os.PathLike) -> keras.callbacks.Callback:
    """Keras' TensorBoard callback for `RUN/tensorboard`: per-epoch scalars, nothing heavy.

    A new one per `model.fit` call: Keras closes its writers at the end of a fit, and the
    freeze and fine-tune phases are two fits (both write the same folder; TensorBoard
    joins the event files by step, which is the epoch). Without the `tensorboard`
    package (a dependency; `tf.summary.scalar` needs it since TF 2.20) a callback that
    does nothing is returned and `train.log` says why.
    """
    if importlib.util.find_spec("tensorboard") is None:
        log.warning("no TensorBoard event files: the tensorboard package is not installed")
        return keras.callbacks.Callback()
    return keras.callbacks.TensorBoard(
        log_dir=str(Path(run_path) / TENSORBOARD_DIR),
        update_freq="epoch",
        profile_batch=0,  # the profiler costs memory and time in every run
        write_graph=False,  # a graph of the U-Net is megabytes nobody reads
    )


class EpochLog(keras.callbacks.Callback):
    """One line per finished epoch to the `fitplan` logger (the console and `train.log`).

    Args:
        epochs: the plan's epochs (the last epoch number of the run).
        deadline: `time.monotonic()` value when the time limit ends, or `None`.
    """

    def __init__(self, epochs: int, deadline: float | None = None):
        super().__init__()
        self.epochs, self.deadline = epochs, deadline
        self._epoch_start = 0.0
        self._times: list[float] = []
        self._done = 0  # epochs finished, counting those before a resume or an earlier phase

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        took = time.monotonic() - self._epoch_start
        self._times.append(took)
        self._done = epoch + 1
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        log.info(epoch_line(epoch + 1, self.epochs, dict(logs or {}), lr, took, self._eta()))

    def _eta(self) -> tuple[float, bool]:
        """Seconds left and whether the time limit (not the epochs) bounds them."""
        recent = self._times[-3:]
        left = max(0, self.epochs - self._done) * sum(recent) / len(recent)
        if self.deadline is not None:
            remaining = max(0.0, self.deadline - time.monotonic())
            if remaining < left:
                return remaining, True
        return left, False


def epoch_line(
    epoch: int, epochs: int, logs: dict[str, Any], lr: float, took: float, eta: tuple[float, bool]
) -> str:
    """The text of one epoch line: `epoch 3/20  loss 0.41  dice 0.71 ... ETA 4.2 min`."""

    def f(name: str, fmt: str) -> str:
        v = logs.get(name)
        return format(float(v), fmt) if isinstance(v, (int, float)) else "nan"

    parts = [f"epoch {epoch}/{epochs}", f"loss {f('loss', '.4f')}", f"dice {f('dice', '.3f')}"]
    if "val_loss" in logs:
        parts += [f"val_loss {f('val_loss', '.4f')}", f"val_dice {f('val_dice', '.3f')}"]
    parts += [f"lr {lr:.2e}", f"{f('images_per_s', '.1f')} img/s"]
    peak = logs.get("peak_memory_bytes")
    if isinstance(peak, (int, float)) and math.isfinite(peak):
        parts.append(f"peak {gib(int(peak))}")
    seconds, by_limit = eta
    why = "time limit" if by_limit else "if no early stop"
    parts += [f"{took:.0f}s", f"ETA {seconds / 60:.1f} min ({why})"]
    return "  ".join(parts)


@contextlib.contextmanager
def run_log(run_path: str | os.PathLike) -> Iterator[Path]:
    """Append the `fitplan` logger's lines and `FitplanWarning`s to `RUN/train.log`.

    `logging.FileHandler` flushes after every record, so a killed run keeps every
    line it printed. Yields the log file's path.
    """
    path = Path(run_path) / TRAIN_LOG
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    previous_level = log.level
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    log.addHandler(handler)
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FitplanWarning):  # to the file only; the console shows it
            handler.handle(
                log.makeRecord(log.name, logging.WARNING, filename, lineno, str(message), (), None)
            )
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield path
    finally:
        warnings.showwarning = shown
        log.removeHandler(handler)
        log.setLevel(previous_level)
        handler.close()


@contextlib.contextmanager
def print_progress(enabled: bool, stream: Any = None) -> Iterator[None]:
    """While training, print the `fitplan` logger's lines on `stream` (default stdout).

    For notebooks and scripts (`fitplan.train`); the command line has its own console.
    """
    if not enabled:
        yield
        return
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous_level = log.level
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)


def software_versions() -> dict[str, Any]:
    """What a run ran on: package versions, CUDA/cuDNN TensorFlow was built with, device."""
    import tensorflow as tf

    from trainer import __version__

    build = {}
    with contextlib.suppress(Exception):  # absent on some builds
        build = dict(tf.sysconfig.get_build_info())
    return {
        "fitplan": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "cuda": build.get("cuda_version"),
        "cudnn": build.get("cudnn_version"),
        "device": _device(tf),
    }


def _device(tf: Any) -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = []
        for gpu in gpus:
            details = {}
            with contextlib.suppress(Exception):
                details = tf.config.experimental.get_device_details(gpu)
            names.append(details.get("device_name") or gpu.name)
        return ", ".join(names)
    return f"cpu: {platform.processor() or platform.machine()} x{os.cpu_count()}"


def start_line(plan: Plan, path: Path, bundle: Any) -> str:
    """The first line of a run's log: what trains, where, at which batch, on how many pairs."""
    return (
        f"training {plan.backbone} {plan.input_size[0]}x{plan.input_size[1]} into {path}: "
        f"micro-batch {plan.micro_batch} x {plan.accumulation_steps} accumulation, "
        f"{plan.precision}, {plan.epochs} epochs, {len(bundle.train_pairs)} training and "
        f"{len(bundle.val_pairs)} validation pairs"
    )


def run_summary(
    plan: Plan,
    bundle: Any,
    state: dict[str, Any],
    throughput: Any,
    stopped_by: str,
    steps: int,
    monitor: str,
) -> dict[str, Any]:
    """`metrics.json`: how the run went (docs/runs.md), its batch settings and versions;
    the predicted peak for the run's length comes from `fit.run_prediction`."""
    history = state.get("history", [])
    best_epoch = state.get("best_epoch")
    best_row = next((r for r in history if r.get("epoch") == best_epoch), {})
    val_dices = [r["val_dice"] for r in history if "val_dice" in r]
    peak = max([peak_memory_bytes()] + [int(r.get("peak_memory_bytes", 0)) for r in history])
    return {
        "best_val_dice": best_row.get("val_dice"),
        "max_val_dice": max(val_dices) if val_dices else None,
        "best_val_iou": best_row.get("val_iou"),
        "best_epoch": best_epoch,
        "monitor": monitor,
        "best_value": state.get("best_value"),
        "epochs": int(state.get("epochs_done", 0)),
        "stopped_by": stopped_by,
        "wall_time_s": round(float(state.get("wall_time_s", 0.0)), 2),
        "images_per_s": round(throughput.images_per_s, 3),
        "peak_memory_bytes": int(peak),
        "steps_per_epoch": steps,
        "train_pairs": len(bundle.train_pairs),
        "val_pairs": len(bundle.val_pairs),
        "num_classes": bundle.num_classes,
        "mask_values": list(bundle.mask_values),  # evaluate maps masks as training did
        "micro_batch": plan.micro_batch,
        "accumulation_steps": plan.accumulation_steps,
        "effective_batch": plan.effective_batch,
        "strategy": plan.strategy,
        "replicas": plan.replicas,
        "precision": plan.precision,
        "backbone": plan.backbone,
        "input_size": list(plan.input_size),
        "adjustments": state.get("adjustments", []),
        "versions": software_versions(),
    }
