"""Epoch arithmetic, the validation split and tile geometry: pure Python, no TensorFlow.

Shared by the input pipeline (`trainer.data.pipeline`), prediction (`trainer.use`) and
anyone who needs the numbers without building datasets (the planner predicting epoch
time, evaluate, docs). Tile geometry lives here once: the size an image is brought to
(`work_size`) and where its tiles start (`tile_starts`), so validation tiles and
prediction tiles cannot drift apart.
"""

from __future__ import annotations

import hashlib
import math

from trainer.data.pairs import Pair


def val_score(key: str) -> float:
    """A pair's place in [0, 1), from its key alone: stable across runs and file orders."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


def split_pairs(pairs: list[Pair], val_fraction: float) -> tuple[list[Pair], list[Pair]]:
    """Split pairs into (train, val): a pair is validation when `val_score(key) < val_fraction`.

    A pair's membership never changes when files are added or reordered. With
    `val_fraction > 0` and at least 2 pairs, at least one pair goes to each side.
    """
    pairs = sorted(pairs, key=lambda p: p.key)
    if val_fraction <= 0 or len(pairs) < 2:
        return pairs, []
    ranked = sorted(pairs, key=lambda p: (val_score(p.key), p.key))
    n_val = sum(val_score(p.key) < val_fraction for p in pairs)
    n_val = min(max(n_val, 1), len(pairs) - 1)
    val_keys = {p.key for p in ranked[:n_val]}
    return [p for p in pairs if p.key not in val_keys], [p for p in pairs if p.key in val_keys]


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """An image's size times `data.image_scale`, at least one pixel a side."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def upsize_factor(height: int, width: int, tile: tuple[int, int]) -> float:
    """How much an image must grow, aspect kept, for a `tile` to fit in it (1 when it fits).

    Resizing up, not reflect-padding: padding fails for images under half a tile and
    shows the model mirrored content that does not exist (docs/data.md).
    """
    return max(1.0, tile[0] / height, tile[1] / width)


def work_size(height: int, width: int, scale: float, tile: tuple[int, int]) -> tuple[int, int]:
    """The size validation and prediction bring an image to: times `scale`, then, if a
    `tile` does not fit, resized up by `upsize_factor` (whole pixels, at least a tile)."""
    h, w = scaled_size(height, width, scale)
    f = upsize_factor(h, w, tile)
    if f == 1.0:
        return h, w
    return max(tile[0], math.ceil(h * f)), max(tile[1], math.ceil(w * f))


def tile_starts(length: int, tile: int, stride: int | None = None) -> list[int]:
    """Start offsets of `tile`-pixel tiles every `stride` pixels; the last one ends at `length`.

    Args:
        length: the image side, at least `tile` (bring smaller images up with `work_size`).
        tile: the tile side.
        stride: pixels between starts. Defaults to `None`: `tile`, the non-overlapping
            grid validation scores (only the last tile overlaps its neighbour).
            Prediction passes half a tile.

    Raises:
        ValueError: `length < tile`.
    """
    if length < tile:
        raise ValueError(f"`length` must be at least `tile`. Received: {length=}, {tile=}")
    starts = list(range(0, length - tile + 1, stride or tile))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def owned_from(starts: list[int], tile: int) -> list[int]:
    """For each tile start, the first offset inside the tile that no earlier tile covered.

    Validation scores each pixel once: a tile's pixels before this offset (the overlap of
    the last, end-aligned tile with its neighbour) are labelled "ignore" (`-1`), as if
    the overlap were cropped away. The owned ranges of `tile_starts(length, tile)`
    partition `[0, length)`; along two axes, the products partition the image.

    Args:
        starts: tile starts in increasing order (`tile_starts`).
        tile: the tile side.

    Returns:
        One offset per start, in `[0, tile)`.
    """
    out, covered = [], 0
    for start in starts:
        out.append(max(0, covered - start))
        covered = start + tile
    return out


def crops_for(height: int, width: int, input_size: tuple[int, int], fixed: int | None) -> int:
    """Crops per epoch for one image: `fixed`, or its area over the crop area, at least 1."""
    if fixed is not None:
        return fixed
    return max(1, round(height * width / (input_size[0] * input_size[1])))


def epoch_steps(crops: int, batch: int, accumulation: int, cap_updates: int | None = None) -> int:
    """Micro-batches per epoch: enough for `crops`, rounded up to whole optimizer updates."""
    updates = max(1, -(-crops // (batch * accumulation)))
    if cap_updates is not None:
        updates = min(updates, cap_updates)
    return updates * accumulation
