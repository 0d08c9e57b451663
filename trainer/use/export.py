"""Export a trained run for use outside fitplan, and prove the export predicts the same.

Formats: a Keras `.keras` file, a TensorFlow SavedModel folder (`model.export`) and
a TFLite flatbuffer converted from that SavedModel (optionally float16 or int8
quantized). The model is rebuilt in float32 whatever precision it trained in: every
format can hold it, and the weights are float32 under mixed precision anyway.

Before the export is moved into place, it is loaded back and run on a few inputs
(crops of the training images when they are still there, else seeded synthetic
images); its probabilities must match the rebuilt Keras model's within `TOLERANCE`,
or nothing is written. The input size is fixed (`plan.input_size`), the batch size is
free; whole images are predicted with the same tiling as `fitplan predict`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import DiskFullError, FitplanError, RunDirError
from trainer.use.inference import LoadedRun, load_run, sample_crops
from trainer.use.tiling import to_classes

FORMATS = ("keras", "savedmodel", "tflite")
QUANTIZE = ("float16", "int8")
# How closely an export must reproduce the rebuilt Keras model's probabilities on the
# check inputs: bounds on the largest and the mean |difference| and on the share of
# pixels given the same class. Float32 formats differ by rounding only. Quantized
# ones move some probabilities a lot: int8 quantizes every activation to 256 levels,
# and a pixel near 0.5 may cross it (measured on an epfl-em model: max 0.24, mean
# 0.0027, 99.80% same class; float16: max 0.004, mean 5e-5, 99.995%), so they are
# bounded on the mean and on the masks. A broken conversion (wrong input scaling,
# swapped channels) misses these bounds by far.
TOLERANCE: dict[tuple[str, str | None], dict[str, float]] = {
    ("keras", None): {"max_abs_diff": 1e-5, "mean_abs_diff": 1e-6, "mask_agreement": 0.9999},
    ("savedmodel", None): {"max_abs_diff": 1e-5, "mean_abs_diff": 1e-6, "mask_agreement": 0.9999},
    ("tflite", None): {"max_abs_diff": 1e-4, "mean_abs_diff": 1e-5, "mask_agreement": 0.999},
    ("tflite", "float16"): {"max_abs_diff": 0.05, "mean_abs_diff": 1e-3, "mask_agreement": 0.995},
    ("tflite", "int8"): {"max_abs_diff": 1.0, "mean_abs_diff": 0.02, "mask_agreement": 0.98},
}
CHECK_INPUTS = 4
CALIBRATION_INPUTS = 32


def default_path(run_dir: Path, fmt: str, quantize: str | None) -> Path:
    """`RUN/export/model.keras`, `RUN/export/savedmodel`, `RUN/export/model[-q].tflite`."""
    names = {"keras": "model.keras", "savedmodel": "savedmodel", "tflite": "model.tflite"}
    name = names[fmt]
    if quantize:
        name = f"model-{quantize}.tflite"
    return Path(run_dir) / "export" / name


def export(
    run_dir: str | Path,
    format: str = "keras",
    quantize: str | None = None,
    out: str | Path | None = None,
    *,
    data_root: str | Path | None = None,
    run: LoadedRun | None = None,
) -> dict[str, Any]:
    """Export the run's best model and check that it predicts what the Keras model does.

    Args:
        run_dir: the run folder.
        format: `"keras"` (default), `"savedmodel"` (a folder) or `"tflite"`.
        quantize: `None` (default): float32; `"float16"` or `"int8"` (tflite only).
            int8 calibrates its activation ranges on crops of the training images.
        out: the file (folder for savedmodel) to write. `None` (default):
            `default_path(run_dir, format, quantize)`. Replaced if it exists.
        data_root: dataset root for the check and calibration crops. `None`
            (default): the plan's `data.path`.
        run: the run already loaded in float32 (`load_run(run_dir, precision="float32")`),
            to export several formats without rebuilding. `None` (default): load it.

    Returns:
        `path`, `format`, `quantize`, `bytes` (the file's size, or the folder's
        total), `max_abs_diff` and `mean_abs_diff` (probability differences from
        the Keras model), `mask_agreement` (share of pixels given the same class),
        `tolerance` (the bounds these met, `TOLERANCE`),
        `check_inputs` and `inputs_from` (`"training images"` or `"synthetic"`).

    Raises:
        FitplanError: an unknown format, quantize without tflite, int8 without the
            training images, or an export that does not match within tolerance
            (nothing is written then).
        RunDirError: the run folder is incomplete.
    """
    if format not in FORMATS:
        raise FitplanError(
            f"`format` must be one of {', '.join(FORMATS)}. Received: format={format!r}"
        )
    if quantize is not None and (quantize not in QUANTIZE or format != "tflite"):
        expected = (
            "float16 or int8 with format tflite" if format == "tflite" else "only with tflite"
        )
        raise FitplanError(f"`quantize` applies {expected}. Received: quantize={quantize!r}")
    run = run or load_run(run_dir, precision="float32")
    target = Path(out) if out is not None else default_path(run.path, format, quantize)
    check, source = sample_crops(run, data_root, CHECK_INPUTS, seed=1)
    if quantize == "int8" and source != "training images":
        raise FitplanError(
            f"int8 quantization calibrates on the training images; refusing {source}",
            hint="give the dataset root with --data",
        )
    reference = np.asarray(run.model.predict_on_batch(check))
    tol = TOLERANCE[(format, quantize)]

    def verify(predicted: np.ndarray) -> dict[str, Any]:
        diff = np.abs(np.asarray(predicted, np.float32) - reference)
        got = {
            "max_abs_diff": float(np.max(diff)),
            "mean_abs_diff": float(np.mean(diff)),
            "mask_agreement": float(np.mean(to_classes(predicted) == to_classes(reference))),
        }
        for key, bound in tol.items():
            ok = got[key] >= bound if key == "mask_agreement" else got[key] <= bound
            if not ok:  # a NaN fails too
                raise FitplanError(
                    f"the {format} export does not match the trained model: {key}={got[key]:.3g}, "
                    f"over the tolerance {bound:g}; nothing was written to {target}"
                )
        return got

    if format == "keras":
        result = _export_keras(run, target, check, verify)
    elif format == "savedmodel":
        result = _export_savedmodel(run, target, check, verify)
    else:
        result = _export_tflite(run, target, check, verify, quantize, data_root)
    return {
        "path": str(target),
        "format": format,
        "quantize": quantize,
        "bytes": _size(target),
        **result,
        "tolerance": tol,
        "check_inputs": len(check),
        "inputs_from": source,
    }


def _export_keras(run: LoadedRun, target: Path, check, verify) -> dict[str, Any]:
    import keras

    from trainer.atomic import atomic_path

    with atomic_path(target, suffix=".keras") as tmp:
        run.model.save(str(tmp))
        # safe_mode=True: this is our own fresh file, and still no lambda is deserialised.
        loaded = keras.models.load_model(str(tmp), compile=False, safe_mode=True)
        return verify(loaded.predict_on_batch(check))


def _export_savedmodel(run: LoadedRun, target: Path, check, verify) -> dict[str, Any]:
    import tensorflow as tf

    with _atomic_dir(target) as tmp:
        run.model.export(str(tmp), format="tf_saved_model", verbose=False)
        loaded = tf.saved_model.load(str(tmp))  # keep it referenced: it owns the variables
        return verify(loaded.serve(tf.constant(check)).numpy())


def _export_tflite(run, target, check, verify, quantize, data_root) -> dict[str, Any]:
    import tensorflow as tf

    from trainer.atomic import write_bytes

    with tempfile.TemporaryDirectory(prefix=".fitplan-export-") as tmp:
        run.model.export(tmp, format="tf_saved_model", verbose=False)
        # The SavedModel route is the converter path documented for Keras 3 models.
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            calib, _ = sample_crops(run, data_root, CALIBRATION_INPUTS, seed=2)
            # Inputs and outputs stay float32, so the exported interface is unchanged.
            converter.representative_dataset = lambda: ([c[None]] for c in calib)
        data = converter.convert()
    try:
        predicted = run_tflite(data, check)
    except (RuntimeError, ValueError) as exc:  # e.g. an XNNPACK delegate that cannot prepare
        raise FitplanError(
            f"the converted tflite model does not run ({str(exc).splitlines()[0]}); "
            f"nothing was written to {target}"
        ) from exc
    result = verify(predicted)
    write_bytes(target, data)
    return result


def run_tflite(model: bytes, batch: np.ndarray) -> np.ndarray:
    """Run a TFLite flatbuffer on a float32 batch with TensorFlow's own interpreter."""
    import tensorflow as tf

    with warnings.catch_warnings():
        # Deprecated in favour of ai_edge_litert, which is not a fitplan dependency.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        interp = tf.lite.Interpreter(model_content=model)
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], list(batch.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], batch.astype(np.float32))
    interp.invoke()
    return interp.get_tensor(outp["index"])


@contextlib.contextmanager
def _atomic_dir(target: Path) -> Iterator[Path]:
    """A temporary folder next to `target`, swapped in by one atomic exchange on success.

    An existing `target` and the new folder trade places in one `renameat2` call
    (`trainer.atomic.exchange`), then the old one is deleted; where the file system
    cannot exchange, the old folder is first renamed to a unique name. Temporary names
    are unique, so a leftover from a crashed export never blocks the next one.
    """
    from trainer.atomic import exchange

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if not target.exists():
            os.replace(tmp, target)
        elif exchange(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)  # now the old folder
        else:
            old = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old.tmp", dir=target.parent)
            )
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(f"{target}: disk full while exporting") from exc
        raise RunDirError(f"{target}: cannot write ({exc.strerror or exc})") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


__all__ = [
    "FORMATS",
    "QUANTIZE",
    "TOLERANCE",
    "default_path",
    "export",
    "run_tflite",
]
