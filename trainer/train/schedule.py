"""The learning-rate schedule of a run: deadline-aware with a time budget, else on plateaus.

With `time_limit_s` the run's length is fixed by the clock, not by the epochs, so the
learning rate follows the elapsed share of the time budget: a short linear warm-up
(`lr_schedule.warmup`, 3% of the budget) and then a linear decay to zero at the
deadline. Decaying linearly to zero exactly when the budget ends is what Budgeted
Training found best for a fixed budget (Li, Yumer and Ramanan, "Budgeted Training:
Rethinking Deep Neural Network Training Under Resource Constraints", ICLR 2020) and
"Straight to Zero" confirmed for AdamW (Bergsma et al., ICLR 2025). The schedule ends a
little before the deadline: the final validation and checkpoint still have to fit, and
their time is measured (the latest validation pass and end-of-epoch work).

Keras' `ReduceLROnPlateau` is the other schedule (`lr_schedule.kind` `"plateau"`), and
since stop 21 the default: `"auto"` resolves to it with or without a time limit, because
the deadline schedule did not win its A/B on this project's machines (`schedule_kind`).
The deadline schedule runs when a plan names it (`--set lr_schedule.kind=deadline`).

The learning rate is set once per optimizer update, not per micro-batch: under gradient
accumulation (`accumulation_steps` k) Keras' optimizer applies the averaged gradients at
the k-th micro-batch of a window, so the rate is set just before that micro-batch, from
the time the update is applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import keras

from trainer.plan import Plan
from trainer.train.callbacks import TimeLimit


def schedule_kind(plan: Plan) -> str:
    """`"deadline"` or `"plateau"`: the plan's `lr_schedule.kind`, with `"auto"` resolved.

    `"auto"` is plateau, with or without a time limit (stop 21): in five paired runs on
    epfl-em mitochondria at 10 minutes (about 60 and about 400 optimizer updates) the
    deadline schedule never beat it (test Dice 0.663 against 0.634 over three seeds,
    0.801 against 0.682 over two; docs/benchmarks.md, "The schedule A/B"): at the few
    epochs a CPU buys in minutes, a rate decayed to zero leaves the model still improving
    at the deadline. `"deadline"` stays available by name. A multi-worker plan stays on
    plateau in any case: each worker would read the deadline's share from its own clock,
    the replicas' learning rates would differ by a hair and their weights would drift
    apart (measured: 6e-7 after 2 epochs on two CPU workers, where they are bitwise equal
    on plateau). Plan validation refuses `"deadline"` there.
    """
    kind = getattr(plan.lr_schedule, "kind", "auto")
    if kind == "auto":
        return "plateau"
    if kind == "deadline" and not plan.time_limit_s:
        return "plateau"  # nothing to count down to (plan validation refuses this too)
    return kind


def deadline_factor(share: float, warmup: float) -> float:
    """The multiplier of the base learning rate at `share` of the schedule's time.

    Args:
        share: elapsed share of the schedule, 0 at its start, 1 at its end.
        warmup: share spent warming up linearly from 0 to 1.

    Returns:
        Linear from 0 to 1 over `[0, warmup]`, then linear from 1 to 0 at `share = 1`;
        0 from there on.
    """
    if share >= 1.0:
        return 0.0
    if share < warmup:
        return max(0.0, share / warmup)
    return (1.0 - share) / (1.0 - warmup)


class DeadlineSchedule(TimeLimit):
    """Learning rate from the elapsed share of the time budget; stops when it reaches 0.

    One instance serves a whole run (the frozen and the fine-tuning phase: the phase's
    base learning rate is set with `set_base_lr`, the clock runs on). The schedule ends
    where `TimeLimit` stops training (the deadline less one validation pass and the
    epoch's tail), so the rate reaches 0 at the last update.

    Args:
        origin: `clock()` value at which training started (the schedule's share 0).
        deadline: `clock()` value at which the time budget ends.
        base_lr: learning rate at the end of the warm-up.
        accumulation_steps: micro-batches per optimizer update.
        warmup: share of the schedule spent warming up. Defaults to `0.03`.
        val_batches: validation batches per pass, for the reserve before any validation
            pass has been timed. Defaults to `0`.
        clock: seconds, monotonic. Defaults to `time.monotonic` (tests pass a fake).
    """

    def __init__(
        self,
        origin: float,
        deadline: float,
        base_lr: float,
        accumulation_steps: int,
        *,
        warmup: float = 0.03,
        val_batches: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(
            deadline, accumulation_steps=accumulation_steps, val_batches=val_batches, clock=clock
        )
        self.origin, self.base_lr, self.warmup = origin, base_lr, warmup
        self.updates = 0

    def set_base_lr(self, lr: float) -> None:
        """The base learning rate of the phase that starts next."""
        self.base_lr = lr

    def end(self) -> float:
        """`clock()` value at which the learning rate reaches 0."""
        return max(self.origin, self.deadline - self.reserve_seconds())

    def share(self) -> float:
        """Elapsed share of the schedule, `(now - origin) / (end - origin)`."""
        span = self.end() - self.origin
        return 1.0 if span <= 0 else (self.clock() - self.origin) / span

    def learning_rate(self) -> float:
        return self.base_lr * deadline_factor(self.share(), self.warmup)

    def on_train_batch_begin(self, batch, logs=None):
        super().on_train_batch_begin(batch, logs)
        if self.micro_batches % self.k != self.k - 1:
            return  # not the micro-batch whose step applies the update
        # Keras' optimizer reads the rate when it applies the accumulated gradients, at
        # the k-th micro-batch of a window: one rate per update, at the update's time.
        self.model.optimizer.learning_rate = self.learning_rate()
        self.updates += 1

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if logs is not None:
            logs["updates"] = float(self.updates)


class ObservedEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that, in a budgeted run, records when it would stop but never stops.

    Why not stop: under a linear decay to zero most of the validation gain comes late,
    as the learning rate approaches zero (Li et al. 2020 show the budgeted schedules'
    loss dropping steeply in the decay's last part), so a plateau at the high learning
    rate of the first half says little about where the run ends. The run's length is
    the user's time budget either way, and the best epoch is kept regardless: the run
    checkpoints its best weights and loads them at the end (restore-best stays).
    `would_stop_epoch` (1-based, or `None`) records when plateau early stopping would
    have ended the run, so the choice can be measured (`benchmarks/schedule_ab.py`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.would_stop_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        before = bool(self.model.stop_training)
        super().on_epoch_end(epoch, logs)
        if self.stopped_epoch > 0:
            if self.would_stop_epoch is None:
                self.would_stop_epoch = epoch + 1
            self.stopped_epoch = 0
            self.model.stop_training = before


def deadline_schedule(
    plan: Plan, origin: float, deadline: float | None, val_batches: int
) -> DeadlineSchedule | None:
    """The run's `DeadlineSchedule`, or `None` when the plan's schedule is plateau.

    Args:
        plan: the plan (`lr_schedule`, `time_limit_s`, `accumulation_steps`).
        origin: `time.monotonic()` when training started (resume: minus the time spent).
        deadline: `time.monotonic()` when the time budget ends, or `None`.
        val_batches: validation batches per pass (0 without validation).
    """
    if deadline is None or schedule_kind(plan) != "deadline":
        return None
    return DeadlineSchedule(
        origin,
        deadline,
        0.0,  # set per phase (set_base_lr)
        plan.accumulation_steps,
        warmup=plan.lr_schedule.warmup,
        val_batches=val_batches,
    )


def stopping_callbacks(
    plan: Plan, monitor: str, mode: str, has_val: bool, budgeted: bool
) -> tuple[keras.callbacks.EarlyStopping, keras.callbacks.ReduceLROnPlateau]:
    """A phase's early stopping and plateau schedule.

    Under the deadline schedule (`budgeted`) early stopping only observes
    (`ObservedEarlyStopping`: why, there) and the `ReduceLROnPlateau` returned is not
    to be used as a callback (its counters still go into the resume state).
    """
    es_type = ObservedEarlyStopping if budgeted else keras.callbacks.EarlyStopping
    es = es_type(
        monitor=monitor,
        mode=mode,
        patience=plan.early_stopping.patience,
        min_delta=plan.early_stopping.min_delta,
        restore_best_weights=True,
    )
    sched = plan.lr_schedule
    rlrop = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss" if has_val else "loss",
        factor=sched.factor,
        patience=sched.patience,
        min_lr=sched.min_lr,
    )
    return es, rlrop
