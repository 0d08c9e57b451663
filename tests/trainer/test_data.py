"""The input pipeline: pairs on disk -> tf.data batches, validation tiles, decoding corner cases."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.plans import minimal_plan
from trainer.data.decode import infer_mask_values, load_image, load_mask, load_mask_raw
from trainer.data.pairs import Pair, resolve_folders
from trainer.data.pipeline import build_datasets
from trainer.data.splits import epoch_steps, split_pairs, tile_starts, work_size
from trainer.errors import DataError, FitplanWarning
from trainer.plan import Plan

EPFL = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "epfl-em"


def _write_pair(root: Path, name: str, mask: np.ndarray, values=(0, 255), image=None) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    raw = np.asarray(values, np.uint8)[mask]
    if image is None:
        # The image's grey level encodes the class, so alignment can be checked.
        image = (mask * (200 // max(1, mask.max())) + 20).astype(np.uint8)
    Image.fromarray(image).save(root / "images" / f"{name}.png")
    Image.fromarray(raw).save(root / "masks" / f"{name}.png")


def _dataset(root: Path, n: int, hw=(48, 64), classes: int = 2, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    values = (0, 255) if classes == 2 else tuple(range(0, 50 * classes, 50))
    for i in range(n):
        coarse = rng.integers(0, classes, (hw[0] // 8, hw[1] // 8))
        coarse.flat[:classes] = np.arange(classes)  # every class present
        mask = np.kron(coarse, np.ones((8, 8), np.int64))
        _write_pair(root, f"p{i:02d}", mask, values)
    return root


def _plan(root: Path, **data) -> Plan:
    return minimal_plan(root, data=data, accumulation_steps=2)


def _pairs(keys) -> list[Pair]:
    return [Pair(k, Path(f"i/{k}.png"), Path(f"m/{k}.png")) for k in keys]


# -- pure helpers -------------------------------------------------------------------------


def test_val_split_is_stable_under_file_order_and_growth():
    keys = [f"img{i:03d}" for i in range(200)]
    train, val = split_pairs(_pairs(keys), 0.2)
    shuffled = _pairs(keys)
    random.Random(1).shuffle(shuffled)
    assert split_pairs(shuffled, 0.2) == (train, val)
    assert 20 < len(val) < 60 and len(train) + len(val) == 200
    # Adding files never moves an existing pair between train and val.
    _, val_more = split_pairs(_pairs(keys + [f"new{i}" for i in range(50)]), 0.2)
    assert {p.key for p in val} <= {p.key for p in val_more}


def test_val_split_keeps_one_pair_on_each_side():
    train, val = split_pairs(_pairs(["a", "b"]), 0.01)
    assert len(train) == 1 and len(val) == 1
    train, val = split_pairs(_pairs(["a", "b"]), 0.99)
    assert len(train) == 1 and len(val) == 1
    assert split_pairs(_pairs(["a"]), 0.5) == (_pairs(["a"]), [])
    assert split_pairs(_pairs(["a", "b", "c"]), 0.0)[1] == []


@pytest.mark.parametrize(
    ("length", "tile", "stride"),
    [(32, 32, None), (33, 32, None), (100, 32, None), (768, 256, None), (1000, 64, None)]
    + [(32, 32, 16), (70, 32, 16), (100, 32, 24), (1000, 64, 32)],
)
def test_tiles_cover_the_length_with_the_last_aligned_to_the_end(length, tile, stride):
    starts = tile_starts(length, tile, stride)
    covered = np.zeros(length, bool)
    for s in starts:
        assert 0 <= s <= length - tile
        covered[s : s + tile] = True
    assert covered.all() and starts[0] == 0 and starts[-1] == length - tile
    assert all(0 < b - a <= (stride or tile) for a, b in zip(starts, starts[1:], strict=False))
    assert len(starts) == -(-(length - tile) // (stride or tile)) + 1


def test_a_length_shorter_than_a_tile_is_refused():
    with pytest.raises(ValueError, match="at least `tile`"):
        tile_starts(20, 32)


def test_small_images_are_sized_up_keeping_their_aspect():
    assert work_size(10, 6, 1.0, (32, 32)) == (54, 32)
    assert work_size(64, 96, 0.5, (32, 32)) == (32, 48)
    assert work_size(40, 40, 1.0, (32, 32)) == (40, 40)
    assert work_size(40, 40, 0.5, (32, 16)) == (32, 32)


@pytest.mark.parametrize("crops, batch, k", [(1, 4, 2), (24, 2, 2), (25, 3, 4), (288, 4, 2)])
def test_epoch_steps_are_whole_optimizer_updates(crops, batch, k):
    steps = epoch_steps(crops, batch, k)
    assert steps % k == 0 and steps * batch >= crops
    assert (steps - k) * batch < crops  # no more than one update of extra crops
    assert epoch_steps(crops, batch, k, cap_updates=1) == k


# -- the datasets --------------------------------------------------------------------------


def test_train_batches_shapes_dtypes_and_whole_updates(tmp_path):
    plan = _plan(_dataset(tmp_path, 5), val_fraction=0.0)
    bundle = build_datasets(plan)
    # 48x64 images, 32x32 crops: round(3072 / 1024) = 3 crops per pair, 15 crops;
    # batch 2 x 2 accumulation steps -> 4 updates of 2 micro-batches = 8 micro-batches.
    assert bundle.pair_crops == (3,) * 5 and bundle.crops_per_image == 3
    assert bundle.steps_per_epoch == 8 and bundle.steps_per_epoch % 2 == 0
    assert bundle.mask_values == (0, 255) and bundle.num_classes == 2
    assert bundle.val is None and bundle.val_steps == 0
    for _ in range(2):  # a second pass is a fresh epoch of the same length
        batches = list(bundle.train)
        assert len(batches) == bundle.steps_per_epoch
    images, masks = batches[0]
    assert images.shape == (2, 32, 32, 3) and images.dtype.name == "float32"
    assert masks.shape == (2, 32, 32, 1) and masks.dtype.name == "float32"
    for images, masks in batches:
        assert set(np.unique(masks.numpy())) <= {0.0, 1.0}
        assert 0.0 <= float(images.numpy().min()) and float(images.numpy().max()) <= 1.0


def test_multiclass_masks_stay_class_indices_and_aligned_with_image(tmp_path):
    root = _dataset(tmp_path, 4, hw=(64, 64), classes=4)
    plan = _plan(root, val_fraction=0.0, crops_per_image=8)
    plan = plan.replace(augment=plan.augment.__class__(brightness=0.0, contrast=0.0))
    bundle = build_datasets(plan)
    assert bundle.mask_values == (0, 50, 100, 150) and bundle.num_classes == 4
    for _ in range(2):
        for images, masks in bundle.train:
            m = masks.numpy()[..., 0]
            assert set(np.unique(m)) <= {0.0, 1.0, 2.0, 3.0}
            # Image grey = 20 + 66 * class (of 255): the class read back from the image
            # matches the mask except on a thin band along class borders.
            from_image = np.rint((images.numpy()[..., 0] * 255 - 20) / 66)
            assert np.mean(from_image == m) > 0.85


def test_same_seed_same_epoch_and_epochs_differ(tmp_path):
    plan = _plan(_dataset(tmp_path, 3), val_fraction=0.0)
    first = [m.numpy() for _, m in build_datasets(plan).train]
    bundle = build_datasets(plan)
    again = [m.numpy() for _, m in bundle.train]
    second_epoch = [m.numpy() for _, m in bundle.train]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, second_epoch, strict=True))


def test_val_tiles_cover_each_image_in_a_fixed_order(tmp_path):
    train_root, val_root = tmp_path / "train", tmp_path / "val"
    _dataset(train_root, 2)
    mask = np.zeros((40, 70), np.int64)
    mask[10:30, 5:60] = 1
    image = np.random.default_rng(0).integers(0, 256, (40, 70), dtype=np.uint8)
    _write_pair(val_root, "v", mask, image=image)
    bundle = build_datasets(_plan(train_root, val=str(val_root)))
    # 40x70 at 32x32 tiles: rows at 0, 8 and columns at 0, 32, 38 -> 6 tiles, 3 batches.
    assert bundle.val_steps == 3 and [p.key for p in bundle.val_pairs] == ["v"]
    tiles = np.concatenate([x.numpy() for x, _ in bundle.val])
    tile_masks = np.concatenate([y.numpy() for _, y in bundle.val])
    assert tiles.shape == (6, 32, 32, 3)
    canvas = np.full((40, 70), -1.0)
    mcanvas = np.full((40, 70), -1.0)
    counted = np.zeros((40, 70), int)
    for t, (y, x) in enumerate([(y, x) for y in (0, 8) for x in (0, 32, 38)]):
        canvas[y : y + 32, x : x + 32] = tiles[t, ..., 0]
        scored = tile_masks[t, ..., 0] >= 0  # overlap an earlier tile scored: -1 (ignored)
        mcanvas[y : y + 32, x : x + 32][scored] = tile_masks[t, ..., 0][scored]
        counted[y : y + 32, x : x + 32] += scored
    np.testing.assert_allclose(canvas, image / 255.0, atol=1e-6)
    np.testing.assert_array_equal(mcanvas, mask)
    np.testing.assert_array_equal(counted, 1)  # each validation pixel scored exactly once
    again = np.concatenate([x.numpy() for x, _ in bundle.val])
    np.testing.assert_array_equal(tiles, again)


@pytest.mark.slow
def test_memory_cache_gives_the_same_val_data_as_streaming(tmp_path):
    root = _dataset(tmp_path, 6)
    stream = build_datasets(_plan(root, val_fraction=0.4))
    memory = build_datasets(_plan(root, val_fraction=0.4, cache="memory"))
    assert [p.key for p in stream.val_pairs] == [p.key for p in memory.val_pairs]
    assert stream.val_steps == memory.val_steps > 0
    for _ in range(2):  # the second pass reads the cache
        for (xs, ys), (xm, ym) in zip(stream.val, memory.val, strict=True):
            np.testing.assert_array_equal(xs.numpy(), xm.numpy())
            np.testing.assert_array_equal(ys.numpy(), ym.numpy())
        assert len(list(memory.train)) == memory.steps_per_epoch


def test_images_smaller_than_the_crop_and_image_scale(tmp_path):
    _write_pair(tmp_path, "small", np.kron(np.eye(2, dtype=np.int64), np.ones((10, 12), np.int64)))
    _dataset(tmp_path, 2, hw=(64, 96))
    bundle = build_datasets(_plan(tmp_path, val_fraction=0.0, image_scale=0.5))
    # At scale 0.5: 20x24 -> 0 crops rounded up to 1; 32x48 -> round(1.5) = 2 crops.
    assert sorted(bundle.pair_crops) == [1, 2, 2]
    for images, masks in bundle.train:
        assert images.shape == (2, 32, 32, 3) and set(np.unique(masks.numpy())) <= {0.0, 1.0}
    train_root = tmp_path
    val_root = tmp_path / "val"
    _write_pair(val_root, "tiny", np.ones((20, 24), np.int64))
    bundle = build_datasets(_plan(train_root, val=str(val_root)))
    # Smaller than a tile: resized up to 32x39 (aspect kept) -> 2 overlapping tiles.
    assert bundle.val_steps == 1
    ((x, y),) = list(bundle.val)
    assert x.shape == (2, 32, 32, 3) and set(np.unique(y.numpy())) == {-1.0, 1.0}
    assert int((y.numpy() >= 0).sum()) == 32 * 39  # the overlap scored once (-1: ignored)


# -- decoding ------------------------------------------------------------------------------


def test_sixteen_bit_png_image_and_mask(tmp_path):
    img16 = np.array([[0, 1000, 65535]], np.uint16)
    Image.fromarray(img16).save(tmp_path / "i.png")
    assert Image.open(tmp_path / "i.png").mode.startswith("I;16")
    out = load_image(tmp_path / "i.png")
    assert out.shape == (1, 3, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 0], img16[0] / 65535.0, atol=1e-6)
    mask16 = np.array([[0, 1000, 40000, 39990]], np.uint16)
    Image.fromarray(mask16).save(tmp_path / "m.png")
    np.testing.assert_array_equal(load_mask_raw(tmp_path / "m.png")[0], mask16[0])
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png", [0, 1000, 40000])[0], [0, 1, 2, 2])


def test_grey_alpha_and_rgba_inputs_drop_alpha(tmp_path):
    la = np.zeros((2, 2, 2), np.uint8)
    la[..., 0] = [[10, 20], [30, 40]]
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = load_image(tmp_path / "la.png")
    assert out.shape == (2, 2, 3)
    np.testing.assert_allclose(out[..., 1], la[..., 0] / 255.0, atol=1e-6)  # grey replicated
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_allclose(
        load_image(tmp_path / "rgba.png")[0, 0], np.array([10, 20, 30]) / 255.0, atol=1e-6
    )


@pytest.mark.parametrize("ext", ["bmp", "gif", "jpg"])
def test_grey_bmp_gif_and_jpeg_images_and_masks(tmp_path, ext):
    grey = np.array([[0, 255], [255, 0]], np.uint8)
    Image.fromarray(grey).save(tmp_path / f"g.{ext}")
    img = load_image(tmp_path / f"g.{ext}")
    assert img.shape == (2, 2, 3)
    np.testing.assert_allclose(img[..., 1], grey / 255.0, atol=0.1)  # JPEG is lossy
    if ext == "jpg":  # lossy: the nearest class is what counts
        np.testing.assert_array_equal(load_mask(tmp_path / "g.jpg", [0, 255]), grey // 255)
    else:  # a GIF is a palette image: its mask values are palette indices (0, 1 here)
        expected = grey // 255 if ext == "gif" else grey
        np.testing.assert_array_equal(load_mask_raw(tmp_path / f"g.{ext}"), expected)


def test_fringe_values_map_to_the_nearest_class_and_are_not_classes(tmp_path):
    mask = np.zeros((100, 100), np.uint8)
    mask[:, 50:] = 255
    mask[0, 45:55] = [3, 30, 100, 120, 127, 128, 140, 200, 250, 254]  # resampling fringe
    Image.fromarray(mask).save(tmp_path / "m.png")
    assert infer_mask_values([tmp_path / "m.png"]) == [0, 255]
    got = load_mask(tmp_path / "m.png", [0, 255])
    np.testing.assert_array_equal(got[0, 45:55], [0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    assert got.dtype == np.int32 and got.shape == (100, 100)


def test_palette_and_tiff_masks_decode_through_pillow(tmp_path):
    idx = np.array([[0, 1], [2, 2]], np.uint8)
    pal = Image.fromarray(idx, "P")
    pal.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_mask_raw(tmp_path / "p.png"), idx)  # index, not colour
    Image.fromarray(idx * 100).save(tmp_path / "m.tif")
    np.testing.assert_array_equal(load_mask(tmp_path / "m.tif", [0, 100, 200]), idx)
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(tmp_path / "i.tif")
    np.testing.assert_allclose(load_image(tmp_path / "i.tif")[0, :, 2], [0.0, 1.0])


def test_tiff_pairs_train_through_the_pipeline(tmp_path):
    for name in ("images", "masks"):
        (tmp_path / name).mkdir()
    for i in range(2):
        mask = np.zeros((32, 40), np.uint8)
        mask[:, i * 10 : i * 10 + 20] = 1
        Image.fromarray(mask * 250).save(tmp_path / "images" / f"t{i}.tif")
        Image.fromarray(mask).save(tmp_path / "masks" / f"t{i}.tif")
    bundle = build_datasets(_plan(tmp_path, val_fraction=0.0, mask_values=[0, 1]))
    images, masks = next(iter(bundle.train))
    assert images.shape == (2, 32, 32, 3)
    assert np.mean(np.rint(images.numpy()[..., 0] * 250 / 250) == masks.numpy()[..., 0]) > 0.9


# -- errors --------------------------------------------------------------------------------


def test_no_pairs_names_the_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / "a.png")
    with pytest.raises(DataError, match=r"images: no image/mask pairs"):
        build_datasets(_plan(tmp_path))
    with pytest.raises(DataError, match="dataset folder not found"):
        build_datasets(_plan(tmp_path), data_path=str(tmp_path / "nope"))


def test_a_relative_dataset_path_says_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        DataError,
        match=rf"nope: dataset folder not found \(a relative path: looked for under {re.escape(str(tmp_path))}\)",
    ):
        resolve_folders("nope", "images", "masks")


def test_single_class_masks_name_the_mask_folder(tmp_path):
    _write_pair(tmp_path, "a", np.zeros((32, 32), np.int64))
    _write_pair(tmp_path, "b", np.zeros((32, 32), np.int64))
    with pytest.raises(DataError, match=r"masks: masks hold fewer than 2 classes"):
        build_datasets(_plan(tmp_path))


def test_photos_in_the_mask_folder_are_not_label_maps(tmp_path):
    ramp = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    Image.fromarray(ramp).save(tmp_path / "photo.png")
    with pytest.raises(DataError, match=r"256 well-populated values, more than 64"):
        infer_mask_values([tmp_path / "photo.png"])


def test_size_mismatch_and_class_count_mismatch(tmp_path):
    _dataset(tmp_path, 2)
    with pytest.raises(DataError, match=r"data.classes=3"):
        build_datasets(_plan(tmp_path, classes=3))
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "masks" / "p00.png")
    # A bad pair is excluded with a warning naming the file (docs/reliability.md).
    with pytest.warns(FitplanWarning, match=r"p00.png: size mismatch: mask is 10x10 but its image"):
        bundle = build_datasets(_plan(tmp_path))
    assert [p.key for p in bundle.train_pairs + bundle.val_pairs] == ["p01"]


def test_unreadable_image_names_the_file(tmp_path):
    _dataset(tmp_path, 2)
    (tmp_path / "images" / "p01.png").write_bytes(b"not a png")
    with pytest.warns(FitplanWarning, match=r"p01.png: not an image Pillow can read"):
        bundle = build_datasets(_plan(tmp_path))
    assert [p.key for p in bundle.train_pairs + bundle.val_pairs] == ["p00"]


# -- real data -----------------------------------------------------------------------------


@pytest.mark.epfl
@pytest.mark.slow
@pytest.mark.skipif(not EPFL.is_dir(), reason="../shared/datasets/epfl-em is absent")
def test_epfl_em_smoke():
    plan = Plan.from_dict(
        {
            "version": 1,
            "backbone": "mobilenet_v3_small",
            "input_size": [256, 256],
            "micro_batch": 4,
            "accumulation_steps": 2,
            "data": {"path": str(EPFL / "train"), "masks": "mitochondria"},
        }
    )
    bundle = build_datasets(plan)
    assert bundle.mask_values == (0, 255)  # the grey fringe is not a class
    assert len(bundle.train_pairs) + len(bundle.val_pairs) == 27 and bundle.val_pairs
    assert bundle.pair_crops[0] == 12  # 768 x 1024 / 256^2
    assert bundle.steps_per_epoch % 2 == 0
    images, masks = next(iter(bundle.train))
    assert images.shape == (4, 256, 256, 3) and set(np.unique(masks.numpy())) <= {0.0, 1.0}
    x, y = next(iter(bundle.val))
    assert x.shape == (4, 256, 256, 3) and y.numpy().max() <= 1.0
    # LA and RGBA slices decode to equal channels (grey) and the same value range.
    rgba = next(
        p for p in sorted((EPFL / "test" / "images").iterdir()) if Image.open(p).mode == "RGBA"
    )
    la = next(p for p in sorted((EPFL / "test" / "images").iterdir()) if Image.open(p).mode == "LA")
    for path in (rgba, la):
        img = load_image(path)
        assert img.shape == (768, 1024, 3)
        np.testing.assert_array_equal(img[..., 0], img[..., 2])
        assert 0.05 < img.mean() < 0.95
