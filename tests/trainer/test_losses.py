"""Dice/IoU metrics accumulate over the epoch; the loss is finite and ordered sensibly."""

import numpy as np
import pytest

from trainer.train.losses import DiceCrossEntropy, OverlapScore, segmentation_metrics


def test_binary_dice_and_iou_match_hand_computation():
    y_true = np.zeros((2, 4, 4, 1), np.float32)
    y_true[0, :2, :2] = 1  # 4 foreground pixels in image 0, none in image 1
    y_pred = np.zeros((2, 4, 4, 1), np.float32)
    y_pred[0, :2, :1] = 0.9  # 2 true positives
    y_pred[1, 3, 3] = 0.8  # 1 false positive in the empty image
    dice, iou = OverlapScore(2, "dice"), OverlapScore(2, "iou")
    for b in range(2):  # two batches: accumulated, not averaged
        dice.update_state(y_true[b : b + 1], y_pred[b : b + 1])
        iou.update_state(y_true[b : b + 1], y_pred[b : b + 1])
    # inter 2, |T| 4, |P| 3 -> dice 4/7, iou 2/5
    assert float(dice.result()) == pytest.approx(4 / 7, abs=1e-5)
    assert float(iou.result()) == pytest.approx(2 / 5, abs=1e-5)
    dice.reset_state()
    assert float(dice.result()) == pytest.approx(1.0)  # nothing seen: eps/eps


def test_multiclass_per_class_metrics():
    y_true = np.array([0, 1, 2, 2], np.float32).reshape(1, 2, 2, 1)
    probs = np.eye(3, dtype=np.float32)[[0, 1, 1, 2]].reshape(1, 2, 2, 3)
    metrics = {m.name: m for m in segmentation_metrics(3)}
    assert set(metrics) == {"dice", "iou", "dice_1", "dice_2"}
    for m in metrics.values():
        m.update_state(y_true, probs)
    assert float(metrics["dice_1"].result()) == pytest.approx(2 / 3, abs=1e-5)
    assert float(metrics["dice_2"].result()) == pytest.approx(2 / 3, abs=1e-5)
    assert float(metrics["dice"].result()) == pytest.approx(2 / 3, abs=1e-5)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_loss_prefers_the_right_answer(num_classes):
    rng = np.random.default_rng(1)
    y = rng.integers(0, num_classes, (2, 8, 8, 1)).astype(np.float32)
    loss = DiceCrossEntropy(num_classes)
    if num_classes == 2:
        good, bad = 0.05 + 0.9 * y, 0.95 - 0.9 * y
    else:
        good = (
            np.eye(num_classes, dtype=np.float32)[y[..., 0].astype(int)] * 0.9 + 0.1 / num_classes
        )
        bad = np.roll(good, 1, axis=-1)
    lg, lb = float(loss(y, good)), float(loss(y, bad))
    assert np.isfinite(lg) and np.isfinite(lb)
    assert lg < lb


def test_loss_round_trips_through_config():
    loss = DiceCrossEntropy(3, dice_weight=0.5)
    again = DiceCrossEntropy.from_config(loss.get_config())
    assert again.num_classes == 3 and again.dice_weight == 0.5
