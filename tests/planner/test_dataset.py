"""`planner.scan.dataset.scan`: pairs, every bad-file case by name, mask values, digest, I/O."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from rich.console import Console

from planner.app.demo import make_demo_dataset
from planner.scan import dataset
from planner.scan.values import mask_summary
from tests.planner.messy_data import build_messy_dataset, huge_header_png
from trainer.errors import DataError

EPFL = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "epfl-em" / "train"


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy") / "data"
    expected = build_messy_dataset(root)
    return dataset.scan(root), expected, root


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "d", n=6, size=(32, 48))


def test_demo_set_scans_clean(demo):
    fp = dataset.scan(demo)
    assert fp["version"] == 1 and fp["pairs"] == 6 and len(fp["pair_keys"]) == 6
    assert fp["excluded"] == [] and fp["unpaired_images"] == [] and fp["unpaired_masks"] == []
    assert fp["task"] == "binary" and fp["classes"] == 2 and fp["mask_values"] == [0, 255]
    assert fp["mask_fringe_share"] == 0.0
    assert sum(fp["class_pixel_share"]) == pytest.approx(1.0)
    assert fp["image_modes"] == {"RGB": 6} and fp["mask_modes"] == {"L": 6}
    assert fp["image_size"]["histogram"] == {"32x48": 6}
    assert fp["image_size"]["median"] == [32, 48]
    assert fp["decoded_bytes"] == 6 * (32 * 48 * 3 + 32 * 48)
    assert fp["mask_decoded_bytes"] == 6 * 32 * 48
    assert fp["total_bytes"] == sum(p.stat().st_size for p in demo.rglob("*.png"))
    assert fp["digest"].startswith("sha256:") and len(fp["digest"]) == 7 + 64
    assert fp["files"] == 12 and fp["files_per_s"] > 0
    json.dumps(fp, allow_nan=False)  # JSON-able as is
    dataset.require_trainable(fp)


def test_three_class_demo_is_multiclass(tmp_path):
    fp = dataset.scan(make_demo_dataset(tmp_path / "d", classes=3, n=4, size=(32, 32)))
    assert fp["task"] == "multiclass" and fp["classes"] == 3 and fp["mask_values"] == [0, 1, 2]
    assert fp["suggestions"] == []


def test_messy_good_pairs(messy):
    fp, expected, _ = messy
    assert fp["pair_keys"] == expected["good"]
    assert fp["pairs"] == len(expected["good"])
    assert fp["task"] == "binary" and fp["mask_values"] == [0, 255]


@pytest.mark.parametrize(
    "name",
    [
        "mismatch",
        "empty",
        "truncated",
        "truncmask",
        "garbage",
        "jpeg_truncated",
        "photo_mask",
        "grey_photo_mask",
        "huge",
        "dangling",
        "loop",
        "fifo",
    ],
)
def test_messy_bad_pair_is_excluded_by_name(messy, name):
    fp, expected, _ = messy
    by_image = {e["image"]: e for e in fp["excluded"]}
    image = next(k for k in expected["excluded"] if Path(k).stem == name)
    assert image in by_image, fp["excluded"]
    assert expected["excluded"][image] in by_image[image]["problem"]
    assert any(line.startswith(by_image[image]["file"]) for line in dataset.warnings(fp))


def test_messy_unpaired_duplicates_notes_skipped(messy):
    fp, expected, _ = messy
    assert fp["unpaired_images"] == expected["unpaired_images"]
    assert fp["unpaired_masks"] == expected["unpaired_masks"]
    assert fp["duplicates"] == expected["duplicates"]
    notes = {n["file"]: n["note"] for n in fp["notes"]}
    for file, text in expected["notes"].items():
        assert text in notes[file]
    assert sorted(s["path"] for s in fp["skipped"]["listed"]) == expected["skipped"]
    text = "\n".join(dataset.warnings(fp))
    for name in ["images/lonely.png", "masks/orphan.png", "masks/stray_grey.png", "images/linkdir"]:
        assert name in text


def test_messy_modes_and_depths(messy):
    fp, _, _ = messy
    assert fp["image_modes"]["I;16"] == 1  # the 16-bit PNG
    assert fp["bit_depths"]["16"] == 1
    assert fp["mask_modes"]["RGBA"] == 1
    assert fp["image_formats"] == {"BMP": 2, "JPEG": 1, "PNG": 11}


def test_huge_header_is_not_decoded(tmp_path, monkeypatch):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "images" / "big.png").write_bytes(huge_header_png())
    (root / "masks" / "big.png").write_bytes(huge_header_png())

    def no_load(self, *a, **k):  # any pixel decode of the forged file is a failure
        raise AssertionError("decoded a 20000x20000 image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    fp = dataset.scan(root)
    assert fp["pairs"] == 0 and "20000x20000" in fp["excluded"][0]["problem"]


def test_empty_folders_scan_then_refuse(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    fp = dataset.scan(tmp_path)
    assert fp["pairs"] == 0 and fp["task"] == "unknown" and fp["image_size"]["min"] is None
    with pytest.raises(DataError) as info:
        dataset.require_trainable(fp)
    assert info.value.exit_code == 3
    assert "images/" in str(info.value) and "masks/" in str(info.value)


def test_names_that_do_not_match_get_a_hint(tmp_path):
    make_demo_dataset(tmp_path / "d", n=2, size=(16, 16))
    for p in (tmp_path / "d" / "masks").iterdir():
        p.rename(p.with_name("other_" + p.name))
    fp = dataset.scan(tmp_path / "d")
    with pytest.raises(DataError, match="no trainable") as info:
        dataset.require_trainable(fp)
    assert "share a name" in str(info.value)


def test_missing_mask_folder_names_the_folders(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(DataError, match="mask folder not found") as info:
        dataset.scan(tmp_path)
    assert "labels" in str(info.value)


def test_single_value_masks_define_no_task(tmp_path):
    make_demo_dataset(tmp_path / "d", n=2, size=(16, 16))
    for p in (tmp_path / "d" / "masks").iterdir():
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(p)
    fp = dataset.scan(tmp_path / "d")
    assert fp["pairs"] == 2 and fp["task"] == "unknown" and fp["mask_values"] == [0]
    with pytest.raises(DataError, match="no task"):
        dataset.require_trainable(fp)


def test_mask_sample_limits_decoding(demo):
    fp = dataset.scan(demo, mask_sample=2)
    assert fp["masks_decoded"] == 2 and fp["pairs"] == 6 and fp["task"] == "binary"
    with pytest.raises(DataError, match="mask_sample"):
        dataset.scan(demo, mask_sample=0)


def test_jpeg_artefact_masks_suggest_a_fix():
    total = np.zeros(256, np.int64)
    total[[0, 1, 2, 253, 254, 255]] = [5000, 100, 50, 60, 120, 3000]
    out = mask_summary([("masks/a.png", (np.nonzero(total)[0], total[total > 0]))])
    assert out["task"] == "multiclass"
    assert any("JPEG" in s for s in out["suggestions"])


def test_digest_changes_with_content_and_files_not_with_location(tmp_path):
    root = make_demo_dataset(tmp_path / "a", n=3, size=(16, 16))
    d0 = dataset.scan(root)["digest"]
    assert dataset.scan(root)["digest"] == d0  # stable

    moved = tmp_path / "elsewhere" / "b"
    moved.parent.mkdir()
    shutil.copytree(root, moved)  # new mtimes, new absolute path
    assert dataset.scan(moved)["digest"] == d0

    f = moved / "images" / "demo_0001.png"
    data = bytearray(f.read_bytes())
    data[-20] ^= 0xFF  # one byte, same size (the PNG is now corrupt: still counted)
    f.write_bytes(bytes(data))
    d1 = dataset.scan(moved)["digest"]
    assert d1 != d0

    shutil.copy(moved / "images" / "demo_0000.png", moved / "images" / "extra.png")
    assert dataset.scan(moved)["digest"] not in (d0, d1)


def test_save_and_load_fingerprint(tmp_path, demo):
    fp = dataset.scan(demo)
    path = tmp_path / "out" / "fp.json"
    dataset.save_fingerprint(fp, path)
    assert dataset.load_fingerprint(path) == json.loads(json.dumps(fp))
    assert not [p for p in path.parent.iterdir() if p.name != "fp.json"]  # no temp files left


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not a fingerprint JSON"),
        ('{"version": 9}', "version"),
        ("[1]", "JSON object"),
    ],
)
def test_load_fingerprint_refuses_bad_files(tmp_path, text, match):
    path = tmp_path / "fp.json"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        dataset.load_fingerprint(path)
    assert str(path) in str(info.value)


def test_load_fingerprint_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        dataset.load_fingerprint(tmp_path / "nope.json")


def test_scan_table_renders(messy):
    fp, _, _ = messy
    console = Console(record=True, width=140)
    console.print(dataset.scan_table(fp))
    text = console.export_text()
    assert "pairs" in text and "binary" in text and fp["digest"][:20] in text


@pytest.mark.epfl
@pytest.mark.skipif(not EPFL.is_dir(), reason="../shared/datasets/epfl-em is absent")
def test_epfl_mitochondria():
    fp = dataset.scan(EPFL, masks="mitochondria")
    assert fp["pairs"] == 27 and fp["excluded"] == []
    assert fp["task"] == "binary" and fp["mask_values"] == [0, 255]
    assert fp["image_modes"] == {"LA": 23, "RGBA": 4}
    assert fp["image_size"]["histogram"] == {"768x1024": 27}
    assert 0 < fp["mask_fringe_share"] < 0.01  # the resampling fringe, not a class
    assert fp["notes"] == []  # no mask is noisy enough to be named
