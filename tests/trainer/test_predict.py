"""`predict`: one mask per input at the input's size, failures named, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.trainer.run_factory import make_plan
from trainer.errors import FitplanError
from trainer.use.inference import LoadedRun
from trainer.use.predict import PredictionFailures, predict


class Bright:
    """Binary fake model: foreground where the red channel is bright."""

    def predict_on_batch(self, batch):
        return batch[..., :1]


class RedGreen:
    """Three-class fake model: class 1 where red dominates, class 2 where green does."""

    def predict_on_batch(self, batch):
        return np.concatenate([np.full_like(batch[..., :1], 0.5), batch[..., :2]], axis=-1)


def _run(tmp_path: Path, model, k: int) -> LoadedRun:
    return LoadedRun(tmp_path, make_plan(tmp_path, num_classes=k), model, k, None)


def _image(path: Path, h: int, w: int) -> np.ndarray:
    arr = np.zeros((h, w, 3), np.uint8)
    arr[: h // 2, : w // 2, 0] = 255  # red block top left
    arr[h // 2 :, w // 2 :, 1] = 255  # green block bottom right
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def test_binary_masks_are_0_255_at_the_input_size(tmp_path):
    _image(tmp_path / "in" / "a.png", 50, 70)
    _image(tmp_path / "in" / "sub" / "b.jpg", 20, 24)
    out = predict(None, [tmp_path / "in"], tmp_path / "out", run=_run(tmp_path, Bright(), 2))
    assert out == [tmp_path / "out" / "a.png", tmp_path / "out" / "sub" / "b.png"]
    a = np.asarray(Image.open(out[0]))
    assert a.shape == (50, 70) and set(np.unique(a)) == {0, 255}
    assert a[0, 0] == 255 and a[-1, -1] == 0
    assert np.asarray(Image.open(out[1])).shape == (20, 24)
    assert not list((tmp_path / "out").rglob(".*tmp*"))


def test_multi_class_masks_hold_class_indices_and_overlays_are_written(tmp_path):
    _image(tmp_path / "x.png", 40, 40)
    run = _run(tmp_path, RedGreen(), 3)
    out = predict(None, [tmp_path / "x.png"], tmp_path / "out", overlay=True, run=run)
    m = np.asarray(Image.open(out[0]))
    assert m[0, 0] == 1 and m[-1, -1] == 2 and m[0, -1] == 0
    ov = np.asarray(Image.open(tmp_path / "out" / "x_overlay.png"))
    assert ov.shape == (40, 40, 3) and ov.std() > 0


def test_unreadable_inputs_are_named_and_the_others_still_written(tmp_path):
    _image(tmp_path / "in" / "good.png", 32, 32)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    seen = []
    with pytest.raises(PredictionFailures) as info:
        predict(
            None,
            [tmp_path / "in", tmp_path / "missing.png"],
            tmp_path / "out",
            run=_run(tmp_path, Bright(), 2),
            progress=lambda *a: seen.append(a[:2]),
        )
    err = info.value
    assert err.exit_code == 3
    assert err.written == [tmp_path / "out" / "good.png"] and err.written[0].exists()
    assert {p.name for p, _ in err.failed} == {"broken.png", "missing.png"}
    assert "broken.png" in str(err) and "missing.png" in str(err)
    assert seen == [(1, 2), (2, 2)]
    assert not (tmp_path / "out" / "broken.png").exists()


def test_two_inputs_with_the_same_name_are_refused_before_writing(tmp_path):
    _image(tmp_path / "a" / "x.png", 32, 32)
    _image(tmp_path / "b" / "x.jpg", 32, 32)
    with pytest.raises(FitplanError, match="would both be written"):
        predict(None, [tmp_path / "a" / "x.png", tmp_path / "b" / "x.jpg"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_mask_never_overwrites_its_input(tmp_path):
    _image(tmp_path / "x.png", 32, 32)
    with pytest.raises(FitplanError, match="overwrite an input"):
        predict(None, [tmp_path / "x.png"], tmp_path)
