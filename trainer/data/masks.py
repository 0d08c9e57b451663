"""What the values in a set of masks mean. Shared by `fitplan scan` and the trainer.

Masks come as 0/255 or 0/1 (binary) or small integer class indices (multi-class),
often with a thin fringe of in-between grey levels from resampling (epfl-em: up to
0.7% of pixels spread over many levels). A value is a class when it holds a real
share of the pixels; the fringe is mapped to the nearest class value.
"""

from __future__ import annotations

import numpy as np

# A value is a class only if at least this share of all mask pixels has it. Fringe
# levels on epfl-em each hold well under 0.01%; the rarest real class in common
# datasets holds far more than 0.05% when counted over a whole dataset.
CLASS_MIN_SHARE = 5e-4
# More class values than this and the masks are not label maps (a photo, JPEG artefacts).
MAX_CLASSES = 64


def class_values_from_histogram(hist: np.ndarray) -> list[int]:
    """The mask values that are classes, sorted, from a histogram of mask pixel values.

    Args:
        hist: counts per value (index = value), e.g. length 256 for 8-bit masks.

    Returns:
        Sorted class values. A single value (all background) is returned as
        `[0, v]` or `[v]` as found; callers decide whether that is trainable.
    """
    hist = np.asarray(hist, dtype=np.float64)
    total = hist.sum()
    if total <= 0:
        return []
    values = np.nonzero(hist / total >= CLASS_MIN_SHARE)[0]
    return [int(v) for v in values]


def fringe_share(hist: np.ndarray, class_values: list[int]) -> float:
    """Share of pixels whose value is not one of `class_values` (the resampling fringe)."""
    hist = np.asarray(hist, dtype=np.float64)
    total = hist.sum()
    if total <= 0:
        return 0.0
    return float(1.0 - hist[class_values].sum() / total)


def nearest_class_lut(class_values: list[int], depth: int = 256) -> np.ndarray:
    """A lookup table from raw value to class index (nearest class value wins)."""
    cv = np.asarray(class_values, dtype=np.float64)
    raw = np.arange(depth, dtype=np.float64)[:, None]
    return np.argmin(np.abs(raw - cv[None, :]), axis=1).astype(np.int32)
