"""Segmentation losses and metrics: Dice + cross-entropy, Dice and IoU per class.

Masks arrive as float32 `(B, H, W, 1)` class indices (0/1 for binary). A binary
model has one sigmoid channel; a multi-class model has `K` softmax channels.
Dice and IoU are accumulated over the whole epoch (sums of intersections and
unions), not averaged over batches, so a batch without foreground does not
count as a perfect or a zero score.
"""

from __future__ import annotations

import keras
from keras import ops

_EPS = 1e-6


def _one_hot_true(y_true, num_channels: int):
    if num_channels == 1:
        return ops.cast(y_true >= 0.5, "float32")
    idx = ops.cast(ops.squeeze(y_true, axis=-1), "int32")
    return ops.one_hot(idx, num_channels, dtype="float32")


@keras.saving.register_keras_serializable(package="fitplan")
class DiceCrossEntropy(keras.losses.Loss):
    """Soft Dice plus cross-entropy (binary or categorical), the usual pair for segmentation.

    Args:
        num_classes: classes including background; `2` means one sigmoid channel.
        dice_weight: weight of the Dice term. Defaults to `1.0`: equal to cross-entropy.
    """

    def __init__(self, num_classes: int = 2, dice_weight: float = 1.0, name="dice_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.dice_weight = float(dice_weight)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        channels = 1 if self.num_classes == 2 else self.num_classes
        t = _one_hot_true(y_true, channels)
        p = ops.clip(y_pred, _EPS, 1.0 - _EPS)
        if channels == 1:
            ce = -(t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p))
            ce = ops.mean(ce, axis=(1, 2, 3))
        else:
            ce = ops.mean(-ops.sum(t * ops.log(p), axis=-1), axis=(1, 2))
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
        }


@keras.saving.register_keras_serializable(package="fitplan")
class OverlapScore(keras.metrics.Metric):
    """Dice or IoU over the epoch, for one class or the mean over foreground classes.

    Args:
        num_classes: classes including background; `2` means one sigmoid channel.
        kind: `"dice"` or `"iou"`.
        class_id: the class to score, or `None` (default): the mean over the
            foreground classes (classes 1..K-1).
    """

    def __init__(self, num_classes=2, kind="dice", class_id=None, name=None, **kwargs):
        if kind not in ("dice", "iou"):
            raise ValueError(f"`kind` must be 'dice' or 'iou'. Received: kind={kind!r}")
        name = name or (kind if class_id is None else f"{kind}_{class_id}")
        super().__init__(name=name, **kwargs)
        self.num_classes, self.kind, self.class_id = int(num_classes), kind, class_id
        k = max(self.num_classes, 2)
        self.inter = self.add_variable(shape=(k,), initializer="zeros", name="inter")
        self.sum_true = self.add_variable(shape=(k,), initializer="zeros", name="sum_true")
        self.sum_pred = self.add_variable(shape=(k,), initializer="zeros", name="sum_pred")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(y_pred, "float32")
        if self.num_classes == 2:
            pred = ops.cast(y_pred[..., 0] >= 0.5, "int32")
        else:
            pred = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        true = ops.cast(ops.squeeze(y_true, axis=-1) + 0.5, "int32")  # exact class indices
        k = max(self.num_classes, 2)
        t = ops.reshape(ops.one_hot(true, k, dtype="float32"), (-1, k))
        p = ops.reshape(ops.one_hot(pred, k, dtype="float32"), (-1, k))
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
        return ops.mean(scores[1:])

    def reset_state(self):
        for v in (self.inter, self.sum_true, self.sum_pred):
            v.assign(ops.zeros_like(v))

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "kind": self.kind,
            "class_id": self.class_id,
        }


def segmentation_metrics(num_classes: int) -> list[keras.metrics.Metric]:
    """`dice` and `iou` (mean over foreground classes) plus per-class ones for multi-class."""
    metrics = [OverlapScore(num_classes, "dice"), OverlapScore(num_classes, "iou")]
    if num_classes > 2:
        for c in range(1, num_classes):
            metrics.append(OverlapScore(num_classes, "dice", class_id=c))
    return metrics
