"""Check image/mask files before training, so a bad file is named at start-up, not met mid-epoch.

`check_pairs` applies the scan's integrity rule (planner/scan/imageinfo.py; the fault
suite asserts both flag the same files) to every pair as cheaply as the format
allows: the header is read without decoding pixels, a PNG's chunk CRCs are walked
(Pillow's `verify()`: catches truncation without decompressing), a JPEG must end
with its end-of-image marker (else the decoder judges), rarer formats are decoded.
Pipes and devices named like images are never opened (a read would block forever),
and a header claiming more pixels than Pillow's decompression-bomb limit is refused
before anything is allocated. Bad pairs are returned, not raised: the data module
excludes them with a warning naming the file, as `fitplan scan` does.

A file that passes these checks can still fail to decode (a corrupt compressed
stream under valid CRCs). `find_undecodable` then finds it by decoding every file
exactly as training does; the trainer calls it only after such a failure.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from trainer.data.decode import FileInfo, inspect_image
from trainer.data.pairs import Pair
from trainer.errors import DataError

# Pillow's own decompression-bomb threshold (about 89 Mpx), as the scan uses.
MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)


@dataclass(frozen=True)
class Excluded:
    """A pair left out of training: the file at fault and what is wrong with it."""

    pair: Pair
    file: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}; pair {self.pair.key!r} excluded"


def file_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be trained on, or `None` when its header and integrity are fine."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return "broken symlink" if path.is_symlink() else "file not found"
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a pipe, socket or device)"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x MAX_PIXELS Pillow only warns; refused below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if width * height > MAX_PIXELS:
                    return _too_large(f"{height}x{width} ({width * height / 1e6:.0f} Mpx)")
                _verify(im, path, st.st_size)
    except Image.DecompressionBombError as exc:
        return _too_large(_claimed_size(path, str(exc)))
    # A decoder fed a hostile file may raise almost anything: name the file and go on.
    except Exception as exc:  # noqa: BLE001
        return _reason(exc)
    return None


def _verify(im: Image.Image, path: Path, size: int) -> None:
    if im.format == "PNG":
        im.verify()  # chunk CRCs up to IEND, no decompression
    elif im.format in ("JPEG", "MPO") and _ends_with_eoi(path, size):
        pass  # a full decode would cost about 10x more
    else:
        im.load()  # rarer formats (or a JPEG without its end marker): the decoder judges


def _ends_with_eoi(path: Path, size: int) -> bool:
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 64))
        tail = fh.read()
    # Some writers pad after the marker.
    return tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def _claimed_size(path: Path, message: str) -> str:
    with open(path, "rb") as fh:
        head = fh.read(24)
    if head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        return f"{h}x{w} ({w * h / 1e6:.0f} Mpx)"
    m = re.search(r"\((\d+) pixels\)", message)
    return f"{int(m.group(1)) / 1e6:.0f} Mpx" if m else "an enormous size"


def _too_large(what: str) -> str:
    return (
        f"too large: header claims {what}, over the {MAX_PIXELS / 1e6:.0f} Mpx limit; "
        "not decoded (downscale or tile it)"
    )


def _reason(exc: Exception) -> str:
    if type(exc).__name__ == "UnidentifiedImageError":
        return "not an image Pillow can read (unknown or corrupt header)"
    text = str(exc).strip() or type(exc).__name__
    if "truncat" in text.lower() or isinstance(exc, EOFError):
        return f"truncated or corrupt: {text}"
    return f"unreadable: {text}"


def _check_pair(pair: Pair) -> tuple[FileInfo, FileInfo] | Excluded:
    for path in (pair.image, pair.mask):
        problem = file_problem(path)
        if problem is not None:
            return Excluded(pair, path, problem)
    try:
        image, mask = inspect_image(pair.image), inspect_image(pair.mask, mask=True)
    except DataError as exc:  # the file changed between the two opens
        return Excluded(pair, pair.image, str(exc))
    if (image.height, image.width) != (mask.height, mask.width):
        return Excluded(
            pair,
            pair.mask,
            f"size mismatch: mask is {mask.width}x{mask.height} but its image {pair.image} "
            f"is {image.width}x{image.height} (WxH)",
        )
    return image, mask


def check_pairs(
    pairs: list[Pair],
) -> tuple[list[Pair], dict[Pair, tuple[FileInfo, FileInfo]], list[Excluded]]:
    """Check every pair's files.

    Returns:
        `(good pairs in input order, {pair: (image info, mask info)} for them, excluded)`.
    """
    # Opens and CRC walks wait on the disk with the GIL released: threads overlap them.
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(_check_pair, pairs))
    good, infos, excluded = [], {}, []
    for pair, result in zip(pairs, results, strict=True):
        if isinstance(result, Excluded):
            excluded.append(result)
        else:
            good.append(pair)
            infos[pair] = result
    return good, infos, excluded


def find_undecodable(pairs: list[Pair]) -> list[tuple[Path, str]]:
    """Decode every file as training does; `(file, decoder's reason)` for each that fails."""
    import tensorflow as tf

    from trainer.data.decode import load_image, load_mask_raw

    bad = []
    for pair in pairs:
        for path, load in ((pair.image, load_image), (pair.mask, load_mask_raw)):
            try:
                load(path)
            except (tf.errors.OpError, DataError) as exc:
                bad.append((path, _op_message(exc)))
    return bad


def _op_message(exc: Exception) -> str:
    text = (getattr(exc, "message", None) or str(exc)).strip().splitlines()[0]
    # TensorFlow wraps the decoder's words in graph-node names: keep the words.
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", text)
    return re.sub(r"\s*\[Op:.*$", "", text).strip() or type(exc).__name__


__all__ = ["MAX_PIXELS", "Excluded", "check_pairs", "file_problem", "find_undecodable"]
