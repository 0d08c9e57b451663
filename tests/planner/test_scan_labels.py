"""`fitplan scan` and the plan with labels as people have them (issue 16)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from benchmarks.make_datasets import make_voc
from planner.app.cli import app
from planner.scan.dataset import scan
from planner.scan.labels import label_fields, scan_options
from trainer.data.masks import parse_classes

runner = CliRunner()


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return make_voc(tmp_path_factory.mktemp("voc") / "voc", n=6, size=64)


def test_a_voc_set_has_5_classes_and_ignores_255(voc):
    fp = scan(voc)
    assert (fp["classes"], fp["mask_values"], fp["ignore_index"]) == (5, [0, 1, 2, 3, 4], 255)
    assert 0.05 < fp["ignore_share"] < 0.4
    assert abs(sum(fp["class_pixel_share"]) - 1) < 1e-6  # ignored pixels are in no class
    assert label_fields(fp, {})["ignore_index"] == 255


def test_classes_with_names_reach_the_table_and_the_plan(voc):
    given = parse_classes("0:background,1:red,2:green,3:blue,4:yellow")
    fp = scan(voc, classes=given)
    assert fp["class_names"] == ["background", "red", "green", "blue", "yellow"]
    result = runner.invoke(app, ["scan", str(voc), "--classes", "0:background,1:red,2,3,4"])
    assert result.exit_code == 0, result.output
    assert "0 background" in result.output and "1 red" in result.output
    assert "ignore value" in result.output and "255" in result.output
    assert label_fields(fp, {})["class_names"][0] == "background"


def test_ignore_index_none_makes_255_a_class_on_the_command_line(voc):
    result = runner.invoke(app, ["scan", str(voc), "--ignore-index", "none", "--json"])
    fp = json.loads(result.stdout)
    assert fp["classes"] == 6 and fp["ignore_index"] is None
    assert scan_options({"ignore_index": -1}) == {"ignore_index": -1}


@pytest.mark.parametrize(
    "bad", ["0:bg", "a:b", "0:bg,0:x", "1", "0:,1"], ids=["one", "letters", "twice", "n1", "noname"]
)
def test_bad_classes_are_a_usage_error(voc, bad):
    result = runner.invoke(app, ["scan", str(voc), "--classes", bad])
    assert result.exit_code == 2
    assert "--classes" in result.output


def test_rare_values_are_named_and_merged_only_when_asked(tmp_path):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for i in range(3):
        mask = np.zeros((64, 64), np.uint8)
        mask[:30] = 1
        mask[0, 0] = 2  # 3 pixels of 12288: 0.024%
        Image.fromarray(np.full((64, 64), 90, np.uint8)).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / f"{i}.png")
    fp = scan(tmp_path)
    assert fp["mask_values"] == [0, 1, 2]
    assert fp["rare_values"] == [
        {"value": 2, "share": pytest.approx(3 / 12288, rel=1e-3), "class": True}
    ]
    assert any("--merge-rare" in s for s in fp["suggestions"])
    merged = scan(tmp_path, merge_rare=True)
    assert merged["mask_values"] == [0, 1] and merged["rare_values"][0]["class"] is False
    assert label_fields(merged, {})["merge_rare"] is True


def test_train_options_override_the_plan_and_resume_refuses_them(voc, tmp_path):
    from benchmarks.make_datasets import make_grey16
    from planner.app.cli_labels import data_options, with_data
    from tests.plans import minimal_plan

    plan = with_data(minimal_plan(voc), data_options("0:bg,1:a,2:b,3:c,4:d", "255", True))
    assert plan.data.class_names == ("bg", "a", "b", "c", "d")
    assert (plan.data.ignore_index, plan.data.merge_rare) == (255, True)
    grey = make_grey16(tmp_path / "g", n=3, size=32)
    plan = with_data(minimal_plan(grey), data_options(normalize="dataset"))
    low, high = plan.data.intensity_range  # measured for the plan: evaluate uses it too
    assert 0 <= low < high <= 4095
    result = runner.invoke(app, ["train", "--resume", str(tmp_path), "--classes", "3"])
    assert result.exit_code == 2 and "--classes cannot be used with --resume" in result.output
