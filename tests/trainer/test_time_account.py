"""Where a run's wall time went (`trainer.train.time_account`, issue 15 item 6): fake clock."""

from __future__ import annotations

import time

import pytest

from tests.fake_clock import FakeClock
from trainer.clock import process_start_monotonic
from trainer.train.time_account import TimeAccount


def test_the_account_splits_the_budget_into_parts_that_add_up():
    clock = FakeClock(110.0)  # the command started at 100; train() was called at 110
    acct = TimeAccount(100.0, 110.0, {"startup_s": 2.0, "planning_s": 7.0}, "command start", clock)
    clock.t = 115.0  # 5 s of set-up: pipeline and model
    for _epoch in range(2):
        for _ in range(3):
            acct.on_train_batch_begin(0)
            clock.t += 4.0  # a train step
            acct.on_train_batch_end(0)
        acct.on_test_begin()
        clock.t += 6.0  # the validation pass
        acct.on_test_end()
        clock.t += 1.0  # checkpoint and the other callbacks
    acct.on_train_end()
    clock.t += 0.5  # best weights loaded, summary
    doc = acct.summary(600.0)
    assert doc["setup_s"] == 5.0 and doc["train_steps_s"] == 24.0
    assert doc["validation_s"] == 12.0 and doc["epoch_end_s"] == 2.0
    assert doc["final_s"] == 0.5 and doc["total_s"] == clock.t - 100.0
    assert doc["before_training_s"] == {"startup_s": 2.0, "planning_s": 7.0}
    # 1 s between the command start + startup + planning (9 s) and train() (10 s after start).
    assert doc["other_s"] == pytest.approx(1.0)
    parts = ("setup_s", "train_steps_s", "validation_s", "epoch_end_s", "final_s", "other_s")
    assert sum(doc[k] for k in parts) + 9.0 == pytest.approx(doc["total_s"])
    assert doc["left_s"] == pytest.approx(600.0 - doc["total_s"])
    assert doc["origin"] == "command start"


def test_without_a_budget_there_is_nothing_left_to_report():
    clock = FakeClock()
    doc = TimeAccount(clock.t, clock.t, clock=clock).summary(None)
    assert doc["budget_s"] is None and "left_s" not in doc and doc["total_s"] == 0.0


def test_the_process_start_is_before_now_and_counts_this_interpreter():
    start = process_start_monotonic()
    now = time.monotonic()
    assert start < now  # this interpreter has been running (imports, pytest)
    assert now - start < 24 * 3600
