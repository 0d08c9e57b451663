"""`TimeLimit` stops early enough for the last validation and checkpoint: a fake clock."""

from __future__ import annotations

from types import SimpleNamespace

from tests.fake_clock import FakeClock
from trainer.train.callbacks import TimeLimit


def _limit(clock, deadline_in, **kw):
    cb = TimeLimit(clock.t + deadline_in, clock=clock, **kw)
    cb.set_model(SimpleNamespace(stop_training=False))
    return cb


def _steps(cb, clock, seconds, n):
    """`n` micro-batches of `seconds` each, until one stops training; how many ran."""
    for i in range(n):
        cb.on_train_batch_begin(i)
        clock.t += seconds
        cb.on_train_batch_end(i)
        if cb.model.stop_training:
            return i + 1
    return n


def _epoch_end(cb, clock, validation_s, tail_s):
    cb.on_test_begin()
    clock.t += validation_s
    cb.on_test_end()
    cb.on_epoch_end(0)
    clock.t += tail_s
    cb.on_epoch_begin(1)


def test_without_a_deadline_it_never_stops():
    clock = FakeClock()
    cb = TimeLimit(None, clock=clock)
    cb.set_model(SimpleNamespace(stop_training=False))
    assert _steps(cb, clock, 100.0, 50) == 50 and not cb.triggered


def test_the_measured_validation_and_tail_are_kept_free_before_the_deadline():
    clock = FakeClock()
    start = clock.t
    cb = _limit(clock, 300.0)
    assert _steps(cb, clock, 10.0, 10) == 10  # an epoch of 100 s
    _epoch_end(cb, clock, 30.0, 5.0)  # validation 30 s, checkpoint and callbacks 5 s
    assert cb.reserve_seconds() == 35.0
    ran = _steps(cb, clock, 10.0, 100)
    # Stops once the next 10-s step would end inside the 35 s kept (after 265 s: 275 >
    # 265), so that validation and the tail end by the deadline (300 s), not after it.
    assert cb.triggered and clock.t - start == 265.0 and ran == 13
    assert clock.t + cb.reserve_seconds() <= cb.deadline


def test_before_any_validation_it_reserves_the_validation_batches_at_the_step_time():
    clock = FakeClock()
    start = clock.t
    cb = _limit(clock, 100.0, val_batches=3)
    _steps(cb, clock, 4.0, 1)  # the first step traces the graph: not a step time
    assert cb.reserve_seconds() == 0.0
    _steps(cb, clock, 4.0, 100)
    assert cb.reserve_seconds() == 12.0  # 3 batches x the 4-s median step
    assert cb.triggered and clock.t - start == 88.0  # 88 + 4 > 100 - 12; 84 + 4 is not


def test_an_update_is_never_cut_unless_the_deadline_itself_has_passed():
    clock = FakeClock()
    start = clock.t
    cb = _limit(clock, 100.0, accumulation_steps=4)
    ran = _steps(cb, clock, 5.0, 100)
    # Updates of 4 x 5 s: after the 4th (80 s), the 5th would end at 100 s, not past it;
    # after the 5th (100 s) the deadline has come.
    assert ran % 4 == 0 and clock.t - start == 100.0
    clock = FakeClock()
    cb = _limit(clock, 100.0, accumulation_steps=4)
    _steps(cb, clock, 1.0, 2)
    clock.t += 200.0  # a stall: past the deadline in the middle of an update
    cb.on_train_batch_begin(2)
    cb.on_train_batch_end(2)
    assert cb.triggered and cb.micro_batches == 3


def test_it_stops_at_an_epoch_end_when_no_update_fits_before_the_reserve():
    clock = FakeClock()
    cb = _limit(clock, 120.0)
    _steps(cb, clock, 10.0, 8)
    _epoch_end(cb, clock, 20.0, 2.0)  # now 102 s: 102 + 10 > 120 - 22
    cb.on_epoch_end(1)
    assert cb.triggered
