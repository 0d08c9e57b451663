"""Epoch arithmetic and the validation split: pure Python, no TensorFlow.

Shared by the input pipeline (`trainer.data.pipeline`) and anyone who needs the numbers
without building datasets (the planner predicting epoch time, evaluate, docs).
"""

from __future__ import annotations

import hashlib

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


def tile_starts(length: int, tile: int) -> list[int]:
    """Start offsets of tiles covering `length`; the last one is aligned to the end."""
    n = -(-length // tile)
    return [min(i * tile, length - tile) for i in range(n)]


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
