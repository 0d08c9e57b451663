"""Paired augmentation: one geometric transform for image and mask, colour for the image only."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer.data.augment import NONE, AugmentSettings, augment_pair, random_params
from trainer.data.splits import upsize_factor
from trainer.plan import AugmentSpec

DEFAULT = AugmentSettings.from_spec(AugmentSpec())


def _blocks(size: int, classes: int, block: int = 8, seed: int = 0) -> np.ndarray:
    """A class map of `block`-pixel squares with random classes: few class boundaries."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, classes, (size // block, size // block))
    return np.kron(coarse, np.ones((block, block), dtype=np.int64)).astype(np.uint8)


# Traced once per (shapes, settings): eager op-by-op execution is 10x slower.
_augment_fn = tf.function(augment_pair)


def _augment(image: np.ndarray, mask: np.ndarray, settings, seed: int, out=(32, 32)):
    img, m = _augment_fn(
        tf.constant(image, tf.float32),
        tf.constant(mask[..., None], tf.uint8),
        tf.constant([seed, 7], tf.int64),
        out,
        settings,
    )
    return img.numpy(), m.numpy()[..., 0]


def test_presets_resolve_from_plan_spec():
    gentle = AugmentSettings.from_spec(AugmentSpec(preset="gentle"))
    assert (gentle.vflip, gentle.rot90, gentle.rotate_deg) == (False, False, 5.0)
    assert AugmentSettings.from_spec(AugmentSpec(preset="none")) == NONE
    custom = AugmentSettings.from_spec(AugmentSpec(preset="none", hflip=True, scale=(0.5, 2.0)))
    assert custom.hflip and custom.scale == (0.5, 2.0) and not custom.vflip


def test_mask_values_stay_in_class_set_under_default_augmentation():
    # Classes 0, 2 and 5 only: any interpolation of the mask would create 1, 3 or 4.
    mask = np.array([0, 2, 5], np.uint8)[_blocks(64, classes=3)]
    image = np.repeat(mask[..., None] / 5.0, 3, axis=-1)
    seen = set()
    for seed in range(150):
        _, m = _augment(image, mask, DEFAULT, seed)
        seen |= set(np.unique(m).tolist())
    assert seen == {0, 2, 5}


def test_image_and_mask_stay_aligned_under_default_geometry():
    # The image's grey level encodes the class: after any transform, they must agree
    # everywhere except a thin band where bilinear and nearest sampling differ.
    settings = AugmentSettings(True, True, True, 15.0, (0.8, 1.25), 0.0, 0.0)
    mask = _blocks(64, classes=4)
    image = np.repeat(mask[..., None] / 3.0, 3, axis=-1)
    outputs = set()
    for seed in range(60):
        img, m = _augment(image, mask, settings, seed)
        agree = np.mean(np.rint(img[..., 0] * 3) == m)
        assert agree > 0.85, f"seed {seed}: only {agree:.2%} of pixels agree"
        outputs.add(m.tobytes())
    assert len(outputs) > 50  # the transforms really vary


@pytest.mark.parametrize(
    "settings, variants",
    [
        (AugmentSettings(True, False, False, 0.0, (1.0, 1.0), 0.0, 0.0), ["id", "lr"]),
        (AugmentSettings(False, True, False, 0.0, (1.0, 1.0), 0.0, 0.0), ["id", "ud"]),
        (AugmentSettings(False, False, True, 0.0, (1.0, 1.0), 0.0, 0.0), ["id", "r1", "r2", "r3"]),
    ],
    ids=["hflip", "vflip", "rot90"],
)
def test_flips_and_quarter_turns_move_image_and_mask_identically(settings, variants):
    # The crop is the whole (square) image at zoom 1, so every output must be an exact
    # flip or turn of the input, the same one for image and mask, and each must occur.
    rng = np.random.default_rng(1)
    mask = _blocks(32, classes=3, block=4, seed=2)
    image = rng.random((32, 32, 3)).astype(np.float32)
    ops = {
        "id": lambda a: a,
        "lr": np.fliplr,
        "ud": np.flipud,
        "r1": lambda a: np.rot90(a, 1),
        "r2": lambda a: np.rot90(a, 2),
        "r3": lambda a: np.rot90(a, 3),
    }
    found = set()
    for seed in range(40):
        img, m = _augment(image, mask, settings, seed)
        names = [n for n in variants if np.allclose(img, ops[n](image), atol=1e-6)]
        assert len(names) == 1, f"seed {seed}: image is not one exact variant"
        np.testing.assert_array_equal(m, ops[names[0]](mask))
        found.add(names[0])
    assert found == set(variants)


def test_photometric_changes_image_only():
    settings = AugmentSettings(False, False, False, 0.0, (1.0, 1.0), 0.3, 0.3)
    rng = np.random.default_rng(3)
    mask = _blocks(32, classes=2, block=4)
    image = rng.random((32, 32, 3)).astype(np.float32) * 0.5 + 0.25
    changed = 0
    for seed in range(20):
        img, m = _augment(image, mask, settings, seed)
        np.testing.assert_array_equal(m, mask)
        assert img.min() >= 0.0 and img.max() <= 1.0
        changed += not np.allclose(img, image, atol=1e-3)
    assert changed >= 18


def test_grey_image_is_replicated_after_the_warp():
    mask = _blocks(64, classes=2)
    grey = (mask[..., None] * 0.5 + 0.25).astype(np.float32)
    img, _ = _augment(grey, mask, DEFAULT, seed=4)
    assert img.shape == (32, 32, 3)
    np.testing.assert_array_equal(img[..., 0], img[..., 2])


def test_image_smaller_than_crop_is_sampled_up_not_padded_with_garbage():
    # A 20x40 image, 32x32 crop: the footprint shrinks to fit (resize up, aspect kept).
    mask = np.zeros((20, 40), np.uint8)
    mask[:, 20:] = 1
    image = np.repeat(mask[..., None].astype(np.float32), 3, axis=-1)
    for seed in range(20):
        img, m = _augment(image, mask, NONE, seed)
        assert img.shape == (32, 32, 3) and m.shape == (32, 32)
        np.testing.assert_array_equal(np.rint(img[..., 0]), m)


@pytest.mark.parametrize(
    ("hw", "out"), [((20, 40), (32, 32)), ((10, 6), (32, 32)), ((50, 90), (32, 64))]
)
def test_crops_of_small_images_grow_them_by_the_one_upsize_factor(hw, out):
    # The affine map's source step per output pixel mirrors `upsize_factor` in tensors.
    transforms, _ = random_params(tf.constant([3, 1], tf.int64), tf.constant(hw), 4, out, NONE)
    step = np.abs(transforms.numpy()[:, 0])
    np.testing.assert_allclose(step, 1.0 / upsize_factor(*hw, out), rtol=1e-6)


def test_same_seed_same_crop_and_params_are_vectorised():
    t1, p1 = random_params(
        tf.constant([5, 1], tf.int64), tf.constant([100, 80]), 6, (32, 32), DEFAULT
    )
    t2, p2 = random_params(
        tf.constant([5, 1], tf.int64), tf.constant([100, 80]), 6, (32, 32), DEFAULT
    )
    assert t1.shape == (6, 8) and p1.shape == (6, 2)
    np.testing.assert_array_equal(t1.numpy(), t2.numpy())
    np.testing.assert_array_equal(p1.numpy(), p2.numpy())
    assert len({tuple(r) for r in t1.numpy().round(5)}) == 6
