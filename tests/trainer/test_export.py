"""Export round trips: every format predicts what the trained model does, within tolerance."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.trained_run import trained_run_fixture  # noqa: F401  (the `trained_run` fixture)
from trainer.errors import FitplanError
from trainer.use import export as export_mod
from trainer.use.export import TOLERANCE, _atomic_dir, export, run_tflite

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded(trained_run):
    from trainer.use.inference import load_run

    return load_run(trained_run.path, precision="float32")  # built once for every export below


def _reload(fmt: str, path: str, x: np.ndarray) -> np.ndarray:
    """Run an export with the consumer's own loader, independently of export()."""
    if fmt == "keras":
        import keras

        return np.asarray(keras.models.load_model(path, compile=False).predict_on_batch(x))
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        return loaded.serve(tf.constant(x)).numpy()
    with open(path, "rb") as fh:
        return run_tflite(fh.read(), x)


@pytest.mark.parametrize(
    ("fmt", "quantize"),
    [
        ("keras", None),
        ("savedmodel", None),
        ("tflite", None),
        ("tflite", "float16"),
        ("tflite", "int8"),
    ],
)
def test_export_round_trips_within_tolerance(trained_run, loaded, fmt, quantize):
    out = export(trained_run.path, fmt, quantize, run=loaded)
    tol = TOLERANCE[(fmt, quantize)]
    assert out["tolerance"] == tol and out["bytes"] > 10_000
    assert out["max_abs_diff"] <= tol["max_abs_diff"]
    assert out["mean_abs_diff"] <= tol["mean_abs_diff"]
    assert out["mask_agreement"] >= tol["mask_agreement"]
    assert out["inputs_from"] == "training images"
    suffix = {"keras": "model.keras", "savedmodel": "savedmodel"}.get(fmt, ".tflite")
    assert out["path"].endswith(suffix) and (trained_run.path / "export").is_dir()
    got = _reload(fmt, out["path"], trained_run.x)
    assert got.shape == trained_run.y.shape
    assert np.mean(np.abs(got - trained_run.y)) <= tol["mean_abs_diff"]
    assert np.max(np.abs(got - trained_run.y)) <= tol["max_abs_diff"]
    assert not list((trained_run.path / "export").glob(".*tmp*"))


def test_quantized_tflite_is_smaller(trained_run):
    sizes = {p.name: p.stat().st_size for p in (trained_run.path / "export").glob("*.tflite")}
    if len(sizes) < 3:
        pytest.skip("needs the round-trip tests of this module to have run")
    assert sizes["model-int8.tflite"] < sizes["model-float16.tflite"] < sizes["model.tflite"]


@pytest.mark.parametrize(
    ("fmt", "quantize", "match"),
    [
        ("onnx", None, "format"),
        ("keras", "int8", "only with tflite"),
        ("tflite", "int4", "float16"),
    ],
)
def test_bad_arguments_are_named(trained_run, fmt, quantize, match):
    with pytest.raises(FitplanError, match=match):
        export(trained_run.path, fmt, quantize)


def test_int8_without_training_images_is_refused(trained_run, loaded, tmp_path):
    with pytest.raises(FitplanError, match="int8"):
        export(
            trained_run.path,
            "tflite",
            "int8",
            tmp_path / "m.tflite",
            data_root=tmp_path,
            run=loaded,
        )
    assert not (tmp_path / "m.tflite").exists()


def test_synthetic_inputs_check_a_float_export_when_the_data_is_gone(trained_run, loaded, tmp_path):
    out = export(
        trained_run.path, "keras", out=tmp_path / "m.keras", data_root=tmp_path, run=loaded
    )
    assert out["inputs_from"].startswith("synthetic") and out["max_abs_diff"] == 0.0


def test_an_export_over_tolerance_is_not_written(trained_run, loaded, tmp_path, monkeypatch):
    strict = {"max_abs_diff": -1.0, "mean_abs_diff": 1.0, "mask_agreement": 0.0}
    monkeypatch.setitem(export_mod.TOLERANCE, ("keras", None), strict)
    target = tmp_path / "m.keras"
    with pytest.raises(FitplanError, match="max_abs_diff=0, over the tolerance -1"):
        export(trained_run.path, "keras", out=target, run=loaded)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_is_swapped_in_whole(tmp_path):
    target = tmp_path / "sm"
    target.mkdir()
    (target / "old").write_text("old")
    with _atomic_dir(target) as tmp:
        (tmp / "new").write_text("new")
        assert (target / "old").exists()  # the old folder stays until the new one is done
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sm"]
    assert [p.name for p in target.iterdir()] == ["new"]
    with pytest.raises(RuntimeError), _atomic_dir(target) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("export failed")
    assert [p.name for p in target.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sm"]


def test_a_leftover_from_a_crashed_export_does_not_block_the_next(tmp_path, monkeypatch):
    """Issue 16: the swap was two renames through a fixed `.sm.old.tmp` name; a crash
    between them left that folder behind and every later export failed on it."""
    target = tmp_path / "sm"
    target.mkdir()
    (target / "old").write_text("old")
    leftover = tmp_path / ".sm.old.tmp"
    leftover.mkdir()
    (leftover / "junk").write_text("x")
    moves = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: moves.append((a, b)) or real_replace(a, b))
    with _atomic_dir(target) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new"]
    assert moves == []  # one exchange, never a moment without `sm`
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sm.old.tmp", "sm"]


def test_exchange_falls_back_to_two_renames_where_unsupported(tmp_path, monkeypatch):
    monkeypatch.setattr("trainer.atomic.exchange", lambda a, b: False)
    target = tmp_path / "sm"
    target.mkdir()
    (target / "old").write_text("old")
    with _atomic_dir(target) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["sm"]
