"""`fitplan scan` and `fitplan demo-data` through the CLI: JSON on stdout, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from planner.app.cli import app
from tests.planner.messy_data import build_messy_dataset

runner = CliRunner()
EPFL = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "epfl-em" / "train"


@pytest.fixture()
def demo(tmp_path):
    result = runner.invoke(app, ["demo-data", str(tmp_path / "d"), "--n", "3", "--size", "32x32"])
    assert result.exit_code == 0, result.output
    return tmp_path / "d"


def test_demo_data_then_scan_json_parses(demo, tmp_path):
    out = tmp_path / "fp.json"
    result = runner.invoke(app, ["scan", str(demo), "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    fp = json.loads(result.stdout)
    assert fp["pairs"] == 3 and fp["task"] == "binary"
    assert json.loads(out.read_text())["digest"] == fp["digest"]


def test_scan_table_by_default(demo):
    result = runner.invoke(app, ["scan", str(demo)])
    assert result.exit_code == 0, result.output
    assert "pairs" in result.stdout and "binary" in result.stdout


def test_messy_scan_warns_by_name_and_still_succeeds(tmp_path):
    expected = build_messy_dataset(tmp_path / "m")
    result = runner.invoke(app, ["scan", str(tmp_path / "m"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pair_keys"] == expected["good"]
    for name in ["images/truncated.png", "masks/photo_mask.png", "images/lonely.png"]:
        assert name in result.stderr
    assert "Traceback" not in result.output


def test_nothing_trainable_exits_3(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    result = runner.invoke(app, ["scan", str(tmp_path), "--json"])
    assert result.exit_code == 3
    assert json.loads(result.stdout)["pairs"] == 0  # the report still comes out
    assert "no trainable image/mask pair" in result.stderr


def test_missing_folder_exits_3(tmp_path):
    result = runner.invoke(app, ["scan", str(tmp_path / "nope")])
    assert result.exit_code == 3 and "not found" in result.stderr


@pytest.mark.parametrize(
    ("args", "text"),
    [(["--size", "12"], "--size"), (["--classes", "13"], "--classes"), (["--n", "0"], "--n")],
)
def test_demo_data_bad_options_exit_1(tmp_path, args, text):
    result = runner.invoke(app, ["demo-data", str(tmp_path / "d"), *args])
    assert result.exit_code == 1 and text in result.stderr
    assert "Traceback" not in result.output


def test_demo_data_refuses_foreign_folder(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    result = runner.invoke(app, ["demo-data", str(tmp_path)])
    assert result.exit_code == 3 and "not a fitplan demo set" in result.stderr


@pytest.mark.epfl
@pytest.mark.skipif(not EPFL.is_dir(), reason="../shared/datasets/epfl-em is absent")
def test_epfl_scan_json():
    result = runner.invoke(app, ["scan", str(EPFL), "--masks", "mitochondria", "--json"])
    assert result.exit_code == 0, result.output
    fp = json.loads(result.stdout)
    assert fp["pairs"] == 27 and fp["task"] == "binary" and fp["mask_values"] == [0, 255]
    assert fp["image_modes"]["LA"] == 23
