"""The fingerprint as a file, and the one check that makes a scan fatal.

`save_fingerprint` writes atomically; `load_fingerprint` refuses, naming the file,
anything that is not a fingerprint of this version. `require_trainable` is the only
place where "the scan found nothing usable" becomes a `DataError` (exit code 3).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from trainer.atomic import write_json
from trainer.errors import DataError

FINGERPRINT_VERSION = 1
REQUIRED_KEYS = ("version", "root", "images", "masks", "pairs", "pair_keys", "task", "digest")


def save_fingerprint(fp: dict[str, Any], path: str | os.PathLike) -> None:
    """Write `fp` to `path` as JSON, atomically."""
    write_json(path, fp)


def load_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a fingerprint written by `save_fingerprint`.

    Raises:
        DataError: the file is missing, not JSON, of another version or lacks a field.
    """
    path = Path(path)
    try:
        fp = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"{path}: fingerprint file not found", hint="run `fitplan scan --out`"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a fingerprint JSON file ({exc})") from None
    if not isinstance(fp, dict):
        raise DataError(f"{path}: not a fingerprint (expected a JSON object)")
    if fp.get("version") != FINGERPRINT_VERSION:
        raise DataError(
            f"{path}: fingerprint `version` must be {FINGERPRINT_VERSION}. "
            f"Received: version={fp.get('version')!r}",
            hint="scan the dataset again with this fitplan",
        )
    missing = [k for k in REQUIRED_KEYS if k not in fp]
    if missing:
        raise DataError(f"{path}: fingerprint lacks {', '.join(missing)}")
    return fp


def require_trainable(fp: dict[str, Any]) -> None:
    """Raise `DataError` when the fingerprint leaves nothing to train on.

    That is: no good pair, or masks whose values define no task (one value only,
    or not label maps).
    """
    where = f"{fp['root']} ({fp['images']}/ and {fp['masks']}/)"
    if fp["pairs"] == 0:
        n_bad = len(fp.get("excluded", []))
        n_img, n_mask = len(fp.get("unpaired_images", [])), len(fp.get("unpaired_masks", []))
        found = (
            f"{n_bad} pairs, all excluded; " if n_bad else "no pair; "
        ) + f"{n_img} images without a mask, {n_mask} masks without an image"
        if fp.get("suggestions"):
            hint = fp["suggestions"][0]
        elif n_bad or n_img or n_mask:
            hint = "each warning above names a file and its problem"
        else:
            hint = f"put images in {fp['images']}/ and masks of the same names in {fp['masks']}/"
        raise DataError(f"no trainable image/mask pair in {where}: found {found}", hint=hint)
    if fp["task"] == "unknown":
        raise DataError(
            f"masks in {where} define no task: mask values {fp.get('mask_values', [])[:8]}",
            hint=fp["suggestions"][0] if fp.get("suggestions") else None,
        )
