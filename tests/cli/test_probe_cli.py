"""`fitplan probe`: JSON on stdout only, a budget in it, a table by default."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from planner.app.cli import app

runner = CliRunner()


def test_probe_json_no_tf_parses_and_holds_the_budget(tmp_path):
    result = runner.invoke(app, ["probe", "--json", "--no-tf", "--out-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["version"] == 1
    assert report["tensorflow"] is None
    assert report["budget"]["device"] in ("cpu", "gpu")
    assert report["budget"]["bytes"] > 0 and report["budget"]["source"] == "probe"
    assert report["disk"]["path"] == str(tmp_path / "runs")
    assert report["precision_advice"]["policy"] in ("float32", "mixed_bfloat16", "mixed_float16")


def test_probe_table_by_default():
    result = runner.invoke(app, ["probe", "--no-tf"])
    assert result.exit_code == 0, result.output
    assert "budget" in result.stdout and "TensorFlow" in result.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)


@pytest.mark.slow
def test_probe_json_with_real_tensorflow_keeps_stdout_pure_json(tmp_path):
    # A child process, so TensorFlow's own logging really goes where it goes in use.
    proc = subprocess.run(
        [sys.executable, "-m", "planner.app.cli", "probe", "--json", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    tf = report["tensorflow"]
    assert tf["version"].startswith("2.")
    assert any(d["device_type"] == "CPU" for d in tf["physical_devices"])
    assert tf["import_time_s"] > 0
    assert report["budget"]["bytes"] > 0
