"""Pair image files with mask files. Shared by `fitplan scan` and the trainer's pipeline.

Pairing rule, in order: a mask whose path relative to the mask folder, without its
extension, equals the image's (``images/a/x.png`` with ``masks/a/x.png`` or
``masks/a/x.tif``); else one with a mask suffix (``x_mask.png``, ``x-mask``,
``x_seg``, ``x_label``, ``x_gt``). Folders are walked recursively; hidden files
and fitplan's own temporary files are skipped; symlinked files are followed,
symlinked folders are not (no loops). When images and masks share one folder,
files with a mask suffix are masks and the rest are images.

nnU-Net's layout pairs too: an image named with its channel index, `case_0000.png`,
pairs with the mask `case.png`, and a dataset root holding `imagesTr/` and `labelsTr/`
(and no `images/`) uses them when the default folder names are asked for. Only the
first channel (`_0000`) is an image: `case_0001.png` and up are further channels of
a multi-channel case, which fitplan does not combine; they are listed as unpaired.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from trainer.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
MASK_SUFFIXES = ("_mask", "-mask", "_masks", "_seg", "_label", "_labels", "_gt")
# nnU-Net: channel 0 of a case (`case_0000`) pairs with the mask `case`.
NNUNET_CHANNEL = "_0000"
NNUNET_FOLDERS = ("imagesTr", "labelsTr")


@dataclass(frozen=True)
class Pair:
    """One training example: the image file and its mask file; `key` is the shared stem."""

    key: str
    image: Path
    mask: Path


@dataclass
class PairList:
    """The result of pairing: the pairs (sorted by key) and the files left over."""

    pairs: list[Pair] = field(default_factory=list)
    unpaired_images: list[Path] = field(default_factory=list)
    unpaired_masks: list[Path] = field(default_factory=list)
    duplicates: list[Path] = field(default_factory=list)


def list_images(folder: Path) -> list[Path]:
    """Every supported image file under `folder`, recursively, sorted."""
    out: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith(".") or ".tmp" in name:
                continue
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                out.append(Path(root) / name)
    return sorted(out)


def _stem_key(path: Path, folder: Path) -> str:
    rel = path.relative_to(folder)
    return str(rel.with_suffix("")).replace(os.sep, "/")


def _strip_mask_suffix(key: str) -> str | None:
    low = key.lower()
    for suffix in MASK_SUFFIXES:
        if low.endswith(suffix):
            return key[: -len(suffix)]
    return None


def resolve_folders(root: str | os.PathLike, images: str, masks: str) -> tuple[Path, Path]:
    """The image and mask folders under `root`; `DataError` naming what is missing."""
    root = Path(root)
    if not root.exists():
        where = "" if root.is_absolute() else f" (a relative path: looked for under {Path.cwd()})"
        raise DataError(f"{root}: dataset folder not found{where}")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    img_dir, mask_dir = root / images, root / masks
    nn_img, nn_mask = (root / f for f in NNUNET_FOLDERS)
    if (images, masks) == ("images", "masks") and not img_dir.is_dir() and nn_img.is_dir():
        img_dir, mask_dir = nn_img, nn_mask  # an nnU-Net raw dataset (docstring)
    if not img_dir.is_dir():
        subdirs = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(
            f"{img_dir}: image folder not found",
            hint=f"folders in {root}: {', '.join(subdirs) or 'none'}; choose one with --images",
        )
    if not mask_dir.is_dir():
        subdirs = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(
            f"{mask_dir}: mask folder not found",
            hint=f"folders in {root}: {', '.join(subdirs) or 'none'}; choose one with --masks",
        )
    return img_dir, mask_dir


def find_pairs(root: str | os.PathLike, images: str = "images", masks: str = "masks") -> PairList:
    """Pair the files under `root/images` with those under `root/masks`.

    Raises `DataError` when a folder is missing. An empty result is returned, not
    raised: the caller decides whether nothing trainable is an error.
    """
    img_dir, mask_dir = resolve_folders(root, images, masks)
    same = img_dir.resolve() == mask_dir.resolve()
    image_files = list_images(img_dir)
    mask_files = image_files if same else list_images(mask_dir)

    result = PairList()
    masks_by_key: dict[str, Path] = {}
    for m in mask_files:
        key = _stem_key(m, mask_dir)
        base = _strip_mask_suffix(key)
        if same and base is None:
            continue  # an image, not a mask
        for k in ([key] if not same else []) + ([base] if base is not None else []):
            if k in masks_by_key:
                result.duplicates.append(m)
            else:
                masks_by_key[k] = m
    used: set[Path] = set()
    seen_keys: set[str] = set()
    for img in image_files:
        key = _stem_key(img, img_dir)
        if same and _strip_mask_suffix(key) is not None:
            continue
        if key in seen_keys:  # x.png and x.jpg: the second cannot be told apart
            result.duplicates.append(img)
            continue
        seen_keys.add(key)
        m = masks_by_key.get(key)
        if m is None and key.endswith(NNUNET_CHANNEL):
            m = masks_by_key.get(key[: -len(NNUNET_CHANNEL)])
        if m is None:
            result.unpaired_images.append(img)
        else:
            result.pairs.append(Pair(key, img, m))
            used.add(m)
    result.unpaired_masks = sorted(
        m for m in set(masks_by_key.values()) if m not in used and m not in result.duplicates
    )
    result.pairs.sort(key=lambda p: p.key)
    return result
