"""Evaluation: exact scores from a fake model on hand-made masks, and a real run's report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.trained_run import SIZE, N, trained_run_fixture  # noqa: F401  (a fixture)
from tests.trainer.run_factory import make_plan
from trainer.errors import DataError, RunDirError
from trainer.use.evaluate import class_scores, confusion, evaluate
from trainer.use.inference import LoadedRun


def test_class_scores_from_a_confusion_matrix():
    cm = confusion(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2)
    assert cm.tolist() == [[1, 1], [0, 2]]
    fg = class_scores(cm)[1]
    assert fg["dice"] == pytest.approx(0.8) and fg["iou"] == pytest.approx(2 / 3)
    assert fg["precision"] == pytest.approx(2 / 3) and fg["recall"] == 1.0


def test_a_class_absent_everywhere_scores_one_and_has_no_precision():
    scores = class_scores(confusion(np.zeros(4), np.zeros(4), 3))
    assert scores[2] == {"dice": 1.0, "iou": 1.0, "precision": None, "recall": None}
    missed = class_scores(confusion(np.array([1, 1]), np.array([0, 0]), 2))[1]
    assert missed["dice"] == 0.0 and missed["precision"] is None and missed["recall"] == 0.0


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def visible(tmp_path) -> Path:
    """a: the foreground is visible in the image; b: the image is black, the mask is not."""
    root = tmp_path / "set"
    mask_a = np.zeros((64, 64), np.uint8)
    mask_a[8:24, 8:24] = 255  # 256 pixels
    mask_b = np.zeros((32, 48), np.uint8)
    mask_b[4:12, 4:12] = 255  # 64 pixels
    _write(root / "images" / "a.png", np.stack([mask_a] * 3, axis=-1))
    _write(root / "images" / "b.png", np.zeros((32, 48, 3), np.uint8))
    _write(root / "masks" / "a.png", mask_a)
    _write(root / "masks" / "b.png", mask_b)
    return root


class Bright:
    """A fake model: probability = the tile's brightness (predicts what it sees)."""

    def predict_on_batch(self, batch):
        return batch[..., :1]


def _fake_run(root: Path, mask_values=(0, 255)) -> LoadedRun:
    return LoadedRun(root, make_plan(root), Bright(), 2, mask_values)


def test_scores_accumulate_over_all_pixels_and_per_image_means_differ(visible):
    seen = []
    out = evaluate(None, visible, run=_fake_run(visible), progress=lambda *a: seen.append(a))
    assert out["images"] == 2 and out["pixels"] == 64 * 64 + 32 * 48
    # a is perfect (TP 256); b is missed entirely (FN 64): pooled over pixels ...
    assert out["dice_mean"] == pytest.approx(512 / (512 + 64))
    assert out["iou_mean"] == pytest.approx(256 / 320)
    assert out["precision_mean"] == 1.0 and out["recall_mean"] == pytest.approx(0.8)
    # ... while the mean over images weighs b's miss as much as a's hit.
    assert out["per_image_dice_mean"] == pytest.approx(0.5)
    bg, fg = out["per_class"]
    assert (bg["class"], bg["value"], fg["class"], fg["value"]) == (0, 0, 1, 255)
    assert fg["pixels"] == 320 and bg["pixels"] == out["pixels"] - 320
    assert bg["dice"] == pytest.approx(2 * 5312 / (2 * 5312 + 64))
    assert [s[:2] for s in seen] == [(1, 2), (2, 2)]


def test_mask_values_are_inferred_when_the_run_did_not_record_them(visible):
    out = evaluate(None, visible, run=_fake_run(visible, mask_values=None))
    assert out["mask_values"] == [0, 255] and out["dice_mean"] == pytest.approx(512 / 576)


def test_masks_with_another_class_count_are_refused(visible):
    _write(visible / "masks" / "b.png", np.tile(np.array([0, 128, 255], np.uint8), (32, 16)))
    with pytest.raises(DataError, match="3 class values"):
        evaluate(None, visible, run=_fake_run(visible, mask_values=None))


def test_a_mask_of_another_size_is_named(visible):
    _write(visible / "masks" / "b.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match=r"b\.png: mask is 10x10"):
        evaluate(None, visible, run=_fake_run(visible))


def test_no_pairs_is_a_data_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no image/mask pairs"):
        evaluate(tmp_path, tmp_path, run=_fake_run(tmp_path))


def test_a_wrong_run_folder_is_named_before_the_data_is_read(tmp_path):
    with pytest.raises(RunDirError, match="run folder not found"):
        evaluate(tmp_path / "nope", tmp_path / "no-data-either")


@pytest.mark.slow
def test_a_real_run_is_scored_on_native_size_masks(trained_run):
    out = evaluate(trained_run.path, trained_run.data)
    h, w = SIZE
    assert out["images"] == N and out["pixels"] == N * h * w
    assert 0.0 <= out["dice_mean"] <= 1.0 and 0.0 <= out["iou_mean"] <= out["dice_mean"]
    assert [c["class"] for c in out["per_class"]] == [0, 1]
    assert out["run"] == str(trained_run.path)
