"""The planner's in-RAM cache figure (`planner.build.cache_bytes`, from the scan) against
what the trainer's pipeline really caches: each pair as `decoded_pairs` yields it, into the
`tf.data` cache (`trainer.data.pipeline`). Grey images stay one channel until their crop
is cut, alpha is dropped, masks are uint8 class indices."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from planner.app.demo import make_demo_dataset
from planner.build import cache_bytes
from planner.scan import dataset
from planner.search import presets


def _set(root, mode, n=4, hw=(40, 56)):
    """`n` pairs whose images are PNGs in `mode` (L, LA or RGBA), binary masks."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = rng.integers(0, 256, hw, dtype=np.uint8)
        Image.fromarray(img, "L").convert(mode).save(root / "images" / f"p{i}.png")
        Image.fromarray(np.where(img > 128, 255, 0).astype(np.uint8), "L").save(
            root / "masks" / f"p{i}.png"
        )
    return root


def _trainer_cached_bytes(root, ignore_index=None) -> int:
    """Bytes of every pair as the trainer's loader yields it into `ds.cache()`."""
    from benchmarks.cache_rss import child

    return child("memory", str(root), "masks", "images", ignore_index)["tensor_bytes"]


@pytest.mark.parametrize("kind", ["L", "LA", "RGBA", "demo"])
def test_the_planned_cache_is_what_the_trainer_caches(tmp_path, kind):
    """Grey with and without alpha (epfl-em's slices are LA and RGBA PNGs), RGBA and the
    demo set's RGB: alpha is dropped, grey stays one channel."""
    root = tmp_path / kind
    if kind == "demo":
        make_demo_dataset(root, n=4, size=(40, 56), seed=0)
    else:
        _set(root, kind)
    fp = dataset.scan(root)
    assert cache_bytes(fp) == _trainer_cached_bytes(root)


def test_16_bit_masks_with_an_ignore_value_above_255(tmp_path):
    """The ignore value stays itself in the class-index mask, so the cache holds int32."""
    root = tmp_path / "deep"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(3):
        Image.fromarray(np.full((24, 32), 40 * i, np.uint8), "L").save(
            root / "images" / f"p{i}.png"
        )
        mask = np.zeros((24, 32), np.uint16)
        mask[:, 8:16], mask[:, 16:] = 1, 300
        Image.fromarray(mask).save(root / "masks" / f"p{i}.png")
    fp = dataset.scan(root, ignore_index=300)
    assert fp["ignore_index"] == 300
    assert cache_bytes(fp) == _trainer_cached_bytes(root, ignore_index=300)
    assert cache_bytes(fp) == 3 * 24 * 32 * (4 + 4)  # float32 grey + int32 index


def test_a_fingerprint_without_the_mask_figure_keeps_the_old_bound():
    fp = {"decoded_bytes": 1000, "mask_values": [0, 255]}
    assert cache_bytes(fp) == 1000 * presets.CACHE_BYTES_PER_IMAGE_BYTE
    fp["mask_decoded_bytes"] = 200
    assert cache_bytes(fp) == 800 * presets.CACHE_BYTES_PER_IMAGE_BYTE + 200
    fp["mask_values"] = list(range(300))  # more than 256 classes: int32 indices
    assert cache_bytes(fp) == 800 * presets.CACHE_BYTES_PER_IMAGE_BYTE + 200 * 4


def test_an_ignore_value_above_255_widens_the_cached_masks():
    """`trainer.data.decode.mask_lut` keeps the ignore value as itself: int32 above 255."""
    fp = {"decoded_bytes": 1000, "mask_decoded_bytes": 200, "mask_values": [0, 1]}
    fp["ignore_index"] = 255  # fits in a byte: uint8 indices
    assert cache_bytes(fp) == 800 * presets.CACHE_BYTES_PER_IMAGE_BYTE + 200
    fp["ignore_index"] = 300  # kept as itself in the mask: int32 indices
    assert cache_bytes(fp) == 800 * presets.CACHE_BYTES_PER_IMAGE_BYTE + 200 * 4
