"""The search's inputs and outputs: `CandidateMeasurement`, `Evaluation`, `Choice` (plain data).

`planner.search.choose.choose` reads measurements and returns a `Choice`; `to_dict` gives the
JSON that `planner.make_plan` writes into the plan's `prediction` and `evidence`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from planner.search.candidates import Candidate
from planner.search.memory_model import MemoryLine
from planner.trials.spec import TrialResult


@dataclass(frozen=True)
class CandidateMeasurement:
    """A candidate and what its trials measured (or why it was never measured)."""

    candidate: Candidate
    trials: tuple[TrialResult, ...] = ()
    pruned_reason: str | None = None
    estimate_bytes: int | None = None
    normalization: str | None = None  # the BatchNorm mode its trials ran in


@dataclass(frozen=True)
class Evaluation:
    """One candidate's verdict: "chosen", "feasible" (ranked lower), "rejected" or "pruned"."""

    candidate: Candidate
    verdict: str
    reason: str
    micro_batch: int = 0
    accumulation_steps: int = 0
    predicted_peak_bytes: int | None = None
    step_time_s: float | None = None
    epoch_time_s: float | None = None
    epochs_possible: int | None = None
    score: float = 0.0
    line: MemoryLine | None = None
    need_bytes: int | None = None  # its smallest memory need, for BudgetError
    need_at: str = ""  # where that need comes from, e.g. "micro-batch 1"
    target_batch: int = 0  # the effective batch it accumulates to (lowered for updates)
    updates_possible: int | None = None  # optimizer updates in the time budget
    time_bound: bool = False  # the time budget, not max_epochs, limits those updates
    batch_reason: str = ""  # why the effective batch is `target_batch` (search/updates.py)
    estimated: str = ""  # not measured: where its figures came from (all its trials estimated)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("candidate", "line")}
        return {**self.candidate.to_dict(), **d, "line": self.line.to_dict() if self.line else None}


@dataclass(frozen=True)
class Choice:
    """The chosen configuration and the prediction that goes into the plan.

    Args:
        candidate: backbone, input size and precision chosen.
        micro_batch, accumulation_steps, effective_batch, normalization: plan fields
            (`normalization` from `trainer.plan.normalization_for`).
        epochs: the plan's epochs (what the time budget allows, at most `max_epochs`).
        predicted_peak_bytes: the memory line at `micro_batch` (before verification).
        budget_bytes, allowed_bytes, headroom_bytes: budget = allowed + headroom.
        step_time_s, epoch_time_s: predicted per micro-batch step and per epoch
            (validation overhead included).
        score: the objective's value (docs/planning.md).
        line: the candidate's memory line, or `None` when one size was measured.
        evaluations: every candidate's verdict and reason, the chosen one included.
        warnings: e.g. the fit's points were too close, or nothing was fast enough.
        replicas: data-parallel replicas the micro-batch is per (docs/distributed.md);
            `effective_batch` = micro_batch x replicas x accumulation_steps.
        target_batch: the effective batch accumulation aims at: the request's, or lower
            when a short time budget buys too few updates (`planner.search.updates`).
            `0`: the request's (a `Choice` made before this field).
        requested_batch: the effective batch the request aimed at (the learning rate's
            reference when `target_batch` is lower). `0`: `target_batch`.
        updates: optimizer updates the time budget buys (`None`: no time budget).
        effective_batch_reason: why the effective batch is what it is, for people.
    """

    candidate: Candidate
    micro_batch: int
    accumulation_steps: int
    effective_batch: int
    normalization: str
    epochs: int
    predicted_peak_bytes: int
    budget_bytes: int
    allowed_bytes: int
    headroom_bytes: int
    step_time_s: float
    epoch_time_s: float
    micro_batches_per_epoch: int  # train steps; optimizer updates = this / accumulation_steps
    score: float
    line: MemoryLine | None
    evaluations: tuple[Evaluation, ...]
    warnings: tuple[str, ...] = ()
    replicas: int = 1
    target_batch: int = 0
    requested_batch: int = 0
    updates: int | None = None
    effective_batch_reason: str = ""

    @property
    def lowered(self) -> bool:
        """Whether the effective batch was lowered below the request's for more updates."""
        return 0 < self.target_batch < self.requested_batch

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["candidate"] = self.candidate.to_dict()
        d["line"] = self.line.to_dict() if self.line else None
        d["evaluations"] = [e.to_dict() for e in self.evaluations]
        d["warnings"] = list(self.warnings)
        return d
