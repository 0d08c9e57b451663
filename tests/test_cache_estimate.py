"""The planner's in-RAM cache figure (`planner.build.cache_bytes`, from the scan) against
what the trainer's pipeline really caches: each pair as `_loader` yields it, into the
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


def _trainer_cached_bytes(root) -> int:
    """Bytes of every pair as the trainer's loader yields it into `ds.cache()`."""
    from benchmarks.cache_rss import child

    return child("memory", str(root), "masks", "images")["tensor_bytes"]


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


def test_a_fingerprint_without_the_mask_figure_keeps_the_old_bound():
    fp = {"decoded_bytes": 1000, "mask_values": [0, 255]}
    assert cache_bytes(fp) == 1000 * presets.CACHE_BYTES_PER_IMAGE_BYTE
    fp["mask_decoded_bytes"] = 200
    assert cache_bytes(fp) == 800 * presets.CACHE_BYTES_PER_IMAGE_BYTE + 200
    fp["mask_values"] = list(range(300))  # more than 256 classes: int32 indices
    assert cache_bytes(fp) == 800 * presets.CACHE_BYTES_PER_IMAGE_BYTE + 200 * 4
