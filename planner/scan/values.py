"""What the scanned masks say: class values, the task, class shares and mask remarks.

The rule for which values are classes is `trainer.data.masks` (one rule for scan and
training); this module only adds it up over the dataset and explains oddities.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.data.masks import (
    CLASS_MIN_SHARE,
    MAX_CLASSES,
    class_values_from_histogram,
    fringe_share,
    nearest_class_lut,
    resolve_ignore,
    split_values,
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


def mask_summary(
    masks: list[tuple[str, Levels]],
    *,
    classes: dict[int, str | None] | None = None,
    ignore_index: int | None = None,
    merge_rare: bool = False,
) -> dict[str, Any]:
    """Sum the masks' value counts and derive the fingerprint's mask fields.

    Args:
        masks: (relative mask path, sparse value counts) of every decoded good mask.
        classes: the user's classes (`--classes`): raw value -> name (or `None`), or
            `None` to infer them (`trainer.data.masks.split_values`).
        ignore_index: the user's ignore value (`-1`: none), or `None`: VOC's default.
        merge_rare: map rare values to the nearest class instead of keeping them.

    Returns:
        `task`, `classes`, `mask_values`, `class_names`, `ignore_index`, `ignore_share`,
        `rare_values`, `merge_rare`, `mask_fringe_share`, `class_pixel_share`,
        `suggestions` and `notes` (per-mask remarks, each naming the file).
    """
    depth = max((int(v.max()) + 1 for _, (v, _) in masks if v.size), default=256)
    total = np.zeros(max(depth, 256, (ignore_index or 0) + 1), dtype=np.int64)
    for _, (v, c) in masks:
        np.add.at(total, v, c)
    ignore = resolve_ignore(ignore_index, class_values_from_histogram(total))
    if classes is not None:
        values = sorted(classes)
        rare = [int(v) for v in np.nonzero(total)[0] if v not in classes and v != ignore]
    else:
        values, rare = split_values(total, ignore=ignore, merge_rare=merge_rare)
    n_all = total.sum()
    ignore_share = float(total[ignore] / n_all) if ignore is not None and n_all else 0.0
    if ignore is not None:
        total = total.copy()
        total[ignore] = 0  # ignored pixels are in no class's share
    task, suggestions = _task(values)
    rare_values = _rare_values(total, values, rare)
    unlisted = rare if classes is not None else []
    suggestions += _rare_suggestions(rare_values, unlisted, merge_rare, classes is not None)
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
        notes = _fringe_notes(masks, values, ignore)
    names = [classes[v] or f"class {i}" for i, v in enumerate(values)] if classes else None
    return {
        "task": task,
        "classes": len(values) if task != "unknown" else 0,
        "mask_values": values,
        "class_names": names if classes and any(classes.values()) else None,
        "ignore_index": ignore,
        "ignore_share": round(ignore_share, 6),
        "rare_values": rare_values,
        "merge_rare": merge_rare,
        "mask_fringe_share": round(fringe, 6),
        "class_pixel_share": shares,
        "suggestions": suggestions,
        "notes": notes,
    }


def _rare_values(total: np.ndarray, values: list[int], rare: list[int]) -> list[dict[str, Any]]:
    """Values under `CLASS_MIN_SHARE` of the pixels, their share, and whether each is a class."""
    n = total.sum()
    out = []
    for v in sorted(set(rare) | set(values)):
        share = float(total[v] / n) if n else 0.0
        if share < CLASS_MIN_SHARE:
            out.append({"value": int(v), "share": round(share, 8), "class": v in values})
    return out[:MAX_CLASSES]


def _rare_suggestions(
    rare: list[dict[str, Any]], unlisted: list[int], merged: bool, given: bool
) -> list[str]:
    """Say what happens to rare values on a label grid: never merged without a word."""
    kept = [r["value"] for r in rare if r["class"]]
    out = []
    if kept and not given:
        out.append(
            f"mask values {kept} hold under {CLASS_MIN_SHARE:.2%} of the pixels each; they are "
            f"kept as classes (--merge-rare maps them to the nearest class instead)"
        )
    mapped = [r["value"] for r in rare if not r["class"]]
    if merged and mapped and len(mapped) <= 16:
        out.append(f"mask values {mapped} are mapped to the nearest class (--merge-rare)")
    if given and unlisted:
        shown = unlisted[:16] + (["..."] if len(unlisted) > 16 else [])
        out.append(
            f"mask values {shown} are not listed in --classes; training maps them to the "
            f"nearest listed value"
        )
    return out


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


def _fringe_notes(
    masks: list[tuple[str, Levels]], values: list[int], ignore: int | None
) -> list[dict[str, str]]:
    notes = []
    is_class = set(values) | {ignore}
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
