"""The deadline-aware learning-rate schedule (issue 15, 1): a fake clock, no training."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests.fake_clock import FakeClock
from tests.plans import minimal_plan
from trainer.errors import PlanError
from trainer.train.schedule import (
    DeadlineSchedule,
    ObservedEarlyStopping,
    deadline_factor,
    deadline_schedule,
    schedule_kind,
    stopping_callbacks,
)


def _fake_model():
    """What the callback touches: `optimizer.learning_rate` (every assignment kept)."""

    class Optimizer:
        def __init__(self):
            self.assigned: list[float] = []

        @property
        def learning_rate(self):
            return self.assigned[-1] if self.assigned else None

        @learning_rate.setter
        def learning_rate(self, value):
            self.assigned.append(float(value))

    return SimpleNamespace(optimizer=Optimizer(), stop_training=False)


def _schedule(clock, *, k=1, budget=1000.0, base=1e-3, warmup=0.03, val_batches=0):
    cb = DeadlineSchedule(
        clock.t, clock.t + budget, base, k, warmup=warmup, val_batches=val_batches, clock=clock
    )
    cb.set_model(_fake_model())
    return cb


def _step(cb, clock, seconds):
    cb.on_train_batch_begin(0)
    clock.t += seconds
    cb.on_train_batch_end(0)


def test_factor_warms_up_then_decays_linearly_to_zero():
    assert deadline_factor(0.0, 0.03) == 0.0
    assert deadline_factor(0.015, 0.03) == pytest.approx(0.5)
    assert deadline_factor(0.03, 0.03) == pytest.approx(1.0)
    assert deadline_factor(0.515, 0.03) == pytest.approx(0.5)
    assert deadline_factor(1.0, 0.03) == 0.0
    assert deadline_factor(1.5, 0.03) == 0.0


def test_learning_rate_at_start_middle_and_end_of_the_budget():
    clock = FakeClock()
    cb = _schedule(clock)
    start = clock.t
    assert cb.learning_rate() == 0.0  # warm-up starts at 0
    clock.t = start + 30  # end of the 3% warm-up
    assert cb.learning_rate() == pytest.approx(1e-3)
    clock.t = start + 515  # half-way through the decay
    assert cb.learning_rate() == pytest.approx(0.5e-3)
    clock.t = start + 1000
    assert cb.learning_rate() == 0.0
    _step(cb, clock, 1.0)  # a step at the deadline is the last: training stops
    assert cb.triggered and cb.model.stop_training


def test_accumulation_sets_the_rate_once_per_optimizer_update():
    clock = FakeClock()
    cb = _schedule(clock, k=4)
    for _ in range(12):  # 12 micro-batches of 10 s = 3 updates
        _step(cb, clock, 10.0)
    assert cb.updates == 3
    lrs = cb.model.optimizer.assigned
    assert len(lrs) == 3  # per update, not per micro-batch
    # each set just before the update's last micro-batch, from that moment's share:
    # 30 s = end of warm-up, 70 s and 110 s into the decay
    assert lrs == pytest.approx([1e-3 * f for f in (1.0, 930 / 970, 890 / 970)])


def test_deadline_keeps_time_for_the_final_validation_and_checkpoint():
    clock = FakeClock()
    cb = _schedule(clock, val_batches=5)
    _step(cb, clock, 20.0)  # the first step traces the graph: not a step time
    _step(cb, clock, 2.0)
    _step(cb, clock, 2.0)
    assert cb.reserve_seconds() == pytest.approx(10.0)  # 5 batches x 2 s, before measuring
    cb.on_test_begin()
    clock.t += 30.0  # validation measured at 30 s
    cb.on_test_end()
    cb.on_epoch_end(0, {})
    clock.t += 4.0  # checkpoints and the rest of the epoch's end
    cb.on_epoch_begin(1)
    assert cb.reserve_seconds() == pytest.approx(34.0)
    assert cb.end() == pytest.approx(cb.deadline - 34.0)
    clock.t = cb.deadline - 34.0 - 5.0
    _step(cb, clock, 2.0)  # 3 s before the end: the next 2 s update still fits
    assert not cb.triggered
    _step(cb, clock, 2.0)  # 1 s before the end: the next one would cross it
    assert cb.triggered  # stops 34 s before the deadline: time for validation + checkpoint


def test_the_last_update_ends_before_the_schedule_does_not_after_it():
    clock = FakeClock()
    cb = _schedule(clock, k=4, budget=1000.0)  # an update = 4 micro-batches of 5 s
    _step(cb, clock, 20.0)  # the trace
    for _ in range(3):
        _step(cb, clock, 5.0)
    assert cb.update_seconds() == pytest.approx(20.0)
    clock.t = cb.end() - 50.0
    for _ in range(4):
        _step(cb, clock, 5.0)
    assert not cb.triggered  # 30 s left: room for another 20 s update
    for _ in range(4):
        _step(cb, clock, 5.0)
    assert cb.triggered  # 10 s left, less than an update: this one was the last
    assert clock.t <= cb.end()  # (before: it went on, and ended 10 s past the end)


def test_epoch_logs_count_optimizer_updates():
    clock = FakeClock()
    cb = _schedule(clock, k=2)
    for _ in range(6):
        _step(cb, clock, 1.0)
    logs = {}
    cb.on_epoch_end(0, logs)
    assert logs["updates"] == 3.0


def test_auto_schedule_is_plateau_and_deadline_only_by_name():
    plateau = minimal_plan()
    timed = minimal_plan(time_limit_s=600)
    assert schedule_kind(plateau) == "plateau"
    assert schedule_kind(timed) == "plateau"  # the A/B: the deadline schedule did not win
    assert deadline_schedule(plateau, 0.0, None, 3) is None  # no budget: plateau stays
    assert deadline_schedule(timed, 0.0, 600.0, 3) is None
    named = minimal_plan(time_limit_s=600, lr_schedule={"kind": "deadline"})
    assert schedule_kind(named) == "deadline"
    assert isinstance(deadline_schedule(named, 0.0, 600.0, 3), DeadlineSchedule)
    forced = minimal_plan(time_limit_s=600, lr_schedule={"kind": "plateau"})
    assert deadline_schedule(forced, 0.0, 600.0, 3) is None
    with pytest.raises(PlanError, match="lr_schedule.kind"):
        minimal_plan(lr_schedule={"kind": "deadline"})


def test_multi_worker_plans_stay_on_plateau():
    """Each worker's own clock would give each replica its own learning rate."""
    mw = dict(strategy="multi_worker", replicas=2, time_limit_s=600)
    assert schedule_kind(minimal_plan(**mw)) == "plateau"
    with pytest.raises(PlanError, match="workers' clocks differ"):
        minimal_plan(**mw, lr_schedule={"kind": "deadline"})


def test_budgeted_early_stopping_observes_but_never_stops():
    plain, _ = stopping_callbacks(minimal_plan(), "val_loss", "min", True, budgeted=False)
    es, _ = stopping_callbacks(
        minimal_plan(early_stopping={"patience": 1}), "val_loss", "min", True, budgeted=True
    )
    assert not isinstance(plain, ObservedEarlyStopping) and isinstance(es, ObservedEarlyStopping)
    model = SimpleNamespace(stop_training=False, get_weights=lambda: [])
    es.set_model(model)
    es.on_train_begin()
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.97, 0.99]):
        es.on_epoch_end(epoch, {"val_loss": loss})
        assert model.stop_training is False
    assert es.would_stop_epoch == 3  # plateau early stopping would have ended it here
    assert es.stopped_epoch == 0


@pytest.mark.slow
@pytest.mark.parametrize("limit", [None, 3600.0])
def test_training_records_the_schedule_and_lr_per_epoch(tmp_path, limit):
    from planner.app.demo import make_demo_dataset
    from trainer.train.fit import train
    from trainer.train.run_dir import read_history

    data = make_demo_dataset(tmp_path / "data", n=6, size=(64, 64), seed=1)
    plan = minimal_plan(
        data,
        data={"val_fraction": 0.3},
        accumulation_steps=2,
        epochs=2,
        steps_per_epoch=2,
        time_limit_s=limit,
        # Named: "auto" is plateau either way (schedule_kind).
        lr_schedule={"kind": "deadline" if limit else "auto"},
    )
    train(plan, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    rows = read_history(tmp_path / "run" / "history.csv")
    lrs = [r["learning_rate"] for r in rows]
    if limit is None:
        assert metrics["lr_schedule"] == "plateau" and lrs == pytest.approx([1e-3, 1e-3])
    else:  # an hour's budget, a few seconds used: still warming up, rising
        assert metrics["lr_schedule"] == "deadline" and metrics["optimizer_updates"] == 4
        assert 0 < lrs[0] < lrs[1] < 1e-3
        assert [r["updates"] for r in rows] == [2, 4]
