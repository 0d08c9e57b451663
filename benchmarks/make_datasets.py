"""Datasets as people have them, for labels and intensities (issue 16).

    .venv/bin/python benchmarks/make_datasets.py voc OUT [--n 24] [--size 64] [--seed 0]
    .venv/bin/python benchmarks/make_datasets.py grey16 OUT [--n 24] [--size 64] [--max 4095]
    .venv/bin/python benchmarks/make_datasets.py all OUT [--full]

- `voc`: Pascal VOC's layout. RGB images; masks are 8-bit PNGs holding the class
  index 0 (background) to 4 and 255 on a 2-pixel band along every object border (the
  "ignore" band). Each class is a shape with its own colour and texture.
- `grey16`: microscopy-like 16-bit grey PNGs whose values span only 0..`max` (12-bit:
  4095; divided by 65535 that is [0, 0.06]); masks 0/1 (bright blobs on a dim,
  noisy background).

`all` writes both under OUT/voc and OUT/grey16; `--full` uses 512x512 and 200 pairs
instead of the tiny 64x64 and 24. The same arguments give the same bytes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

VOC_COLOURS = [(40, 40, 40), (200, 60, 60), (60, 200, 60), (60, 60, 220), (220, 200, 40)]
TINY = {"n": 24, "size": 64}
FULL = {"n": 200, "size": 512}


def _shifts(a: np.ndarray) -> list[np.ndarray]:
    """`a` and its four neighbours (edge-padded), for borders and blurs without scipy."""
    p = np.pad(a, 1, mode="edge")
    return [p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]


def _shapes(rng: np.random.Generator, size: int, classes: int, count: int) -> np.ndarray:
    """A label image of discs and rectangles, class 1 .. classes-1 on background 0."""
    label = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(count):
        c = int(rng.integers(1, classes))
        cy, cx = rng.integers(0, size, 2)
        r = int(rng.integers(size // 10, size // 4))
        if rng.random() < 0.5:
            label[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = c
        else:
            label[max(0, cy - r) : cy + r, max(0, cx - r) : cx + r] = c
    return label


def make_voc(out: str | Path, n: int = 24, size: int = 64, seed: int = 0) -> Path:
    """VOC-style pairs: RGB images, masks 0..4 with a 255 border band. Returns `out`."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = _shapes(rng, size, len(VOC_COLOURS), count=4)
        colours = np.asarray(VOC_COLOURS, np.float32)[label]
        noise = rng.normal(0, 12, (size, size, 3))
        image = np.clip(colours + noise, 0, 255).astype(np.uint8)
        border = np.any([s != label for s in _shifts(label)], axis=0)
        mask = label.copy()
        mask[np.any(_shifts(border), axis=0)] = 255  # a band about 2 pixels wide
        Image.fromarray(image).save(out / "images" / f"voc_{i:04d}.png")
        Image.fromarray(mask).save(out / "masks" / f"voc_{i:04d}.png")
    return out


def make_grey16(
    out: str | Path, n: int = 24, size: int = 64, seed: int = 0, max_value: int = 4095
) -> Path:
    """16-bit grey pairs with values in 0..`max_value`, masks 0/1. Returns `out`."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = (_shapes(rng, size, 2, count=3) > 0).astype(np.uint8)
        base = 0.15 + 0.55 * np.mean(_shifts(label.astype(np.float64)), axis=0)
        image = base + rng.normal(0, 0.05, (size, size))
        image = np.clip(image * max_value, 0, max_value).astype(np.uint16)
        Image.fromarray(image).save(out / "images" / f"cell_{i:04d}.png")
        Image.fromarray(label).save(out / "masks" / f"cell_{i:04d}.png")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("voc", "grey16", "all"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--full", action="store_true", help="512x512, 200 pairs")
    parser.add_argument("--n", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max", type=int, default=4095, help="grey16: highest value")
    args = parser.parse_args(argv)
    preset = FULL if args.full else TINY
    n, size = args.n or preset["n"], args.size or preset["size"]
    if args.kind in ("voc", "all"):
        target = args.out / "voc" if args.kind == "all" else args.out
        print(make_voc(target, n, size, args.seed))
    if args.kind in ("grey16", "all"):
        target = args.out / "grey16" if args.kind == "all" else args.out
        print(make_grey16(target, n, size, args.seed, args.max))


if __name__ == "__main__":
    main()
