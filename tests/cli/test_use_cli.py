"""`fitplan evaluate / predict / export / report` through the CLI: JSON, files, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from planner.app.cli import app
from tests.trained_run import SIZE, N, trained_run_fixture  # noqa: F401  (a fixture)

runner = CliRunner()
pytestmark = pytest.mark.slow
EPFL = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "epfl-em"


def test_evaluate_json_prints_only_json(trained_run):
    run, data = trained_run.path, trained_run.data
    result = runner.invoke(app, ["evaluate", str(run), str(data), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["images"] == N and 0 <= out["dice_mean"] <= 1 and len(out["per_class"]) == 2


def test_predict_writes_masks_and_fails_by_name(trained_run, tmp_path):
    run, data = trained_run.path, trained_run.data
    out = tmp_path / "masks"
    result = runner.invoke(app, ["predict", str(run), str(data / "images"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    masks = sorted(out.glob("*.png"))
    assert len(masks) == N and np.asarray(Image.open(masks[0])).shape == SIZE
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    result = runner.invoke(app, ["predict", str(run), str(bad), "--out", str(out)])
    assert result.exit_code == 3 and "bad.png" in result.stderr


def test_export_prints_the_size_and_json(trained_run, tmp_path):
    run = trained_run.path
    target = tmp_path / "m.keras"
    result = runner.invoke(app, ["export", str(run), "--out", str(target), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["bytes"] == target.stat().st_size and out["max_abs_diff"] == 0.0
    result = runner.invoke(app, ["export", str(run), "--format", "keras", "--quantize", "int8"])
    assert result.exit_code == 2 and "tflite only" in result.stderr  # a usage mistake


def test_report_prints_its_path(trained_run, tmp_path):
    run = trained_run.path
    result = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "r.html")


def test_tables_render_without_a_model():
    from rich.console import Console

    from planner.app.use_views import evaluation_table, export_line

    score = {"dice": 0.8, "iou": 0.667, "precision": None, "recall": 1.0}
    result = {
        "images": 2,
        "pixels": 100,
        "per_class": [{"class": 1, "value": 255, "pixels": 10, **score}],
        **{f"{k}_mean": v for k, v in score.items()},
        "per_image_dice_mean": 0.5,
        "per_image_iou_mean": 0.4,
        "seconds": 1.0,
    }
    console = Console(record=True, width=120)
    console.print(evaluation_table(result))
    text = console.export_text()
    assert "mean (fg)" in text and "0.8000" in text and "per-image Dice 0.5000" in text
    tol = {"max_abs_diff": 1e-4, "mean_abs_diff": 1e-5, "mask_agreement": 0.999}
    line = export_line(
        {
            "format": "tflite",
            "quantize": None,
            "path": "m.tflite",
            "bytes": 3 * 2**20,
            "max_abs_diff": 2e-6,
            "mean_abs_diff": 1e-8,
            "mask_agreement": 1.0,
            "tolerance": tol,
            "check_inputs": 4,
            "inputs_from": "training images",
        }
    )
    assert "3.00 MiB" in line and "2.00e-06" in line and "(<= 0.0001)" in line


def test_a_missing_run_exits_7(tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nope"), str(tmp_path)])
    assert result.exit_code == 7 and "run folder not found" in result.stderr


@pytest.mark.epfl
@pytest.mark.skipif(
    not os.environ.get("FITPLAN_EPFL_RUN") or not (EPFL / "test").is_dir(),
    reason="set FITPLAN_EPFL_RUN to a run trained on epfl-em mitochondria",
)
def test_epfl_run_scores_the_test_set():
    # Opt-in: training such a run takes minutes (docs/use.md gives the recipe).
    run = os.environ["FITPLAN_EPFL_RUN"]
    result = runner.invoke(
        app, ["evaluate", run, str(EPFL / "test"), "--masks", "mitochondria", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["images"] == 5 and out["dice_mean"] > 0.5
