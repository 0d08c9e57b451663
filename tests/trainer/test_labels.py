"""Labels as people have them (issue 16): VOC's 255 ignore band, rare values, class names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.make_datasets import make_voc
from tests.plans import minimal_plan
from trainer.data.masks import default_ignore_index, nearest_class_lut, split_values
from trainer.data.pipeline import build_datasets
from trainer.errors import DataError, FitplanWarning, PlanError


def _masks_of(bundle) -> np.ndarray:
    return np.concatenate([m.numpy().ravel() for _, m in bundle.train])


def test_a_voc_border_is_ignored_not_a_class(tmp_path):
    root = make_voc(tmp_path / "voc", n=8, size=64)
    bundle = build_datasets(minimal_plan(root, input_size=[32, 32], micro_batch=4))
    assert bundle.mask_values == (0, 1, 2, 3, 4)
    assert bundle.num_classes == 5
    assert bundle.ignore_index == 255
    values = set(np.unique(_masks_of(bundle)).tolist())
    assert 255 in values  # kept so the loss can leave it out
    assert values <= {0, 1, 2, 3, 4, 255}


def test_ignore_index_minus_one_makes_255_a_class(tmp_path):
    root = make_voc(tmp_path / "voc", n=8, size=64)
    plan = minimal_plan(root, data={"ignore_index": -1}, input_size=[32, 32], micro_batch=4)
    bundle = build_datasets(plan)
    assert bundle.mask_values == (0, 1, 2, 3, 4, 255)
    assert bundle.ignore_index is None


def test_the_default_ignore_value_needs_a_small_label_set():
    assert default_ignore_index([0, 1, 2, 255]) == 255
    assert default_ignore_index([0, 255]) is None  # binary 0/255: 255 is the foreground
    assert default_ignore_index([0, 100, 255]) is None  # not a small index set
    lut = nearest_class_lut([0, 1, 2], depth=256, ignore=255)
    assert lut[255] == 255 and lut[254] == 2


def _rare_dataset(root: Path) -> Path:
    """Masks 0/1/2 and value 3 on one pixel of each mask (under 0.05% of all pixels)."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        mask = np.zeros((64, 64), np.uint8)
        mask[:32] = 1
        mask[40:, 40:] = 2
        mask[0, 0] = 3
        image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"r{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"r{i}.png")
    return root


def test_a_rare_value_on_a_label_grid_stays_a_class_unless_merged(tmp_path):
    root = _rare_dataset(tmp_path / "rare")
    kept = build_datasets(minimal_plan(root, input_size=[32, 32], micro_batch=2))
    assert kept.mask_values == (0, 1, 2, 3)
    plan = minimal_plan(root, data={"merge_rare": True}, input_size=[32, 32], micro_batch=2)
    assert build_datasets(plan).mask_values == (0, 1, 2)


def test_fringe_between_widely_spaced_values_still_goes_to_the_nearest_class():
    hist = np.zeros(256)
    hist[0], hist[255] = 50_000, 50_000
    hist[128], hist[3] = 10, 10  # resampling fringe between 0 and 255: not classes
    assert split_values(hist) == ([0, 255], [3, 128])
    hist = np.zeros(256)
    hist[[0, 1, 2]] = 30_000
    hist[5] = 3  # above the largest class: a rare class of its own
    assert split_values(hist) == ([0, 1, 2, 5], [])
    assert split_values(hist, merge_rare=True) == ([0, 1, 2], [5])


def test_an_ignore_value_that_is_a_class_index_is_refused(tmp_path):
    root = make_voc(tmp_path / "voc", n=4, size=64)
    with pytest.raises(PlanError, match="data.ignore_index"):
        minimal_plan(root, data={"mask_values": [0, 1, 2, 3, 4], "ignore_index": 2})
    data = {"mask_values": [0, 2, 4], "ignore_index": 1}
    plan = minimal_plan(root, data=data, input_size=[32, 32])
    with pytest.raises(DataError, match="ignore_index=1 is also a class index"):
        build_datasets(plan)


def test_class_names_must_match_the_class_count():
    with pytest.raises(PlanError, match="data.class_names"):
        minimal_plan("d", data={"mask_values": [0, 1], "class_names": ["a", "b", "c"]})
    plan = minimal_plan("d", data={"mask_values": [0, 1], "class_names": ["bg", "mito"]})
    assert plan.data.class_names == ("bg", "mito")


def test_nnunet_naming_and_folders_pair(tmp_path):
    from trainer.data.pairs import find_pairs

    root = tmp_path / "Dataset001_Cells"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for case in ("cell_001", "cell_002"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "imagesTr" / f"{case}_0000.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "labelsTr" / f"{case}.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "imagesTr" / "cell_001_0001.png")
    found = find_pairs(root)  # the default names find imagesTr/labelsTr
    assert [(p.image.name, p.mask.name) for p in found.pairs] == [
        ("cell_001_0000.png", "cell_001.png"),
        ("cell_002_0000.png", "cell_002.png"),
    ]
    assert [p.name for p in found.unpaired_images] == ["cell_001_0001.png"]  # named, not dropped


PALETTE = ["#000000", "#800000", "#008000"]


def _colour_dataset(root: Path) -> Path:
    """Colour-coded masks (black background, dark red and green objects, a blended edge)."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    colours = np.array([[0, 0, 0], [128, 0, 0], [0, 128, 0]], np.uint8)
    for i in range(4):
        label = np.zeros((64, 64), np.int64)
        label[8:30, 8:30], label[36:60, 30:60] = 1, 2
        rgb = colours[label]
        rgb[30, 8:30] = [100, 10, 0]  # an anti-aliased edge pixel row: nearest is class 1
        Image.fromarray(rgb).save(root / "masks" / f"c{i}.png")
        Image.fromarray((label * 80).astype(np.uint8)).save(root / "images" / f"c{i}.png")
    return root


def test_colour_masks_map_through_a_palette(tmp_path):
    import json

    from typer.testing import CliRunner

    from planner.app.cli import app
    from planner.scan.dataset import scan
    from trainer.data.decode import load_mask

    root = _colour_dataset(tmp_path / "c")
    assert scan(root)["pairs"] == 0  # without a palette: not label maps, excluded by name
    fp = scan(root, palette=PALETTE)
    assert (fp["pairs"], fp["classes"], fp["mask_values"]) == (4, 3, [0, 1, 2])
    (tmp_path / "palette.json").write_text(json.dumps([[0, 0, 0], [128, 0, 0], "#008000"]))
    result = CliRunner().invoke(
        app, ["scan", str(root), "--palette", str(tmp_path / "palette.json"), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["classes"] == 3
    mask = load_mask(root / "masks" / "c0.png", [0, 1, 2], palette=PALETTE)
    assert mask[20, 20] == 1 and mask[40, 40] == 2 and mask[30, 10] == 1 and mask[0, 0] == 0
    plan = minimal_plan(root, data={"palette": PALETTE}, input_size=[32, 32], micro_batch=2)
    bundle = build_datasets(plan)
    assert bundle.mask_values == (0, 1, 2)
    assert set(np.unique(_masks_of(bundle)).tolist()) <= {0, 1, 2}


def test_labels_come_from_every_mask_and_unlisted_values_are_named(tmp_path):
    """A value in one mask that a 32-mask sample skips is still found (the start-up check
    counts every mask's values); with data.mask_values set, values beyond them are named."""
    root = tmp_path / "many"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    sampled = set(np.linspace(0, 69, 32).round().astype(int).tolist())
    odd = min(set(range(70)) - sampled)
    for i in range(70):
        mask = np.zeros((32, 32), np.uint8)
        mask[:16] = 1
        if i == odd:
            mask[20:23, 20:26] = 2  # 18 pixels: a rare class, in one mask only
        Image.fromarray(mask).save(root / "masks" / f"m{i:03d}.png")
        Image.fromarray(mask * 100).save(root / "images" / f"m{i:03d}.png")
    plan = minimal_plan(root, data={"val_fraction": 0.0}, input_size=[32, 32], micro_batch=2)
    assert build_datasets(plan).mask_values == (0, 1, 2)
    data = {"val_fraction": 0.0, "mask_values": [0, 1]}
    plan = minimal_plan(root, data=data, input_size=[32, 32], micro_batch=2)
    with pytest.warns(FitplanWarning, match=r"masks hold values \[2\] that are not in"):
        build_datasets(plan)
