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
# Pascal VOC's convention: 255 marks pixels (object borders, "difficult") left out of
# the loss and the metrics.
VOC_IGNORE = 255
# Adjacent values at least this far apart are "widely spaced" (0/255, 0/128/255): the
# rare levels between them are a resampling fringe. Closer values are a label grid
# (0, 1, 2, ...), where a rare value is a rare class, not a fringe.
FRINGE_GAP = 8


def default_ignore_index(values: list[int]) -> int | None:
    """255 when `values` hold it and at least two other values, all below `MAX_CLASSES`.

    That is Pascal VOC's layout (classes 0..20 and a 255 border). Binary 0/255 masks have
    a single other value, so their 255 stays a class.
    """
    others = [v for v in values if v != VOC_IGNORE]
    if VOC_IGNORE in values and len(others) >= 2 and max(others) < MAX_CLASSES:
        return VOC_IGNORE
    return None


def mask_index_dtype(num_values: int, ignore: int | None = None) -> type[np.integer]:
    """The dtype of class-index masks (`decode.mask_lut`, what an in-RAM cache holds):
    uint8 up to 256 classes, int32 above, or when the ignore value (kept as itself in
    the mask) does not fit in a byte. The planner's cache figure uses it too."""
    small = num_values <= 256 and (ignore is None or ignore <= 255)
    return np.uint8 if small else np.int32


def resolve_ignore(setting: int | None, values: list[int]) -> int | None:
    """The ignore value in effect: the plan's (`-1`: none) or `default_ignore_index`."""
    if setting is None:
        return default_ignore_index(values)
    return None if setting < 0 else setting


def split_values(
    hist: np.ndarray, *, ignore: int | None = None, merge_rare: bool = False
) -> tuple[list[int], list[int]]:
    """Class values and rare values from a histogram, honouring the ignore value.

    Args:
        hist: counts per raw value.
        ignore: raw value that is not a class (excluded from both lists).
        merge_rare: `True`: rare values are left to the nearest class (returned as rare).

    Returns:
        `(classes, rare)`: `classes` are the values holding at least `CLASS_MIN_SHARE`
        of the pixels (ignore pixels not counted), plus, unless `merge_rare`, the rare
        values that sit on a label grid (no class neighbour `FRINGE_GAP` or more away on
        both sides: not an in-between fringe level). `rare` lists the values under the
        share that are *not* classes (mapped to the nearest class by the lookup table).
    """
    hist = np.asarray(hist, dtype=np.float64).copy()
    if ignore is not None and 0 <= ignore < len(hist):
        hist[ignore] = 0
    common = class_values_from_histogram(hist)
    present = [int(v) for v in np.nonzero(hist)[0]]
    rare = [v for v in present if v not in set(common)]
    if merge_rare or not common or len(rare) > MAX_CLASSES:
        return common, rare
    keep = [v for v in rare if not _between_wide(v, common)]
    return sorted(common + keep), [v for v in rare if v not in set(keep)]


def unlisted_values(hist: np.ndarray, values: list[int], ignore: int | None) -> list[int]:
    """Values present in `hist` that are neither classes, the ignore value, nor fringe
    between widely spaced classes: what the lookup table would merge without a word."""
    present = [int(v) for v in np.nonzero(np.asarray(hist))[0]]
    listed = set(values) | {ignore}
    return [v for v in present if v not in listed and not _between_wide(v, sorted(values))]


def _between_wide(v: int, common: list[int]) -> bool:
    """Whether `v` lies between two widely spaced class values (a fringe level)."""
    below = [c for c in common if c < v]
    above = [c for c in common if c > v]
    if not below or not above:
        return False
    return above[0] - below[-1] >= FRINGE_GAP


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


def nearest_class_lut(
    class_values: list[int], depth: int = 256, ignore: int | None = None
) -> np.ndarray:
    """A lookup table from raw value to class index (nearest class value wins).

    Args:
        class_values: raw value of class 0, 1, ...
        depth: table length (raw values 0 .. depth - 1).
        ignore: raw value kept as itself (`lut[ignore] = ignore`): the loss and the
            metrics leave pixels holding it out. Must not be a valid class index.
    """
    cv = np.asarray(class_values, dtype=np.float64)
    raw = np.arange(depth, dtype=np.float64)[:, None]
    lut = np.argmin(np.abs(raw - cv[None, :]), axis=1).astype(np.int32)
    if ignore is not None and 0 <= ignore < depth:
        lut[ignore] = ignore
    return lut


def parse_classes(text: str) -> dict[int, str | None]:
    """`--classes`: `"0:background,1:mito"`, `"0,255"` (values) or `"3"` (values 0..2).

    Returns:
        raw value -> name (`None` where none was given), at least 2 entries.

    Raises:
        ValueError: the text does not parse; the message says what is expected.
    """
    items = [t.strip() for t in text.split(",") if t.strip()]
    if len(items) == 1 and items[0].isdigit():
        n = int(items[0])
        if n < 2:
            raise ValueError(f"{text!r}: at least 2 classes")
        return dict.fromkeys(range(n))
    out: dict[int, str | None] = {}
    for item in items:
        value, sep, name = item.partition(":")
        if not value.strip().isdigit() or (sep and not name.strip()):
            raise ValueError(
                f"{item!r} in {text!r}: give VALUE or VALUE:NAME, e.g. 0:background,1:mito"
            )
        v = int(value)
        if v in out:
            raise ValueError(f"{text!r}: value {v} is listed twice")
        out[v] = name.strip() or None
    if len(out) < 2:
        raise ValueError(f"{text!r}: at least 2 classes, e.g. 0:background,1:mito")
    return dict(sorted(out.items()))


def class_fields(classes: dict[int, str | None]) -> dict[str, object]:
    """The plan's `data.mask_values` and `data.class_names` for parsed `--classes`."""
    values = sorted(classes)
    names = [classes[v] or f"class {i}" for i, v in enumerate(values)]
    return {"mask_values": values, "class_names": names if any(classes.values()) else None}


def trained_ignore(setting: int | None, mask_values: list[int] | tuple[int, ...]) -> int | None:
    """The ignore value a finished run trained with, from its plan and class values.

    A plan from the planner states it (`-1`: none). A hand-written plan without one had
    it inferred at start-up: 255 when it is not a class and the classes are a small
    index set (`default_ignore_index` with 255 present), which is what this returns.
    """
    if setting is not None:
        return None if setting < 0 else setting
    values = list(mask_values)
    if VOC_IGNORE in values:
        return None
    return default_ignore_index([*values, VOC_IGNORE])


def class_names(names: list[str] | tuple[str, ...] | None, k: int) -> list[str]:
    """The plan's class names, or `class 0` .. `class k-1` where it has none."""
    if names is not None and len(names) == k:
        return list(names)
    return [f"class {i}" for i in range(k)]


def palette_colours(palette: list[str] | tuple[str, ...]) -> np.ndarray:
    """`["#rrggbb", ...]` -> int32 `[K, 3]`."""
    return np.asarray([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in palette], np.int32)


def palette_indices(rgb: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Class index (int32 `[H, W]`) of each pixel of an `[H, W, 3]` colour mask: the index
    of the nearest palette colour (squared RGB distance), so anti-aliased edges land on a
    neighbouring class rather than on none. Distances are computed once per distinct
    colour, not per pixel.
    """
    rgb = np.asarray(rgb, np.int32)[..., :3]
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    uniq, inverse = np.unique(code.ravel(), return_inverse=True)
    urgb = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1)
    dist = ((urgb[:, None, :] - colours[None, :, :]) ** 2).sum(axis=2)
    nearest = np.argmin(dist, axis=1)
    return nearest[inverse].reshape(code.shape).astype(np.int32)
