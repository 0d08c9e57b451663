"""Synthetic image/mask pairs on disk for the pipeline and streaming benchmarks.

Grey PNG images of smooth random blobs (upsampled noise, so files compress like real
micrographs rather than like white noise) and 0/255 masks thresholded from them:
decoding costs what a real grey dataset costs, and the files stay small.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image


def write_pairs(root: str | os.PathLike, n: int, side: int, *, seed: int = 0) -> Path:
    """Write `n` pairs `root/images/NNNNN.png` + `root/masks/NNNNN.png` of `side` x `side`.

    Args:
        root: folder to create (may exist).
        n: number of pairs.
        side: image height and width in pixels.
        seed: seeds the blobs, so the same call writes the same files.

    Returns:
        `root` as a `Path`.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        coarse = Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8))
        image = np.asarray(coarse.resize((side, side), Image.BICUBIC))
        mask = np.where(image > 150, 255, 0).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{i:05d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:05d}.png")
    return root


def link_subset(src: str | os.PathLike, dst: str | os.PathLike, n: int) -> Path:
    """`dst` holding the first `n` pairs of `src` as hard links (no extra disk space)."""
    src, dst = Path(src), Path(dst)
    for folder in ("images", "masks"):
        (dst / folder).mkdir(parents=True, exist_ok=True)
        for name in sorted(os.listdir(src / folder))[:n]:
            try:
                os.link(src / folder / name, dst / folder / name)
            except OSError:  # another file system or no hard links: copy instead
                (dst / folder / name).write_bytes((src / folder / name).read_bytes())
    return dst
