"""A small dataset with one of every problem `fitplan scan` must name (issue 6, Datasets).

`build_messy_dataset(root)` writes it and returns what the scan must say about each
case, so the scan tests and the fault suite assert the same cases.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 64


def png_bytes(arr: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def rgb(seed: int, side: int = SIDE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def binary_mask(seed: int, side: int = SIDE) -> np.ndarray:
    m = np.zeros((side, side), np.uint8)
    rng = np.random.default_rng(seed)
    y, x = rng.integers(0, side - 16, 2)
    m[y : y + 16, x : x + 16] = 255
    return m


def huge_header_png(width: int = 20000, height: int = 20000) -> bytes:
    """A tiny PNG file whose header claims `width` x `height` grey pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build_messy_dataset(root: Path) -> dict:
    """Write `root/images` and `root/masks`; return the expected verdicts.

    Returns:
        {"good": keys that must pair cleanly,
         "excluded": {image relpath: substring of the problem},
         "unpaired_images": [...], "unpaired_masks": [...],
         "notes": {relpath: substring of the note}, "skipped": [relpaths]}
    """
    img, msk = root / "images", root / "masks"
    pair = {}  # key -> (image bytes, mask bytes, image ext, mask name)
    for i in range(4):
        pair[f"good_{i}"] = (png_bytes(rgb(i)), png_bytes(binary_mask(i)))
    for key, (ib, mb) in pair.items():
        _write(img / f"{key}.png", ib)
        _write(msk / f"{key}.png", mb)

    good_img, good_mask = png_bytes(rgb(99)), png_bytes(binary_mask(99))

    def add(name: str, image: bytes | None = good_img, mask: bytes | None = good_mask) -> None:
        if image is not None:
            _write(img / name, image)
        if mask is not None:
            _write(msk / name, mask)

    add("lonely.png", mask=None)
    add("orphan.png", image=None)
    add("mismatch.png", mask=png_bytes(binary_mask(5, side=32)))
    add("empty.png", image=b"")
    add("truncated.png", image=good_img[: len(good_img) // 2])
    add("truncmask.png", mask=good_mask[: len(good_mask) - 20])
    add("garbage.png", image=b"this is not an image at all" * 10)
    add("jpeg_named.png", image=png_bytes(rgb(7), fmt="JPEG", quality=90))
    jpeg = png_bytes(rgb(8), fmt="JPEG", quality=90)
    add("jpeg_truncated.jpg", image=jpeg[: len(jpeg) // 2], mask=None)
    _write(msk / "jpeg_truncated.png", good_mask)
    deep = (np.random.default_rng(9).integers(0, 65536, (SIDE, SIDE))).astype(np.uint16)
    add("deep16.png", image=png_bytes(deep))
    add("bitmap.bmp", image=png_bytes(rgb(10), fmt="BMP"), mask=None)
    _write(msk / "bitmap.png", good_mask)
    m = binary_mask(11)
    add("rgba_mask.png", mask=png_bytes(np.dstack([m, m, m, np.full_like(m, 255)])))
    stray = binary_mask(12)
    rng = np.random.default_rng(12)
    idx = rng.choice(stray.size, 300, replace=False)
    stray.flat[idx] = rng.integers(2, 254, 300)  # ~300 distinct-ish levels, one pixel each
    add("stray_grey.png", mask=png_bytes(stray))
    add("photo_mask.png", mask=png_bytes(rgb(13)))
    grey_photo = np.random.default_rng(14).integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
    add("grey_photo_mask.png", mask=png_bytes(grey_photo))
    add("huge.png", image=huge_header_png())
    add("café au lait.png")
    add("sub/dir/nested.png")
    _write(img / "suffixed.png", good_img)
    _write(msk / "suffixed_mask.png", good_mask)
    _write(img / "dup.png", good_img)
    _write(img / "dup.bmp", png_bytes(rgb(15), fmt="BMP"))
    _write(msk / "dup.png", good_mask)
    _write(img / "notes.txt", b"not an image")
    outside = root.parent / f"{root.name}-outside"
    _write(outside / "linked.png", good_img)
    (outside / "folder").mkdir(exist_ok=True)
    _write(outside / "folder" / "hidden_by_link.png", good_img)
    os.symlink(outside / "linked.png", img / "linked.png")
    _write(msk / "linked.png", good_mask)
    os.symlink(outside / "nowhere.png", img / "dangling.png")
    _write(msk / "dangling.png", good_mask)
    os.symlink(outside / "folder", img / "linkdir")
    os.symlink(img / "loop.png", img / "loop.png")  # a symlink to itself
    _write(msk / "loop.png", good_mask)
    os.mkfifo(img / "fifo.png")  # reading it would block forever
    _write(msk / "fifo.png", good_mask)

    return {
        "good": sorted(
            [f"good_{i}" for i in range(4)]
            + [
                "jpeg_named",
                "deep16",
                "bitmap",
                "rgba_mask",
                "stray_grey",
                "café au lait",
                "sub/dir/nested",
                "suffixed",
                "dup",
                "linked",
            ]
        ),
        "excluded": {
            "images/mismatch.png": "size mismatch",
            "images/empty.png": "empty file",
            "images/truncated.png": "truncated",
            "images/truncmask.png": "truncated",
            "images/garbage.png": "not an image",
            "images/jpeg_truncated.jpg": "truncated",
            "images/photo_mask.png": "colour",
            "images/grey_photo_mask.png": "grey levels",
            "images/huge.png": "too large",
            "images/dangling.png": "broken symlink",
            "images/loop.png": "cannot read",
            "images/fifo.png": "not a regular file",
        },
        "unpaired_images": ["images/lonely.png"],
        "unpaired_masks": ["masks/orphan.png"],
        "duplicates": ["images/dup.png"],
        "notes": {
            "images/jpeg_named.png": "JPEG",
            "masks/stray_grey.png": "stray grey levels",
        },
        "skipped": ["images/linkdir", "images/notes.txt"],
    }
