"""Which mask values are classes, and which one is ignored, for a training run.

The rules are `trainer.data.masks` (shared with `fitplan scan`); this module applies them
to the pairs the start-up check kept, whose masks it counted (`FileInfo.levels`), and
names in a warning what would otherwise be merged silently (docs/data.md, *Labels*).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from trainer.data.decode import FileInfo, infer_labels, labels_from_histogram
from trainer.data.masks import unlisted_values
from trainer.data.pairs import Pair
from trainer.errors import DataError, FitplanWarning
from trainer.plan import DataSpec


def resolve_labels(
    data: DataSpec, pairs: list[Pair], root, infos: dict[Pair, tuple[FileInfo, FileInfo]]
) -> tuple[tuple[int, ...], int | None]:
    """The class values and the ignore value in effect (`None`: none).

    Args:
        data: the plan's `data`.
        pairs: the training pairs (their masks are counted).
        root: the dataset root (named in messages).
        infos: the start-up check's header facts per pair (`check_pairs`).

    Returns:
        `(raw value of class 0, 1, ..., ignore value or None)`.

    With `data.mask_values` set, the ignore value is `data.ignore_index` as written
    (the planner writes the scan's), and values the masks hold beyond them are named in a
    warning (never merged silently). Else both are inferred from the value counts of
    every training mask, which the start-up check read (`FileInfo.levels`; a sample of
    32 masks when those are missing).
    """
    hist = _value_counts([infos[p][1] for p in pairs])
    folder = Path(root) / data.masks
    if data.palette is not None:  # colour masks: the class is the palette index
        values = tuple(data.mask_values or range(len(data.palette)))
        ignore = None if data.ignore_index is None or data.ignore_index < 0 else data.ignore_index
    elif data.mask_values is not None:
        values = tuple(data.mask_values)
        ignore = None if data.ignore_index is None or data.ignore_index < 0 else data.ignore_index
        extra = unlisted_values(hist, list(values), ignore) if hist is not None else []
        if extra and not data.merge_rare:
            shown = extra[:10] + (["..."] if len(extra) > 10 else [])
            warn(
                f"{folder}: masks hold values {shown} that are not in data.mask_values "
                f"{list(values)}; they are mapped to the nearest class (list them in "
                f"data.mask_values / --classes, or set data.merge_rare to silence this)"
            )
    elif hist is not None:
        found, ignore = labels_from_histogram(
            hist, folder, f"{len(pairs)} masks", data.ignore_index, data.merge_rare
        )
        values = tuple(found)
    else:
        found, ignore = infer_labels(
            [p.mask for p in pairs], ignore=data.ignore_index, merge_rare=data.merge_rare
        )
        values = tuple(found)
    if ignore is not None and ignore < len(values):
        raise DataError(
            f"{Path(root) / data.masks}: data.ignore_index={ignore} is also a class index "
            f"(0 .. {len(values) - 1}); masks keep ignored pixels at that value",
            hint="choose an ignore value >= the number of classes (255 as in VOC)",
        )
    return values, ignore


def _value_counts(masks: list[FileInfo]) -> np.ndarray | None:
    """Pixel count per raw value over masks whose checks counted them, or `None` if any did not."""
    if not masks or any(m.levels is None for m in masks):
        return None
    top = max((v for m in masks for v, _ in m.levels), default=0)
    hist = np.zeros(max(top + 1, 256), np.int64)
    for m in masks:
        for v, c in m.levels:
            hist[v] += c
    return hist


def warn(message: str) -> None:
    warnings.warn(message, FitplanWarning, stacklevel=4)


__all__ = ["resolve_labels"]
