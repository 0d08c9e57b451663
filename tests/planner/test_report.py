"""`fitplan report`: one HTML file whose embedded figures exist and are not blank."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from tests.trained_run import trained_run_fixture  # noqa: F401  (a fixture)
from trainer.errors import FitplanError, RunDirError

GIB = 2**30
EVIDENCE = {
    "planning_time_s": 81.5,
    "children": 2,
    "choice": {
        "evaluations": [
            {
                "backbone": "unet_small",
                "input_size": [32, 32],
                "precision": "float32",
                "verdict": "chosen",
                "reason": "best score",
                "micro_batch": 2,
                "predicted_peak_bytes": int(1.5 * GIB),
                "line": {
                    "a": 1.2 * GIB,
                    "b": 0.15 * GIB,
                    "points": [[1, int(1.35 * GIB)], [4, int(1.8 * GIB)]],
                    "source": "fit",
                },
            },
            {
                "backbone": "mobilenet_v3_small",
                "input_size": [64, 64],
                "precision": "float32",
                "verdict": "rejected",
                "reason": "needs 5.1 GiB at micro-batch 1",
                "line": None,
            },
        ]
    },
    "verification": [
        {
            "micro_batch": 2,
            "predicted_bytes": int(1.5 * GIB),
            "allowed_bytes": int(3.4 * GIB),
            "status": "ok",
            "peak_bytes": int(1.48 * GIB),
            "action": "accepted",
            "reason": "",
        }
    ],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory, trained_run):
    """The session's trained run, copied, its plan given the evidence above."""
    return _copy(trained_run.path, tmp_path_factory.mktemp("report") / "run", evidence=EVIDENCE)


def _images(html: str) -> list[np.ndarray]:
    found = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("L")) for b in found]


def _copy(run, dest, **plan_changes):
    shutil.copytree(run, dest)
    raw = json.loads((dest / "plan.json").read_text())
    raw.update(plan_changes)
    (dest / "plan.json").write_text(json.dumps(raw))
    return dest


@pytest.mark.slow
def test_report_embeds_curves_memory_trials_and_predictions(run, tmp_path):
    from planner.app.report import report

    path = report(run, tmp_path / "r.html")
    assert path == tmp_path / "r.html"
    html = path.read_text()
    for text in ("Training curves", "Memory plan", "Candidates", "Verification run"):
        assert text in html, text
    assert "mobilenet_v3_small 64x64 float32" in html and "needs 5.1 GiB" in html
    assert "4.00 GiB (from user)" in html and "1.49 GiB" in html  # budget, predicted peak
    images = _images(html)
    assert len(images) == 4  # curves, memory bars, trials, validation samples
    for img in images:
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert img.var() > 0  # not blank
    assert "validation pairs" in html and "Dice" in html
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.slow
def test_a_plan_without_evidence_says_so_and_missing_data_is_skipped(run, tmp_path):
    from planner.app.report import report

    bare = _copy(run, tmp_path / "run", evidence=None)
    html = report(bare, data_root=tmp_path / "gone").read_text()
    assert "carries no evidence" in html and "Skipped: the data is not available" in html
    assert (bare / "report.html").exists()
    assert len(_images(html)) == 2  # curves and memory bars
    assert all(img.var() > 0 for img in _images(html))


def test_missing_matplotlib_names_the_extra(run, monkeypatch):
    from planner.app.report import report

    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(FitplanError, match=r"pip install -e \"\.\[report\]\""):
        report(run)


def test_an_incomplete_run_is_named(tmp_path):
    from planner.app.report import report

    with pytest.raises(RunDirError, match="plan.json: missing"):
        report(tmp_path)
