"""What planning is asked for (`PlanRequest`) and what it found before the first trial (`PlanContext`).

`planner.make_plan.make_plan` builds a `PlanRequest` from its keyword arguments; the
stages of `planner.make_plan.plan_from_request` share one `PlanContext`, so none of them
takes more than a few arguments. Both are frozen: a stage reads them, never changes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.search import presets
from planner.search.candidates import accumulation_bytes
from planner.search.memory_model import allowed_bytes

Log = Callable[[str], None]


def quiet(_line: str) -> None:
    """The log of a caller that wants no progress lines."""


@dataclass(frozen=True)
class PlanRequest:
    """The user's question: this dataset, these budgets, these candidates.

    Args:
        data: dataset root with the image and mask folders (written into the plan as given).
        images, masks: folder names under `data`.
        val: a separate validation root, or `None`: the trainer splits `val_fraction` off.
        budget_memory: bytes the run may use; `None` (default): the probe's budget.
        budget_time_s: wall time for training; `None` (default): no limit.
        backbones, sizes, precisions: restrict the candidates; `None`: the presets.
        effective_batch: micro-batch x replicas x accumulation to reach, as the user set
            it (`--effective-batch`: kept exactly). `None` (default): the planner decides,
            from `presets.TARGET_EFFECTIVE_BATCH` (16), lower when a short time budget
            buys too few updates (`planner.search.updates`).
        devices: GPUs per worker for data-parallel training (docs/distributed.md); `None`:
            every visible GPU.
        workers: hosts of a multi-worker run (assumed to match this one).
        headroom: share of the budget kept free.
        weights: encoder weights for the plan (`none`, `imagenet`, a path).
        out: write the plan here (atomically) when given.
        count_planning_time: subtract planning time from `budget_time_s` (`train --auto`).
        trial_timeout_s: time limit of each trial child.
        use_cache: reuse and store measurements (`planner.trials.cache`); `False`: `--no-cache`.
        data_options: plan `data` fields the user set (`--classes`, `--ignore-index`,
            `--merge-rare`, `--normalize`; `planner.app.cli_labels.data_options`).
    """

    data: str | Path
    images: str = "images"
    masks: str = "masks"
    val: str | Path | None = None
    budget_memory: int | None = None
    budget_time_s: float | None = None
    backbones: Sequence[str] | None = None
    sizes: Sequence[int] | None = None
    precisions: Sequence[str] | None = None
    effective_batch: int | None = None
    devices: int | None = 1
    workers: int = 1
    headroom: float = presets.HEADROOM
    weights: str = "none"
    out: str | Path | None = None
    count_planning_time: bool = False
    trial_timeout_s: float = presets.TRIAL_TIMEOUT_S
    use_cache: bool = True
    data_options: dict[str, Any] | None = None

    @property
    def target_batch(self) -> int:
        """The effective batch to aim at: the user's, or `presets.TARGET_EFFECTIVE_BATCH`."""
        return self.effective_batch or presets.TARGET_EFFECTIVE_BATCH

    @property
    def batch_fixed(self) -> bool:
        """Whether the user set the effective batch (then it is never lowered)."""
        return self.effective_batch is not None


@dataclass(frozen=True)
class PlanContext:
    """The machine and the dataset as planning found them, and the limits derived from both.

    Args:
        request: what was asked.
        hardware: the `planner.hardware.probe` report.
        budget: the memory budget the plan is made for: `device`, `bytes`, `source`,
            `derivation` (and `replicas`, `strategy` for data parallelism), after the
            user's `budget_memory`.
        fingerprint: the `planner.scan.dataset.scan` fingerprint.
        n_train: pairs the trainer will train on (after its validation split).
        step_headroom: share of the budget a trial's train step must leave free: the
            headroom plus the training overhead (`step_headroom`).
        say: receives one line per stage.
        started: `clock()` when planning started.
        clock: seconds, monotonic; planning time and the time budget count on it.
    """

    request: PlanRequest
    hardware: dict[str, Any]
    budget: dict[str, Any]
    fingerprint: dict[str, Any]
    n_train: int
    step_headroom: float
    say: Log = quiet
    started: float = 0.0
    clock: Callable[[], float] = time.monotonic

    @property
    def device(self) -> str:
        return self.budget["device"]

    @property
    def budget_bytes(self) -> int:
        """The memory budget; also each trial child's memory limit."""
        return int(self.budget["bytes"])

    @property
    def replicas(self) -> int:
        return int(self.budget.get("replicas", 1))

    @property
    def native_hw(self) -> tuple[int, int]:
        """The images' median (height, width)."""
        return tuple(self.fingerprint["image_size"]["median"])

    @property
    def num_classes(self) -> int:
        return int(self.fingerprint["classes"])

    @property
    def step_allowed_bytes(self) -> int:
        """What a trial's train step may use: budget x (1 - `step_headroom`)."""
        return allowed_bytes(self.budget_bytes, self.step_headroom)

    def elapsed(self) -> float:
        """Seconds since planning started."""
        return self.clock() - self.started

    def time_left(self) -> float | None:
        """Training time the time budget leaves (`None`: no time budget).

        Under `count_planning_time` (`train --auto`) planning time is taken out of it.
        """
        b = self.request.budget_time_s
        if b is None:
            return None
        return b - (self.elapsed() if self.request.count_planning_time else 0.0)

    def planning_left(self) -> float | None:
        """Seconds of planning time left under `train --auto` (`presets.AUTO_PLANNING_SHARE`
        of the time budget, counted from the start of planning); `None`: no cap."""
        b = self.request.budget_time_s
        if b is None or not self.request.count_planning_time:
            return None
        return presets.AUTO_PLANNING_SHARE * b - self.elapsed()

    def verify_timeout_s(self) -> float:
        """The verification child's time limit: `presets.VERIFY_TIMEOUT_S`, bounded by the
        planning time left under `--auto`, never under `presets.VERIFY_MIN_TIMEOUT_S` (a
        verification cut short would leave no plan at all)."""
        full = max(self.request.trial_timeout_s, presets.VERIFY_TIMEOUT_S)
        left = self.planning_left()
        if left is None:
            return full
        return min(full, max(left, presets.VERIFY_MIN_TIMEOUT_S))


def overhead_estimate(
    budget: dict[str, Any], backbone: str | None = None, accumulation_steps: int = 1
) -> int:
    """What a run is estimated to hold beyond its train step, before the verification run
    measures it: `presets.TRAINING_OVERHEAD_BYTES` for the budget's device, plus, for a
    plan that accumulates, what accumulation adds to `backbone`'s train step
    (`search.candidates.accumulation_bytes`)."""
    base = presets.TRAINING_OVERHEAD_BYTES.get(budget["device"], 0)
    if backbone is None or accumulation_steps <= 1:
        return base
    return base + accumulation_bytes(budget["device"], backbone)


def step_headroom(budget: dict[str, Any], headroom: float) -> float:
    """Share of the budget a trial's train step leaves free: headroom plus training overhead.

    The trial measures the train step alone; the run also holds its pipeline,
    validation and callbacks (`presets.TRAINING_OVERHEAD_BYTES`), so the step gets
    budget x (1 - headroom) - overhead.
    """
    return min(0.95, headroom + overhead_estimate(budget) / budget["bytes"])
