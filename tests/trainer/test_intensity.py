"""Intensities deeper than 8 bits (issue 16): percentile normalisation, relative brightness."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from benchmarks.make_datasets import make_grey16
from tests.plans import minimal_plan
from trainer.data.augment import photometric
from trainer.data.decode import load_image
from trainer.data.intensity import dataset_range
from trainer.data.pipeline import build_datasets
from trainer.errors import FitplanWarning


def _png16(path, values):
    Image.fromarray(np.asarray(values, np.uint16)).save(path)
    return path


def test_a_12_bit_image_is_stretched_to_its_percentiles(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(100, 4000, (64, 64))
    raw[0, 0] = 4095  # one hot pixel does not set the range
    img = load_image(_png16(tmp_path / "a.png", raw))
    lo, hi = np.percentile(raw, [0.5, 99.5])
    expected = np.clip((raw - lo) / (hi - lo), 0, 1)
    assert img.shape == (64, 64, 3)
    assert np.abs(img[..., 0] - expected).max() < 0.01
    assert img.min() == 0.0 and img.max() == 1.0
    # `none`: the old rule, divided by 65535: the image sits in [0, 0.0625]
    assert load_image(tmp_path / "a.png", "none").max() == pytest.approx(4095 / 65535)


def test_8_bit_images_are_divided_by_255_in_every_mode(tmp_path):
    raw = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 200 + 20
    Image.fromarray(raw.astype(np.uint8)).save(tmp_path / "b.png")
    for mode, rng in (("image", None), ("dataset", (0.0, 10.0)), ("none", None)):
        img = load_image(tmp_path / "b.png", mode, rng)
        np.testing.assert_allclose(img[..., 0], raw / 255.0, atol=1e-6)


def test_dataset_normalisation_uses_one_range_for_every_image(tmp_path):
    a = _png16(tmp_path / "a.png", np.full((8, 8), 1000))
    b = _png16(tmp_path / "b.png", np.full((8, 8), 3000))
    low, high = dataset_range([a, b])
    assert (low, high) == pytest.approx((1000, 3000))
    img = load_image(b, "dataset", (500.0, 3500.0))
    assert img.max() == pytest.approx((3000 - 500) / 3000, abs=1e-4)
    # per image, a flat image has no range: it does not blow up
    assert np.isfinite(load_image(a)).all()


def test_the_pipeline_trains_16_bit_data_on_the_full_range(tmp_path):
    root = make_grey16(tmp_path / "g", n=4, size=64)
    bundle = build_datasets(minimal_plan(root, input_size=[32, 32], micro_batch=2))
    highs = [float(x.numpy().max()) for x, _ in bundle.train]
    assert max(highs) > 0.9  # was at most 4095 / 65535 = 0.0625
    plan = minimal_plan(root, data={"normalization": "dataset"}, input_size=[32, 32])
    with pytest.warns(FitplanWarning, match="without data.intensity_range: measured"):
        bundle = build_datasets(plan)
    assert max(float(x.numpy().max()) for x, _ in bundle.train) > 0.9


def test_brightness_is_a_fraction_of_the_image_range_and_never_wipes_dim_data():
    dim = tf.constant(np.linspace(0.0, 0.06, 64, dtype=np.float32).reshape(8, 8, 1))
    out = photometric(dim, tf.constant([1.0, -0.15])).numpy()
    # was: -0.15 absolute, clipped: every pixel 0
    assert out.max() == pytest.approx(0.06 * 0.85, abs=1e-6)
    assert (out > 0).mean() > 0.8
    full = tf.constant(np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8, 1))
    shifted = photometric(full, tf.constant([1.0, 0.1])).numpy()
    assert shifted.min() == pytest.approx(0.1, abs=1e-6)  # a [0, 1] image: plain offset


def _untagged_extra_sample(path, mode, bands):
    """A TIFF whose extra sample is not marked alpha (ExtraSamples = 0): Pillow reads it
    as one band fewer, so without the check a channel would vanish silently."""
    Image.fromarray(np.full((8, 8, bands), 90, np.uint8), mode).save(path)
    data = path.read_bytes()
    tagged = b"\x52\x01\x03\x00\x01\x00\x00\x00\x02\x00"  # ExtraSamples = 2 (alpha)
    assert data.count(tagged) == 1
    path.write_bytes(data.replace(tagged, tagged[:-2] + b"\x00\x00"))
    return path


def test_channels_and_pages_are_used_or_refused_by_name(tmp_path):
    from trainer.data.integrity import file_problem

    two = _untagged_extra_sample(tmp_path / "two.tif", "LA", 2)
    assert "2 channels per pixel, read as L (1): 1 would be dropped" in file_problem(two)
    four = _untagged_extra_sample(tmp_path / "four.tif", "RGBA", 4)
    assert "4 channels per pixel, read as RGB (3)" in file_problem(four)
    pages = tmp_path / "pages.tif"
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (1, 2, 3)]
    frames[0].save(pages, save_all=True, append_images=frames[1:])
    assert file_problem(pages).startswith("3 pages/frames")
    alpha = tmp_path / "alpha.tif"  # grey + a real alpha: used, alpha dropped
    Image.fromarray(np.full((8, 8, 2), 90, np.uint8), "LA").save(alpha)
    assert file_problem(alpha) is None
    assert load_image(alpha).shape == (8, 8, 3)
