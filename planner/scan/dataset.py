"""`fitplan scan`: pair images with masks, check every file, and write a fingerprint.

The fingerprint (a versioned, JSON-able dict; fields in docs/scan.md) is what the
planner and the trainer know about a dataset: the good pairs, what was excluded and
why, image modes and sizes, the mask values and the task they imply, bytes on disk
and decoded, and a digest that changes when any scanned file changes.

Bad pairs are excluded and named, never raised: only `require_trainable` turns
"nothing left" into a `DataError`.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from planner.scan.fingerprint import (
    FINGERPRINT_VERSION,
    load_fingerprint,
    require_trainable,
    save_fingerprint,
)
from planner.scan.imageinfo import FileInfo, decoded_bytes, inspect, read_and_hash
from planner.scan.values import mask_summary
from planner.scan.view import scan_table, warnings
from trainer.data.digest import digest_entries
from trainer.data.masks import palette_colours
from trainer.data.pairs import IMAGE_EXTENSIONS, PairList, find_pairs, resolve_folders
from trainer.errors import DataError

__all__ = [
    "FINGERPRINT_VERSION",
    "load_fingerprint",
    "require_trainable",
    "save_fingerprint",
    "scan",
    "scan_table",
    "warnings",
]

# Cap on listed skipped entries: a folder full of non-images must not bloat the JSON.
_MAX_LISTED = 50
_SIZE_HIST_BINS = 20


def scan(
    root: str | os.PathLike,
    images: str = "images",
    masks: str = "masks",
    *,
    mask_sample: int | None = None,
    classes: dict[int, str | None] | None = None,
    ignore_index: int | None = None,
    merge_rare: bool = False,
    palette: list[str] | None = None,
) -> dict[str, Any]:
    """Scan a dataset and return its fingerprint.

    Args:
        root: dataset root holding the image and mask folders.
        images: image folder under `root`. Defaults to `"images"`.
        masks: mask folder under `root`. Defaults to `"masks"`.
        mask_sample: decode at most this many masks (evenly spaced by key) for their
            values. Defaults to `None`: decode every mask. All files are still
            hashed and checked for integrity either way.
        classes: raw value -> class name (or `None`) from `--classes`; `None`: the
            classes are inferred (`trainer.data.masks.split_values`).
        ignore_index: raw value left out of training (`-1`: none); `None`: 255 for a
            VOC-like label set (`trainer.data.masks.default_ignore_index`).
        merge_rare: map values under 0.05% of the pixels to the nearest class.
        palette: class colours `"#rrggbb"` for colour-coded masks (class k is entry k).

    Returns:
        The fingerprint dict (see docs/scan.md).

    Raises:
        DataError: `root` or one of its folders does not exist.
    """
    if mask_sample is not None and mask_sample < 1:
        raise DataError(f"`mask_sample` must be a positive integer. Received: {mask_sample=}")
    t0 = time.perf_counter()
    root = Path(root)
    img_dir, mask_dir = resolve_folders(root, images, masks)
    found = find_pairs(root, images, masks)
    colours = palette_colours(palette) if palette else None
    checked, loose = _inspect_all(found, mask_sample, colours)

    def rel(p: Path) -> str:
        return Path(os.path.relpath(p, root)).as_posix()

    good, excluded, notes = _sort_pairs(found, checked, loose, rel)
    values = mask_summary(
        [(rel(mk.path), mk.levels) for _, _, mk in good if mk.levels is not None],
        classes=classes,
        ignore_index=ignore_index,
        merge_rare=merge_rare,
    )
    notes += values.pop("notes")
    all_files = [f for pair in checked for f in pair] + loose
    mask_bytes = sum(mk.height * mk.width for _, _, mk in good)  # 1 byte per mask pixel
    fp: dict[str, Any] = {
        "version": FINGERPRINT_VERSION,
        "root": str(root.resolve()),
        "images": images,
        "masks": masks,
        "pairs": len(good),
        "pair_keys": [k for k, _, _ in good],
        "excluded": excluded,
        "unpaired_images": [rel(p) for p in found.unpaired_images],
        "unpaired_masks": [rel(p) for p in found.unpaired_masks],
        "duplicates": [rel(p) for p in found.duplicates],
        "notes": notes,
        "skipped": _skipped(img_dir, mask_dir, rel),
        "image_formats": _count(im.format for _, im, _ in good),
        "image_modes": _count(im.mode for _, im, _ in good),
        "mask_modes": _count(mk.mode for _, _, mk in good),
        "bit_depths": _count(str(im.bit_depth) for _, im, _ in good),
        "image_size": _size_stats([im.hw for _, im, _ in good]),
        **values,
        "masks_decoded": sum(1 for _, _, mk in good if mk.levels is not None),
        "total_bytes": sum(f.size_bytes for f in all_files),
        "decoded_bytes": sum(decoded_bytes(im) for _, im, _ in good) + mask_bytes,
        "mask_decoded_bytes": mask_bytes,
        "files": len(all_files),
        "digest": _digest([(rel(f.path), f) for f in all_files]),
    }
    if not found.pairs and found.unpaired_images and found.unpaired_masks:
        fp["suggestions"].insert(0, _naming_hint(fp))
    elapsed = time.perf_counter() - t0
    fp["scan_time_s"] = round(elapsed, 3)
    fp["files_per_s"] = round(len(all_files) / elapsed, 1) if elapsed > 0 else 0.0
    return fp


def _inspect_all(
    found: PairList, mask_sample: int | None, colours: np.ndarray | None = None
) -> tuple[list[tuple[FileInfo, FileInfo]], list[FileInfo]]:
    """Every pair's image and mask inspected (values for `mask_sample` masks), and the loose files."""
    n = len(found.pairs)
    decode = set(range(n)) if mask_sample is None or mask_sample >= n else _spread(n, mask_sample)

    def check(i: int) -> tuple[FileInfo, FileInfo]:
        p = found.pairs[i]
        return inspect(p.image), inspect(p.mask, values=i in decode, palette=colours)

    # Pillow's decoders and hashlib release the GIL: threads overlap I/O and decoding.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        checked = list(pool.map(check, range(n)))
        loose = list(
            pool.map(read_and_hash, found.unpaired_images + found.unpaired_masks + found.duplicates)
        )
    return checked, loose


def _sort_pairs(
    found: PairList,
    checked: list[tuple[FileInfo, FileInfo]],
    loose: list[FileInfo],
    rel: Callable[[Path], str],
) -> tuple[list[tuple[str, FileInfo, FileInfo]], list[dict[str, str]], list[dict[str, str]]]:
    """`(good, excluded, notes)`: trainable pairs by key, excluded ones and why, file notes."""
    good: list[tuple[str, FileInfo, FileInfo]] = []
    excluded, notes = [], []
    for pair, (im, mk) in zip(found.pairs, checked, strict=True):
        fault = _pair_problem(im, mk)
        if fault:
            excluded.append(
                {
                    "image": rel(im.path),
                    "mask": rel(mk.path),
                    "file": rel(fault[0]),
                    "problem": fault[1],
                }
            )
        else:
            good.append((pair.key, im, mk))
        for info in (im, mk):
            if info.note:
                notes.append({"file": rel(info.path), "note": info.note})
    for info in loose:
        if info.problem:
            notes.append({"file": rel(info.path), "note": info.problem})
    return good, excluded, notes


def _pair_problem(im: FileInfo, mk: FileInfo) -> tuple[Path, str] | None:
    """The file at fault and what is wrong with it, or `None` for a good pair."""
    if im.problem:
        return im.path, im.problem
    if mk.problem:
        return mk.path, mk.problem
    if im.hw != mk.hw:
        return mk.path, (
            f"size mismatch: image {im.height}x{im.width}, mask {mk.height}x{mk.width} (HxW); "
            f"resize the mask with nearest-neighbour to match"
        )
    return None


def _spread(n: int, k: int) -> set[int]:
    """`k` indices evenly spread over `range(n)`, deterministic (first and last included)."""
    return {round(i * (n - 1) / max(k - 1, 1)) for i in range(k)}


def _count(items: Any) -> dict[str, int]:
    return dict(sorted(Counter(i for i in items if i is not None).items()))


def _size_stats(sizes: list[tuple[int, int]]) -> dict[str, Any]:
    if not sizes:
        return {"min": None, "max": None, "median": None, "histogram": {}}
    arr = np.asarray(sizes)
    hist = Counter(f"{h}x{w}" for h, w in sizes).most_common()
    shown = dict(hist[:_SIZE_HIST_BINS])
    if len(hist) > _SIZE_HIST_BINS:
        shown["other"] = sum(c for _, c in hist[_SIZE_HIST_BINS:])
    return {
        "min": arr.min(axis=0).tolist(),
        "max": arr.max(axis=0).tolist(),
        "median": [int(v) for v in np.median(arr, axis=0)],
        "histogram": shown,
    }


def _digest(files: list[tuple[str, FileInfo]]) -> str:
    """The dataset digest (`trainer.data.digest`: the trainer recomputes it with the same rule).

    The bytes are read for the integrity checks anyway, so hashing them here is free.
    """
    return digest_entries((name, info.size_bytes, info.sha256) for name, info in files)


def _skipped(img_dir: Path, mask_dir: Path, rel: Any) -> dict[str, Any]:
    """Symlinked folders (not followed, to avoid loops) and files that are not images."""
    listed: list[dict[str, str]] = []
    count = 0
    for top in dict.fromkeys([img_dir.resolve(), mask_dir.resolve()]):
        base = img_dir if top == img_dir.resolve() else mask_dir
        for dirpath, dirs, files in os.walk(base):
            for d in dirs:
                if not d.startswith(".") and os.path.islink(os.path.join(dirpath, d)):
                    count += 1
                    if len(listed) < _MAX_LISTED:
                        listed.append(
                            {
                                "path": rel(Path(dirpath, d)),
                                "reason": "symlinked folder, not followed",
                            }
                        )
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for f in files:
                ext = os.path.splitext(f)[1].lower()
                if f.startswith(".") or ".tmp" in f or ext in IMAGE_EXTENSIONS:
                    continue
                count += 1
                if len(listed) < _MAX_LISTED:
                    listed.append({"path": rel(Path(dirpath, f)), "reason": "not an image file"})
    return {"count": count, "listed": listed}


def _naming_hint(fp: dict[str, Any]) -> str:
    return (
        f"no image and mask share a name (e.g. image {fp['unpaired_images'][0]!r}, mask "
        f"{fp['unpaired_masks'][0]!r}): a mask must have the image's relative name, any "
        f"extension, optionally with a suffix such as _mask"
    )
