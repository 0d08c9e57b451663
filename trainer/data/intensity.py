"""Intensities of images deeper than 8 bits: the rule in numbers, without TensorFlow.

A 16-bit microscope image rarely uses its range: 12-bit cameras write 0..4095, which
divided by 65535 leaves the image in [0, 0.06], nearly black to a model trained on [0, 1]
photos and wiped out by an absolute brightness shift. Such images are brought to [0, 1]
by percentiles (docs/data.md, Intensities):

- `normalization: image` (default): each image's own 0.5th..99.5th percentile goes to
  [0, 1] (clipped). Robust to hot pixels and to exposure that differs between images.
- `normalization: dataset`: one range for every image, the 0.5th and 99.5th percentile
  of the training images' pixels (`dataset_range`), kept in the plan as
  `data.intensity_range` so evaluation and prediction use the same one. nnU-Net does
  this for CT, whose values are physical (Hounsfield units); it keeps brightness
  differences between images that mean something.
- `normalization: none`: divided by 65535, as before.

8-bit images are divided by 255 in every mode. The TensorFlow side is
`trainer.data.decode.normalize`; this module holds the constants and the dataset rule.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
# Pixels per image the percentiles are read from (a regular subsample; exact below it).
SAMPLE_PIXELS = 1 << 16
DEEP_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def is_deep(mode: str) -> bool:
    """Whether a Pillow mode holds more than 8 bits per sample."""
    return mode in DEEP_MODES or mode.startswith("I;16")


def subsample(values: np.ndarray, limit: int = SAMPLE_PIXELS) -> np.ndarray:
    """A regular subsample of at most about `limit` values of `values` (flattened)."""
    flat = np.asarray(values).ravel()
    step = max(1, flat.size // limit)
    return flat[::step]


def dataset_range(
    images: list[str | os.PathLike], *, sample: int = 32
) -> tuple[float, float] | None:
    """The raw 0.5th and 99.5th percentile over up to `sample` images deeper than 8 bits.

    Args:
        images: image files (e.g. the training images), read evenly spread.
        sample: how many to read.

    Returns:
        `(low, high)` in raw values (e.g. 12.0, 3980.0), or `None` when none is deep.
    """
    deep = []
    for path in images:
        with Image.open(Path(path)) as im:
            if is_deep(im.mode):
                deep.append(path)
    if not deep:
        return None
    idx = np.unique(np.linspace(0, len(deep) - 1, min(sample, len(deep))).round().astype(int))
    values = []
    for i in idx:
        with Image.open(deep[i]) as im:
            values.append(subsample(np.asarray(im, dtype=np.float64)))
    low, high = np.percentile(np.concatenate(values), [LOW_PERCENTILE, HIGH_PERCENTILE])
    if high <= low:
        high = low + 1.0
    return float(low), float(high)


def range_for(root: str | os.PathLike, images: str = "images", masks: str = "masks") -> list[float]:
    """`dataset_range` of the paired images under `root`, as the plan's `intensity_range`.

    Raises:
        DataError: no image deeper than 8 bits (the option would do nothing).
    """
    from trainer.data.pairs import find_pairs
    from trainer.errors import DataError

    found = find_pairs(root, images, masks)
    measured = dataset_range([p.image for p in found.pairs])
    if measured is None:
        raise DataError(
            f"{Path(root) / images}: normalization 'dataset' applies to images deeper than "
            f"8 bits, and there are none",
            hint="8-bit images are divided by 255 in every mode; drop --normalize",
        )
    return [round(measured[0], 3), round(measured[1], 3)]
