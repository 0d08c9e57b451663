"""`planner.app.demo`: deterministic, learnable, safe to rerun, refuses foreign folders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from planner.app.demo import MARKER, make_demo_dataset, parse_size
from trainer.errors import DataError, FitplanError


def _bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = make_demo_dataset(tmp_path / "a", n=3, size=(32, 32), seed=1)
    b = make_demo_dataset(tmp_path / "b", n=3, size=(32, 32), seed=1)
    c = make_demo_dataset(tmp_path / "c", n=3, size=(32, 32), seed=2)
    assert _bytes(a) == _bytes(b)
    assert _bytes(a) != _bytes(c)
    assert len(_bytes(a)) == 6


def test_binary_layout_and_values(tmp_path):
    root = make_demo_dataset(tmp_path / "d", n=4, size=(48, 64))
    assert (root / "README.txt").read_text().startswith(MARKER)
    for i in range(4):
        img = Image.open(root / "images" / f"demo_{i:04d}.png")
        mask = np.asarray(Image.open(root / "masks" / f"demo_{i:04d}.png"))
        assert img.mode == "RGB" and img.size == (64, 48)
        assert mask.shape == (48, 64) and set(np.unique(mask)) == {0, 255}


def test_objects_are_learnable_by_brightness(tmp_path):
    root = make_demo_dataset(tmp_path / "d", n=4, size=(64, 64))
    for i in range(4):
        grey = np.asarray(Image.open(root / "images" / f"demo_{i:04d}.png").convert("L"), float)
        mask = np.asarray(Image.open(root / "masks" / f"demo_{i:04d}.png")) > 0
        assert grey[mask].mean() > grey[~mask].mean() + 50


def test_three_classes_are_indices_with_distinct_looks(tmp_path):
    root = make_demo_dataset(tmp_path / "d", classes=3, n=8, size=(64, 64))
    seen = set()
    for i in range(8):
        grey = np.asarray(Image.open(root / "images" / f"demo_{i:04d}.png").convert("L"), float)
        mask = np.asarray(Image.open(root / "masks" / f"demo_{i:04d}.png"))
        seen |= set(np.unique(mask).tolist())
        if (mask == 1).any() and (mask == 2).any():
            assert grey[mask == 1].mean() > grey[mask == 0].mean() > grey[mask == 2].mean()
    assert seen == {0, 1, 2}


def test_rerun_overwrites_a_demo_set_and_drops_stale_pairs(tmp_path):
    root = make_demo_dataset(tmp_path / "d", n=4, size=(16, 16))
    make_demo_dataset(root, n=2, size=(16, 16))
    assert sorted(p.name for p in (root / "images").iterdir()) == ["demo_0000.png", "demo_0001.png"]
    assert len(list((root / "masks").iterdir())) == 2


def test_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(DataError, match="not a fitplan demo set") as info:
        make_demo_dataset(tmp_path, n=1, size=(16, 16))
    assert info.value.exit_code == 3 and str(tmp_path) in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_refuses_a_file_as_target(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        make_demo_dataset(tmp_path / "f", n=1)


@pytest.mark.parametrize(("text", "expected"), [("128x128", (128, 128)), ("64X96", (64, 96))])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "128", "axb", "0x10", "10x-3", "100000x100", "12x12"])
def test_parse_size_names_the_option(text):
    with pytest.raises(FitplanError, match="--size") as info:
        parse_size(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("classes", [1, 13])
def test_classes_outside_2_to_12(tmp_path, classes):
    with pytest.raises(FitplanError, match=r"`--classes` must be an integer from 2 to 12"):
        make_demo_dataset(tmp_path / "d", classes=classes)
    assert not (tmp_path / "d").exists()


def test_bad_n(tmp_path):
    with pytest.raises(FitplanError, match="--n"):
        make_demo_dataset(tmp_path / "d", n=0)


def test_a_twelve_class_rgb_set_at_an_odd_size(tmp_path):
    """The multi-class set of issue 13's tables: 12 classes, 360x480 RGB, every class used."""
    import numpy as np
    from PIL import Image

    out = make_demo_dataset(tmp_path / "d", classes=12, n=6, size=(360, 480), seed=1)
    images = sorted((out / "images").glob("*.png"))
    masks = [np.asarray(Image.open(out / "masks" / p.name)) for p in images]
    img = Image.open(images[0])
    assert img.mode == "RGB" and img.size == (480, 360)
    values = set(np.unique(np.concatenate([m.ravel() for m in masks])).tolist())
    assert values <= set(range(12)) and len(values) >= 10
    again = make_demo_dataset(tmp_path / "e", classes=12, n=6, size=(360, 480), seed=1)
    assert (again / "masks" / images[0].name).read_bytes() == (
        out / "masks" / images[0].name
    ).read_bytes()
