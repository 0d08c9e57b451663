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
keys starting with `x-` or `_`, which are kept as free-form notes.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.atomic import write_json
from trainer.errors import PlanError

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
NORMALIZATIONS = ("auto", "train", "frozen", "group")
OPTIMIZERS = ("adam", "adamw", "sgd")
AUGMENT_PRESETS = ("default", "gentle", "none")
STRATEGIES = ("default", "mirrored", "multi_worker")
LR_SCALINGS = ("none", "linear", "sqrt")
EARLY_MONITORS = ("val_loss", "val_dice")

# Micro-batches below this make BatchNorm statistics too noisy; "auto" freezes it.
SMALL_MICRO_BATCH = 8


def normalization_for(micro_batch: int, weights: str) -> str:
    """The BatchNorm mode a plan's `"auto"` means: what a plan at `micro_batch` trains with.

    - From scratch (`weights="none"`): `"train"` at every micro-batch. Frozen BatchNorm
      keeps statistics and a scale and shift that nobody learned (calibrated on noise at
      build time). Measured on epfl-em from scratch, 256x256, micro-batch 4, 4 short
      epochs: frozen, unet_small and efficientnet_b0 collapsed to an all-background
      output from epoch 2 and mobilenet_v3_small reached validation Dice 0.005; training
      BatchNorm reached 0.50, 0.25 and 0.47 (docs/models.md). A micro-batch of 1 still
      has the crop's pixels: at 256x256 the 1/32 bottleneck gives 64 values per
      channel, and the moving statistics follow at momentum 0.9.
    - Pretrained encoders: `"frozen"` below `SMALL_MICRO_BATCH` (8), keeping the
      encoder's ImageNet statistics (the usual fine-tuning recipe), else `"train"`.
    """
    if weights == "none":
        return "train"
    return "frozen" if micro_batch < SMALL_MICRO_BATCH else "train"


def _field_error(name: str, expected: str, value: Any) -> PlanError:
    return PlanError(f"plan field `{name}` must be {expected}. Received: {name}={value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _check_int(name: str, v: Any, minimum: int) -> None:
    if not _is_int(v) or v < minimum:
        raise _field_error(name, f"an integer >= {minimum}", v)


def _check_opt_int(name: str, v: Any, minimum: int) -> None:
    if v is not None:
        _check_int(name, v, minimum)


def _check_positive(name: str, v: Any, *, allow_zero: bool = False) -> None:
    if not _is_number(v) or v < 0 or (v == 0 and not allow_zero):
        expected = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise _field_error(name, expected, v)


def _check_choice(name: str, v: Any, choices: tuple[str, ...]) -> None:
    if v not in choices:
        raise _field_error(name, "one of " + ", ".join(repr(c) for c in choices), v)


@dataclass(frozen=True)
class DataSpec:
    """Where the data is and how it is read.

    Args:
        path: dataset root (holds the image and mask folders). Relative paths are
            resolved against the current directory when training starts.
        images: image folder under `path`. Defaults to `"images"`.
        masks: mask folder under `path`. Defaults to `"masks"`.
        val: a separate validation root with the same folder names, or `None`
            (default): split `val_fraction` off the training pairs by file name.
        val_fraction: share of pairs held out when `val` is `None`. Defaults to `0.2`.
        cache: `"stream"` (default) decodes from disk every epoch, so datasets larger
            than RAM work; `"memory"` keeps the decoded pairs in RAM after epoch 1.
        classes: number of classes including background (2 = binary, one sigmoid
            output). `None` (default): `len(mask_values)`, or inferred from the masks.
        mask_values: the raw mask values of class 0, 1, ... in order (e.g. `[0, 255]`).
            Each mask pixel becomes the class of the nearest listed value, so a thin
            fringe of resampled grey levels is thresholded, not a class of its own.
            `None` (default): inferred from a sample of masks at start-up.
        image_scale: resize factor applied to every image and mask before cropping
            (e.g. `0.5` for photos far larger than the objects need). Defaults to `1.0`:
            train on native-resolution crops of `input_size`.
        crops_per_image: random crops drawn from each training image per epoch.
            `None` (default): the image's area over the crop's area, rounded, at least 1,
            so that an epoch covers about every pixel once.
        fingerprint: the scan digest the plan was made for, or `None`.
    """

    path: str
    images: str = "images"
    masks: str = "masks"
    val: str | None = None
    val_fraction: float = 0.2
    cache: str = "stream"
    classes: int | None = None
    mask_values: tuple[int, ...] | None = None
    image_scale: float = 1.0
    crops_per_image: int | None = None
    fingerprint: str | None = None

    def validate(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise _field_error("data.path", "a non-empty path string", self.path)
        for name in ("images", "masks"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise _field_error(f"data.{name}", "a non-empty folder name", v)
        if self.val is not None and (not isinstance(self.val, str) or not self.val):
            raise _field_error("data.val", "a path string or null", self.val)
        if not _is_number(self.val_fraction) or not 0 <= self.val_fraction < 1:
            raise _field_error("data.val_fraction", "a number in [0, 1)", self.val_fraction)
        _check_choice("data.cache", self.cache, CACHE_MODES)
        _check_opt_int("data.classes", self.classes, 2)
        if self.mask_values is not None:
            mv = self.mask_values
            ok = (
                isinstance(mv, (list, tuple))
                and len(mv) >= 2
                and all(_is_int(v) and v >= 0 for v in mv)
                and list(mv) == sorted(set(mv))
            )
            if not ok:
                raise _field_error(
                    "data.mask_values", "a sorted list of at least 2 distinct integers >= 0", mv
                )
            if self.classes is not None and self.classes != len(mv):
                raise _field_error(
                    "data.classes", f"len(data.mask_values) = {len(mv)}", self.classes
                )
        if not _is_number(self.image_scale) or not 0 < self.image_scale <= 4:
            raise _field_error("data.image_scale", "a number in (0, 4]", self.image_scale)
        _check_opt_int("data.crops_per_image", self.crops_per_image, 1)

    @property
    def num_classes(self) -> int | None:
        """Classes including background, from `classes` or `mask_values`; `None` if unknown."""
        if self.classes is not None:
            return self.classes
        return len(self.mask_values) if self.mask_values is not None else None


@dataclass(frozen=True)
class OptimizerSpec:
    """The optimizer.

    Args:
        name: `"adam"` (default), `"adamw"` or `"sgd"` (momentum 0.9).
        learning_rate: initial learning rate for the effective batch, or for
            `reference_batch` when `lr_scaling` is not `"none"`. Defaults to `1e-3`.
        weight_decay: decoupled weight decay (adamw only). Defaults to `1e-4`.
        clipnorm: gradient-norm clipping, or `None` (default): no clipping.
        lr_scaling: how the learning rate follows the effective batch
            (docs/distributed.md): `"none"` (default: used as written), `"linear"`
            (x effective_batch / reference_batch) or `"sqrt"` (x its square root).
        reference_batch: the effective batch `learning_rate` was chosen for; required
            when `lr_scaling` is not `"none"`. Defaults to `None`.
    """

    name: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    clipnorm: float | None = None
    lr_scaling: str = "none"
    reference_batch: int | None = None

    def validate(self) -> None:
        _check_choice("optimizer.name", self.name, OPTIMIZERS)
        _check_positive("optimizer.learning_rate", self.learning_rate)
        _check_positive("optimizer.weight_decay", self.weight_decay, allow_zero=True)
        if self.clipnorm is not None:
            _check_positive("optimizer.clipnorm", self.clipnorm)
        _check_choice("optimizer.lr_scaling", self.lr_scaling, LR_SCALINGS)
        _check_opt_int("optimizer.reference_batch", self.reference_batch, 1)
        if self.lr_scaling != "none" and self.reference_batch is None:
            raise _field_error(
                "optimizer.reference_batch",
                f"an integer >= 1 when optimizer.lr_scaling is {self.lr_scaling!r}",
                None,
            )


@dataclass(frozen=True)
class LRScheduleSpec:
    """ReduceLROnPlateau on the validation loss.

    Args:
        factor: multiply the learning rate by this on a plateau. Defaults to `0.5`.
        patience: epochs without improvement before reducing. Defaults to `3`.
        min_lr: lower bound. Defaults to `1e-6`.
    """

    factor: float = 0.5
    patience: int = 3
    min_lr: float = 1e-6

    def validate(self) -> None:
        if not _is_number(self.factor) or not 0 < self.factor < 1:
            raise _field_error("lr_schedule.factor", "a number in (0, 1)", self.factor)
        _check_int("lr_schedule.patience", self.patience, 0)
        _check_positive("lr_schedule.min_lr", self.min_lr, allow_zero=True)


@dataclass(frozen=True)
class EarlyStoppingSpec:
    """Early stopping; the best weights are always restored at the end.

    Args:
        monitor: `"val_loss"` (default) or `"val_dice"`.
        patience: epochs without improvement before stopping. Defaults to `8`.
        min_delta: smallest change that counts as improvement. Defaults to `1e-4`.
    """

    monitor: str = "val_loss"
    patience: int = 8
    min_delta: float = 1e-4

    def validate(self) -> None:
        _check_choice("early_stopping.monitor", self.monitor, EARLY_MONITORS)
        _check_int("early_stopping.patience", self.patience, 0)
        _check_positive("early_stopping.min_delta", self.min_delta, allow_zero=True)


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

    preset: str = "default"
    hflip: bool | None = None
    vflip: bool | None = None
    rot90: bool | None = None
    rotate_deg: float | None = None
    scale: tuple[float, float] | None = None
    brightness: float | None = None
    contrast: float | None = None

    def validate(self) -> None:
        _check_choice("augment.preset", self.preset, AUGMENT_PRESETS)
        for name in ("hflip", "vflip", "rot90"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, bool):
                raise _field_error(f"augment.{name}", "true, false or null", v)
        for name in ("rotate_deg", "brightness", "contrast"):
            v = getattr(self, name)
            if v is not None:
                _check_positive(f"augment.{name}", v, allow_zero=True)
        if self.scale is not None:
            s = self.scale
            ok = (
                isinstance(s, (list, tuple))
                and len(s) == 2
                and all(_is_number(x) for x in s)
                and 0.25 <= s[0] <= s[1] <= 4
            )
            if not ok:
                raise _field_error("augment.scale", "[min, max] with 0.25 <= min <= max <= 4", s)

    def resolved(self) -> dict[str, Any]:
        """The effective settings: the preset's values overridden by explicit fields."""
        presets = {
            "default": dict(
                hflip=True,
                vflip=True,
                rot90=True,
                rotate_deg=15.0,
                scale=(0.8, 1.25),
                brightness=0.15,
                contrast=0.2,
            ),
            "gentle": dict(
                hflip=True,
                vflip=False,
                rot90=False,
                rotate_deg=5.0,
                scale=(0.9, 1.1),
                brightness=0.05,
                contrast=0.05,
            ),
            "none": dict(
                hflip=False,
                vflip=False,
                rot90=False,
                rotate_deg=0.0,
                scale=(1.0, 1.0),
                brightness=0.0,
                contrast=0.0,
            ),
        }
        out = dict(presets[self.preset])
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

    keep: str = "best_and_last"
    max_bytes: int | None = None

    def validate(self) -> None:
        _check_choice("checkpoints.keep", self.keep, ("best_and_last", "best"))
        _check_opt_int("checkpoints.max_bytes", self.max_bytes, 1)


@dataclass(frozen=True)
class TargetSpec:
    """What the plan was made for (written by the planner; informational for the trainer).

    Args:
        device: `"cpu"` or `"gpu"`.
        device_name: human-readable device name.
        budget_bytes: the memory budget the plan was fitted to.
        budget_source: where the budget came from (`"probe"` or `"user"`).
    """

    device: str = "cpu"
    device_name: str | None = None
    budget_bytes: int | None = None
    budget_source: str | None = None

    def validate(self) -> None:
        _check_choice("target.device", self.device, ("cpu", "gpu"))
        _check_opt_int("target.budget_bytes", self.budget_bytes, 1)


@dataclass(frozen=True)
class Plan:
    """A complete training plan. See docs/plan-schema.md for every field.

    Args:
        backbone: encoder of the U-Net, one of `BACKBONES`.
        input_size: (height, width) the model trains at, multiples of 32.
        micro_batch: images per forward/backward pass (per replica).
        accumulation_steps: micro-batches per optimizer update. Defaults to `1`:
            no accumulation. Effective batch = micro_batch x replicas x this.
        precision: Keras dtype policy. Defaults to `"float32"`.
        weights: encoder weights: `"none"` (default), `"imagenet"` (from the local
            Keras cache; never downloaded during training) or a path to a
            `.weights.h5`/`.h5` file.
        data: see `DataSpec`.
        normalization: BatchNorm handling: `"auto"` (default: `normalization_for`:
            trained from scratch; with pretrained weights frozen when micro_batch < 8,
            else trained), `"train"`, `"frozen"` or `"group"`.
        optimizer, lr_schedule, early_stopping, augment, checkpoints: see their specs.
        epochs: maximum epochs. Defaults to `50`.
        freeze_encoder_epochs: epochs with the encoder frozen before fine-tuning.
            Defaults to `0`; only meaningful with pretrained weights.
        finetune_lr_factor: learning rate multiplier when the encoder is unfrozen.
            Defaults to `0.1`.
        steps_per_epoch: cap on optimizer updates per epoch (each update is
            `accumulation_steps` micro-batches), or `None` (default): one pass of
            `data.crops_per_image` crops over the training pairs.
        time_limit_s: wall-time limit for training; stops cleanly after the
            epoch that crosses it, keeping the best weights. `None`: no limit.
        seed: random seed for shuffling, augmentation and initialisation.
        strategy: `"default"` (one device), `"mirrored"` or `"multi_worker"`.
        replicas: number of replicas the micro-batch is per. Defaults to `1`.
        target: see `TargetSpec`.
        prediction: the planner's prediction (peak memory, step time, ...), carried along.
        evidence: the planner's candidates and trials, carried along.
        notes: free-form keys (`x-...`, `_...`) kept as they were.
    """

    backbone: str
    input_size: tuple[int, int]
    micro_batch: int
    data: DataSpec
    accumulation_steps: int = 1
    precision: str = "float32"
    weights: str = "none"
    normalization: str = "auto"
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    lr_schedule: LRScheduleSpec = field(default_factory=LRScheduleSpec)
    early_stopping: EarlyStoppingSpec = field(default_factory=EarlyStoppingSpec)
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    checkpoints: CheckpointSpec = field(default_factory=CheckpointSpec)
    epochs: int = 50
    freeze_encoder_epochs: int = 0
    finetune_lr_factor: float = 0.1
    steps_per_epoch: int | None = None
    time_limit_s: float | None = None
    seed: int = 0
    strategy: str = "default"
    replicas: int = 1
    target: TargetSpec = field(default_factory=TargetSpec)
    prediction: dict[str, Any] | None = None
    evidence: dict[str, Any] | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    version: int = PLAN_VERSION

    # -- derived -------------------------------------------------------------

    @property
    def effective_batch(self) -> int:
        return self.micro_batch * self.replicas * self.accumulation_steps

    @property
    def resolved_normalization(self) -> str:
        if self.normalization != "auto":
            return self.normalization
        return normalization_for(self.micro_batch, self.weights)

    # -- validation ----------------------------------------------------------

    def validate(self) -> Plan:
        """Raise `PlanError` naming the first invalid field; return self."""
        if self.version != PLAN_VERSION:
            raise PlanError(
                f"plan field `version` must be {PLAN_VERSION}. Received: version={self.version!r}",
                hint="this fitplan reads version 1 plans; re-run `fitplan plan`",
            )
        _check_choice("backbone", self.backbone, BACKBONES)
        s = self.input_size
        if (
            not isinstance(s, (list, tuple))
            or len(s) != 2
            or not all(_is_int(x) and x >= 32 and x % 32 == 0 for x in s)
        ):
            raise _field_error("input_size", "[height, width], each a multiple of 32 and >= 32", s)
        _check_int("micro_batch", self.micro_batch, 1)
        _check_int("accumulation_steps", self.accumulation_steps, 1)
        _check_choice("precision", self.precision, PRECISIONS)
        if not isinstance(self.weights, str) or not self.weights:
            raise _field_error(
                "weights", "'none', 'imagenet' or a path to a weights file", self.weights
            )
        _check_choice("normalization", self.normalization, NORMALIZATIONS)
        _check_int("epochs", self.epochs, 1)
        _check_int("freeze_encoder_epochs", self.freeze_encoder_epochs, 0)
        if not _is_number(self.finetune_lr_factor) or not 0 < self.finetune_lr_factor <= 1:
            raise _field_error("finetune_lr_factor", "a number in (0, 1]", self.finetune_lr_factor)
        _check_opt_int("steps_per_epoch", self.steps_per_epoch, 1)
        if self.time_limit_s is not None:
            _check_positive("time_limit_s", self.time_limit_s)
        _check_int("seed", self.seed, 0)
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_int("replicas", self.replicas, 1)
        if self.strategy == "default" and self.replicas != 1:
            raise _field_error("replicas", "1 when strategy is 'default'", self.replicas)
        for part in (
            self.data,
            self.optimizer,
            self.lr_schedule,
            self.early_stopping,
            self.augment,
            self.checkpoints,
            self.target,
        ):
            part.validate()
        for name in ("prediction", "evidence"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, dict):
                raise _field_error(name, "an object or null", v)
        return self

    # -- (de)serialisation ----------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version}
        names = [f.name for f in dataclasses.fields(self) if f.name not in ("version", "notes")]
        names.sort(key=lambda n: _KEY_ORDER.index(n) if n in _KEY_ORDER else len(_KEY_ORDER))
        for name in names:
            out[name] = _jsonable(getattr(self, name))
        out.update(self.notes)
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> Plan:
        """Build and validate a plan from parsed JSON; raise `PlanError` naming the field."""
        if not isinstance(raw, dict):
            raise PlanError(f"a plan must be a JSON object. Received: {type(raw).__name__}")
        if "version" not in raw:
            raise PlanError("plan field `version` is missing", hint='add "version": 1')
        raw = dict(raw)
        notes = {k: raw.pop(k) for k in list(raw) if k.startswith(("x-", "_"))}
        kwargs = _build(cls, raw, prefix="")
        kwargs["notes"] = notes
        if isinstance(kwargs.get("input_size"), list):
            kwargs["input_size"] = tuple(kwargs["input_size"])
        try:
            plan = cls(**kwargs)
        except TypeError as exc:  # pragma: no cover - _build checks required fields first
            raise PlanError(f"invalid plan: {exc}") from exc
        return plan.validate()

    def replace(self, **changes: Any) -> Plan:
        """A copy with `changes` applied (nested specs as dataclasses), validated."""
        return dataclasses.replace(self, **changes).validate()


# The fixed top-level keys first, in the order a reader wants them.
_KEY_ORDER = [
    "backbone",
    "input_size",
    "micro_batch",
    "accumulation_steps",
    "precision",
    "weights",
    "data",
]

_NESTED: dict[str, type] = {
    "data": DataSpec,
    "optimizer": OptimizerSpec,
    "lr_schedule": LRScheduleSpec,
    "early_stopping": EarlyStoppingSpec,
    "augment": AugmentSpec,
    "checkpoints": CheckpointSpec,
    "target": TargetSpec,
}


def _build(cls: type, raw: dict[str, Any], prefix: str) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    # `notes` is the dataclass's home for `x-` keys, not a key a plan file may hold:
    # accepting it would silently drop what a user wrote there.
    unknown = sorted(set(raw) - (set(fields) - {"notes"}))
    if unknown:
        name = prefix + unknown[0]
        close = difflib.get_close_matches(unknown[0], sorted(set(fields) - {"notes"}), n=1)
        raise PlanError(
            f"plan field `{name}` is not a known field"
            + (f"; did you mean `{prefix}{close[0]}`?" if close else ""),
            hint="see docs/plan-schema.md; free-form notes go in top-level keys starting with 'x-'",
        )
    required = [
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    for n in required:
        if n not in raw:
            raise PlanError(f"plan field `{prefix}{n}` is missing")
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        sub = _NESTED.get(key) if cls is Plan else None
        if sub is not None:
            if not isinstance(value, dict):
                raise _field_error(prefix + key, "an object", value)
            kwargs[key] = sub(**_build(sub, value, prefix=f"{prefix}{key}."))
        elif isinstance(value, list) and key in ("scale", "mask_values"):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return kwargs


def _jsonable(v: Any) -> Any:
    if dataclasses.is_dataclass(v):
        return {f.name: _jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def load_plan(path: str | os.PathLike) -> Plan:
    """Read and validate a plan file; raise `PlanError` naming the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PlanError(f"{path}: plan file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: cannot read plan ({exc})") from exc
    try:
        raw = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise PlanError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    except ValueError as exc:
        field_name, constant = _non_finite_field(json.loads(text, parse_constant=_NonFinite))
        raise PlanError(
            f"{path}: plan field `{field_name or '?'}` must be a finite number. "
            f"Received: {field_name}={constant}"
        ) from exc
    try:
        return Plan.from_dict(raw)
    except PlanError as exc:
        raise PlanError(f"{path}: {exc.message}", hint=exc.hint) from exc


def save_plan(plan: Plan, path: str | os.PathLike) -> None:
    """Validate `plan` and write it atomically to `path`."""
    plan.validate()
    write_json(path, plan.to_dict())


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a plan (numbers must be finite)")


class _NonFinite(str):
    """`NaN`, `Infinity` or `-Infinity` met while parsing, kept to name its field."""


def _non_finite_field(obj: Any, prefix: str = "") -> tuple[str, str]:
    """The dotted path and constant of the first `_NonFinite` in parsed JSON."""
    if isinstance(obj, _NonFinite):
        return prefix or "(top level)", str(obj)
    if isinstance(obj, dict):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in obj.items()]
    elif isinstance(obj, list):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(obj)]
    else:
        items = []
    for name, value in items:
        found = _non_finite_field(value, name)
        if found[0] != "":
            return found
    return "", ""
