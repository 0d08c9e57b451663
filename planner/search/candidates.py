"""Candidates: backbone x input size x precision, from the presets, and a cheap analytic prune.

No TensorFlow. The analytic estimate is rough on purpose (parameters x optimizer copies,
activations per pixel from a measured table, the runtime's fixed overhead): it only
removes candidates that cannot fit even at micro-batch 1, and says why. Everything it
keeps is measured by a trial before it can be chosen.

API for `planner.make_plan`:
    Candidate(backbone, input_size, precision)        .label, .to_dict()
    input_sizes(native_hw, sides=DEFAULT_SIDES) -> list[(h, w)]
    precisions_for(device, *, bf16=False) -> tuple[str, ...]
    default_candidates(native_hw, *, device, bf16, backbones, sides, precisions) -> list[Candidate]
    analytic_estimate(backbone, input_hw, micro_batch, precision, num_classes, ...) -> int
    prune(candidates, *, budget_bytes, headroom, num_classes, device) -> (kept, pruned)
    trial_spec(candidate, micro_batches=presets.TRIAL_MICRO_BATCHES, *, num_classes, device, **kw)
        -> planner.trials.trial.TrialSpec for `run_trial`
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from planner.search import presets
from planner.trials.spec import TrialSpec
from trainer.models.backbones import backbone_info
from trainer.plan import BACKBONES, PRECISIONS, SMALL_MICRO_BATCH, normalization_for


@dataclass(frozen=True, order=True)
class Candidate:
    """One configuration to measure: a child process measures its micro-batch sizes."""

    backbone: str
    input_size: tuple[int, int]
    precision: str = "float32"

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"`backbone` must be one of {BACKBONES}. Received: backbone={self.backbone!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"`precision` must be one of {PRECISIONS}. Received: precision={self.precision!r}"
            )
        object.__setattr__(self, "input_size", (int(self.input_size[0]), int(self.input_size[1])))

    @property
    def label(self) -> str:
        return f"{self.backbone} {self.input_size[0]}x{self.input_size[1]} {self.precision}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "input_size": list(self.input_size),
            "precision": self.precision,
        }


@dataclass(frozen=True)
class PrunedCandidate:
    """A candidate the analytic estimate removed, with the estimate and why."""

    candidate: Candidate
    estimate_bytes: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.candidate.to_dict(),
            "estimate_bytes": self.estimate_bytes,
            "reason": self.reason,
        }


def input_sizes(
    native_hw: tuple[int, int], sides: Sequence[int] = presets.DEFAULT_SIDES
) -> list[tuple[int, int]]:
    """Square crops of `sides` that fit in the images, ascending.

    Args:
        native_hw: the images' (height, width) after `data.image_scale`.
        sides: crop sides to try; each must be a multiple of 32. Defaults to
            `presets.DEFAULT_SIDES`.

    Returns:
        The sides not above the smaller image side; when none is, the whole image
        rounded down to multiples of 32 (at least 32x32).
    """
    bad = [s for s in sides if s < 32 or s % 32]
    if bad:
        raise ValueError(
            f"`sides` must be multiples of 32 and >= 32. Received: sides={list(sides)}"
        )
    h, w = native_hw
    fitting = sorted({s for s in sides if s <= min(h, w)})
    if fitting:
        return [(s, s) for s in fitting]
    return [(max(32, h // 32 * 32), max(32, w // 32 * 32))]


def precisions_for(device: str, *, bf16: bool = False) -> tuple[str, ...]:
    """Precision policies worth trying on `device`, preferred first (see `presets.PRECISIONS`)."""
    key = f"{device}_bf16" if bf16 else device
    if key not in presets.PRECISIONS:
        raise ValueError(f"`device` must be 'cpu' or 'gpu'. Received: device={device!r}")
    return presets.PRECISIONS[key]


def default_candidates(
    native_hw: tuple[int, int],
    *,
    device: str = "cpu",
    bf16: bool = False,
    backbones: Sequence[str] | None = None,
    sides: Sequence[int] | None = None,
    precisions: Sequence[str] | None = None,
) -> list[Candidate]:
    """The default candidate set: backbones x input sizes x precisions.

    Args:
        native_hw: the images' (height, width).
        device: `"cpu"` or `"gpu"`.
        bf16: the device runs bfloat16 fast (the hardware probe says so).
        backbones: `None` (default): `presets.DEFAULT_BACKBONES`.
        sides: `None` (default): `presets.DEFAULT_SIDES`.
        precisions: `None` (default): only the preferred policy for the device, to
            keep the number of child processes small.
    """
    bbs = tuple(backbones) if backbones is not None else presets.DEFAULT_BACKBONES
    precs = tuple(precisions) if precisions is not None else precisions_for(device, bf16=bf16)[:1]
    sizes = input_sizes(native_hw, sides if sides is not None else presets.DEFAULT_SIDES)
    return [Candidate(b, hw, p) for b in bbs for hw in sizes for p in precs]


def analytic_estimate(
    backbone: str,
    input_hw: tuple[int, int],
    micro_batch: int,
    precision: str = "float32",
    num_classes: int = 2,
    *,
    device: str = "cpu",
    accumulation_steps: int = 1,
) -> int:
    """A rough peak-memory estimate in bytes, without TensorFlow.

    Fixed runtime overhead + parameters x (weights, gradients, two Adam moments, plus
    an accumulator with accumulation) x 4 bytes + activations: a measured bytes-per-pixel
    per backbone x pixels x micro-batch, scaled for the precision, plus the output
    head's maps (logits, probabilities and their gradients) for `num_classes`.
    """
    params = backbone_info(backbone)["params"]
    copies = presets.PARAM_COPIES + (1 if accumulation_steps > 1 else 0)
    pixels = input_hw[0] * input_hw[1]
    act = presets.ACTIVATION_BYTES_PER_PIXEL[backbone] * presets.ACTIVATION_SCALE[precision]
    head = 4 * 4 * max(num_classes, 2)
    per_sample = pixels * (act + head)
    return int(
        presets.RUNTIME_OVERHEAD_BYTES[device] + params * 4 * copies + per_sample * micro_batch
    )


def accumulation_bytes(device: str, backbone: str) -> int:
    """What Keras' gradient accumulation adds to `backbone`'s train step on `device`
    (`presets.ACCUMULATION_PARAM_COPIES` float32 copies of its parameters): trials
    measure the step with accumulation 1, plans often accumulate."""
    copies = presets.ACCUMULATION_PARAM_COPIES.get(device, 1)
    return int(copies * 4 * backbone_info(backbone)["params"])


def trial_normalization(
    candidate: Candidate,
    *,
    allowed_bytes: int,
    max_micro_batch: int,
    num_classes: int = 2,
    device: str = "cpu",
    weights: str = "none",
) -> str:
    """The BatchNorm mode a candidate's trial should measure in: that of the plan it will feed.

    Training BatchNorm keeps more per sample than frozen (unet_small 256x256 at 8: 1376
    MiB vs 1102 MiB, fresh children), so the line must be fitted in the plan's mode
    (`trainer.plan.normalization_for`). From scratch that is always `"train"`. With
    pretrained weights a plan freezes BatchNorm below `SMALL_MICRO_BATCH` (8) and trains
    it from 8, while the trial's sizes (1 and 4) are both small: this asks the analytic
    estimate whether the candidate can reach 8 within `allowed_bytes` (and the cap
    `max_micro_batch` allows it): `"train"` if so, else `"frozen"`. When the choice lands
    on the other side, verification measures the chosen size in its own mode
    (`planner.make_plan`).
    """
    if normalization_for(1, weights) == "train":
        return "train"
    if max_micro_batch < SMALL_MICRO_BATCH:
        return "frozen"
    est = analytic_estimate(
        candidate.backbone,
        candidate.input_size,
        SMALL_MICRO_BATCH,
        candidate.precision,
        num_classes,
        device=device,
    )
    return "train" if est <= allowed_bytes else "frozen"


def prune(
    candidates: Sequence[Candidate],
    *,
    budget_bytes: int,
    headroom: float = presets.HEADROOM,
    num_classes: int = 2,
    device: str = "cpu",
) -> tuple[list[Candidate], list[PrunedCandidate]]:
    """Split candidates into those worth a trial and those that cannot fit at micro-batch 1.

    A candidate is pruned when its estimate at micro-batch 1 exceeds the allowed budget
    (budget x (1 - headroom)) by more than `presets.PRUNE_TOLERANCE`.
    """
    allowed = budget_bytes * (1 - headroom)
    kept: list[Candidate] = []
    pruned: list[PrunedCandidate] = []
    for c in candidates:
        est = analytic_estimate(
            c.backbone, c.input_size, 1, c.precision, num_classes, device=device
        )
        if est > allowed * presets.PRUNE_TOLERANCE:
            gib = presets.GIB
            pruned.append(
                PrunedCandidate(
                    c,
                    est,
                    f"estimated {est / gib:.2f} GiB at micro-batch 1 > allowed {allowed / gib:.2f} GiB "
                    f"x {presets.PRUNE_TOLERANCE:g} (analytic estimate, not measured)",
                )
            )
        else:
            kept.append(c)
    return kept, pruned


def trial_spec(
    candidate: Candidate,
    micro_batches: Sequence[int] = presets.TRIAL_MICRO_BATCHES,
    *,
    num_classes: int = 2,
    device: str = "cpu",
    **overrides: Any,
) -> TrialSpec:
    """The `TrialSpec` that measures `candidate` with the preset step counts.

    Args:
        candidate: what to measure.
        micro_batches: sizes for one child. Defaults to `presets.TRIAL_MICRO_BATCHES`.
        num_classes: classes including background.
        device: `"cpu"` or `"gpu"`.
        **overrides: any other `TrialSpec` field (e.g. `normalization`, `accumulation_steps`).
    """
    fields: dict[str, Any] = {
        "warmup_steps": presets.TRIAL_WARMUP_STEPS,
        "measured_steps": presets.TRIAL_MEASURED_STEPS,
        **overrides,
    }
    return TrialSpec(
        backbone=candidate.backbone,
        input_size=candidate.input_size,
        micro_batches=tuple(micro_batches),
        precision=candidate.precision,
        num_classes=num_classes,
        device=device,
        **fields,
    )
