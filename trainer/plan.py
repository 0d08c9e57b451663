"""The plan: the one contract between the planner and the trainer.

A plan is a versioned JSON document. The trainer executes it; the planner writes
it; a user may write or edit one by hand. Every field has a documented default
except the few that define the run (see docs/plan-schema.md), so this is a
complete plan:

    {"version": 1, "backbone": "mobilenet_v3_small", "input_size": [256, 256],
     "micro_batch": 4, "accumulation_steps": 2, "weights": "none",
     "data": {"path": "DATA", "masks": "mitochondria"}}

Validation names the field and echoes the received value. Unknown keys are
refused (a typo such as `micro_bacth` must not be silently ignored), except
keys starting with `x-` or `_`, which are kept as free-form notes. Each field's
rule is declared next to it (`trainer.plan_rules`); the same rules give the plan's
JSON Schema (`trainer.plan_schema`, docs/plan.schema.json).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.atomic import write_json
from trainer.errors import PlanError
from trainer.plan_rules import (
    COLOURS,
    FLAG,
    MAPPING,
    array,
    build,
    check_fields,
    choice,
    const,
    field_error,
    integer,
    number,
    parse_json,
    part,
    rule,
    rules,
    text,
    to_json,
)

PLAN_VERSION = 1

BACKBONES = (
    "unet_small",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnetv2_b0",
    "resnet50",
)
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
CACHE_MODES = ("stream", "memory")
# How images deeper than 8 bits are brought to [0, 1] (docs/data.md, Intensities).
INTENSITY_MODES = ("image", "dataset", "none")
NORMALIZATIONS = ("auto", "train", "frozen", "group")
OPTIMIZERS = ("adam", "adamw", "sgd")
STRATEGIES = ("default", "mirrored", "multi_worker")
LR_SCALINGS = ("none", "linear", "sqrt")
LR_SCHEDULES = ("auto", "plateau", "deadline")
EARLY_MONITORS = ("val_loss", "val_dice")

# The augmentation presets (docs/data.md); an AugmentSpec field that is not None overrides.
_AUGMENT_KEYS = ("hflip", "vflip", "rot90", "rotate_deg", "scale", "brightness", "contrast")
_AUGMENT_PRESETS = {
    name: dict(zip(_AUGMENT_KEYS, values, strict=True))
    for name, values in {
        "default": (True, True, True, 15.0, (0.8, 1.25), 0.15, 0.2),
        "gentle": (True, False, False, 5.0, (0.9, 1.1), 0.05, 0.05),
        "none": (False, False, False, 0.0, (1.0, 1.0), 0.0, 0.0),
    }.items()
}
AUGMENT_PRESETS = tuple(_AUGMENT_PRESETS)

# Micro-batches below this make BatchNorm statistics too noisy; "auto" freezes it.
SMALL_MICRO_BATCH = 8


def accumulation_for(micro_batch: int, effective_batch: int, replicas: int = 1) -> int:
    """Accumulation steps that reach `effective_batch` at `micro_batch` per replica."""
    return max(1, math.ceil(effective_batch / (micro_batch * replicas)))


def normalization_for(micro_batch: int, weights: str) -> str:
    """The BatchNorm mode a plan's `"auto"` means: what a plan at `micro_batch` trains with.

    - From scratch (`weights="none"`): `"train"` at every micro-batch. Frozen BatchNorm
      keeps statistics and a scale and shift that nobody learned (calibrated on noise at
      build time): from scratch it collapsed to all-background output where training
      BatchNorm learned (docs/models.md has the runs). A micro-batch of 1 still has the
      crop's pixels: at 256x256 the 1/32 bottleneck gives 64 values per channel.
    - Pretrained encoders: `"frozen"` below `SMALL_MICRO_BATCH` (8), keeping the
      encoder's ImageNet statistics (the usual fine-tuning recipe), else `"train"`.
    """
    if weights == "none":
        return "train"
    return "frozen" if micro_batch < SMALL_MICRO_BATCH else "train"


@dataclass(frozen=True)
class DataSpec:
    """Where the data is and how it is read.

    Args:
        path: dataset root (holds the image and mask folders). Relative paths are
            resolved against the current directory when training starts.
        images, masks: the image and the mask folder under `path`.
        val: a separate validation root with the same folder names, or `None`
            (default): split `val_fraction` off the training pairs by file name.
        val_fraction: share of pairs held out when `val` is `None`.
        cache: `"stream"` (default) decodes from disk every epoch, so datasets larger
            than RAM work; `"memory"` keeps the decoded pairs in RAM after epoch 1.
        classes: number of classes including background (2 = binary, one sigmoid
            output). `None` (default): `len(mask_values)`, or inferred from the masks.
        mask_values: the raw mask values of class 0, 1, ... in order (e.g. `[0, 255]`).
            Each mask pixel becomes the class of the nearest listed value, so a thin
            fringe of resampled grey levels is thresholded, not a class of its own.
            `None` (default): inferred from a sample of masks at start-up.
        image_scale: resize factor applied to every image and mask before cropping
            (e.g. `0.5` for photos far larger than the objects need); `1.0`: native
            resolution.
        crops_per_image: random crops drawn from each training image per epoch.
            `None` (default): the image's area over the crop's area, rounded, at least 1,
            so that an epoch covers about every pixel once.
        fingerprint: the scan digest the plan was made for, or `None`.
        class_names: a name per class, aligned with `mask_values` (e.g.
            `["background", "mito"]`); `None` (default): `class 0`, `class 1`, ...
        ignore_index: the raw mask value whose pixels are left out of the loss and the
            metrics (Pascal VOC's 255 border). `None` (default): 255 when the masks hold
            255 and at least two other values, all below 64 (`trainer.data.masks.
            default_ignore_index`); `-1`: no ignore index. Inside the pipeline such
            pixels keep the value `ignore_index` in the class-index mask.
        merge_rare: map mask values holding under 0.05% of the pixels to the nearest
            class (`True`). `False` (default): a rare value on a label grid (index
            masks) stays a class of its own, and `fitplan scan` names it; only the
            in-between levels of widely spaced values (0/255 resampling fringe) go to
            the nearest class.
        normalization: how images deeper than 8 bits become [0, 1]: `"image"`
            (default) stretches each image's 0.5th..99.5th percentile, `"dataset"`
            uses `intensity_range` for every image, `"none"` divides by 65535. 8-bit
            images are always divided by 255.
        intensity_range: `[low, high]` raw values for `normalization="dataset"`
            (`fitplan scan` measures the dataset's 0.5th and 99.5th percentile);
            `None`: measured from up to 32 training images at start-up.
        palette: colour masks: the colour of class 0, 1, ... as `"#rrggbb"`; each mask
            pixel becomes the class of the nearest colour. `None` (default): colour
            masks are refused (indexed PNGs give their palette index anyway).
    """

    path: str = rule(text("a non-empty path string"))
    images: str = rule(text("a non-empty folder name"), default="images")
    masks: str = rule(text("a non-empty folder name"), default="masks")
    val: str | None = rule(text("a path string or null"), default=None)
    val_fraction: float = rule(number(0, 1, open_high=True), default=0.2)
    cache: str = rule(choice(CACHE_MODES), default="stream")
    classes: int | None = rule(integer(2), default=None)
    mask_values: tuple[int, ...] | None = rule(
        array(
            integer(0),
            "a sorted list of at least 2 distinct integers >= 0",
            size=(2, None),
            unique=True,
            ordered=True,
        ),
        default=None,
    )
    image_scale: float = rule(number(0, 4, open_low=True), default=1.0)
    crops_per_image: int | None = rule(integer(1), default=None)
    fingerprint: str | None = rule(text("a non-empty string or null"), default=None)
    class_names: tuple[str, ...] | None = rule(
        array(text("a name"), "a list of at least 2 non-empty names", size=(2, None)),
        default=None,
    )
    ignore_index: int | None = rule(integer(-1), default=None)
    merge_rare: bool = rule(FLAG, default=False)
    normalization: str = rule(choice(INTENSITY_MODES), default="image")
    intensity_range: tuple[float, float] | None = rule(
        array(number(0), "two numbers [low, high], low < high", size=(2, 2), ordered=True),
        default=None,
    )
    palette: tuple[str, ...] | None = rule(COLOURS, default=None)

    @property
    def num_classes(self) -> int | None:
        """Classes including background, from `classes` or `mask_values`; `None` if unknown."""
        if self.classes is not None:
            return self.classes
        return len(self.mask_values) if self.mask_values is not None else None


def _check_labels(data: DataSpec) -> None:
    """Class names, palette and ignore value agree with the class count and values."""
    k = data.num_classes
    if data.palette is not None and k is not None and len(data.palette) != k:
        raise field_error("data.palette", f"one colour per class ({k})", list(data.palette))
    if data.class_names is not None and k is not None and len(data.class_names) != k:
        raise field_error("data.class_names", f"one name per class ({k})", list(data.class_names))
    if data.mask_values is not None and data.ignore_index in data.mask_values:
        expected = "a raw value that is not one of data.mask_values"
        raise field_error("data.ignore_index", expected, data.ignore_index)
    if data.intensity_range is not None and not data.intensity_range[0] < data.intensity_range[1]:
        raise field_error("data.intensity_range", "[low, high] with low < high", None)


@dataclass(frozen=True)
class OptimizerSpec:
    """The optimizer.

    Args:
        name: `"adam"` (default), `"adamw"` or `"sgd"` (momentum 0.9).
        learning_rate: initial learning rate for the effective batch, or for
            `reference_batch` when `lr_scaling` is not `"none"`.
        weight_decay: decoupled weight decay (adamw only).
        clipnorm: gradient-norm clipping, or `None` (default): no clipping.
        lr_scaling: how the learning rate follows the effective batch
            (docs/distributed.md): `"none"` (default: used as written), `"linear"`
            (x effective_batch / reference_batch) or `"sqrt"` (x its square root).
        reference_batch: the effective batch `learning_rate` was chosen for; required
            when `lr_scaling` is not `"none"`.
    """

    name: str = rule(choice(OPTIMIZERS), default="adam")
    learning_rate: float = rule(number(0, open_low=True), default=1e-3)
    weight_decay: float = rule(number(0), default=1e-4)
    clipnorm: float | None = rule(number(0, open_low=True), default=None)
    lr_scaling: str = rule(choice(LR_SCALINGS), default="none")
    reference_batch: int | None = rule(integer(1), default=None)


@dataclass(frozen=True)
class LRScheduleSpec:
    """The learning-rate schedule (`trainer.train.schedule`).

    Args:
        kind: `"auto"` (default): `"plateau"`, with or without `time_limit_s` (the
            deadline schedule lost the A/B, docs/benchmarks.md). `"deadline"`, by name
            only and with a time limit: linear warm-up over `warmup` of the time budget,
            then linear decay to zero at the deadline (less the measured time of the
            final validation and checkpoint); early stopping then never ends the run
            (the best epoch is still kept). `"plateau"`: ReduceLROnPlateau on the
            validation loss with `factor`, `patience` and `min_lr`.
        warmup: share of the time budget spent warming up (deadline schedule).
        factor: multiply the learning rate by this on a plateau.
        patience: epochs without improvement before reducing.
        min_lr: lower bound.
    """

    kind: str = rule(choice(LR_SCHEDULES), default="auto")
    warmup: float = rule(number(0, 0.5, open_high=True), default=0.03)

    factor: float = rule(number(0, 1, open_low=True, open_high=True), default=0.5)
    patience: int = rule(integer(0), default=3)
    min_lr: float = rule(number(0), default=1e-6)


@dataclass(frozen=True)
class EarlyStoppingSpec:
    """Early stopping; the best weights are always restored at the end.

    Args:
        monitor: `"val_loss"` (default) or `"val_dice"`.
        patience: epochs without improvement before stopping.
        min_delta: smallest change that counts as improvement.
    """

    monitor: str = rule(choice(EARLY_MONITORS), default="val_loss")
    patience: int = rule(integer(0), default=8)
    min_delta: float = rule(number(0), default=1e-4)


@dataclass(frozen=True)
class AugmentSpec:
    """Paired augmentation: geometric transforms hit image and mask alike.

    Args:
        preset: `"default"`, `"gentle"` (medical images: small rotations, no
            vertical flips, mild brightness) or `"none"`. The explicit fields below
            override the preset when not `None`.
        hflip, vflip, rot90: random flips and quarter turns.
        rotate_deg: maximum small rotation in degrees.
        scale: (min, max) random zoom: the crop taken is `input_size / zoom` pixels
            (at `data.image_scale`) and resized to `input_size`.
        brightness: maximum additive brightness change (image in [0, 1]).
        contrast: maximum relative contrast change.
    """

    preset: str = rule(choice(AUGMENT_PRESETS), default="default")
    hflip: bool | None = rule(FLAG, default=None)
    vflip: bool | None = rule(FLAG, default=None)
    rot90: bool | None = rule(FLAG, default=None)
    rotate_deg: float | None = rule(number(0), default=None)
    scale: tuple[float, float] | None = rule(
        array(
            number(0.25, 4),
            "[min, max] with 0.25 <= min <= max <= 4",
            size=(2, 2),
            ordered=True,
        ),
        default=None,
    )
    brightness: float | None = rule(number(0), default=None)
    contrast: float | None = rule(number(0), default=None)

    def resolved(self) -> dict[str, Any]:
        """The effective settings: the preset's values overridden by explicit fields."""
        out = dict(_AUGMENT_PRESETS[self.preset])
        for key in out:
            v = getattr(self, key)
            if v is not None:
                out[key] = tuple(v) if key == "scale" else v
        return out


@dataclass(frozen=True)
class CheckpointSpec:
    """How many weights files a run keeps.

    Args:
        keep: `"best_and_last"` (default: two files; the last one also lets a
            killed run resume) or `"best"` (one file; resume then restarts from
            the best epoch).
        max_bytes: refuse to write checkpoints that would exceed this many bytes
            in total, or `None` (default): no limit.
    """

    keep: str = rule(choice(("best_and_last", "best")), default="best_and_last")
    max_bytes: int | None = rule(integer(1), default=None)


@dataclass(frozen=True)
class TargetSpec:
    """What the plan was made for (written by the planner; informational for the trainer).

    Args:
        device: `"cpu"` or `"gpu"`.
        device_name: human-readable device name.
        budget_bytes: the memory budget the plan was fitted to.
        budget_source: where the budget came from (`"probe"` or `"user"`).
        device_uuids: the GPUs' UUIDs (`GPU-...`, or `MIG-...` for a MIG instance),
            one per local replica; trial children and training see only these
            (docs/gpu.md). `None` on a CPU.
        device_memory_bytes: the (first) GPU's total memory, for the record.
        host_budget_bytes: host RAM a GPU plan may use (tf.data pipeline, in-RAM
            cache, the process); the trainer's memory guard holds the run to it.
            `None`: CPU plans (`budget_bytes` is host RAM) and older plans.
    """

    device: str = rule(choice(("cpu", "gpu")), default="cpu")
    device_name: str | None = rule(text("a non-empty string or null"), default=None)
    budget_bytes: int | None = rule(integer(1), default=None)
    budget_source: str | None = rule(text("a non-empty string or null"), default=None)
    device_uuids: tuple[str, ...] | None = rule(
        array(text("a device UUID"), "a list of device UUIDs or null", size=(1, None), unique=True),
        default=None,
    )
    device_memory_bytes: int | None = rule(integer(1), default=None)
    host_budget_bytes: int | None = rule(integer(1), default=None)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A complete training plan. See docs/plan-schema.md for every field.

    Args:
        version: the plan format, always `1`.
        backbone: encoder of the U-Net, one of `BACKBONES`.
        input_size: (height, width) the model trains at, multiples of 32.
        micro_batch: images per forward/backward pass (per replica).
        accumulation_steps: micro-batches per optimizer update (`1`: no accumulation).
            Effective batch = micro_batch x replicas x this.
        precision: Keras dtype policy.
        weights: encoder weights: `"none"` (default), `"imagenet"` (from the local
            Keras cache; never downloaded during training) or a path to a
            `.weights.h5`/`.h5` file.
        data: see `DataSpec`.
        normalization: BatchNorm handling: `"auto"` (default: `normalization_for`:
            trained from scratch; with pretrained weights frozen when micro_batch < 8,
            else trained), `"train"`, `"frozen"` or `"group"`.
        optimizer, lr_schedule, early_stopping, augment, checkpoints: see their specs.
        epochs: maximum epochs.
        freeze_encoder_epochs: epochs with the encoder frozen before fine-tuning.
            Only meaningful with pretrained weights.
        finetune_lr_factor: learning rate multiplier when the encoder is unfrozen.
        steps_per_epoch: cap on optimizer updates per epoch (each update is
            `accumulation_steps` micro-batches), or `None` (default): one pass of
            `data.crops_per_image` crops over the training pairs.
        time_limit_s: wall-time limit for training, checked after every training
            step: the step that crosses it is the last, the shortened epoch is still
            validated, and the best weights are kept. `None` (default): no limit.
        seed: random seed for shuffling, augmentation and initialisation.
        strategy: `"default"` (one device), `"mirrored"` or `"multi_worker"`.
        replicas: number of replicas the micro-batch is per.
        target: see `TargetSpec`.
        prediction: the planner's prediction (peak memory, step time, ...), carried along.
        evidence: the planner's candidates and trials, carried along.
        notes: free-form keys (`x-...`, `_...`) kept as they were.
    """

    # Declared in the order a plan file lists them (`to_dict`); `version` is checked first.
    version: int = rule(
        const(PLAN_VERSION, hint="this fitplan reads version 1 plans; re-run `fitplan plan`"),
        default=PLAN_VERSION,
    )
    backbone: str = rule(choice(BACKBONES))
    input_size: tuple[int, int] = rule(
        array(
            integer(32, multiple_of=32),
            "[height, width], each a multiple of 32 and >= 32",
            size=(2, 2),
        )
    )
    micro_batch: int = rule(integer(1))
    accumulation_steps: int = rule(integer(1), default=1)
    precision: str = rule(choice(PRECISIONS), default="float32")
    weights: str = rule(text("'none', 'imagenet' or a path to a weights file"), default="none")
    data: DataSpec = part(DataSpec, required=True)
    normalization: str = rule(choice(NORMALIZATIONS), default="auto")
    optimizer: OptimizerSpec = part(OptimizerSpec)
    lr_schedule: LRScheduleSpec = part(LRScheduleSpec)
    early_stopping: EarlyStoppingSpec = part(EarlyStoppingSpec)
    augment: AugmentSpec = part(AugmentSpec)
    checkpoints: CheckpointSpec = part(CheckpointSpec)
    epochs: int = rule(integer(1), default=50)
    freeze_encoder_epochs: int = rule(integer(0), default=0)
    finetune_lr_factor: float = rule(number(0, 1, open_low=True), default=0.1)
    steps_per_epoch: int | None = rule(integer(1), default=None)
    time_limit_s: float | None = rule(number(0, open_low=True), default=None)
    seed: int = rule(integer(0), default=0)
    strategy: str = rule(choice(STRATEGIES), default="default")
    replicas: int = rule(integer(1), default=1)
    target: TargetSpec = part(TargetSpec)
    prediction: dict[str, Any] | None = rule(MAPPING, default=None)
    evidence: dict[str, Any] | None = rule(MAPPING, default=None)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def effective_batch(self) -> int:
        return self.micro_batch * self.replicas * self.accumulation_steps

    @property
    def resolved_normalization(self) -> str:
        if self.normalization != "auto":
            return self.normalization
        return normalization_for(self.micro_batch, self.weights)

    def validate(self) -> Plan:
        """Raise `PlanError` naming the first invalid field; return self."""
        check_fields(self)
        _check_combinations(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        out = {name: to_json(getattr(self, name)) for name in rules(Plan)}
        out.update(self.notes)
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> Plan:
        """Build and validate a plan from parsed JSON; raise `PlanError` naming the field."""
        if not isinstance(raw, dict):
            raise PlanError(f"a plan must be a JSON object. Received: {type(raw).__name__}")
        if "version" not in raw:
            raise PlanError("plan field `version` is missing", hint='add "version": 1')
        notes = {k: v for k, v in raw.items() if k.startswith(("x-", "_"))}
        kwargs = build(cls, {k: v for k, v in raw.items() if k not in notes})
        return cls(**kwargs, notes=notes).validate()

    def replace(self, **changes: Any) -> Plan:
        """A copy with `changes` applied (nested specs as dataclasses), validated."""
        return dataclasses.replace(self, **changes).validate()


def _check_combinations(plan: Plan) -> None:
    """The rules that tie fields together; each field on its own has passed its rule."""
    data, opt = plan.data, plan.optimizer
    if None not in (data.mask_values, data.classes) and data.classes != len(data.mask_values):
        expected = f"len(data.mask_values) = {len(data.mask_values)}"
        raise field_error("data.classes", expected, data.classes)
    _check_labels(data)
    if opt.lr_scaling != "none" and opt.reference_batch is None:
        expected = f"an integer >= 1 when optimizer.lr_scaling is {opt.lr_scaling!r}"
        raise field_error("optimizer.reference_batch", expected, None)
    if plan.strategy == "default" and plan.replicas != 1:
        raise field_error("replicas", "1 when strategy is 'default'", plan.replicas)
    if plan.lr_schedule.kind == "deadline" and plan.time_limit_s is None:
        expected = "'auto' or 'plateau' without time_limit_s (a deadline needs a time limit)"
        raise field_error("lr_schedule.kind", expected, "deadline")
    if plan.lr_schedule.kind == "deadline" and plan.strategy == "multi_worker":
        # Each worker would follow its own clock (trainer.train.schedule.schedule_kind).
        expected = "'auto' or 'plateau' with strategy 'multi_worker' (workers' clocks differ)"
        raise field_error("lr_schedule.kind", expected, "deadline")


def load_plan(path: str | os.PathLike) -> Plan:
    """Read and validate a plan file; raise `PlanError` naming the file and the problem."""
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PlanError(f"{path}: plan file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: cannot read plan ({exc})") from exc
    try:
        return Plan.from_dict(parse_json(content))
    except PlanError as exc:
        raise PlanError(f"{path}: {exc.message}", hint=exc.hint) from exc


def save_plan(plan: Plan, path: str | os.PathLike) -> None:
    """Validate `plan` and write it atomically to `path`."""
    plan.validate()
    write_json(path, plan.to_dict())
