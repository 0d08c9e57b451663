"""Use a trained run: load it safely and predict whole images with overlapping tiles.

Loading never unpickles anything from the run folder: the model is rebuilt from
`plan.json` (the same builder training used) and `best.weights.h5` is loaded into it.
The weights file holds tensors only, so a run folder from elsewhere cannot run code.

Prediction works at native resolution (times `plan.data.image_scale`), because that
is what the model trained on: random native-resolution crops of `input_size`.
Resizing a whole 768x1024 image down to a 256x256 input would show the model objects
at a scale it never saw. An image is cut into tiles of `input_size` that overlap by
half a tile; each tile's prediction is weighted by a smooth window that is largest
at the tile's centre and near zero at its edges, where a convolutional net sees the
least context, and the weighted sum is divided by the summed weights. With a
stride of half a tile the windows (sin^2 along each axis) sum to a constant inside
the image, so no seams show. Images smaller than a tile are reflect-padded.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import DataError, RunDirError
from trainer.plan import Plan, load_plan

# Half a tile of overlap: every interior pixel is predicted by 4 tiles (2 per axis).
DEFAULT_OVERLAP = 0.5

PredictFn = Callable[[np.ndarray], np.ndarray]


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of `tile` pixels every `stride`; the last one ends at `length`.

    `length` must be >= `tile` (pad smaller images first).
    """
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def blend_window(height: int, width: int) -> np.ndarray:
    """The 2-D weight of one tile: `sin^2` along each axis, never exactly zero.

    Sampled at pixel centres, so the edges get a small positive weight: a pixel that
    only one tile covers (an image border) still gets that tile's prediction.
    """

    def axis(n: int) -> np.ndarray:
        return np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2

    return np.outer(axis(height), axis(width)).astype(np.float32)


def sliding_window(
    predict: PredictFn,
    image: np.ndarray,
    tile: tuple[int, int],
    *,
    batch_size: int = 8,
    overlap: float = DEFAULT_OVERLAP,
) -> np.ndarray:
    """Predict a whole image by blending overlapping tiles.

    Args:
        predict: maps a batch `[B, th, tw, C_in]` to `[B, th, tw, C_out]` (e.g. a
            Keras model's `predict_on_batch`). Called with at most `batch_size` tiles.
        image: `[H, W, C_in]` float32, any size.
        tile: `(th, tw)`, the model's input size.
        batch_size: tiles per call. Defaults to `8`.
        overlap: share of a tile that neighbouring tiles overlap, in [0, 1).
            Defaults to `0.5`: a stride of half a tile.

    Returns:
        `[H, W, C_out]` float32: per pixel, the window-weighted mean of the tiles'
        predictions.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"`overlap` must be in [0, 1). Received: overlap={overlap!r}")
    h, w = image.shape[:2]
    th, tw = tile
    padded = pad_to(image, th, tw)
    ph, pw = padded.shape[:2]
    ys = tile_starts(ph, th, max(1, round(th * (1 - overlap))))
    xs = tile_starts(pw, tw, max(1, round(tw * (1 - overlap))))
    coords = [(y, x) for y in ys for x in xs]
    window = blend_window(th, tw)[..., None]
    acc: np.ndarray | None = None
    weight = np.zeros((ph, pw, 1), np.float32)
    for i in range(0, len(coords), batch_size):
        chunk = coords[i : i + batch_size]
        batch = np.stack([padded[y : y + th, x : x + tw] for y, x in chunk])
        out = np.asarray(predict(batch), dtype=np.float32)
        if acc is None:
            acc = np.zeros((ph, pw, out.shape[-1]), np.float32)
        for (y, x), pred in zip(chunk, out, strict=True):
            acc[y : y + th, x : x + tw] += pred * window
            weight[y : y + th, x : x + tw] += window
    assert acc is not None  # at least one tile always exists
    return (acc / weight)[:h, :w]


def pad_to(image: np.ndarray, th: int, tw: int) -> np.ndarray:
    """Pad `[H, W, ...]` at the bottom and right to at least `th` x `tw`, by reflection."""
    h, w = image.shape[:2]
    pad_h, pad_w = max(0, th - h), max(0, tw - w)
    if not (pad_h or pad_w):
        return image
    # Reflection keeps image statistics at the border, unlike zeros the model never saw.
    widths = ((0, pad_h), (0, pad_w)) + ((0, 0),) * (image.ndim - 2)
    return np.pad(image, widths, mode="reflect" if min(h, w) > 1 else "edge")


def to_classes(probs: np.ndarray) -> np.ndarray:
    """Probabilities `[..., 1]` (sigmoid) or `[..., K]` (softmax) to int32 class indices."""
    if probs.shape[-1] == 1:
        return (probs[..., 0] >= 0.5).astype(np.int32)
    return np.argmax(probs, axis=-1).astype(np.int32)


def resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear, antialiased resize of `[H, W, C]` float32 (as the training pipeline does)."""
    if array.shape[:2] == (height, width):
        return array
    import tensorflow as tf

    out = tf.image.resize(array, (height, width), method="bilinear", antialias=True)
    return out.numpy().astype(np.float32)


@dataclass
class LoadedRun:
    """A trained run, ready to predict.

    Attributes:
        path: the run folder.
        plan: the plan it trained, as in plan.json.
        model: the rebuilt U-Net with the best weights, uncompiled.
        num_classes: classes including background (2: one sigmoid channel).
        mask_values: raw mask value of each class, or `None` if the run did not
            record them (then evaluation infers them from the masks).
        metrics: the run's metrics.json (empty if it has none).
        batch_size: tiles per model call.
    """

    path: Path
    plan: Plan
    model: Any
    num_classes: int
    mask_values: tuple[int, ...] | None
    metrics: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 8

    @property
    def input_size(self) -> tuple[int, int]:
        return (int(self.plan.input_size[0]), int(self.plan.input_size[1]))

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """The model on a batch of tiles; the last partial batch is padded to keep one trace."""
        n = len(batch)
        if n < self.batch_size:
            filler = np.zeros((self.batch_size - n, *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, filler])
        return np.asarray(self.model.predict_on_batch(batch))[:n]

    def predict_proba(self, image: np.ndarray, *, overlap: float = DEFAULT_OVERLAP) -> np.ndarray:
        """Probabilities `[H, W, 1 or K]` for one `[H, W, 3]` image in [0, 1], at its own size."""
        h, w = image.shape[:2]
        scale = self.plan.data.image_scale
        work = image
        if scale != 1.0:  # the size the training pipeline decoded images to
            work = resize(image, max(1, round(h * scale)), max(1, round(w * scale)))
        probs = sliding_window(
            self.predict_batch, work, self.input_size, batch_size=self.batch_size, overlap=overlap
        )
        return resize(probs, h, w)

    def predict_classes(self, image: np.ndarray, *, overlap: float = DEFAULT_OVERLAP) -> np.ndarray:
        """Class indices `[H, W]` int32 for one image, at its own size."""
        return to_classes(self.predict_proba(image, overlap=overlap))


def read_image(path: str | Path) -> np.ndarray:
    """`trainer.decode.load_image`, with a corrupt file as a `DataError` naming it."""
    import tensorflow as tf

    from trainer.decode import load_image

    try:
        return load_image(path)
    except tf.errors.OpError as exc:
        raise DataError(f"{path}: cannot decode image ({exc.message.splitlines()[0]})") from exc


def read_mask(path: str | Path, mask_values: tuple[int, ...]) -> np.ndarray:
    """`trainer.decode.load_mask`, with a corrupt file as a `DataError` naming it."""
    import tensorflow as tf

    from trainer.decode import load_mask

    try:
        return load_mask(path, mask_values)
    except tf.errors.OpError as exc:
        raise DataError(f"{path}: cannot decode mask ({exc.message.splitlines()[0]})") from exc


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The run's metrics.json, or `{}` when it has none (a run killed before the end)."""
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: not a metrics object")
    return data


def load_run(
    run_dir: str | Path, *, precision: str | None = None, batch_size: int | None = None
) -> LoadedRun:
    """Rebuild a run's model from its plan.json and load best.weights.h5 into it.

    Args:
        run_dir: the run folder `fitplan train` wrote.
        precision: dtype policy to build with. `None` (default): the plan's own.
            Export passes `"float32"`, the portable choice.
        batch_size: tiles per model call. `None` (default): twice the plan's
            micro-batch; inference keeps no activations for a backward pass, so it
            needs far less memory per image than the training step did.

    Raises:
        RunDirError: the folder, plan.json or best.weights.h5 is missing, or the
            weights do not fit the model the plan describes (names the file).
        PlanError: plan.json is invalid.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"{run}: run folder not found")
    plan_path, weights = run / "plan.json", run / "best.weights.h5"
    if not plan_path.exists():
        raise RunDirError(f"{plan_path}: missing, so {run} is not a fitplan run folder")
    plan = load_plan(plan_path)
    if not weights.exists():
        raise RunDirError(
            f"{weights}: missing",
            hint="the run stopped before its first epoch finished; train it again or resume it",
        )
    metrics = read_metrics(run)
    num_classes = metrics.get("num_classes") or plan.data.num_classes
    if not isinstance(num_classes, int) or num_classes < 2:
        raise RunDirError(
            f"{run / 'metrics.json'}: missing or without `num_classes`, and plan.json's "
            "data.classes / data.mask_values do not give the class count either"
        )
    mask_values = metrics.get("mask_values") or plan.data.mask_values
    # Pretrained encoder weights are overwritten by the trained ones: never fetch them.
    build_plan = plan.replace(weights="none", precision=precision or plan.precision)
    model = _build(build_plan, num_classes, weights)
    bs = batch_size or max(1, 2 * plan.micro_batch)
    mv = tuple(int(v) for v in mask_values) if mask_values else None
    return LoadedRun(run, plan, model, num_classes, mv, metrics, bs)


def _build(plan: Plan, num_classes: int, weights: Path):
    from trainer.setup import build_model_for_plan

    model = build_model_for_plan(plan, num_classes, compile=False)
    problem = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_weights(str(weights))
        # Keras only warns when parts of the file match no layer and keeps those layers
        # freshly initialised: for a trained model that is an error. The optimizer's
        # slots in the file are expected and not needed for inference.
        skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
        skipped = [m for m in skipped if "optimizer" not in m]
        if skipped:
            problem = skipped[0].splitlines()[0]
    except (ValueError, OSError, KeyError) as exc:
        problem = str(exc).splitlines()[0]
    if problem is not None:
        raise RunDirError(
            f"{weights}: does not fit the model plan.json describes ({problem})",
            hint="was plan.json edited after training?",
        )
    return model


__all__ = [
    "DEFAULT_OVERLAP",
    "LoadedRun",
    "blend_window",
    "load_run",
    "pad_to",
    "read_image",
    "read_mask",
    "read_metrics",
    "resize",
    "sliding_window",
    "tile_starts",
    "to_classes",
]
