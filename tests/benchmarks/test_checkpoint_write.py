"""benchmarks/checkpoint_write.py runs and measures both arms (figures: its docstring)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_checkpoint_benchmark_measures_both_arms(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "checkpoint_write.py"), "--backbone",
         "unet_small", "--side", "64", "--repeats", "1", "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["file_bytes"] > 0
    for arm in ("into_memory", "to_file"):
        assert len(out[arm]["seconds"]) == 1 and out[arm]["seconds"][0] > 0
        assert len(out[arm]["transient_bytes"]) == 1
    assert not list(tmp_path.iterdir())  # its files are gone
