"""What the scanned masks say: class values, the task, class shares and mask remarks.

The rule for which values are classes is `trainer.data.masks` (one rule for scan and
training); this module only adds it up over the dataset and explains oddities.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.data.masks import (
    MAX_CLASSES,
    class_values_from_histogram,
    fringe_share,
    nearest_class_lut,
)

# A mask with more than this share of pixels between class values gets a note by name.
# epfl-em's resampling fringe peaks at 0.7% of a mask; JPEG-saved masks reach 5-20%.
MASK_FRINGE_NOTE = 0.02
# Over the whole dataset, a fringe above this gets a suggestion.
DATASET_FRINGE_SUGGEST = 0.01
# Class values within this distance of the lowest or highest one look like JPEG ringing.
_NEAR_END = 32

Levels = tuple[np.ndarray, np.ndarray]


def sparse_levels(hist: np.ndarray) -> Levels:
    """(values, counts) of the non-zero bins of a histogram: a few entries per mask."""
    nz = np.nonzero(hist)[0]
    return nz.astype(np.int64), np.asarray(hist)[nz].astype(np.int64)


def mask_summary(masks: list[tuple[str, Levels]]) -> dict[str, Any]:
    """Sum the masks' value counts and derive the fingerprint's mask fields.

    Args:
        masks: (relative mask path, sparse value counts) of every decoded good mask.

    Returns:
        `task`, `classes`, `mask_values`, `mask_fringe_share`, `class_pixel_share`,
        `suggestions` and `notes` (per-mask remarks, each naming the file).
    """
    depth = max((int(v.max()) + 1 for _, (v, _) in masks if v.size), default=256)
    total = np.zeros(max(depth, 256), dtype=np.int64)
    for _, (v, c) in masks:
        np.add.at(total, v, c)
    values = class_values_from_histogram(total)
    task, suggestions = _task(values)
    notes: list[dict[str, str]] = []
    fringe = fringe_share(total, values) if values else 0.0
    if fringe > DATASET_FRINGE_SUGGEST:
        suggestions.append(
            f"{fringe:.1%} of mask pixels lie between the class values {values} (JPEG "
            f"artefacts or anti-aliasing); training maps them to the nearest class, but "
            f"masks saved as PNG with exact values are better"
        )
    shares: list[float] = []
    if values and total.sum() > 0:
        lut = nearest_class_lut(values, depth=len(total))
        per_class = np.bincount(lut, weights=total, minlength=len(values))
        shares = [round(float(s), 6) for s in per_class / total.sum()]
        notes = _fringe_notes(masks, values)
    return {
        "task": task,
        "classes": len(values) if task != "unknown" else 0,
        "mask_values": values,
        "mask_fringe_share": round(fringe, 6),
        "class_pixel_share": shares,
        "suggestions": suggestions,
        "notes": notes,
    }


def _task(values: list[int]) -> tuple[str, list[str]]:
    """The task the class values describe, and suggestions when they look wrong."""
    suggestions: list[str] = []
    if len(values) == 2:
        task = "binary"
    elif 3 <= len(values) <= MAX_CLASSES:
        task = "multiclass"
    else:
        task = "unknown"
    if len(values) == 1:
        suggestions.append(
            f"every mask holds the single value {values[0]}: nothing to segment "
            f"(is --masks the right folder?)"
        )
    elif len(values) > MAX_CLASSES:
        suggestions.append(
            f"masks hold {len(values)} common grey levels: these are not label maps; save one "
            f"value per class"
        )
    if task == "multiclass":
        lo, hi = values[0], values[-1]
        if hi - lo >= 128 and all(v - lo <= _NEAR_END or hi - v <= _NEAR_END for v in values):
            suggestions.append(
                f"class values {values} cluster at {lo} and {hi}: these look like binary masks "
                f"with JPEG artefacts; re-save them as PNG with exact values (threshold at "
                f"{(lo + hi) // 2})"
            )
    return task, suggestions


def _fringe_notes(masks: list[tuple[str, Levels]], values: list[int]) -> list[dict[str, str]]:
    notes = []
    is_class = set(values)
    for name, (v, c) in masks:
        n = int(c.sum())
        off = [
            (int(val), int(cnt)) for val, cnt in zip(v, c, strict=True) if int(val) not in is_class
        ]
        share = sum(cnt for _, cnt in off) / n if n else 0.0
        if share > MASK_FRINGE_NOTE:
            notes.append(
                {
                    "file": name,
                    "note": (
                        f"stray grey levels: {share:.1%} of pixels at {len(off)} values between "
                        f"the classes {values} (JPEG artefacts?); they count as the nearest "
                        f"class; re-save as PNG with exact values"
                    ),
                }
            )
    return notes
