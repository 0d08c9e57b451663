"""The one rule for an image or mask file that can be trained on, and its check before training.

A file is usable when it is a regular, non-empty file whose header Pillow reads,
whose header claims no more pixels than Pillow's decompression-bomb limit (refused
before anything is allocated), and that is whole, checked as cheaply as its format
allows: a PNG's chunk CRCs are walked (Pillow's `verify()`: catches truncation
without decompressing), a JPEG must end with its end-of-image marker (else the
decoder judges), rarer formats are decoded. Pipes and devices named like images are
never opened (a read would block forever).

`fitplan scan` (`planner.scan.imageinfo`, which also hashes each file and reads mask
values) and the trainer's start-up check (`check_pairs`) both apply it through
`open_header`, `check_whole` and `problem_of`, so they exclude the same files with the
same words. Bad pairs are returned, not raised: the data module excludes them with a
warning naming the file, as `fitplan scan` does.

A file that passes these checks can still fail to decode (a corrupt compressed
stream under valid CRCs). `find_undecodable` then finds it by decoding every file
exactly as training does; the trainer calls it only after such a failure.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import stat
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageChops

from trainer.data.filecache import DataCache, stat_key
from trainer.data.masks import MAX_CLASSES, class_values_from_histogram, palette_indices
from trainer.data.pairs import Pair
from trainer.errors import DataError

if TYPE_CHECKING:
    from trainer.data.decode import FileInfo

# Pillow's own decompression-bomb threshold (about 89 Mpx, 9459x9459): larger images
# are refused before a single pixel is decoded, so a forged header cannot fill RAM.
MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
# A JPEG's end-of-image marker is looked for in this many trailing bytes.
_TAIL = 64


class ImageProblem(Exception):
    """A file that cannot be trained on; its message is the reason shown to the user."""


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
    except OSError as exc:
        return os_problem(path, exc)
    problem = stat_problem(st)
    if problem is not None:
        return problem
    try:
        with open_header(path) as im:
            check_whole(im, path)
    # A decoder fed a hostile file may raise almost anything: name the file and go on.
    except Exception as exc:  # noqa: BLE001
        return problem_of(exc)
    return None


def stat_problem(st: os.stat_result) -> str | None:
    """Why a file with this `stat` cannot be an image (a pipe, a device, 0 bytes), or `None`."""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a pipe, socket or device)"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    return None


def os_problem(path: Path, exc: OSError) -> str:
    """The reason for an `OSError` met while reading `path`."""
    if isinstance(exc, FileNotFoundError):
        return "broken symlink" if path.is_symlink() else "file vanished after it was listed"
    return f"cannot read ({exc.strerror or exc})"


def open_header(src: Path | bytes) -> Image.Image:
    """Open a file (or its bytes) lazily: header only, nothing decoded.

    Raises:
        ImageProblem: the header claims more than twice `MAX_PIXELS` (Pillow's own
            refusal, reworded with the claimed size).
        Exception: whatever Pillow raises for a header it cannot read (`problem_of`
            words it).
    """
    with warnings.catch_warnings():
        # Between 1x and 2x MAX_PIXELS Pillow only warns; `check_whole` refuses those.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)
        except Image.DecompressionBombError as exc:
            raise ImageProblem(_too_large(_claimed_size(_head(src), str(exc)))) from None


def check_whole(im: Image.Image, src: Path | bytes) -> bool:
    """Refuse an image over `MAX_PIXELS` and check that `im` (opened from `src`) is whole.

    Returns:
        `True` when the check decoded the pixels (`im` is loaded), `False` when it did
        not (PNG: `im` is used up by `verify()`; JPEG: untouched).

    Raises:
        ImageProblem: too many pixels. Anything else: the decoder's own error.
    """
    width, height = im.size
    if width * height > MAX_PIXELS:
        raise ImageProblem(_too_large(f"{height}x{width} ({width * height / 1e6:.0f} Mpx)"))
    problem = layout_problem(im)
    if problem is not None:
        raise ImageProblem(problem)
    if im.format == "PNG":
        im.verify()  # chunk CRCs up to IEND, no decompression
        return False
    if im.format in ("JPEG", "MPO") and _ends_with_eoi(_tail(src)):
        return False  # a full decode would cost about 10x more
    im.load()  # rarer formats (or a JPEG without its end marker): the decoder judges
    return True


def layout_problem(im: Image.Image) -> str | None:
    """Pages or channels fitplan would not read, or `None` (nothing is dropped silently).

    Training reads one 2-D image per file with 1 (grey) or 3 (RGB) channels; an alpha
    channel (PNG's LA/RGBA, a TIFF whose extra sample is marked as alpha) is dropped,
    which is what alpha is for. Refused, naming what is there:
    - more than one page or frame (multi-page TIFF, animated GIF/PNG): the decoders read
      the first only;
    - a TIFF with more samples per pixel than Pillow's mode holds: a 2-channel TIFF
      whose second sample is not marked alpha is read by Pillow as grey (`L`), a
      4-sample one as RGB, so a real channel would vanish.
    """
    frames = getattr(im, "n_frames", 1)
    if frames > 1 and im.format in ("TIFF", "GIF", "PNG"):
        return (
            f"{frames} pages/frames: fitplan trains on one 2-D image per file and would "
            f"read only the first; save each page (or channel) as its own file"
        )
    if im.format == "TIFF":
        samples = int(im.tag_v2.get(277, 1))  # SamplesPerPixel
        bands = len(im.getbands())
        if samples > bands:
            return (
                f"{samples} channels per pixel, read as {im.mode} ({bands}): "
                f"{samples - bands} would be dropped (not marked as alpha); fitplan uses grey "
                f"(1) or RGB (3) channels: save the channels to train on as grey or RGB"
            )
    return None


def problem_of(exc: Exception) -> str:
    """The reason to show for an exception raised by `open_header` or `check_whole`."""
    if isinstance(exc, ImageProblem):
        return str(exc)
    if type(exc).__name__ == "UnidentifiedImageError":
        return "not an image Pillow can read (unknown or corrupt header)"
    text = str(exc).strip() or type(exc).__name__
    if "truncat" in text.lower() or isinstance(exc, EOFError):
        return f"truncated or corrupt: {text}"
    return f"unreadable: {text}"


def _head(src: Path | bytes) -> bytes:
    if isinstance(src, bytes):
        return src[:24]
    with open(src, "rb") as fh:
        return fh.read(24)


def _tail(src: Path | bytes) -> bytes:
    if isinstance(src, bytes):
        return src[-_TAIL:]
    with open(src, "rb") as fh:
        fh.seek(max(0, os.fstat(fh.fileno()).st_size - _TAIL))
        return fh.read()


def _ends_with_eoi(tail: bytes) -> bool:
    # Some writers pad after the marker; anything else odd goes to the decoder instead.
    return tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def _claimed_size(head: bytes, message: str) -> str:
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


def mask_histogram(
    im: Image.Image, palette: np.ndarray | None = None
) -> tuple[np.ndarray | None, str | None]:
    """Count the values of a mask (index = value), or say why it is not a label map.

    The label plane is: the grey band of L/LA/I;16 masks, the palette index of P
    masks, 0/255 for 1-bit masks, and the red band of RGB/RGBA masks whose bands
    are equal (epfl-em stores grey masks as RGBA). A colour mask, or one with more
    than `MAX_CLASSES` well-populated levels (a photo), is not a label map.
    """
    mode = im.mode
    if palette is not None:  # colour-coded masks (data.palette): count palette indices
        idx = palette_indices(np.asarray(im.convert("RGB")), palette)
        return np.bincount(idx.ravel(), minlength=256).astype(np.int64), None
    if mode in ("RGB", "RGBA"):
        r, g, b = im.getchannel(0), im.getchannel(1), im.getchannel(2)
        if ImageChops.difference(r, g).getbbox() or ImageChops.difference(r, b).getbbox():
            return None, (
                "not a label map: a colour image (R, G, B differ), e.g. a photo or a "
                "colour-coded mask; save one grey value per class (0/255, or 0, 1, 2...)"
            )
        hist = np.asarray(r.histogram(), dtype=np.int64)
    elif mode in ("L", "LA", "P", "PA", "1"):
        hist = np.asarray(im.getchannel(0).histogram()[:256], dtype=np.int64)
    elif mode.startswith("I") or mode == "F":
        arr = np.asarray(im)
        if mode == "F" and not np.all(arr == np.floor(arr)):
            return None, "not a label map: floating-point values that are not integers"
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            return None, "not a label map: values outside 0..65535"
        hist = np.bincount(arr.astype(np.int64).ravel(), minlength=256)
    else:
        return None, f"not a label map: unsupported mode {mode}; save it as grey (L)"
    levels = class_values_from_histogram(hist)
    if len(levels) > MAX_CLASSES:
        return None, (
            f"not a label map: {len(levels)} well-populated grey levels (a photo, or a "
            f"heavily compressed JPEG); save one value per class"
        )
    return hist, None


def label_map_problem(path: Path) -> str | None:
    """Why the mask at `path` is not a label map (`mask_histogram`), or `None`.

    Decodes the mask (masks are small next to their images); training excludes such a
    pair as `fitplan scan` does, with or without `data.mask_values` (a photo among the
    masks used to be trained with its grey levels mapped to the nearest class).
    """
    return mask_levels(path)[1]


def mask_levels(path: Path) -> tuple[list[list[int]] | None, str | None]:
    """`([[value, pixel count], ...], None)` for a label map, `(None, why not)` otherwise."""
    try:
        with open_header(path) as im:
            im.load()
            hist, problem = mask_histogram(im)
    except Exception as exc:  # noqa: BLE001  (a hostile file: name it, go on)
        return None, problem_of(exc)
    if problem is not None:
        return None, problem
    return [[int(v), int(hist[v])] for v in np.nonzero(hist)[0]], None


def _check_file(path: Path, mask: bool, cache: DataCache, colour: bool = False) -> FileInfo | str:
    """`path`'s header facts, or why it cannot be trained on; cached by its `stat`.

    `colour`: masks are colour-coded (`data.palette`), so not checked as label maps."""
    # Imported here: `decode` imports TensorFlow, and the scan (in the planner's parent
    # process, which never loads TensorFlow) imports this module for the rule above.
    from trainer.data.decode import FileInfo, inspect_image

    kind = ("colour-mask" if colour else "mask") if mask else "image"
    key = stat_key(path)
    hit = cache.get(path, kind, key)
    if hit is not None:
        if "info" not in hit:
            return hit["problem"]
        levels = hit.get("levels")
        return FileInfo(*hit["info"], levels=tuple(map(tuple, levels)) if levels else None)
    problem = file_problem(path)
    info = None
    if problem is None:
        try:
            info = inspect_image(path, mask=mask)
        except DataError as exc:  # the file changed between the two opens
            problem = str(exc)
    levels = None
    if problem is None and mask and not colour:
        levels, problem = mask_levels(path)
    if stat_key(path) == key:  # unchanged while it was read: the verdict holds for `key`
        facts = [info.height, info.width, info.route, info.deep] if info else None
        entry = {"problem": problem} if problem else {"info": facts}
        if levels is not None and not problem:
            entry["levels"] = levels
        cache.put(path, kind, key, entry)
    if problem:
        return problem
    return dataclasses.replace(info, levels=tuple(map(tuple, levels))) if levels else info


def _check_pair(pair: Pair, cache: DataCache, colour: bool) -> tuple[FileInfo, FileInfo] | Excluded:
    image = _check_file(pair.image, False, cache)
    if isinstance(image, str):
        return Excluded(pair, pair.image, image)
    mask = _check_file(pair.mask, True, cache, colour)
    if isinstance(mask, str):
        return Excluded(pair, pair.mask, mask)
    if (image.height, image.width) != (mask.height, mask.width):
        return Excluded(
            pair,
            pair.mask,
            f"size mismatch: mask is {mask.width}x{mask.height} but its image {pair.image} "
            f"is {image.width}x{image.height} (WxH)",
        )
    return image, mask


def check_pairs(
    pairs: list[Pair], cache: DataCache | None = None, *, colour_masks: bool = False
) -> tuple[list[Pair], dict[Pair, tuple[FileInfo, FileInfo]], list[Excluded]]:
    """Check every pair's files (`file_problem`, the header, and for masks `label_map_problem`).

    Args:
        pairs: the pairs to check.
        cache: verdicts kept from an earlier start (`trainer.data.filecache`); files
            whose `stat` is unchanged are not read again. `None`: read everything.
        colour_masks: masks are colour-coded (`data.palette`), not label maps.

    Returns:
        `(good pairs in input order, {pair: (image info, mask info)} for them, excluded)`.
    """
    cache = cache or DataCache.disabled()
    # Opens and CRC walks wait on the disk with the GIL released: threads overlap them.
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda p: _check_pair(p, cache, colour_masks), pairs))
    cache.save()
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


__all__ = [
    "MAX_PIXELS",
    "Excluded",
    "ImageProblem",
    "check_pairs",
    "check_whole",
    "file_problem",
    "find_undecodable",
    "layout_problem",
    "label_map_problem",
    "mask_histogram",
    "open_header",
    "os_problem",
    "problem_of",
    "stat_problem",
]
