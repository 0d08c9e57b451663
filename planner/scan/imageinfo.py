"""Check one image or mask file: what it is, whether it is whole, and (for masks) its values.

Images are read header-only (format, mode, size) and checked with the trainer's one
integrity rule (`trainer.data.integrity`: the same files are excluded, in the same
words, by the scan and by training). Masks that are sampled for their values are
decoded in full.

Every file's bytes are hashed (SHA-256) from the one read that the checks need
anyway, for the dataset digest (docs/scan.md says why content, not mtimes).
"""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from planner.scan.values import sparse_levels
from trainer.data.integrity import (
    check_whole,
    mask_histogram,
    open_header,
    os_problem,
    problem_of,
    stat_problem,
)

# Files above this are hashed in chunks and opened from disk instead of from memory.
_READ_WHOLE_LIMIT = 64 << 20
_EXT_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
_MODE_DEPTH = {"1": 1, "I": 32, "F": 32}
# Channels once decoded for training (`trainer.data.decode`): grey, with or without alpha,
# is one; anything else is three (alpha dropped; a palette, bilevel or CMYK as RGB).
_DECODED_CHANNELS = {"P": 3, "PA": 3, "1": 3}


@dataclass
class FileInfo:
    """What one file is. `problem` set means the file cannot be used (the pair is excluded)."""

    path: Path
    size_bytes: int = 0
    sha256: str = ""
    format: str | None = None
    mode: str | None = None
    height: int = 0
    width: int = 0
    bit_depth: int = 0
    channels: int = 0  # channels the trainer keeps once decoded (`_DECODED_CHANNELS`)
    problem: str | None = None
    note: str | None = None
    # Mask value counts as (values, counts), when decoded: sparse, so 100k masks stay small.
    levels: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def hw(self) -> tuple[int, int]:
        return (self.height, self.width)


def read_and_hash(path: Path) -> FileInfo:
    """Stat and hash `path` only (used for files that are not paired)."""
    info = FileInfo(path=path)
    _read(info)
    return info


def inspect(path: Path, *, values: bool = False, palette: np.ndarray | None = None) -> FileInfo:
    """Check `path`: header, integrity and, if `values`, the mask value histogram.

    Args:
        path: the file.
        values: decode the file as a mask and count its values (`FileInfo.levels`).
            Defaults to `False`: header and integrity only.
        palette: class colours `[K, 3]` (`--palette`): a colour mask's values are the
            indices of the nearest colours.

    Returns:
        A `FileInfo`; never raises for a bad file (the reason is in `problem`).
    """
    info = FileInfo(path=path)
    data = _read(info)
    if info.problem is not None:
        return info
    try:
        _check(info, data, values, palette)
    # A decoder fed a hostile file may raise almost anything (OSError, SyntaxError,
    # struct.error, ValueError...): the scan must name the file and go on, never crash.
    except Exception as exc:  # noqa: BLE001
        info.problem = problem_of(exc)
    return info


def _read(info: FileInfo) -> bytes | None:
    path = info.path
    try:
        st = path.stat()
        info.problem = stat_problem(st)
        if not stat.S_ISREG(st.st_mode):
            return None  # a FIFO or device named x.png would block or never end a read
        info.size_bytes = st.st_size
        h = hashlib.sha256()  # an empty file too: the digest counts it
        if info.size_bytes <= _READ_WHOLE_LIMIT:
            data = path.read_bytes()
            h.update(data)
        else:
            data = None
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        info.sha256 = h.hexdigest()
    except OSError as exc:
        info.problem = os_problem(path, exc)
        return None
    return data


def _check(info: FileInfo, data: bytes | None, values: bool, palette: np.ndarray | None) -> None:
    src = data if data is not None else info.path
    im = open_header(src)
    info.format, info.mode = im.format, im.mode
    info.width, info.height = im.size
    bands = len(im.getbands())
    info.channels = _DECODED_CHANNELS.get(im.mode, 1 if bands <= 2 else 3)
    info.bit_depth = _bit_depth(im, data)
    expected = _EXT_FORMATS.get(info.path.suffix.lower())
    if expected and info.format not in (expected, "MPO" if expected == "JPEG" else expected):
        info.note = f"a {info.format} file named {info.path.suffix} (it decodes; fine)"
    decoded = check_whole(im, src)
    if values:
        if not decoded:
            im = open_header(src)
        hist, info.problem = mask_histogram(im, palette)
        if hist is not None:
            info.levels = sparse_levels(hist)


def _bit_depth(im: Image.Image, data: bytes | None) -> int:
    if im.format == "PNG" and data is not None and data[12:16] == b"IHDR":
        return data[24]  # the IHDR bit depth per sample (Pillow reads 16-bit RGB as 8)
    if im.mode.startswith("I;16"):
        return 16
    return _MODE_DEPTH.get(im.mode, 8)


def decoded_bytes(info: FileInfo) -> int:
    """Bytes this file takes decoded at native size, one per channel the trainer keeps."""
    return info.height * info.width * max(info.channels, 1)
