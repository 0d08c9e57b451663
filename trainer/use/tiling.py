"""Sliding-window prediction: overlapping tiles blended with a smooth window.

Pure NumPy around any batch-in, batch-out `predict` function, so the reassembly is
testable with fake models. An image is cut into tiles of the model's input size that
overlap by half a tile; each tile's prediction is weighted by a window that is largest
at the tile's centre and near zero at its edges, where a convolutional net sees the
least context, and the weighted sum is divided by the summed weights. With a stride of
half a tile the windows (sin^2 along each axis) sum to a constant inside the image, so
no seams show. Tile starts follow the one rule validation uses (`trainer.data.splits.tile_starts`,
here with a stride of half a tile). See docs/use.md.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from trainer.data.splits import tile_starts

# Half a tile of overlap: every interior pixel is predicted by 4 tiles (2 per axis).
DEFAULT_OVERLAP = 0.5

PredictFn = Callable[[np.ndarray], np.ndarray]


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
    """Pad `[H, W, ...]` at the bottom and right to at least `th` x `tw`, by reflection.

    Not the up-sizing rule (`trainer.data.splits.work_size`), which changes the image's
    scale to match training and is applied before `sliding_window` by `LoadedRun`: this
    only lets `sliding_window` take any image from any `predict` function and return a
    prediction pixel-aligned with it (the padding is cut off again).
    """
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


__all__ = [
    "DEFAULT_OVERLAP",
    "blend_window",
    "pad_to",
    "resize",
    "sliding_window",
    "to_classes",
]
