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


# -- from logits, ignored pixels (issue 15) ----------------------------------------


def _grad(loss, y, logits, activation=None):
    """The loss and its gradient with respect to the logits (through `activation`)."""
    import tensorflow as tf

    z = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = loss(y, z if activation is None else activation(z))
    return float(value), tape.gradient(value, z).numpy()


@pytest.mark.parametrize("num_classes", [2, 3])
def test_gradient_survives_where_probabilities_saturate(num_classes):
    # Every pixel confidently wrong: logit 40 for the last class where all is background.
    # Probabilities are exactly 0/1 in float32, so through a sigmoid/softmax layer the
    # old probability loss (clipped) had no gradient left for the logits.
    import tensorflow as tf

    y = np.zeros((1, 4, 4, 1), np.float32)
    channels = 1 if num_classes == 2 else num_classes
    logits = np.full((1, 4, 4, channels), -40.0, np.float32)
    logits[..., -1] = 40.0
    value, grad = _grad(DiceCrossEntropy(num_classes, from_logits=True), y, logits)
    assert np.isfinite(value) and value > 1.0
    assert np.all(grad[..., -1] > 1e-3)  # pushes every wrong logit down
    act = tf.sigmoid if channels == 1 else tf.nn.softmax
    _, old = _grad(DiceCrossEntropy(num_classes, from_logits=False), y, logits, act)
    assert np.all(np.abs(old) < 1e-8)  # what this fixes


@pytest.mark.parametrize("num_classes", [2, 3])
def test_logits_loss_equals_probability_loss_away_from_saturation(num_classes):
    rng = np.random.default_rng(2)
    y = rng.integers(0, num_classes, (2, 8, 8, 1)).astype(np.float32)
    channels = 1 if num_classes == 2 else num_classes
    z = rng.normal(0, 1.5, (2, 8, 8, channels)).astype(np.float32)
    if channels == 1:
        p = 1 / (1 + np.exp(-z))
    else:
        p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    a = float(DiceCrossEntropy(num_classes, from_logits=True)(y, z))
    b = float(DiceCrossEntropy(num_classes, from_logits=False)(y, p.astype(np.float32)))
    assert a == pytest.approx(b, rel=1e-4)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_ignored_pixels_change_neither_loss_nor_metric(num_classes):
    rng = np.random.default_rng(3)
    channels = 1 if num_classes == 2 else num_classes
    y = rng.integers(0, num_classes, (2, 8, 8, 1)).astype(np.float32)
    z = rng.normal(0, 2, (2, 8, 8, channels)).astype(np.float32)
    ignore = np.zeros_like(y, bool)
    ignore[:, :, :3] = True
    results = []
    for label in (255.0, -1.0, 7.0):
        y1, y2 = y.copy(), y.copy()
        y1[ignore], y2[ignore] = label, label
        z2 = z.copy()
        z2[np.broadcast_to(ignore, z.shape)] *= -3  # anything at all predicted there
        for yy, zz in ((y1, z), (y2, z2)):
            loss = DiceCrossEntropy(num_classes, from_logits=True, ignore_index=7)
            dice = OverlapScore(num_classes, "dice", from_logits=True, ignore_index=7)
            dice.update_state(yy, zz)
            results.append((float(loss(yy, zz)), float(dice.result())))
    assert all(r == pytest.approx(results[0], rel=1e-5) for r in results)
    # and ignoring really removes pixels: counting them gives another value
    full = float(DiceCrossEntropy(num_classes, from_logits=True)(y, z))
    assert full != pytest.approx(results[0][0], rel=1e-3)


def test_multiclass_mean_is_over_present_classes():
    # Classes 1 and 2 of 4 appear; class 3 is neither labelled nor predicted.
    y_true = np.array([0, 1, 2, 2], np.float32).reshape(1, 2, 2, 1)
    probs = np.eye(4, dtype=np.float32)[[0, 1, 1, 2]].reshape(1, 2, 2, 4)
    dice = OverlapScore(4, "dice")
    dice.update_state(y_true, probs)
    assert float(dice.result()) == pytest.approx(2 / 3, abs=1e-5)  # not (2/3+2/3+1)/3
    wrong = np.eye(4, dtype=np.float32)[[0, 1, 3, 2]].reshape(1, 2, 2, 4)
    dice.reset_state()
    dice.update_state(y_true, wrong)  # class 3 predicted but absent: it counts, as 0
    assert float(dice.result()) == pytest.approx((1 + 2 / 3 + 0) / 3, abs=1e-5)


def test_binary_metric_on_logits_thresholds_at_zero():
    y = np.array([1, 1, 0, 0], np.float32).reshape(1, 2, 2, 1)
    z = np.array([0.1, -0.1, -5, 5], np.float32).reshape(1, 2, 2, 1)
    dice = OverlapScore(2, "dice", from_logits=True)
    dice.update_state(y, z)
    assert float(dice.result()) == pytest.approx(2 * 1 / (2 + 2), abs=1e-5)


def test_loss_is_float32_under_mixed_precision():
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        y = np.ones((1, 4, 4, 1), np.float32)
        z = keras.ops.cast(np.full((1, 4, 4, 1), 3.0, np.float32), "bfloat16")
        assert (
            keras.backend.standardize_dtype(DiceCrossEntropy(2, from_logits=True)(y, z).dtype)
            == "float32"
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
