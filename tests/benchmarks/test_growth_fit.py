"""benchmarks/growth_fit.py: the rise constant from finished runs."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.growth_fit import MIB, Point, errors, fit, from_run, main, parse_point


def _point(name, c, steps, tensor=2000 * MIB, base=3000 * MIB, n=2):
    measured = base + int(tensor * c * math.log(steps / n))
    return Point(name, base, tensor, n, steps, measured)


def test_the_constant_of_runs_that_follow_the_curve_is_recovered():
    points = [_point("a", 0.03, 500), _point("b", 0.03, 30), _point("c", 0.03, 200, 250 * MIB)]
    assert fit(points) == pytest.approx(0.03)
    assert max(abs(e) for e in errors(points, 0.03)) < 1e-6


def test_the_fit_splits_the_difference_between_runs_that_disagree():
    low, high = _point("low", 0.02, 500), _point("high", 0.04, 500)
    c = fit([low, high])
    e_low, e_high = errors([low, high], c)
    assert 0.02 < c < 0.04 and e_low > 0 > e_high
    assert abs(e_low + e_high) < 0.005  # balanced to within the 0.001 grid


def test_a_run_folder_gives_its_point(tmp_path):
    growth = {
        "base_bytes": 3000 * MIB,
        "tensor_bytes": 1800 * MIB,
        "verified_steps": 2,
        "per_e_fold": 0.035,
        "max_steps": 1000,
    }
    (tmp_path / "plan.json").write_text(json.dumps({"prediction": {"growth": growth}}))
    (tmp_path / "metrics.json").write_text(
        json.dumps({"epochs": 3, "steps_per_epoch": 15, "planning_process_bytes": 48 * MIB})
    )
    (tmp_path / "history.csv").write_text(
        "epoch,peak_memory_bytes\n1,3145728000.0\n2,3355443200.0\n3,3250585600.0\n"
    )
    p = from_run(tmp_path)
    assert (p.steps, p.verified_steps, p.measured, p.extra) == (45, 2, 3200 * MIB, 48 * MIB)
    assert p.implied() == pytest.approx(152 / (1800 * math.log(22.5)))
    assert parse_point("old:3000:1800:2:45:3200") == Point(
        "old", 3000 * MIB, 1800 * MIB, 2, 45, 3200 * MIB
    )


def test_a_plan_without_the_curve_is_skipped_by_name(tmp_path, capsys):
    (tmp_path / "plan.json").write_text(json.dumps({"prediction": {"peak_bytes": 1}}))
    assert main([str(tmp_path)]) == 2
    assert "no prediction.growth" in capsys.readouterr().err
