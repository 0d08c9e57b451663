"""Loading a run safely and sliding-window prediction: tiles reassemble the whole image."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.trainer.run_factory import make_plan, make_run
from trainer.errors import RunDirError
from trainer.use.inference import load_run
from trainer.use.tiling import blend_window, pad_to, sliding_window, to_classes

# -- tiling (pure numpy, no model) -------------------------------------------------------


def test_blend_window_is_positive_peaks_in_the_centre_and_sums_flat_at_half_stride():
    w = blend_window(32, 32)
    assert w.min() > 0 and w[16, 16] > 0.99 and w[0, 0] < 0.01
    one_d = blend_window(1, 32)[0]
    # Two windows half a tile apart sum to a constant where they overlap: no seams.
    assert np.allclose(one_d[16:] + one_d[:16], 1.0, atol=1e-3)


def pointwise(batch: np.ndarray) -> np.ndarray:
    """A fake model whose output at a pixel depends only on that pixel."""
    return np.concatenate([batch[..., :1] * 2 + 0.1, batch[..., 1:2] - batch[..., 2:3]], axis=-1)


@pytest.mark.parametrize(("h", "w"), [(32, 32), (70, 45), (96, 128), (20, 13), (1, 40), (33, 31)])
def test_tiles_reassemble_the_full_image_exactly(h, w):
    image = np.random.default_rng(h * w).random((h, w, 3)).astype(np.float32)
    calls = []

    def model(batch):
        calls.append(batch.shape)
        return pointwise(batch)

    out = sliding_window(model, image, (32, 32), batch_size=3)
    assert out.shape == (h, w, 2)
    np.testing.assert_allclose(out, pointwise(image[None])[0], atol=1e-5)
    assert all(shape[0] <= 3 and shape[1:] == (32, 32, 3) for shape in calls)


def test_tiles_overlap_by_half_a_tile():
    seen = []
    sliding_window(lambda b: seen.extend(b) or b[..., :1], np.zeros((64, 64, 3)), (32, 32))
    assert len(seen) == 9  # starts 0, 16, 32 on each axis


def test_tile_borders_are_weighted_down():
    # A model that is wrong only on a 2-pixel rim of every tile (what convolutions do
    # at a tile's edge): blending must keep the rim out of the image's interior.
    def rim(batch):
        out = np.zeros(batch.shape[:-1] + (1,), np.float32)
        out[:, :2] = out[:, -2:] = out[:, :, :2] = out[:, :, -2:] = 1.0
        return out

    out = sliding_window(rim, np.zeros((96, 96, 3), np.float32), (32, 32))
    assert out[2:-2, 2:-2].max() < 0.05
    naive = sliding_window(rim, np.zeros((96, 96, 3), np.float32), (32, 32), overlap=0.0)
    assert naive[2:-2, 2:-2].max() == 1.0  # without overlap the seams show


def test_small_images_are_reflect_padded():
    image = np.arange(6, dtype=np.float32).reshape(2, 3, 1)
    padded = pad_to(image, 4, 4)
    assert padded.shape == (4, 4, 1)
    assert padded[2, 0, 0] == image[0, 0, 0] and padded[0, 3, 0] == image[0, 1, 0]


def test_overlap_out_of_range_is_refused():
    with pytest.raises(ValueError, match="overlap"):
        sliding_window(pointwise, np.zeros((8, 8, 3)), (8, 8), overlap=1.0)


def test_to_classes_thresholds_sigmoid_and_argmaxes_softmax():
    assert to_classes(np.array([[[0.2], [0.5], [0.9]]])).tolist() == [[0, 1, 1]]
    probs = np.array([[[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]])
    assert to_classes(probs).tolist() == [[1, 0]]


# -- a real (hand-written) run folder ----------------------------------------------------


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    from planner.app.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("inference")
    data = make_demo_dataset(root / "data", n=4, size=(64, 64))
    return make_run(root / "run", make_plan(data))


@pytest.fixture(scope="module")
def loaded(fake):
    return load_run(fake.path)


def test_load_run_rebuilds_the_model_and_loads_the_best_weights(fake, loaded):
    run = loaded
    assert run.num_classes == 2 and run.mask_values == (0, 255)
    assert run.model.output_shape == (None, 32, 32, 1)
    np.testing.assert_allclose(run.model.predict_on_batch(fake.x), fake.y, atol=1e-6)


def test_load_run_never_deserialises_a_model_file(fake, monkeypatch):
    """The model is rebuilt from plan.json and given the weights; no saved model is loaded."""
    import keras

    calls = []

    def refuse(*args, **kwargs):  # recorded too: a loader that caught the error still fails
        calls.append(args)
        raise AssertionError("load_model must not be used on a run folder")

    monkeypatch.setattr(keras.models, "load_model", refuse)
    monkeypatch.setattr(keras.saving, "load_model", refuse)
    run = load_run(fake.path)
    assert calls == []
    np.testing.assert_allclose(run.model.predict_on_batch(fake.x), fake.y, atol=1e-6)


@pytest.mark.parametrize(("h", "w"), [(50, 70), (20, 24), (10, 6)])
def test_predictions_have_the_image_size(loaded, h, w):
    run = loaded
    image = np.random.default_rng(0).random((h, w, 3)).astype(np.float32)
    probs = run.predict_proba(image)
    assert probs.shape == (h, w, 1) and 0 <= probs.min() and probs.max() <= 1
    assert run.predict_classes(image).shape == (h, w)


def _copy_run(fake, dest, **data_changes):
    shutil.copytree(fake.path, dest)
    raw = json.loads((dest / "plan.json").read_text())
    raw["data"].update(data_changes)
    (dest / "plan.json").write_text(json.dumps(raw))
    return dest


def test_image_scale_predicts_smaller_and_resizes_back(tmp_path, fake):
    run = load_run(_copy_run(fake, tmp_path / "run", image_scale=0.5))
    seen = []
    real = run.predict_batch
    run.predict_batch = lambda b: seen.append(b.shape) or real(b)
    out = run.predict_classes(np.random.default_rng(1).random((64, 64, 3)).astype(np.float32))
    assert out.shape == (64, 64)
    assert len(seen) == 1  # the 64x64 image became one 32x32 tile


def test_missing_files_are_named(tmp_path, fake):
    with pytest.raises(RunDirError, match="run folder not found"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="plan.json"):
        load_run(tmp_path / "empty")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "plan.json").write_text((fake.path / "plan.json").read_text())
    with pytest.raises(RunDirError, match="best.weights.h5"):
        load_run(partial)


def test_weights_that_do_not_fit_the_plan_are_refused(tmp_path, fake):
    bad = tmp_path / "bad"
    bad.mkdir()
    raw = json.loads((fake.path / "plan.json").read_text())
    raw["normalization"] = "group"  # GroupNorm layers where the file has BatchNorm
    (bad / "plan.json").write_text(json.dumps(raw))
    (bad / "best.weights.h5").write_bytes((fake.path / "best.weights.h5").read_bytes())
    with pytest.raises(RunDirError, match="does not fit"):
        load_run(bad)


def test_without_metrics_the_class_count_comes_from_the_plan(tmp_path, fake):
    path = _copy_run(fake, tmp_path / "run")
    (path / "metrics.json").unlink()
    run = load_run(path)
    assert run.num_classes == 2 and run.metrics == {}
    path = _copy_run(fake, tmp_path / "run2", mask_values=None)
    (path / "metrics.json").unlink()
    with pytest.raises(RunDirError, match="num_classes"):
        load_run(path)
