"""Start-up checks and the dataset digest read each file once (issue 16): a resume or an
out-of-memory step-down re-reads no file whose stat is unchanged."""

from __future__ import annotations

import builtins
import os

import numpy as np
import pytest
from PIL import Image

from benchmarks.make_datasets import make_voc
from tests.plans import minimal_plan
from trainer.data.digest import dataset_digest
from trainer.data.filecache import DataCache
from trainer.data.integrity import check_pairs
from trainer.data.pairs import find_pairs
from trainer.data.pipeline import build_datasets
from trainer.errors import FitplanWarning


@pytest.fixture
def count_opens(monkeypatch):
    """The dataset files `open`ed (Pillow and hashlib's readers both go through it)."""
    opened: list[str] = []
    real = builtins.open

    def counting(file, *args, **kwargs):
        opened.append(os.fspath(file) if isinstance(file, (str, os.PathLike)) else "")
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting)
    return opened


def _in(root, opened):
    return [p for p in opened if p.startswith(str(root))]


def test_a_second_start_reads_no_file_contents(tmp_path, count_opens):
    root = make_voc(tmp_path / "voc", n=6, size=64)
    pairs = find_pairs(root).pairs
    first = dataset_digest(root), check_pairs(pairs, DataCache.open(root, "images", "masks"))
    assert len(_in(root, count_opens)) >= 24  # hashed, checked and masks decoded
    count_opens.clear()
    second = dataset_digest(root), check_pairs(pairs, DataCache.open(root, "images", "masks"))
    assert _in(root, count_opens) == []
    assert second[0] == first[0]
    assert second[1][0] == first[1][0] and second[1][1] == first[1][1]
    assert dataset_digest(root, cache=False) == first[0]


def test_a_changed_file_is_read_again(tmp_path, count_opens):
    root = make_voc(tmp_path / "voc", n=3, size=64)
    before = dataset_digest(root)
    check_pairs(find_pairs(root).pairs, DataCache.open(root, "images", "masks"))
    mask = root / "masks" / "voc_0001.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(mask)  # a new write: a new stat
    count_opens.clear()
    after = dataset_digest(root)
    assert after != before and _in(root, count_opens) == [str(mask)]
    assert after == dataset_digest(root, cache=False)


def test_the_pipeline_uses_the_cache_on_a_second_build(tmp_path, count_opens):
    root = make_voc(tmp_path / "voc", n=4, size=64)
    plan = minimal_plan(root, data={"mask_values": [0, 1, 2, 3, 4], "ignore_index": 255})
    build_datasets(plan)
    count_opens.clear()
    build_datasets(plan)
    assert _in(root, count_opens) == []  # tf.data reads files later, when iterated


def test_a_photo_among_masks_is_excluded_even_with_mask_values(tmp_path):
    """The fault suite's open case: with data.mask_values (planner plans have them) a
    photo in the mask folder was trained with its grey levels mapped to classes."""
    root = make_voc(tmp_path / "voc", n=4, size=64)
    rng = np.random.default_rng(0)
    photo = root / "masks" / "voc_0002.png"
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(photo)
    colour = root / "masks" / "voc_0003.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(colour)
    plan = minimal_plan(root, data={"mask_values": [0, 1, 2, 3, 4], "ignore_index": 255})
    with pytest.warns(FitplanWarning) as caught:
        bundle = build_datasets(plan)
    said = " | ".join(str(w.message) for w in caught)
    assert f"{photo}: not a label map: 256 well-populated grey levels" in said
    assert f"{colour}: not a label map: a colour image" in said
    assert sorted(p.key for p in bundle.train_pairs + bundle.val_pairs) == ["voc_0000", "voc_0001"]
