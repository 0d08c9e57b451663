"""What "predicted" means in the benchmark records: a line through the two smallest sizes."""

from __future__ import annotations

import pytest

from benchmarks.extras import streaming_verdict
from benchmarks.peak_memory import add_predictions, prediction_error

MIB = 2**20


def rec(mb, peak, backbone="unet_small", status="ok"):
    return {
        "key": f"{backbone} mb{mb}",
        "config": {
            "backbone": backbone,
            "input_size": [128, 128],
            "micro_batch": mb,
            "precision": "float32",
        },
        "status": status,
        "peak_bytes": peak if status == "ok" else None,
    }


def test_larger_sizes_are_predicted_from_the_two_smallest_and_fit_points_are_not():
    # a = 1000, b = 100 MiB through 1 and 4; mb 8 measured 10% above the line.
    out = add_predictions([rec(4, 1400 * MIB), rec(1, 1100 * MIB), rec(8, 1980 * MIB)])
    by_mb = {r["config"]["micro_batch"]: r for r in out}
    assert by_mb[1]["predicted_peak_bytes"] is None and by_mb[4]["predicted_peak_bytes"] is None
    assert by_mb[1]["prediction"]["source"] == "fit point"
    assert by_mb[8]["predicted_peak_bytes"] == 1800 * MIB
    assert by_mb[8]["relative_error"] == pytest.approx(-0.0909, abs=1e-4)
    err = prediction_error(out)
    assert err["n"] == 1 and err["max"] == pytest.approx(0.0909, abs=1e-4)


def test_groups_are_separate_and_a_failed_fit_point_means_no_prediction():
    out = add_predictions(
        [
            rec(1, 1000 * MIB),
            rec(4, 1300 * MIB),
            rec(8, 1700 * MIB),
            rec(1, 900 * MIB, backbone="resnet50"),
            rec(4, 0, backbone="resnet50", status="oom"),
            rec(8, 0, backbone="resnet50", status="error"),
        ]
    )
    assert [r["predicted_peak_bytes"] for r in out] == [None, None, 1700 * MIB, None, None, None]
    err = prediction_error(out)
    assert (err["n"], err["median"], err["max"]) == (1, 0.0, 0.0)


def test_prediction_error_takes_median_and_max_of_absolute_errors():
    records = [
        {"key": k, "relative_error": e} for k, e in (("a", -0.02), ("b", 0.04), ("c", -0.10))
    ]
    err = prediction_error(records)
    assert (err["median"], err["max"], err["worst"]) == (0.04, 0.10, "c")
    assert prediction_error([])["n"] == 0


def test_streaming_verdict_compares_the_largest_with_the_smallest():
    rows = [
        {"pairs": 8, "status": "ok", "peak_bytes": 1000},
        {"pairs": 64, "status": "ok", "peak_bytes": 1080},
        {"pairs": 16, "status": "ok", "peak_bytes": 2000},
    ]
    v = streaming_verdict(rows)
    assert v["growth"] == pytest.approx(0.08) and v["meets_aim"]
    assert not streaming_verdict(rows[:1])["meets_aim"]
    assert not streaming_verdict([rows[0], {"pairs": 64, "status": "ok", "peak_bytes": 1200}])[
        "meets_aim"
    ]


def test_every_suite_fits_the_planner_trial_sizes():
    from benchmarks.suites import SUITES
    from planner.search.presets import TRIAL_MICRO_BATCHES
    from trainer.plan import BACKBONES

    matrices = [s.memory for s in SUITES.values() if s.memory is not None]
    assert matrices
    for m in matrices:
        assert m.fit_micro_batches == TRIAL_MICRO_BATCHES
        assert min(m.check_micro_batches) > max(m.fit_micro_batches)
        assert set(m.backbones) <= set(BACKBONES)
        assert all(side % 32 == 0 for side in m.sides)


def test_the_plot_is_written_from_records(tmp_path):
    from benchmarks.plot import plot_peaks

    out = add_predictions([rec(1, 1000 * MIB), rec(4, 1300 * MIB), rec(8, 1750 * MIB)])
    plot_peaks(out, tmp_path / "peak.png", baseline_bytes=600 * MIB)
    assert (tmp_path / "peak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
