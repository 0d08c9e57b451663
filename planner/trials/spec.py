"""What a trial measures and what it reports: `TrialSpec` and `TrialResult`, plain data.

Shared by the parent (`planner.trials.trial`) and the child (`planner.trials.child`); no
TensorFlow, no processes. Both travel as JSON between the two: `to_dict`/`from_dict`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from trainer.oom import STATUSES, Status
from trainer.plan import Plan

MARKER = "@@fitplan-trial@@ "
DEFAULT_TARGET = "planner.trials.child:measure"
# Set in a child started ahead (`planner.trials.spare`): the modules it imports before
# it reads its spec, comma-separated.
PRELOAD_ENV = "FITPLAN_CHILD_PRELOAD"


@dataclass(frozen=True)
class TrialSpec:
    """One candidate and the micro-batch sizes to measure in one child.

    Args:
        backbone: encoder name, one of `trainer.plan.BACKBONES`.
        input_size: (height, width), multiples of 32.
        micro_batches: sizes to measure, in one process, ascending (sorted here).
        precision: Keras dtype policy. Defaults to `"float32"`.
        normalization: the plan's BatchNorm handling. Defaults to `"auto"`, resolved
            by the plan against the *smallest* size: one model serves all sizes.
        num_classes: classes including background. Defaults to `2` (binary).
        accumulation_steps: the optimizer's gradient accumulation; >1 adds one
            gradient-sized buffer. Defaults to `1`.
        warmup_steps: unmeasured steps per size, the first one traces. Defaults to `3`.
        measured_steps: steps whose median is the step time. Defaults to `5`.
        device: `"cpu"` (GPUs hidden from the child) or `"gpu"`.
        seed: seed for the synthetic tensors.
        target: `"module:function"` run in the child instead of the real measurement
            (fault tests). `None` (default): `planner.trials.child:measure`.
        target_args: free keyword data for `target`.
    """

    backbone: str
    input_size: tuple[int, int]
    micro_batches: tuple[int, ...]
    precision: str = "float32"
    normalization: str = "auto"
    num_classes: int = 2
    accumulation_steps: int = 1
    warmup_steps: int = 3
    measured_steps: int = 5
    device: str = "cpu"
    seed: int = 0
    target: str | None = None
    target_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        mbs = self.micro_batches
        if not mbs or not all(
            isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in mbs
        ):
            raise ValueError(
                f"`micro_batches` must be a non-empty list of integers >= 1. Received: micro_batches={mbs!r}"
            )
        object.__setattr__(self, "micro_batches", tuple(sorted(set(mbs))))
        object.__setattr__(self, "input_size", tuple(self.input_size))
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"`device` must be 'cpu' or 'gpu'. Received: device={self.device!r}")
        if self.warmup_steps < 1 or self.measured_steps < 1:
            raise ValueError(
                "`warmup_steps` and `measured_steps` must be >= 1. "
                f"Received: warmup_steps={self.warmup_steps}, measured_steps={self.measured_steps}"
            )

    def to_plan(self) -> Plan:
        """The minimal valid plan the trainer builds the model from (raises `PlanError`)."""
        return Plan.from_dict(
            {
                "version": 1,
                "backbone": self.backbone,
                "input_size": list(self.input_size),
                "micro_batch": self.micro_batches[0],
                "accumulation_steps": self.accumulation_steps,
                "precision": self.precision,
                "normalization": self.normalization,
                "weights": "none",
                "seed": self.seed,
                "data": {"path": "<synthetic>", "classes": self.num_classes},
                "target": {"device": self.device},
            }
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size)
        d["micro_batches"] = list(self.micro_batches)
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrialSpec:
        return cls(**raw)


@dataclass(frozen=True)
class TrialResult:
    """What one micro-batch size did in a child.

    Args:
        status: `"ok"`, `"oom"`, `"timeout"` or `"error"`.
        micro_batch: the size measured.
        peak_bytes: peak memory for this size alone (CPU: the child's peak RSS; GPU:
            the TF allocator's peak). For a soft OOM, the RSS when the limit was hit
            (a lower bound). `None` when not measured.
        step_time_s: median time of the measured steps after warm-up.
        trace_time_s: time of the first step at this size (it traces when `traces` > 0).
        reason: why it is not ok; empty when ok.
        traces: graph traces this size caused (counted in the child).
        child_pid: the child process that measured it.
        details: extra figures, e.g. `vmhwm_bytes`, `rss_poll_peak_bytes`,
            `peak_source`, `tf_peak_bytes`, `nvml_process_bytes`, `build_time_s`.
    """

    status: Status
    micro_batch: int
    peak_bytes: int | None = None
    step_time_s: float | None = None
    trace_time_s: float | None = None
    reason: str = ""
    traces: int = 0
    child_pid: int | None = None
    details: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(
                f"`status` must be one of {STATUSES}. Received: status={self.status!r}"
            )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrialResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})
