"""benchmarks/gpu_check.py: its dry run lists every check on any machine; without a GPU
it says so and exits 2 (it runs for real only where NVML finds a GPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
CHECKS = ("budget", "trial_line", "training", "oom_forms", "step_down", "smi_back")


def test_the_dry_run_lists_every_check_and_runs_none(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines[:-1]] == [f"CHECK {c}" for c in CHECKS]
    assert "none run" in lines[-1]


def test_without_a_gpu_it_says_so_and_exits_2(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    from tests.gpu.fake_nvml import FakeNVML, install

    install(monkeypatch, FakeNVML([]))
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert capsys.readouterr().out.startswith("FAIL setup: no NVIDIA GPU found")
