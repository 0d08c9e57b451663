"""Decode image and mask files the same way everywhere: training, validation, evaluation.

Images become float32 in [0, 1], alpha dropped, 16-bit PNGs scaled by 65535
(TensorFlow's own `decode_image`). Inside the pipeline a grey image keeps **one**
channel until its crop is cut (`as_rgb` then replicates it): decoding, caching and
warping one channel instead of three is what makes grey datasets such as EM slices
cheap. `load_image` returns `[H, W, 3]`. Masks become raw integer
values `[H, W, 1]` that a lookup table maps to class indices (`nearest_class_lut`), so
a resampling fringe of grey levels lands on the nearest class.

Most files are decoded by TensorFlow ops inside the `tf.data` graph. A few need Pillow,
called through `tf.numpy_function` (slower: it holds the GIL):
- TIFF images and masks (TensorFlow has no TIFF decoder);
- palette masks (PNG mode `P`, GIF): TensorFlow expands the palette to colours, but the
  class is the palette *index* (the Pascal VOC convention), which only Pillow returns;
- BMP masks: TensorFlow decodes BMP only as colour.
Which decoder a file needs is read once from its header (Pillow opens headers lazily,
without decoding pixels), together with its size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from trainer.data.intensity import HIGH_PERCENTILE, LOW_PERCENTILE, SAMPLE_PIXELS, is_deep
from trainer.data.masks import (
    MAX_CLASSES,
    class_values_from_histogram,
    mask_index_dtype,
    nearest_class_lut,
    palette_colours,
    palette_indices,
    resolve_ignore,
    split_values,
)
from trainer.errors import DataError

# Decoder routes, stored per file and switched on inside the graph.
IMAGE_RGB, IMAGE_GREY, IMAGE_PIL = 0, 1, 2
MASK_TF8, MASK_TF16, MASK_PIL = 0, 1, 2
MASK_DEPTH = 65536  # raw mask values are at most 16-bit
_TF_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "GIF")
# TensorFlow decodes BMP and GIF to colour only (channels=1 is refused for them).
_TF_GREY_FORMATS = ("PNG", "JPEG", "MPO")
_MODES_16 = ("I;16", "I;16B", "I;16L", "I")
_GREY_MODES = ("1", "L", "LA", "F", *_MODES_16)


@dataclass(frozen=True)
class FileInfo:
    """What the header says: size, which decoder the file needs, and (images) whether it
    holds more than 8 bits per sample (`deep`: normalised by `normalize`)."""

    height: int
    width: int
    route: int
    deep: bool = False
    # Masks checked at start-up: `(value, pixel count)` of each value present, or `None`.
    levels: tuple[tuple[int, int], ...] | None = field(default=None, compare=False)


def inspect_image(path: str | os.PathLike, *, mask: bool = False) -> FileInfo:
    """Read `path`'s header (not its pixels); `DataError` naming the file if unreadable."""
    try:
        with Image.open(path) as im:
            fmt, mode, (width, height) = im.format, im.mode, im.size
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image header ({exc})") from exc
    if not mask:
        if fmt not in _TF_FORMATS:
            return FileInfo(height, width, IMAGE_PIL, is_deep(mode))
        grey = mode in _GREY_MODES and fmt in _TF_GREY_FORMATS
        return FileInfo(height, width, IMAGE_GREY if grey else IMAGE_RGB, is_deep(mode))
    if fmt == "PNG" and mode in _MODES_16:
        route = MASK_TF16
    elif fmt in _TF_GREY_FORMATS and mode in ("1", "L", "LA", "RGB", "RGBA"):
        route = MASK_TF8
    else:
        route = MASK_PIL
    return FileInfo(height, width, route)


# -- Pillow fallbacks (numpy) ----------------------------------------------------------


def _as_str(path: np.ndarray | bytes | str) -> str:
    # tf.numpy_function hands a string tensor over as a 0-d numpy array of bytes.
    path = path.item() if isinstance(path, np.ndarray) else path
    return os.fsdecode(path)


def _pil_image(path: np.ndarray | bytes | str) -> np.ndarray:
    path = _as_str(path)
    with Image.open(path) as im:
        if im.mode in ("P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        a = np.asarray(im)
    if a.ndim == 2:
        a = a[..., None]
    a = a[..., :1] if a.shape[-1] == 2 else a[..., :3]  # drop alpha
    if a.dtype == np.uint8:
        out = a.astype(np.float32) / 255.0
    elif a.dtype.kind in "ui" and a.min() >= 0 and a.max() <= 65535:
        out = a.astype(np.float32) / 65535.0
    elif a.dtype.kind == "f" and a.min() >= 0 and a.max() <= 1:
        out = a.astype(np.float32)
    else:  # 32-bit integer or float data of unknown range: stretch min..max to 0..1
        a = a.astype(np.float64)
        span = a.max() - a.min()
        out = ((a - a.min()) / span if span > 0 else np.zeros_like(a)).astype(np.float32)
    return out


def _pil_mask(path: np.ndarray | bytes | str) -> np.ndarray:
    path = _as_str(path)
    with Image.open(path) as im:
        if im.mode not in ("P", "PA", "L", "I", "F") and not im.mode.startswith("I;16"):
            im = im.convert("L")  # ITU-R 601 luma, as TensorFlow's channels=1
        a = np.asarray(im)
    if a.ndim == 3:
        a = a[..., 0]  # PA: the palette index, not the alpha
    a = np.clip(np.rint(a.astype(np.float64)), 0, MASK_DEPTH - 1).astype(np.int32)
    return a[..., None]


# -- graph decoders --------------------------------------------------------------------


def decode_image(path: tf.Tensor, route: tf.Tensor, *, pillow: bool = True) -> tf.Tensor:
    """Decode one image file to float32 `[H, W, C]` in [0, 1] inside a graph.

    Args:
        path: scalar string tensor.
        route: scalar int, `IMAGE_RGB`, `IMAGE_GREY` or `IMAGE_PIL` (from `inspect_image`).
        pillow: whether the graph needs the Pillow branch at all. `False` keeps a
            pure-TensorFlow graph when no file needs Pillow.

    Returns:
        `C` is 1 for grey images and 3 otherwise; `as_rgb` makes it 3.
    """

    def decoder(channels: int):
        def branch() -> tf.Tensor:
            raw = tf.io.read_file(path)
            return tf.io.decode_image(
                raw, channels=channels, dtype=tf.float32, expand_animations=False
            )

        return branch

    def pil_branch() -> tf.Tensor:
        return tf.numpy_function(_pil_image, [path], tf.float32, stateful=False)

    branches = [decoder(3), decoder(1)] + ([pil_branch] if pillow else [])
    out = tf.switch_case(tf.cast(route, tf.int32), branches)
    return tf.ensure_shape(out, [None, None, None])


def normalize(
    image: tf.Tensor,
    deep: tf.Tensor | bool,
    mode: str = "image",
    intensity_range: tuple[float, float] | None = None,
) -> tf.Tensor:
    """Bring a decoded image deeper than 8 bits to [0, 1] (`trainer.data.intensity`).

    Args:
        image: float32 `[H, W, C]` as decoded (16-bit values divided by 65535).
        deep: whether the file holds more than 8 bits per sample (`FileInfo.deep`);
            8-bit images are returned unchanged.
        mode: the plan's `data.normalization`: `"image"` (each image's 0.5th..99.5th
            percentile to [0, 1]), `"dataset"` (`intensity_range`, raw values) or
            `"none"`.
        intensity_range: `(low, high)` raw values, for `"dataset"`.
    """
    if mode == "none":
        return image
    if mode == "dataset":
        if intensity_range is None:
            raise ValueError("normalization 'dataset' needs data.intensity_range")
        lo = tf.constant(intensity_range[0] / 65535.0, tf.float32)
        hi = tf.constant(intensity_range[1] / 65535.0, tf.float32)
    else:
        flat = tf.reshape(image, [-1])
        step = tf.maximum(tf.size(flat) // SAMPLE_PIXELS, 1)
        ordered = tf.sort(flat[::step])
        last = tf.cast(tf.size(ordered) - 1, tf.float32)
        lo = ordered[tf.cast(tf.round(last * LOW_PERCENTILE / 100.0), tf.int32)]
        hi = ordered[tf.cast(tf.round(last * HIGH_PERCENTILE / 100.0), tf.int32)]
    span = tf.maximum(hi - lo, 1e-7)
    stretched = tf.clip_by_value((image - lo) / span, 0.0, 1.0)
    out = tf.where(tf.cast(deep, tf.bool), stretched, image)
    return tf.ensure_shape(out, [None, None, None])


def as_rgb(image: tf.Tensor) -> tf.Tensor:
    """`[..., 1]` or `[..., 3]` -> `[..., 3]` (grey replicated)."""
    return tf.broadcast_to(image, tf.concat([tf.shape(image)[:-1], [3]], axis=0))


def _pil_palette_mask(path: np.ndarray | bytes | str, colours: np.ndarray) -> np.ndarray:
    with Image.open(_as_str(path)) as im:
        rgb = np.asarray(im.convert("RGB"))
    return palette_indices(rgb, colours)[..., None]


def decode_mask_palette(path: tf.Tensor, colours: np.ndarray) -> tf.Tensor:
    """A colour mask's class indices, int32 `[H, W, 1]`: each pixel's nearest palette colour.

    Through Pillow (`tf.numpy_function`): any format, and indexed PNGs by their colours.
    """
    out = tf.numpy_function(
        lambda p: _pil_palette_mask(p, colours), [path], tf.int32, stateful=False
    )
    return tf.ensure_shape(out, [None, None, 1])


def decode_mask_raw(path: tf.Tensor, route: tf.Tensor, *, pillow: bool = True) -> tf.Tensor:
    """Decode one mask file to its raw integer values, int32 `[H, W, 1]`, inside a graph.

    Args:
        path: scalar string tensor.
        route: scalar int, one of `MASK_TF8`, `MASK_TF16`, `MASK_PIL`.
        pillow: whether the graph needs the Pillow branch at all (see `decode_image`).
    """

    def tf8() -> tf.Tensor:
        raw = tf.io.read_file(path)
        return tf.cast(tf.io.decode_image(raw, channels=1, expand_animations=False), tf.int32)

    def tf16() -> tf.Tensor:
        # decode_png with uint16 scales 8-bit files by 257, so only 16-bit files come here.
        raw = tf.io.read_file(path)
        return tf.cast(tf.io.decode_png(raw, channels=1, dtype=tf.uint16), tf.int32)

    def pil() -> tf.Tensor:
        return tf.numpy_function(_pil_mask, [path], tf.int32, stateful=False)

    branches = [tf8, tf16, pil] if pillow else [tf8, tf16]
    out = tf.switch_case(tf.cast(route, tf.int32), branches)
    return tf.ensure_shape(out, [None, None, 1])


def mask_lut(mask_values: list[int] | tuple[int, ...], ignore: int | None = None) -> tf.Tensor:
    """Raw value -> class index table over every 16-bit raw value (uint8 where it fits).

    `ignore` (a raw value) maps to itself, so ignored pixels keep that value in the
    class-index mask (`nearest_class_lut`).
    """
    lut = nearest_class_lut(list(mask_values), depth=MASK_DEPTH, ignore=ignore)
    return tf.constant(lut.astype(mask_index_dtype(len(mask_values), ignore)))


def to_classes(raw: tf.Tensor, lut: tf.Tensor) -> tf.Tensor:
    """Map raw mask values to uint8 class indices with `lut` (nearest class value wins)."""
    return tf.gather(lut, raw)


# -- eager helpers for evaluate / predict --------------------------------------------


def load_image(
    path: str | os.PathLike,
    normalization: str = "image",
    intensity_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """One image as float32 `[H, W, 3]` in [0, 1], decoded and normalised as in training.

    Args:
        path: the image file.
        normalization, intensity_range: the plan's `data` fields (`normalize`).
    """
    info = inspect_image(path)
    out = decode_image(tf.constant(str(path)), tf.constant(info.route))
    out = normalize(out, info.deep, normalization, intensity_range)
    return as_rgb(out).numpy()


def load_mask_raw(path: str | os.PathLike) -> np.ndarray:
    """One mask's raw integer values, int32 `[H, W]`, decoded exactly as in training."""
    info = inspect_image(path, mask=True)
    return decode_mask_raw(tf.constant(str(path)), tf.constant(info.route)).numpy()[..., 0]


def load_mask(
    path: str | os.PathLike,
    mask_values: list[int] | tuple[int, ...],
    ignore: int | None = None,
    palette: list[str] | tuple[str, ...] | None = None,
) -> np.ndarray:
    """One mask as int32 class indices `[H, W]` (0 .. len(mask_values) - 1).

    Args:
        path: the mask file.
        mask_values: raw value of class 0, 1, ...; other values go to the nearest class.
        ignore: raw value kept as itself (left out of metrics), or `None`.
        palette: the plan's `data.palette`: colour masks map to the nearest colour's index.
    """
    if palette is not None:
        return _pil_palette_mask(str(path), palette_colours(palette))[..., 0]
    lut = nearest_class_lut(list(mask_values), depth=MASK_DEPTH, ignore=ignore)
    return lut[load_mask_raw(path)].astype(np.int32)


def infer_mask_values(
    masks: list[Path], *, sample: int = 32, ignore: int | None = None, merge_rare: bool = False
) -> list[int]:
    """The class values of a set of masks (`infer_labels` without the ignore value)."""
    return infer_labels(masks, sample=sample, ignore=ignore, merge_rare=merge_rare)[0]


def infer_labels(
    masks: list[Path], *, sample: int = 32, ignore: int | None = None, merge_rare: bool = False
) -> tuple[list[int], int | None]:
    """The class values of a set of masks, from the histogram of an even sample of them.

    Args:
        masks: mask files (e.g. every training mask).
        sample: how many masks to read, spread evenly over `masks`. Defaults to `32`.
        ignore: the plan's `data.ignore_index` (`None`: VOC's default, `-1`: none); the
            ignore value is never a class.
        merge_rare: the plan's `data.merge_rare` (`trainer.data.masks.split_values`).

    Returns:
        `(class values, ignore value in effect or None)`.

    Raises:
        DataError: naming the folder when fewer than 2 class values are found.
    """
    if not masks:
        raise DataError("no masks to infer class values from")
    idx = np.unique(np.linspace(0, len(masks) - 1, min(sample, len(masks))).round().astype(int))
    hist = np.zeros(MASK_DEPTH, dtype=np.int64)
    photos = []  # sampled masks that alone hold too many values: named in the error
    for i in idx:
        one = np.bincount(load_mask_raw(masks[i]).ravel(), minlength=MASK_DEPTH)
        if len(class_values_from_histogram(one)) > MAX_CLASSES:
            photos.append(str(masks[i]))
        hist += one
    return labels_from_histogram(
        hist, masks[0].parent, f"{len(idx)} sampled masks", ignore, merge_rare, photos
    )


def labels_from_histogram(
    hist: np.ndarray,
    folder: Path,
    source: str,
    ignore: int | None = None,
    merge_rare: bool = False,
    photos: list[str] | None = None,
) -> tuple[list[int], int | None]:
    """`(class values, ignore value or None)` from the pixel counts of a set of masks.

    Args:
        hist: pixel count per raw value over the masks.
        folder: the mask folder (named in errors).
        source: which masks were counted, e.g. `"27 masks"` (named in errors).
        ignore, merge_rare: the plan's `data.ignore_index` and `data.merge_rare`.
        photos: masks that alone hold too many values (named in the error).

    Raises:
        DataError: fewer than 2 classes, or more than `MAX_CLASSES`.
    """
    photos = photos or []
    ignore_value = resolve_ignore(ignore, class_values_from_histogram(hist))
    values, _ = split_values(hist, ignore=ignore_value, merge_rare=merge_rare)
    if len(values) < 2:
        raise DataError(
            f"{folder}: masks hold fewer than 2 classes (values found: {values}, in {source})",
            hint="check the mask folder, or set data.mask_values in the plan",
        )
    if len(values) > MAX_CLASSES:
        which = f" ({', '.join(photos[:3])}{', ...' if len(photos) > 3 else ''})" if photos else ""
        raise DataError(
            f"{folder}: masks hold {len(values)} well-populated values, more than "
            f"{MAX_CLASSES}: these look like images, not label maps{which}",
            hint="check the mask folder, or set data.mask_values in the plan",
        )
    return values, ignore_value
