"""`trainer.peak`: a run's expected peak as a function of the train steps it makes."""

from __future__ import annotations

import math

import pytest

from trainer.peak import expected_peak_bytes, growth_bytes, planned_steps

MIB = 2**20
GROWTH = {
    "base_bytes": 3000 * MIB,
    "tensor_bytes": 1800 * MIB,
    "verified_steps": 2,
    "per_e_fold": 0.035,
    "max_steps": 1000,
}


def test_the_rise_grows_with_the_log_of_the_steps_over_the_verified_ones():
    """30 steps (an epfl-em epoch at 4 x 1) add less than 500 (twenty minutes), and each
    doubling of the steps adds the same bytes: tensor peak x per_e_fold x ln 2."""
    one_epoch, long_run = growth_bytes(GROWTH, 30), growth_bytes(GROWTH, 500)
    assert one_epoch == int(1800 * MIB * 0.035 * math.log(15))
    assert 0 < one_epoch < long_run == int(1800 * MIB * 0.035 * math.log(250))
    doubling = 1800 * MIB * 0.035 * math.log(2)
    assert growth_bytes(GROWTH, 200) - growth_bytes(GROWTH, 100) == pytest.approx(doubling, abs=1)


def test_no_rise_at_or_below_the_verified_steps_and_none_past_the_longest_measured():
    assert growth_bytes(GROWTH, 2) == growth_bytes(GROWTH, 1) == growth_bytes(GROWTH, 0) == 0
    assert growth_bytes(GROWTH, 5000) == growth_bytes(GROWTH, 1000) > growth_bytes(GROWTH, 999)


def test_the_expected_peak_is_the_base_plus_the_rise_or_the_plans_one_figure():
    pred = {"peak_bytes": 3500 * MIB, "growth": GROWTH}
    assert expected_peak_bytes(pred, 30) == 3000 * MIB + growth_bytes(GROWTH, 30)
    # A plan without the curve (older, a GPU, by hand), or a run of unknown length.
    assert expected_peak_bytes({"peak_bytes": 3500 * MIB}, 30) == 3500 * MIB
    assert expected_peak_bytes(pred, None) == 3500 * MIB
    assert expected_peak_bytes({}, 30) is None and expected_peak_bytes(None, 30) is None


def test_the_steps_of_a_run_count_the_epochs_the_time_limit_leaves():
    assert planned_steps(10, 30, None, None) == 300
    assert planned_steps(10, 30, 60.0, 600.0) == 300  # ten epochs fit in the time
    assert planned_steps(100, 30, 70.0, 1200.0) == 18 * 30  # 17.1 epochs: the 18th starts
    assert planned_steps(1, 30, 70.0, 1200.0) == 30  # --max-epochs 1
    assert planned_steps(5, 30, 70.0, 0.0) == 30  # no time left still starts an epoch
    assert planned_steps(0, 30, None, None) == 0


def test_a_run_is_predicted_for_the_epochs_it_has_left_and_the_time_it_has(monkeypatch):
    """`fitplan train --max-epochs 1` on a 15-epoch plan is predicted for one epoch; a
    resume for the epochs left; a time limit for the epochs that fit in the time left."""
    from tests.plans import minimal_plan as make_plan
    from trainer.train import fit

    now = 1000.0
    monkeypatch.setattr(fit.time, "monotonic", lambda: now)
    pred = {"peak_bytes": 3400 * MIB, "planned_steps": 450, "epoch_time_s": 70.0, "growth": GROWTH}
    plan = make_plan(epochs=15, prediction=pred)
    whole = fit.run_prediction(plan, 30, 0, None)
    assert whole["predicted_steps"] == 450
    assert whole["predicted_peak_bytes"] == expected_peak_bytes(pred, 450)
    assert whole["plan_predicted_peak_bytes"] == 3400 * MIB
    one = fit.run_prediction(make_plan(epochs=1, prediction=pred), 30, 0, None)
    assert one["predicted_steps"] == 30
    assert one["predicted_peak_bytes"] == 3000 * MIB + growth_bytes(GROWTH, 30)
    assert "over 30 train steps (the plan's 450 steps: 3.32 GiB)" in fit.expected_peak_line(one)
    assert fit.run_prediction(plan, 30, 12, None)["predicted_steps"] == 90  # resumed at 12
    timed = fit.run_prediction(plan, 30, 0, now + 300.0)  # 300 s left: 5 epochs of 70 s
    assert timed["predicted_steps"] == 150


def test_training_in_the_planning_process_adds_what_that_process_holds_beyond_the_childs():
    """Under `train --auto` the trainer runs where planning ran: what it holds at the start
    beyond the verification child at the same point is added; nothing when it
    holds less, and nothing for a fresh `fitplan train` process."""
    from tests.plans import minimal_plan
    from trainer.train import fit

    growth = {**GROWTH, "start_rss_bytes": 1000 * MIB}
    plan = minimal_plan(epochs=1, prediction={"peak_bytes": 3400 * MIB, "growth": growth})
    base = 3000 * MIB + growth_bytes(growth, 30)
    auto = fit.run_prediction(plan, 30, 0, None, after_planning=True, rss=lambda: 1048 * MIB)
    assert auto["planning_process_bytes"] == 48 * MIB and auto["start_rss_bytes"] == 1048 * MIB
    assert auto["predicted_peak_bytes"] == base + 48 * MIB
    less = fit.run_prediction(plan, 30, 0, None, after_planning=True, rss=lambda: 990 * MIB)
    assert less["planning_process_bytes"] == 0 and less["predicted_peak_bytes"] == base
    fresh = fit.run_prediction(plan, 30, 0, None, rss=lambda: 1048 * MIB)
    assert fresh["planning_process_bytes"] is None and fresh["predicted_peak_bytes"] == base
    assert (
        fresh["start_rss_bytes"] == 1048 * MIB
    )  # every run records it: a child's is the reference
    unread = fit.run_prediction(plan, 30, 0, None, after_planning=True, rss=lambda: None)
    assert unread["predicted_peak_bytes"] == base


def test_the_current_resident_size_is_read_and_below_the_peak():
    from trainer.train.memory import current_rss_bytes, peak_rss_bytes

    now = current_rss_bytes()
    assert now is not None and 0 < now <= peak_rss_bytes()
