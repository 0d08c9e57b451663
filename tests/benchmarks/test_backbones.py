"""benchmarks/backbones.py without training: the time factor and the prior fit."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import backbones as bb
from planner.search import presets


def _rows(priors, exponent, runs, scale=0.8):
    """Runs whose test Dice the objective would predict exactly from `priors`."""
    rows = []
    for masks, group_scale in [("mito", scale), ("memb", scale * 0.7)]:
        for (backbone, side), (epochs, updates) in runs.items():
            tf = bb.time_factor(epochs, updates)
            dice = group_scale * priors[backbone] * (side / 256) ** exponent * tf
            rows.append(
                {
                    "masks": masks,
                    "seed": 0,
                    "candidate": f"{backbone}@{side}",
                    "test_dice": dice,
                    "epochs": epochs,
                    "optimizer_updates": updates,
                }
            )
    return rows


RUNS = {
    ("mobilenet_v3_small", 256): (12, 400),
    ("mobilenet_v3_small", 384): (6, 180),
    ("efficientnet_b0", 256): (7, 220),
    ("efficientnet_b0", 384): (3, 90),
}


def test_time_factor_is_the_objectives():
    obj = presets.DEFAULT_OBJECTIVE
    assert bb.time_factor(obj.epochs_wanted, obj.updates_wanted) == 1.0
    few = obj.epochs_wanted // 4
    assert bb.time_factor(few, None) == pytest.approx(
        (few / obj.epochs_wanted) ** obj.time_exponent
    )
    assert bb.time_factor(obj.epochs_wanted, obj.updates_wanted // 4) == pytest.approx(
        0.25**obj.updates_exponent
    )


def test_the_fit_recovers_the_priors_that_made_the_scores():
    truth = {"mobilenet_v3_small": 0.95, "efficientnet_b0": 0.76}
    fit = bb.fit_priors(_rows(truth, 0.3, RUNS))
    assert fit["fitted"]
    # Scaled so the largest is the largest current prior of the two (efficientnet_b0's 0.95).
    assert fit["backbone_prior"]["mobilenet_v3_small"] == pytest.approx(0.95, abs=1e-3)
    assert fit["backbone_prior"]["efficientnet_b0"] == pytest.approx(0.76, abs=1e-3)
    assert fit["size_exponent"] == pytest.approx(0.3, abs=1e-3)
    assert fit["rms_log_residual"] < 1e-6


def test_the_slower_candidate_is_not_blamed_for_its_fewer_updates():
    # Equal priors: the faster candidate scores higher at equal wall time only through the
    # time factor, so the fitted priors come out equal.
    truth = {"mobilenet_v3_small": 0.9, "efficientnet_b0": 0.9}
    rows = _rows(truth, 0.0, RUNS)
    by = {r["candidate"]: r["test_dice"] for r in rows if r["masks"] == "mito"}
    assert by["mobilenet_v3_small@256"] > 1.5 * by["efficientnet_b0@384"]
    fit = bb.fit_priors(rows)
    prior = fit["backbone_prior"]
    assert prior["mobilenet_v3_small"] == pytest.approx(prior["efficientnet_b0"], abs=1e-3)
    assert fit["size_exponent"] == pytest.approx(0.0, abs=1e-3)


def test_one_side_keeps_the_exponent_and_a_zero_dice_is_left_out():
    runs = {k: v for k, v in RUNS.items() if k[1] == 256}
    rows = _rows({"mobilenet_v3_small": 0.9, "efficientnet_b0": 0.6}, 0.15, runs)
    rows.append({**rows[0], "candidate": "efficientnet_b0@256", "test_dice": 0.0})
    fit = bb.fit_priors(rows)
    assert fit["size_exponent"] is None and fit["runs"] == len(rows) - 1
    assert fit["backbone_prior"]["efficientnet_b0"] / fit["backbone_prior"][
        "mobilenet_v3_small"
    ] == pytest.approx(0.6 / 0.9, abs=1e-3)
    assert bb.fit_priors([{**rows[0], "test_dice": 0.0}])["fitted"] is False


def test_refit_reads_a_written_table(tmp_path, capsys):
    rows = _rows({"mobilenet_v3_small": 0.9, "efficientnet_b0": 0.8}, 0.1, RUNS)
    doc = {"relative_test_dice": {"mito": {}, "memb": {}}, "runs": rows}
    path = tmp_path / "backbones.json"
    path.write_text(json.dumps(doc))
    assert bb.main(["--out", str(tmp_path), "--refit", str(path)]) == 0
    fits = json.loads(capsys.readouterr().out)
    assert set(fits) == {"mito", "memb", "all"}
    assert math.isclose(fits["all"]["size_exponent"], 0.1, abs_tol=1e-3)
