"""The input pipeline: image/mask pairs on disk -> `tf.data` datasets for Keras `fit`.

Training samples are random crops at native resolution (times `data.image_scale`),
augmented by `trainer.data.augment`, so the model learns at the scale it will later see in
sliding-window prediction. Validation cuts each image into a fixed grid of
`input_size` tiles that covers it, with no augmentation, so the validation score is
deterministic and measures the whole image. See docs/data.md for the design.

Streaming (`cache="stream"`) shuffles file *indices*, not decoded images, and holds a
few decoded images at a time, so memory does not grow with the dataset.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from trainer.data.augment import AugmentSettings, apply_augment, random_params
from trainer.data.decode import (
    IMAGE_PIL,
    MASK_PIL,
    FileInfo,
    as_rgb,
    decode_image,
    decode_mask_palette,
    decode_mask_raw,
    load_image,
    load_mask,
    mask_lut,
    normalize,
    to_classes,
)
from trainer.data.filecache import DataCache
from trainer.data.integrity import check_pairs
from trainer.data.intensity import dataset_range
from trainer.data.labels import resolve_labels
from trainer.data.masks import palette_colours
from trainer.data.pairs import Pair, find_pairs
from trainer.data.splits import (
    crops_for,
    epoch_steps,
    owned_from,
    scaled_size,
    split_pairs,
    tile_starts,
    work_size,
)
from trainer.errors import DataError, FitplanWarning
from trainer.plan import DataSpec, Plan

__all__ = [
    "DataBundle",
    "build_datasets",
    "epoch_steps",
    "load_image",
    "load_mask",
    "split_pairs",
]

AUTOTUNE = tf.data.AUTOTUNE
# Images decoded at once for crop mixing: a micro-batch mixes crops of this many images.
# Each costs H x W x 13 bytes (float32 RGB + uint8 mask), whatever the dataset size.
CYCLE = 4
# Shuffle buffer of pair *indices* (8 bytes each): a full shuffle up to this many pairs.
SHUFFLE_MAX = 65536


@dataclass
class DataBundle:
    """Everything `fit` needs from the data.

    Attributes:
        train: one epoch of `(images [B, H, W, 3] float32 in [0, 1], masks [B, H, W, 1]
            float32 class indices)`; iterating it again gives a fresh, reshuffled epoch.
        val: validation tiles in a fixed order (last batch may be smaller), or `None`.
        train_pairs, val_pairs: the pairs behind each dataset, sorted by key.
        steps_per_epoch: micro-batches per training epoch, a multiple of
            `plan.accumulation_steps` (already capped by `plan.steps_per_epoch`).
        val_steps: batches in `val` (0 without validation).
        num_classes: classes including background.
        mask_values: raw mask value of each class.
        crops_per_image: the plan's value, or the mean of the inferred per-pair counts.
        pair_crops: crops drawn per training pair per epoch (before rounding up).
        batch_size: images per micro-batch (`micro_batch x replicas`).
        ignore_index: the raw mask value whose pixels the masks keep as that value
            (left out of loss and metrics), or `None`.
    """

    train: tf.data.Dataset
    val: tf.data.Dataset | None
    train_pairs: list[Pair]
    val_pairs: list[Pair]
    steps_per_epoch: int
    val_steps: int
    num_classes: int
    mask_values: tuple[int, ...]
    crops_per_image: int
    pair_crops: tuple[int, ...]
    batch_size: int
    ignore_index: int | None = None


# -- file metadata ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Meta:
    pairs: list[Pair]
    image_route: list[int]
    mask_route: list[int]
    deep: list[bool]  # image holds more than 8 bits per sample (normalised)
    height: list[int]  # size the pair is decoded to (image_scale, then any upsizing)
    width: list[int]

    def tensors(self) -> dict[str, tf.Tensor]:
        return {
            "image": tf.constant([str(p.image) for p in self.pairs]),
            "mask": tf.constant([str(p.mask) for p in self.pairs]),
            "image_route": tf.constant(self.image_route, tf.int32),
            "mask_route": tf.constant(self.mask_route, tf.int32),
            "deep": tf.constant(self.deep, tf.bool),
            "height": tf.constant(self.height, tf.int32),
            "width": tf.constant(self.width, tf.int32),
        }


def _inspect(
    pairs: list[Pair], infos: dict[Pair, tuple[FileInfo, FileInfo]], scale: float, tile
) -> _Meta:
    """Sizes at `scale` (from checked headers); with a `tile`, brought up to fit it (`work_size`)."""
    meta = _Meta(pairs, [], [], [], [], [])
    for p in pairs:
        img, mask = infos[p]
        if tile is None:
            h, w = scaled_size(img.height, img.width, scale)
        else:
            h, w = work_size(img.height, img.width, scale, tile)
        meta.image_route.append(img.route)
        meta.mask_route.append(mask.route)
        meta.deep.append(img.deep)
        meta.height.append(h)
        meta.width.append(w)
    return meta


def _find(
    root: str | Path, data: DataSpec
) -> tuple[list[Pair], dict[Pair, tuple[FileInfo, FileInfo]]]:
    """The usable pairs under `root` and their headers; bad pairs excluded with a warning.

    Excluding, not refusing, matches `fitplan scan`: one corrupt file among thousands
    must not cost the run, and a corrupt file met mid-epoch would (docs/reliability.md).
    """
    found = find_pairs(root, data.images, data.masks)
    unpaired = found.unpaired_images + found.unpaired_masks
    if unpaired:
        shown = ", ".join(str(p) for p in unpaired[:3]) + (", ..." if len(unpaired) > 3 else "")
        n = len(unpaired)
        _warn(f"{n} file{'s' * (n != 1)} without a partner, not trained on: {shown}")
    for dup in found.duplicates:
        _warn(f"{dup}: another file has the same name without extension; not trained on")
    if not found.pairs:
        folder = Path(root) / data.images
        raise DataError(
            f"{folder}: no image/mask pairs found under {root}",
            hint=f"{len(found.unpaired_images)} images and {len(found.unpaired_masks)} masks "
            f"without a partner in {data.masks}; masks must share the image's name",
        )
    # Verdicts of files unchanged since the last start are reused: a resume or a
    # step-down reads no file contents here (trainer.data.filecache).
    cache = DataCache.open(root, data.images, data.masks)
    pairs, infos, excluded = check_pairs(found.pairs, cache, colour_masks=bool(data.palette))
    for bad in excluded:
        _warn(str(bad))
    if not pairs:
        raise DataError(
            f"{Path(root) / data.images}: all {len(excluded)} image/mask pairs are unusable "
            f"(first: {excluded[0]})",
            hint="`fitplan scan` lists every file and its problem",
        )
    return pairs, infos


def _warn(message: str) -> None:
    warnings.warn(message, FitplanWarning, stacklevel=3)


# -- datasets ------------------------------------------------------------------------------


def _loader(meta: _Meta, lut: tf.Tensor, data: DataSpec):
    t = meta.tensors()
    mode = data.normalization if any(meta.deep) else "none"  # 8-bit sets: no graph ops
    colours = palette_colours(data.palette) if data.palette is not None else None
    pil_image = IMAGE_PIL in meta.image_route
    pil_mask = MASK_PIL in meta.mask_route

    def load(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = decode_image(t["image"][i], t["image_route"][i], pillow=pil_image)
        image = normalize(image, t["deep"][i], mode, data.intensity_range)
        if colours is not None:
            raw = decode_mask_palette(t["mask"][i], colours)
        else:
            raw = decode_mask_raw(t["mask"][i], t["mask_route"][i], pillow=pil_mask)
        mask = to_classes(raw, lut)
        size = tf.stack([t["height"][i], t["width"][i]])
        same = tf.reduce_all(tf.equal(tf.shape(image)[:2], size))
        image = tf.cond(
            same,
            lambda: image,
            lambda: tf.image.resize(image, size, method="bilinear", antialias=True),
        )
        mask = tf.cond(same, lambda: mask, lambda: tf.image.resize(mask, size, method="nearest"))
        return image, mask

    return load


def decoded_pairs(data: DataSpec, root: str | Path | None = None) -> tf.data.Dataset:
    """Every usable pair under `root` (default `data.path`) as training decodes it before
    `cache()`: `(image, mask)`, the image float32 in the channels it keeps (grey stays one
    channel, alpha is dropped), the mask as class indices (`mask_lut`: uint8 unless more
    than 256 classes or an ignore value above 255). One element per pair, not cached.

    What `data.cache == "memory"` keeps of each training pair; `benchmarks/cache_rss.py`
    and `tests/test_cache_estimate.py` hold the planner's cache figure against it.
    """
    root = data.path if root is None else root
    pairs, infos = _find(root, data)
    mask_values, ignore = resolve_labels(data, pairs, root, infos)
    load = _loader(
        _inspect(pairs, infos, data.image_scale, None), mask_lut(mask_values, ignore), data
    )
    return tf.data.Dataset.range(len(pairs)).map(load, num_parallel_calls=AUTOTUNE)


def _train_dataset(
    meta: _Meta, lut: tf.Tensor, crops: list[int], plan: Plan, steps: int, batch: int
) -> tf.data.Dataset:
    n, seed = len(meta.pairs), plan.seed
    load = _loader(meta, lut, plan.data)
    crops_t = tf.constant(crops, tf.int64)
    # One seed per decoded image, attached before any parallel step: a crop's content
    # then depends on the seed alone, never on which worker finished first.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    if plan.data.cache == "memory":
        ds = tf.data.Dataset.range(n).map(lambda i: (i, *load(i)), num_parallel_calls=AUTOTUNE)
        ds = ds.cache().shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
        ds = tf.data.Dataset.zip(ds, seeds)
    else:
        ids = tf.data.Dataset.range(n).shuffle(min(n, SHUFFLE_MAX), seed=seed).repeat()
        ds = tf.data.Dataset.zip(ids, seeds).map(
            lambda i, s: ((i, *load(i)), s), num_parallel_calls=AUTOTUNE
        )

    settings = AugmentSettings.from_spec(plan.augment)
    size = tuple(plan.input_size)

    def crops_of(item, s):
        i, image, mask = item
        params = random_params(tf.stack([s, i]), tf.shape(image)[:2], crops_t[i], size, settings)
        one = tf.data.Dataset.from_tensors((image, mask)).repeat()
        return tf.data.Dataset.zip(one, tf.data.Dataset.from_tensor_slices(params))

    # repeat() + take(): the rounding-up extra crops come from the next shuffled pass.
    # Maps keep their order (deterministic, the default): the order of crops is part of
    # what plan.seed reproduces.
    ds = ds.interleave(crops_of, cycle_length=min(n, CYCLE), block_length=1)

    def augment(pair, params):
        image, mask = apply_augment(*pair, *params, size, settings)
        return image, tf.cast(mask, tf.float32)

    ds = ds.take(steps * batch).map(augment, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=True).prefetch(AUTOTUNE)
    return ds.apply(tf.data.experimental.assert_cardinality(steps))


def _val_tiles(meta: _Meta, tile: tuple[int, int]) -> tuple[list[tuple[int, ...]], list[int]]:
    """Every validation tile `(y, x, owned_y, owned_x)`, pair by pair, and where each pair's
    tiles start.

    Computed from the header sizes with `tile_starts`, the rule prediction uses too, so the
    graph only slices: it holds no tensor copy of the rule. `owned_y`, `owned_x`
    (`owned_from`): the tile's pixels above or left of them were counted by an earlier
    tile, so validation scores every pixel exactly once.
    """
    corners, first = [], [0]
    for h, w in zip(meta.height, meta.width, strict=True):
        ys, xs = tile_starts(h, tile[0]), tile_starts(w, tile[1])
        oys, oxs = owned_from(ys, tile[0]), owned_from(xs, tile[1])
        rows, cols = zip(ys, oys, strict=True), list(zip(xs, oxs, strict=True))
        corners += [(y, x, oy, ox) for y, oy in rows for x, ox in cols]
        first.append(len(corners))
    return corners, first


def _val_dataset(
    meta: _Meta,
    lut: tf.Tensor,
    plan: Plan,
    tiles: tuple[list[tuple[int, int]], list[int]],
    steps: int,
    batch: int,
) -> tf.data.Dataset:
    th, tw = plan.input_size
    load = _loader(meta, lut, plan.data)
    corners = tf.constant(tiles[0], tf.int32, shape=[len(tiles[0]), 4])
    first = tf.constant(tiles[1], tf.int32)
    ds = tf.data.Dataset.range(len(meta.pairs)).map(
        lambda i: (i, *load(i)), num_parallel_calls=AUTOTUNE
    )
    if plan.data.cache == "memory":
        ds = ds.cache()

    def cut(i, image, mask):
        def crop(corner):
            y, x = corner[0], corner[1]
            m = tf.cast(mask[y : y + th, x : x + tw], tf.float32)
            # Pixels an earlier tile scored: label -1, which loss and metrics ignore.
            seen = tf.logical_or(
                tf.range(th)[:, None, None] < corner[2], tf.range(tw)[None, :, None] < corner[3]
            )
            return (
                tf.ensure_shape(as_rgb(image[y : y + th, x : x + tw]), [th, tw, 3]),
                tf.ensure_shape(tf.where(seen, -1.0, m), [th, tw, 1]),
            )

        return tf.data.Dataset.from_tensor_slices(corners[first[i] : first[i + 1]]).map(crop)

    ds = ds.flat_map(cut).batch(batch).prefetch(AUTOTUNE)
    return ds.apply(tf.data.experimental.assert_cardinality(steps))


def build_datasets(
    plan: Plan, *, data_path: str | None = None, val_path: str | None = None
) -> DataBundle:
    """Build the training and validation datasets a plan describes.

    Args:
        plan: a validated plan; uses `data`, `input_size`, `micro_batch`, `replicas`,
            `accumulation_steps`, `steps_per_epoch`, `augment` and `seed`.
        data_path: dataset root overriding `plan.data.path`. `None`: use the plan's.
        val_path: validation root overriding `plan.data.val`. `None`: use the plan's
            (and when that is `None` too, split `plan.data.val_fraction` off by key).

    Pairs whose files are unreadable, truncated, empty, too large or of mismatched
    sizes are excluded with a `FitplanWarning` naming the file (`trainer.data.integrity`).

    Raises:
        DataError: naming the folder or file when there are no pairs, no usable pairs,
            no training pairs or fewer than 2 classes.
    """
    data = plan.data
    root = data_path or data.path
    val_root = val_path or data.val
    pairs, infos = _find(root, data)
    if val_root is not None:
        val_found, val_infos = _find(val_root, data)
        train_pairs, val_pairs, infos = pairs, val_found, {**infos, **val_infos}
    else:
        train_pairs, val_pairs = split_pairs(pairs, data.val_fraction)
    if not train_pairs:
        raise DataError(f"{Path(root) / data.images}: no training pairs left after the split")

    size = tuple(plan.input_size)
    train_meta = _inspect(train_pairs, infos, data.image_scale, None)
    val_meta = _inspect(val_pairs, infos, data.image_scale, size) if val_pairs else None
    mask_values, ignore = resolve_labels(data, train_pairs, root, infos)
    if data.normalization == "dataset" and data.intensity_range is None:
        measured = dataset_range([p.image for p in train_pairs])
        _warn(
            f"data.normalization is 'dataset' without data.intensity_range: measured "
            f"{measured} from the training images; write it into the plan so evaluation "
            f"and prediction use the same range (fitplan plan --normalize dataset does)"
        )
        data = dataclasses.replace(data, intensity_range=measured)
        plan = dataclasses.replace(plan, data=data)
    if data.classes is not None and data.classes != len(mask_values):
        raise DataError(
            f"{Path(root) / data.masks}: masks hold {len(mask_values)} class values "
            f"{list(mask_values)} but the plan says data.classes={data.classes}",
            hint="set data.mask_values in the plan to the raw value of each class",
        )
    lut = mask_lut(mask_values, ignore)
    batch = plan.micro_batch * plan.replicas
    crops = [
        crops_for(h, w, size, data.crops_per_image)
        for h, w in zip(train_meta.height, train_meta.width, strict=True)
    ]
    steps = epoch_steps(sum(crops), batch, plan.accumulation_steps, plan.steps_per_epoch)
    train = _train_dataset(train_meta, lut, crops, plan, steps, batch)

    val, val_steps = None, 0
    if val_meta is not None:
        tiles = _val_tiles(val_meta, size)
        val_steps = -(-len(tiles[0]) // batch)
        val = _val_dataset(val_meta, lut, plan, tiles, val_steps, batch)

    return DataBundle(
        train=train,
        val=val,
        train_pairs=train_pairs,
        val_pairs=val_pairs,
        steps_per_epoch=steps,
        val_steps=val_steps,
        num_classes=len(mask_values),
        mask_values=mask_values,
        ignore_index=ignore,
        crops_per_image=data.crops_per_image or max(1, round(sum(crops) / len(crops))),
        pair_crops=tuple(crops),
        batch_size=batch,
    )
