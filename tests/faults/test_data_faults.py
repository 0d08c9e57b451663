"""Bad datasets through `fitplan scan` and through training (docs/reliability.md, Datasets).

The messy dataset (tests/planner/messy_data.py) holds one of every problem. Scan
names each; training excludes the same pairs with a warning naming the file (the
two label-map checks, which need every mask decoded, are the scan's alone), never
crashes mid-epoch, and leaves no run folder when it refuses.
"""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from pathlib import Path

import pytest

from tests.faults.common import cli, plan_dict, write_plan
from tests.planner.messy_data import binary_mask, build_messy_dataset, png_bytes, rgb
from trainer.errors import DataError, FitplanWarning
from trainer.plan import Plan

# Pairs only the scan excluded. Empty since issue 16: training decodes every mask at
# start-up too (once; trainer.data.filecache keeps the verdicts) and excludes photos
# among the masks by name, with or without data.mask_values.
SCAN_ONLY: set[str] = set()


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    from planner.scan.dataset import scan

    root = tmp_path_factory.mktemp("messy") / "data"
    expected = build_messy_dataset(root)
    return root, expected, scan(root)


def corrupt_stream_png(data: bytes) -> bytes:
    """The PNG with its compressed pixels scrambled and every chunk CRC recomputed.

    Header and CRCs are valid, so cheap checks (Pillow's verify) pass; only decoding fails.
    """
    out, pos = bytearray(data[:8]), 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], bytearray(data[pos + 8 : pos + 8 + n])
        if kind == b"IDAT":
            payload[2:] = bytes(b ^ 0x5A for b in payload[2:])
        out += struct.pack(">I", n) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        pos += 12 + n
    return bytes(out)


def small_dataset(root: Path, n: int = 3) -> Path:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / "images" / f"p{i}.png").write_bytes(png_bytes(rgb(i)))
        (root / "masks" / f"p{i}.png").write_bytes(png_bytes(binary_mask(i)))
    return root


# -- scan ---------------------------------------------------------------------------------


def test_scan_names_every_bad_file_and_still_succeeds(messy):
    root, expected, _ = messy
    result = cli("scan", root, "--json")
    assert result.exit_code == 0, result.output
    fp = json.loads(result.stdout)
    assert fp["pair_keys"] == expected["good"]
    files = {e["image"]: e["file"] for e in fp["excluded"]}
    assert sorted(files) == sorted(expected["excluded"])
    named = [*files.values(), *expected["unpaired_images"], *expected["unpaired_masks"]]
    for name in named + list(expected["notes"]):
        assert name in result.stderr, name


def test_scan_of_an_empty_directory_exits_3_naming_the_folder(tmp_path):
    result = cli("scan", tmp_path)
    assert result.exit_code == 3
    assert f"{tmp_path / 'images'}: image folder not found" in result.stderr


# -- training: the pipeline ----------------------------------------------------------------


def test_training_excludes_each_bad_pair_naming_the_file_and_its_problem(messy):
    from trainer.data.pipeline import build_datasets

    root, expected, _ = messy
    data = {"path": str(root), "val_fraction": 0.0, "mask_values": [0, 255]}
    plan = Plan.from_dict(plan_dict(root, data=data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = build_datasets(plan)
        batches = sum(1 for _ in bundle.train)  # a whole epoch decodes without an error
    said = [str(w.message) for w in caught if w.category is FitplanWarning]
    for image, words in expected["excluded"].items():
        key = Path(image).stem
        if key not in SCAN_ONLY:
            line = next((m for m in said if f"pair {key!r} excluded" in m), "")
            assert f"{root}/" in line and words in line, (image, said)
    for name in expected["unpaired_images"] + expected["unpaired_masks"]:
        assert any(str(root / name) in m for m in said), name
    assert any(str(root / expected["duplicates"][0]) in m for m in said)
    trained = sorted(p.key for p in bundle.train_pairs)
    assert trained == sorted(expected["good"] + sorted(SCAN_ONLY))
    assert batches == bundle.steps_per_epoch > 0


def test_photos_among_the_masks_are_excluded_by_name_with_or_without_mask_values(messy):
    from trainer.data.pipeline import build_datasets

    root, _, _ = messy
    for data in ({"path": str(root)}, {"path": str(root), "mask_values": [0, 255]}):
        plan = Plan.from_dict(plan_dict(root, data=data))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bundle = build_datasets(plan)
        said = " | ".join(str(w.message) for w in caught if w.category is FitplanWarning)
        for name in ("photo_mask", "grey_photo_mask"):
            assert f"{name}.png: not a label map" in said, said
            assert name not in [p.key for p in bundle.train_pairs + bundle.val_pairs]


def test_a_corrupt_stream_under_valid_crcs_is_found_by_decoding(tmp_path):
    from trainer.data.integrity import file_problem, find_undecodable
    from trainer.data.pairs import find_pairs

    root = small_dataset(tmp_path / "d")
    bad = root / "images" / "p1.png"
    bad.write_bytes(corrupt_stream_png(bad.read_bytes()))
    assert file_problem(bad) is None  # the cheap start-up check cannot see it
    found = find_undecodable(find_pairs(root).pairs)
    assert [(p, "PNG" in why) for p, why in found] == [(bad, True)]


def test_only_bad_pairs_is_a_data_error_naming_a_file(tmp_path):
    from trainer.data.pipeline import build_datasets

    root = small_dataset(tmp_path / "d", n=2)
    (root / "images" / "p0.png").write_bytes(b"")
    (root / "masks" / "p1.png").write_bytes(png_bytes(binary_mask(1))[:100])
    with pytest.warns(FitplanWarning), pytest.raises(DataError, match=r"all 2 image/mask pairs"):
        build_datasets(Plan.from_dict(plan_dict(root)))


# -- training: the command line ------------------------------------------------------------


def _empty(root: Path) -> None:
    root.mkdir()


def _empty_folders(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()


def _images_only(root: Path) -> None:
    small_dataset(root)
    for p in (root / "masks").iterdir():
        p.rename(root / "masks" / f"other_{p.name}")


def _all_corrupt(root: Path) -> None:
    small_dataset(root, n=2)
    (root / "images" / "p0.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "images" / "p1.png").write_bytes(png_bytes(rgb(1), fmt="JPEG")[:200])


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_empty, "image folder not found"),
        (_empty_folders, "no image/mask pairs found"),
        (_images_only, "no image/mask pairs found"),
        (_all_corrupt, "all 2 image/mask pairs are unusable"),
    ],
)
def test_train_refuses_unusable_data_with_exit_3_and_no_run_folder(tmp_path, make, words):
    root = tmp_path / "data"
    make(root)
    plan = write_plan(tmp_path / "plan.json", plan_dict(root))
    result = cli("train", "--plan", plan, "--out", tmp_path / "run")
    assert result.exit_code == 3, result.output
    assert words in result.stderr and str(root) in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_on_messy_data_warns_by_name_and_trains(messy, tmp_path):
    """Also the plan warnings: another dataset's fingerprint, a budget larger than this machine."""
    root, expected, fp = messy
    raw = plan_dict(root, epochs=1)
    raw["data"]["fingerprint"] = "sha256:" + "0" * 64
    raw["target"] = {"device": "cpu", "budget_bytes": 2**50}
    plan = write_plan(tmp_path / "plan.json", raw)
    run = tmp_path / "run"
    result = cli("train", "--plan", plan, "--out", run, "--json")
    assert result.exit_code == 0, result.output
    err = result.stderr
    for e in fp["excluded"]:
        if Path(e["image"]).stem not in SCAN_ONLY:
            assert e["file"] in err, e["file"]
    assert f"plan.data.fingerprint=sha256:{'0' * 64}" in err and fp["digest"] in err
    assert f"memory budget of {2**50} bytes" in err
    metrics = json.loads(result.stdout)
    assert metrics["train_pairs"] + metrics["val_pairs"] == len(expected["good"]) + len(SCAN_ONLY)
    assert sorted(p.name for p in run.iterdir()) == [
        "best.weights.h5",
        "history.csv",
        "last-e0001.weights.h5",
        "metrics.json",
        "plan.json",
        "state.json",
        "tensorboard",
        "train.log",
    ]


@pytest.mark.slow
def test_a_file_that_fails_to_decode_mid_epoch_is_named_and_leaves_no_run_folder(tmp_path):
    root = small_dataset(tmp_path / "data", n=4)
    bad = root / "images" / "p2.png"
    bad.write_bytes(corrupt_stream_png(bad.read_bytes()))
    plan = write_plan(tmp_path / "plan.json", plan_dict(root, steps_per_epoch=None, epochs=1))
    result = cli("train", "--plan", plan, "--out", tmp_path / "run")
    assert result.exit_code == 3, result.output
    assert f"{bad}: cannot be decoded" in result.stderr and "train again" in result.stderr
    assert not (tmp_path / "run").exists()
