"""Segmentation losses and metrics: Dice + cross-entropy, Dice and IoU per class.

Masks arrive as float32 `(B, H, W, 1)` class indices (0/1 for binary). A binary
model has one output channel (sigmoid); a multi-class model has `K` (softmax).
Training models output **logits** (`build_unet(..., output="logits")`): the loss
takes the cross-entropy from the logits (log-sum-exp, no clipping, so a confidently
wrong pixel keeps its gradient) and the Dice term from `sigmoid`/`softmax` of them,
the Dice + cross-entropy pair nnU-Net trains with (Isensee et al., Nature Methods
2021). Inference and exported models output probabilities; both loss and metrics
accept either (`from_logits`).

Ignored pixels: a label below 0 (validation marks the pixels an overlapping tile
already counted, `trainer.data.pipeline`), at or above `num_classes` (the pipeline
keeps `data.ignore_index`'s raw value, e.g. 255, in the class-index mask) or equal
to `ignore_index` changes neither the loss nor the metrics. Dice and IoU are accumulated over the whole epoch (sums of
intersections and unions), not averaged over batches, so a batch without foreground
does not count as a perfect or a zero score; the multi-class mean is over the
foreground classes present (in the labels or the prediction) so far.
"""

from __future__ import annotations

import keras
from keras import ops

_EPS = 1e-6


def valid_pixels(y_true, num_classes: int, ignore_index: int | None = None):
    """1.0 where a pixel counts; 0.0 where its label is negative, not a class, or ignored.

    Args:
        y_true: `(B, H, W, 1)` class indices (float).
        num_classes: classes including background: labels `0 .. num_classes - 1` count.
        ignore_index: a label that never counts, or `None` (a negative value: none).

    Returns:
        `(B, H, W, 1)` float32.
    """
    y = ops.cast(y_true, "float32")
    valid = ops.logical_and(y > -0.5, y < num_classes - 0.5)
    if ignore_index is not None and ignore_index >= 0:
        valid = ops.logical_and(valid, ops.abs(y - float(ignore_index)) > 0.5)
    return ops.cast(valid, "float32")


def _one_hot_true(y_true, num_channels: int):
    if num_channels == 1:
        return ops.cast(y_true >= 0.5, "float32")
    idx = ops.cast(ops.squeeze(ops.maximum(y_true, 0.0), axis=-1) + 0.5, "int32")
    return ops.one_hot(idx, num_channels, dtype="float32")  # out-of-range index: all zero


def _cross_entropy(t, y_pred, channels: int, from_logits: bool):
    """Per-pixel cross-entropy, `(B, H, W)`."""
    if from_logits and channels == 1:
        z = y_pred  # log(1 + e^z) - t z, written so that neither exp overflows
        ce = ops.relu(z) - z * t + ops.log1p(ops.exp(-ops.abs(z)))
        return ce[..., 0]
    if from_logits:
        return -ops.sum(t * ops.log_softmax(y_pred, axis=-1), axis=-1)
    p = ops.clip(y_pred, _EPS, 1.0 - _EPS)  # probabilities: the log needs a floor
    if channels == 1:
        return (-(t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p)))[..., 0]
    return -ops.sum(t * ops.log(p), axis=-1)


def _probabilities(y_pred, channels: int, from_logits: bool):
    if not from_logits:
        return y_pred
    return ops.sigmoid(y_pred) if channels == 1 else ops.softmax(y_pred, axis=-1)


@keras.saving.register_keras_serializable(package="fitplan")
class DiceCrossEntropy(keras.losses.Loss):
    """Soft Dice plus cross-entropy (binary or categorical), computed in float32.

    Args:
        num_classes: classes including background; `2` means one output channel.
        dice_weight: weight of the Dice term. Defaults to `1.0`: equal to cross-entropy.
        from_logits: `y_pred` are logits (training models) rather than probabilities.
            Defaults to `False`.
        ignore_index: a label whose pixels never count, or `None` (default).
            Negative labels and labels >= `num_classes` never count either.
    """

    def __init__(
        self,
        num_classes: int = 2,
        dice_weight: float = 1.0,
        name="dice_ce",
        from_logits: bool = False,
        ignore_index: int | None = None,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.dice_weight = float(dice_weight)
        self.from_logits = bool(from_logits)
        self.ignore_index = None if ignore_index is None else int(ignore_index)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")  # float32 under a mixed policy too
        channels = 1 if self.num_classes == 2 else self.num_classes
        valid = valid_pixels(y_true, self.num_classes, self.ignore_index)
        t = _one_hot_true(y_true, channels) * valid
        ce = _cross_entropy(t, y_pred, channels, self.from_logits) * valid[..., 0]
        ce = ops.sum(ce, axis=(1, 2)) / ops.maximum(ops.sum(valid, axis=(1, 2, 3)), 1.0)
        p = _probabilities(y_pred, channels, self.from_logits) * valid
        inter = ops.sum(t * p, axis=(1, 2))
        denom = ops.sum(t, axis=(1, 2)) + ops.sum(p, axis=(1, 2))
        dice = (2.0 * inter + 1.0) / (denom + 1.0)  # smoothed: empty masks give ~1
        if channels > 1:
            dice = dice[:, 1:]  # background Dice is uninformative and dominates
        return ce + self.dice_weight * (1.0 - ops.mean(dice, axis=-1))

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "dice_weight": self.dice_weight,
            "from_logits": self.from_logits,
            "ignore_index": self.ignore_index,
        }


@keras.saving.register_keras_serializable(package="fitplan")
class OverlapScore(keras.metrics.Metric):
    """Dice or IoU over the epoch, for one class or the mean over present foreground classes.

    Args:
        num_classes: classes including background; `2` means one output channel.
        kind: `"dice"` or `"iou"`.
        class_id: the class to score, or `None` (default): the mean over the
            foreground classes (1..K-1) present in the labels or the prediction so
            far; with none present, 1 (nothing to find, nothing found).
        from_logits: `y_pred` are logits (a binary pixel is foreground at logit >= 0,
            i.e. probability >= 0.5). Defaults to `False`.
        ignore_index: a label whose pixels never count, or `None` (default).
            Negative labels and labels >= `num_classes` never count either.
    """

    def __init__(
        self,
        num_classes=2,
        kind="dice",
        class_id=None,
        name=None,
        from_logits=False,
        ignore_index=None,
        **kwargs,
    ):
        if kind not in ("dice", "iou"):
            raise ValueError(f"`kind` must be 'dice' or 'iou'. Received: kind={kind!r}")
        name = name or (kind if class_id is None else f"{kind}_{class_id}")
        super().__init__(name=name, **kwargs)
        self.num_classes, self.kind, self.class_id = int(num_classes), kind, class_id
        self.from_logits = bool(from_logits)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        k = max(self.num_classes, 2)
        self.inter = self.add_variable(shape=(k,), initializer="zeros", name="inter")
        self.sum_true = self.add_variable(shape=(k,), initializer="zeros", name="sum_true")
        self.sum_pred = self.add_variable(shape=(k,), initializer="zeros", name="sum_pred")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        if self.num_classes == 2:
            cut = 0.0 if self.from_logits else 0.5
            pred = ops.cast(y_pred[..., 0] >= cut, "int32")
        else:
            pred = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        k = max(self.num_classes, 2)
        valid = ops.reshape(valid_pixels(y_true, k, self.ignore_index), (-1, 1))
        t = ops.reshape(_one_hot_true(y_true, k), (-1, k)) * valid
        p = ops.reshape(ops.one_hot(pred, k, dtype="float32"), (-1, k)) * valid
        self.inter.assign_add(ops.sum(t * p, axis=0))
        self.sum_true.assign_add(ops.sum(t, axis=0))
        self.sum_pred.assign_add(ops.sum(p, axis=0))

    def per_class(self):
        if self.kind == "dice":
            return (2.0 * self.inter + _EPS) / (self.sum_true + self.sum_pred + _EPS)
        union = self.sum_true + self.sum_pred - self.inter
        return (self.inter + _EPS) / (union + _EPS)

    def result(self):
        scores = self.per_class()
        if self.class_id is not None:
            return scores[self.class_id]
        present = ops.cast((self.sum_true + self.sum_pred)[1:] > 0, "float32")
        n = ops.sum(present)
        mean = ops.sum(scores[1:] * present) / ops.maximum(n, 1.0)
        return ops.where(n > 0, mean, 1.0)

    def reset_state(self):
        for v in (self.inter, self.sum_true, self.sum_pred):
            v.assign(ops.zeros_like(v))

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "kind": self.kind,
            "class_id": self.class_id,
            "from_logits": self.from_logits,
            "ignore_index": self.ignore_index,
        }


def segmentation_metrics(
    num_classes: int, *, from_logits: bool = False, ignore_index: int | None = None
) -> list[keras.metrics.Metric]:
    """`dice` and `iou` (mean over present foreground classes) plus per-class ones for multi-class."""
    kw = {"from_logits": from_logits, "ignore_index": ignore_index}
    metrics = [OverlapScore(num_classes, "dice", **kw), OverlapScore(num_classes, "iou", **kw)]
    if num_classes > 2:
        for c in range(1, num_classes):
            metrics.append(OverlapScore(num_classes, "dice", class_id=c, **kw))
    return metrics
