"""Score a trained run on a labelled set: Dice, IoU, precision and recall per class.

Every image is predicted at its native size with overlapping tiles
(`trainer.use.inference`) and compared with its mask at the mask's native size, decoded
and mapped to classes exactly as in training. The scores are accumulated over all
pixels of the set (one confusion matrix), as the training metrics are: a small image
with a few missed pixels weighs what its pixels weigh. The mean of per-image Dice and
IoU is reported too, for comparison with papers that average per image.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data.masks import class_names, trained_ignore
from trainer.data.pairs import find_pairs
from trainer.errors import DataError
from trainer.use.inference import LoadedRun, check_run_dir, load_run, read_image, read_mask

Progress = Callable[[int, int, Path], None]


def confusion(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """`[K, K]` int64 counts: row = true class, column = predicted class."""
    idx = true.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).ravel()
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, -1)


def class_scores(cm: np.ndarray) -> list[dict[str, float | None]]:
    """Dice, IoU, precision and recall of each class from a confusion matrix.

    A class absent from both the masks and the predictions scores 1.0 (nothing to
    find, nothing falsely found); precision of a class never predicted and recall of
    a class never present are `None`.
    """
    out = []
    for c in range(cm.shape[0]):
        tp = float(cm[c, c])
        fp = float(cm[:, c].sum()) - tp
        fn = float(cm[c, :].sum()) - tp
        empty = tp + fp + fn == 0
        out.append(
            {
                "dice": 1.0 if empty else 2 * tp / (2 * tp + fp + fn),
                "iou": 1.0 if empty else tp / (tp + fp + fn),
                "precision": tp / (tp + fp) if tp + fp > 0 else None,
                "recall": tp / (tp + fn) if tp + fn > 0 else None,
            }
        )
    return out


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def evaluate(
    run_dir: str | Path,
    data_root: str | Path,
    images: str = "images",
    masks: str = "masks",
    *,
    run: LoadedRun | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Predict every image under `data_root/images` and score it against `data_root/masks`.

    Args:
        run_dir: the run folder.
        data_root: dataset root holding the two folders (paired as in training).
        images: image folder under `data_root`. Defaults to `"images"`.
        masks: mask folder under `data_root`. Defaults to `"masks"`.
        run: an already loaded run (skips rebuilding the model). `None` (default):
            load `run_dir`.
        progress: called as `progress(done, total, image_path)` after each image.
            `None` (default): silent.

    Returns:
        `dice_mean`, `iou_mean`, `precision_mean`, `recall_mean` (over the foreground
        classes 1..K-1, from all pixels of the set), `per_image_dice_mean` and
        `per_image_iou_mean`, `per_class` (one entry per class, background included:
        `class`, `value` (raw mask value), `dice`, `iou`, `precision`, `recall`,
        `pixels` in the masks), `images`, `pixels`, `mask_values`, `seconds`.

    Raises:
        DataError: no pairs, an unreadable file, a mask whose size differs from its
            image's, or masks whose class count differs from the run's (names the file).
        RunDirError: the run folder is incomplete.
    """
    t0 = time.monotonic()
    if run is None:
        check_run_dir(run_dir)  # a wrong run folder is named before the data is read
    found = find_pairs(data_root, images, masks)
    if not found.pairs:
        raise DataError(
            f"{Path(data_root) / images}: no image/mask pairs to evaluate",
            hint=f"masks must share the image's name in {Path(data_root) / masks}",
        )
    run = run or load_run(run_dir)
    k = run.num_classes
    mask_values = run.mask_values or infer_run_mask_values(found.pairs, k)
    # Pixels at the ignore value (VOC's 255 border) count in no class, as in training.
    ignore = trained_ignore(run.plan.data.ignore_index, mask_values)
    names = class_names(run.plan.data.class_names, k)
    cm = np.zeros((k, k), np.int64)
    per_image: list[tuple[float, float]] = []
    for i, pair in enumerate(found.pairs):
        image = read_image(pair.image, run.plan.data)
        true = read_mask(pair.mask, mask_values, ignore, run.plan.data.palette)
        if true.shape != image.shape[:2]:
            raise DataError(
                f"{pair.mask}: mask is {true.shape[1]}x{true.shape[0]} but its image "
                f"{pair.image} is {image.shape[1]}x{image.shape[0]}"
            )
        pred = run.predict_classes(image)
        keep = true != ignore if ignore is not None else slice(None)
        img_cm = confusion(true[keep], pred[keep], k)
        cm += img_cm
        scores = class_scores(img_cm)[1:]
        per_image.append((_mean([s["dice"] for s in scores]), _mean([s["iou"] for s in scores])))
        if progress is not None:
            progress(i + 1, len(found.pairs), pair.image)

    scores = class_scores(cm)
    per_class = [
        {"class": c, "name": names[c], "value": int(mask_values[c]), **s}
        | {"pixels": int(cm[c].sum())}
        for c, s in enumerate(scores)
    ]
    fg = per_class[1:]
    return {
        "run": str(run.path),
        "data": str(data_root),
        "images": len(found.pairs),
        "pixels": int(cm.sum()),
        "dice_mean": _mean([s["dice"] for s in fg]),
        "iou_mean": _mean([s["iou"] for s in fg]),
        "precision_mean": _mean([s["precision"] for s in fg]),
        "recall_mean": _mean([s["recall"] for s in fg]),
        "per_image_dice_mean": _mean([d for d, _ in per_image]),
        "per_image_iou_mean": _mean([j for _, j in per_image]),
        "per_class": per_class,
        "mask_values": [int(v) for v in mask_values],
        "class_names": names,
        "ignore_index": ignore,
        "averaging": "pixels of the whole set; means over foreground classes 1..K-1",
        "seconds": round(time.monotonic() - t0, 2),
    }


def infer_run_mask_values(pairs: list, num_classes: int) -> tuple[int, ...]:
    """Class values from the masks of `pairs`, for runs that did not record them.

    Raises:
        DataError: the masks hold a different number of classes than the run has.
    """
    from trainer.data.decode import infer_mask_values

    values = tuple(infer_mask_values([p.mask for p in pairs]))
    if len(values) != num_classes:
        folder = pairs[0].mask.parent
        raise DataError(
            f"{folder}: masks hold {len(values)} class values {list(values)} but the run "
            f"was trained with {num_classes} classes",
            hint="check --masks; the run's plan.json data.mask_values fixes the mapping",
        )
    return values


__all__ = ["class_scores", "confusion", "evaluate", "infer_run_mask_values"]
