"""`fitplan demo-data`: a small deterministic segmentation set (shapes on textured noise).

Used by `fitplan demo` and by the tests. Objects are learnable on purpose: they
differ from the background in brightness and texture, so a tiny U-Net reaches a
clearly non-trivial score in a few epochs.

Binary (`classes=2`): discs, rectangles and triangles, all foreground, bright with
fine grain on a darker mottled background; masks are 0/255. Three classes:
discs are class 1 (bright, fine grain), rectangles and triangles class 2 (dark,
striped); masks hold the class indices 0/1/2. Four to `MAX_CLASSES` classes (a
multi-class RGB set, e.g. 12 classes at 360x480 like a street-scene set): each object
takes a class from 1 to classes - 1 at random, drawn in that class's own colour and
stripe frequency; masks hold the class indices.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from trainer.atomic import write_bytes, write_text
from trainer.errors import DataError, FitplanError

MARKER = "fitplan demo dataset"
MIN_SIDE, MAX_SIDE = 16, 4096
MAX_PAIRS = 100_000
MAX_CLASSES = 12
_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """Parse "HxW" (e.g. "128x96": 128 high, 96 wide) into `(height, width)`.

    Raises:
        FitplanError: naming `option`, when `text` is not two integers in
            [MIN_SIDE, MAX_SIDE] joined by "x".
    """
    m = _SIZE_RE.match(text or "")
    if m:
        h, w = int(m.group(1)), int(m.group(2))
        if MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE:
            return h, w
    raise FitplanError(
        f"`{option}` must be HxW with sides from {MIN_SIDE} to {MAX_SIDE}, e.g. 128x128. "
        f"Received: {option}={text!r}"
    )


def make_demo_dataset(
    out: str | os.PathLike,
    classes: int = 2,
    n: int = 32,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
) -> Path:
    """Write `n` image/mask pairs to `out/images/` and `out/masks/`, plus `out/README.txt`.

    Args:
        out: the folder to create. It must be missing, empty, or a previous demo set
            (which is then overwritten, stale pairs removed).
        classes: 2 (binary, masks 0/255; default), or 3 to `MAX_CLASSES` (masks hold
            the class indices).
        n: number of pairs. Defaults to `32`.
        size: `(height, width)` of every image. Defaults to `(128, 128)`.
        seed: random seed. Defaults to `0`; the same arguments give the same bytes.

    Returns:
        `out` as a `Path`.

    Raises:
        FitplanError: an argument is out of range (names it).
        DataError: `out` is a file, or a non-empty folder that is not a demo set.
    """
    if not isinstance(classes, int) or not 2 <= classes <= MAX_CLASSES:
        raise FitplanError(
            f"`--classes` must be an integer from 2 to {MAX_CLASSES}. Received: classes={classes!r}"
        )
    if not isinstance(n, int) or not 1 <= n <= MAX_PAIRS:
        raise FitplanError(f"`--n` must be an integer from 1 to {MAX_PAIRS}. Received: n={n!r}")
    if not (isinstance(size, (tuple, list)) and len(size) == 2):
        raise FitplanError(f"`--size` must be (height, width). Received: size={size!r}")
    h, w = parse_size(f"{size[0]}x{size[1]}")
    out = Path(out)
    _check_target(out)
    width = max(4, len(str(n - 1)))
    names = [f"demo_{i:0{width}d}.png" for i in range(n)]
    # The marker goes first: a run cut short still leaves a folder it may overwrite.
    write_text(out / "README.txt", _readme(classes, n, h, w, seed))
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for stale in sorted((out / sub).glob("demo_*.png")):
            if stale.name not in names:
                stale.unlink()
    for i, name in enumerate(names):
        image, mask = _sample(np.random.default_rng([seed, i]), classes, h, w)
        write_bytes(out / "images" / name, _png(image))
        write_bytes(out / "masks" / name, _png(mask))
    return out


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose a new folder for the demo set")
    if not out.exists() or not any(out.iterdir()):
        return
    readme = out / "README.txt"
    try:
        is_demo = readme.read_text(encoding="utf-8").startswith(MARKER)
    except (OSError, UnicodeDecodeError):
        is_demo = False
    if not is_demo:
        raise DataError(
            f"{out}: folder is not empty and is not a fitplan demo set; refusing to write there",
            hint="choose a new or empty folder",
        )


def _readme(classes: int, n: int, h: int, w: int, seed: int) -> str:
    if classes == 2:
        values = "0 = background, 255 = object"
    elif classes == 3:
        values = "0 = background, 1 = disc, 2 = rectangle or triangle"
    else:
        values = f"0 = background, 1 to {classes - 1} = shapes, each class its own colour"
    return (
        f"{MARKER}\n\n"
        f"{n} synthetic RGB images ({h}x{w}, HxW) of shapes on textured noise, with masks.\n"
        f"images/demo_*.png: RGB. masks/demo_*.png: grey, {values}.\n"
        f"Made by: fitplan demo-data OUT --classes {classes} --n {n} --size {h}x{w} "
        f"--seed {seed}\n(the same command writes the same bytes; it may overwrite this folder).\n"
    )


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Noise with features about `cell` pixels wide, in [-1, 1] roughly."""
    coarse = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR))


def _sample(
    rng: np.random.Generator, classes: int, h: int, w: int
) -> tuple[np.ndarray, np.ndarray]:
    if classes > 3:
        return _sample_many(rng, classes, h, w)
    label = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(label)
    for _ in range(int(rng.integers(2, 6))):
        # Discs are class 1; with three classes, rectangles and triangles are class 2.
        _draw_shape(draw, rng, h, w, lambda kind: 1 if classes == 2 or kind == 0 else 2, (14, 6))
    lab = np.asarray(label)

    grain = rng.standard_normal((h, w)).astype(np.float32)
    img = 95 + 25 * _smooth_noise(rng, h, w, 8) + 10 * grain
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.where(lab == 1, 200 + 18 * grain, img)
    stripes = 25 * np.sin((xx + yy) * 0.9).astype(np.float32)
    img = np.where(lab == 2, 35 + stripes + 6 * grain, img)
    tint = np.asarray([1.0, 0.95, 0.9], dtype=np.float32) + 0.05 * rng.standard_normal(3)
    rgb = np.clip(img[..., None] * tint, 0, 255).astype(np.uint8)
    mask = (lab * 255).astype(np.uint8) if classes == 2 else lab.astype(np.uint8)
    return rgb, mask


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    h: int,
    w: int,
    cls_of: Callable[[int], int],
    radius_div: tuple[int, int],
) -> None:
    """One disc, rectangle or triangle at a random place.

    Args:
        cls_of: the class to fill with, given the shape's kind (0 disc, 1 rectangle,
            2 triangle).
        radius_div: the radius is drawn between min(h, w) / radius_div[0] and
            min(h, w) / radius_div[1].
    """
    side = min(h, w)
    kind = int(rng.integers(0, 3))
    r = float(rng.uniform(side / radius_div[0], side / radius_div[1]))
    cy, cx = float(rng.uniform(r, h - r)), float(rng.uniform(r, w - r))
    cls = cls_of(kind)
    if kind == 0:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=cls)
    elif kind == 1:
        a = float(rng.uniform(0.5, 1.0))
        draw.rectangle([cx - r, cy - r * a, cx + r, cy + r * a], fill=cls)
    else:
        t = float(rng.uniform(0, 2 * np.pi))
        pts = [(cx + r * np.cos(t + k * 2.094), cy + r * np.sin(t + k * 2.094)) for k in range(3)]
        draw.polygon(pts, fill=cls)


def _sample_many(
    rng: np.random.Generator, classes: int, h: int, w: int
) -> tuple[np.ndarray, np.ndarray]:
    """A multi-class RGB sample: each class a fixed colour and stripe frequency."""
    label = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(label)
    for _ in range(int(rng.integers(4, 4 + classes))):
        cls = int(rng.integers(1, classes))
        _draw_shape(draw, rng, h, w, lambda _kind, cls=cls: cls, (16, 7))
    lab = np.asarray(label)
    grain = rng.standard_normal((h, w)).astype(np.float32)
    base = 95 + 25 * _smooth_noise(rng, h, w, 8) + 10 * grain
    rgb = np.repeat(base[..., None], 3, axis=-1)
    yy, xx = np.mgrid[0:h, 0:w]
    for k in range(1, classes):
        # Hues evenly spaced, two brightness levels alternating, stripes at a class frequency.
        hue = 2 * np.pi * (k - 1) / (classes - 1)
        colour = 140 + 90 * np.cos(hue + np.asarray([0.0, 2.094, 4.189], dtype=np.float32))
        colour *= 0.7 if k % 2 else 1.0
        stripes = 20 * np.sin((xx * (k % 4 + 1) + yy) * 0.35 * (1 + k % 3)).astype(np.float32)
        sel = lab == k
        rgb[sel] = colour + (stripes[sel] + 6 * grain[sel])[:, None]
    return np.clip(rgb, 0, 255).astype(np.uint8), lab.astype(np.uint8)
