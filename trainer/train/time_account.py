"""Where a run's wall time went, from the user's clock: `metrics.json` `time_account`.

A time budget is the user's: under `fitplan train --auto` it counts from the command's
start (the process's start time, so the interpreter and imports are in it) to its exit,
planning included (issue 15, 6). `TimeAccount` is a Keras callback that adds up what
the training loop spends on train steps (graph traces included) and on validation;
`summary` splits the rest into set-up (data pipeline and model before the first step),
end-of-epoch work (checkpoints, TensorBoard, the other callbacks) and the final part
(best weights loaded, metrics written), against the budget:

    {"budget_s": 600, "origin": "command start", "before_training_s": {"startup_s": 4.1,
     "planning_s": 58.2}, "setup_s": 21.0, "train_steps_s": 430.5, "validation_s": 61.2,
     "epoch_end_s": 9.8, "final_s": 1.3, "other_s": 0.2, "total_s": 586.3, "left_s": 13.7}

The parts add up to `total_s`; `other_s` is what falls between them (the plan's
checks and the run folder's creation).

What comes after `metrics.json` is written (the summary table, the interpreter's exit)
is not in `total_s`; `benchmarks/quality.py` times the command from outside.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import keras


class TimeAccount(keras.callbacks.Callback):
    """Adds up train-step and validation seconds over every `fit` of a run.

    Args:
        origin: `clock()` value the budget counts from.
        called_at: `clock()` value when `trainer.train.fit.train` was called.
        before_training: seconds spent before `train` was called, by name (e.g.
            `{"startup_s": 4.1, "planning_s": 58.2}` under `--auto`).
        origin_name: what `origin` is, for the record ("command start", "train call").
        clock: the time source (tests pass a fake).
    """

    def __init__(
        self,
        origin: float,
        called_at: float,
        before_training: Mapping[str, float] | None = None,
        origin_name: str = "train call",
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        self.origin, self.called_at, self.clock = origin, called_at, clock
        self.before_training = {k: float(v) for k, v in (before_training or {}).items()}
        self.origin_name = origin_name
        self.train_steps_s = 0.0
        self.validation_s = 0.0
        self.first_step: float | None = None
        self.loop_end: float | None = None
        self._batch: float | None = None
        self._test: float | None = None

    def on_train_batch_begin(self, batch, logs=None):
        self._batch = self.clock()
        if self.first_step is None:
            self.first_step = self._batch

    def on_train_batch_end(self, batch, logs=None):
        if self._batch is not None:
            self.train_steps_s += self.clock() - self._batch
            self._batch = None

    def on_test_begin(self, logs=None):
        self._test = self.clock()

    def on_test_end(self, logs=None):
        if self._test is not None:
            self.validation_s += self.clock() - self._test
            self._test = None

    def on_train_end(self, logs=None):
        self.loop_end = self.clock()  # the latest fit's end (one per phase)

    def summary(self, budget_s: float | None) -> dict[str, Any]:
        """The account at this moment (call it just before `metrics.json` is written)."""
        now = self.clock()
        first = self.first_step if self.first_step is not None else now
        loop_end = self.loop_end if self.loop_end is not None else now
        loop = max(0.0, loop_end - first)
        total = now - self.origin
        parts = {
            "setup_s": max(0.0, first - self.called_at),
            "train_steps_s": self.train_steps_s,
            "validation_s": self.validation_s,
            "epoch_end_s": max(0.0, loop - self.train_steps_s - self.validation_s),
            "final_s": max(0.0, now - loop_end),
        }
        other = total - sum(parts.values()) - sum(self.before_training.values())
        doc: dict[str, Any] = {
            "budget_s": budget_s,
            "origin": self.origin_name,
            "before_training_s": {k: round(v, 2) for k, v in self.before_training.items()},
            **{k: round(v, 2) for k, v in parts.items()},
            "other_s": round(max(0.0, other), 2),
            "total_s": round(total, 2),
        }
        if budget_s:
            doc["left_s"] = round(budget_s - total, 2)
        return doc
