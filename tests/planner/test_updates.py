"""Updates, not just epochs (issue 15, item 5): a short time budget lowers the effective batch.

Fake measurements with exact step times (`test_search.measured`: step = 0.05 s x micro-batch
unless said), 100 training images of one crop each, no TensorFlow except the last test.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from planner.search.presets import Objective
from tests.planner.test_make_plan import FINGERPRINT  # 64x64: one crop per image

# fixtures: 8 demo pairs of 64x64; fake trial children (an 8 GiB CPU, 0.001 s per sample)
from tests.planner.test_planning_speed import children, data_dir  # noqa: F401
from tests.planner.test_search import GIB, budget_for, measured, pick

# 100 crops. 16 x 1: 7 updates per epoch of 7 x 0.8 s x 1.15 = 6.44 s;
# 8 x 1: 13 updates, 13 x 0.4 x 1.15 = 5.98 s; 4 x 1: 25 updates, 25 x 0.2 x 1.15 = 5.75 s.
ROOM = budget_for(40)
MNV3S_PRIOR = Objective().backbone_prior["mobilenet_v3_small"]  # the score of a full budget


def test_a_short_budget_lowers_the_effective_batch_and_says_why():
    c = pick([measured()], budget_bytes=ROOM, time_budget_s=200)
    # 200 s: 31 epochs x 7 = 217 updates at 16 < 300; at 8: 33 epochs x 13 = 429.
    assert (c.micro_batch, c.accumulation_steps, c.effective_batch) == (8, 1, 8)
    assert (c.target_batch, c.requested_batch, c.lowered) == (8, 16, True)
    assert (c.epochs, c.updates) == (33, 429)
    assert c.effective_batch_reason == (
        "the time budget buys 217 updates at effective batch 16; 8 buys 429 (wanted 300)"
    )
    assert c.micro_batches_per_epoch == 13


def test_a_micro_batch_held_down_by_memory_accumulates_less():
    c = pick([measured()], budget_bytes=budget_for(4.5), time_budget_s=200)
    # 4 x 4 at 16 (217 updates); lowered to 8: the same micro-batch, 2 accumulation steps.
    assert (c.micro_batch, c.accumulation_steps, c.target_batch) == (4, 2, 8)
    assert c.updates == 429


@pytest.mark.parametrize("seconds", [300, None])
def test_a_long_budget_keeps_16(seconds):
    c = pick([measured()], budget_bytes=ROOM, time_budget_s=seconds)
    assert (c.micro_batch, c.accumulation_steps, c.target_batch, c.lowered) == (16, 1, 16, False)
    if seconds is None:
        assert c.updates is None
        assert c.effective_batch_reason == "effective batch 16: no time budget"
    else:  # 46 epochs x 7 = 322 updates: enough; the score is the prior, as before
        assert c.updates == 322 and c.score == pytest.approx(MNV3S_PRIOR)
        assert c.effective_batch_reason == (
            "the time budget buys 322 updates at effective batch 16 (wanted 300)"
        )


def test_a_budget_that_holds_every_epoch_is_not_short():
    # 20 images: 2 updates per epoch of 1.84 s at 16; 600 s hold all 100 epochs (200
    # updates): max_epochs, not the budget, limits them, as without a time budget.
    c = pick([measured()], budget_bytes=ROOM, time_budget_s=600, n_train_samples=20)
    assert (c.effective_batch, c.epochs, c.updates) == (16, 100, 200)
    assert c.score == pytest.approx(MNV3S_PRIOR)
    assert c.effective_batch_reason == (
        "the time budget buys 200 updates at effective batch 16 in all 100 epochs "
        "(max_epochs): not short"
    )


def test_halving_stops_where_every_epoch_fits():
    # 5 images: at 16 one 0.8 s step per epoch, 65 epochs in 60 s; at 8 one 0.4 s step,
    # all 100 epochs fit (100 updates): the budget is no longer short, 4 is not tried.
    c = pick([measured()], budget_bytes=ROOM, time_budget_s=60, n_train_samples=5)
    assert (c.effective_batch, c.epochs, c.updates) == (8, 100, 100)
    assert c.effective_batch_reason == (
        "the time budget buys 65 updates at effective batch 16; 8 buys 100 "
        "(wanted 300; all 100 epochs fit at 8)"
    )


def test_the_floor_holds():
    c = pick([measured()], budget_bytes=ROOM, time_budget_s=60)
    # 60 s: 63 updates at 16, 130 at 8, 250 at 4: still short, but 4 is the floor.
    assert (c.micro_batch, c.effective_batch, c.updates) == (4, 4, 250)
    assert c.effective_batch_reason == (
        "the time budget buys 63 updates at effective batch 16; 8 buys 130, 4 buys 250 "
        "(wanted 300; floor 4)"
    )
    c = pick(
        [measured()],
        budget_bytes=ROOM,
        time_budget_s=60,
        objective=Objective(min_effective_batch=8),
    )
    assert c.effective_batch == 8 and c.effective_batch_reason.endswith("(wanted 300; floor 8)")
    # Replicas: at least one sample per replica, whatever the objective's floor. 8 replicas
    # of 2 (0.1 s steps): 9 epochs x 7 = 63 updates in 8 s; 8 of 1: 10 x 13 = 130.
    c = pick(
        [measured()],
        budget_bytes=ROOM,
        time_budget_s=8,
        replicas=8,
        objective=Objective(min_effective_batch=1),
    )
    assert (c.micro_batch, c.effective_batch, c.updates) == (1, 8, 130)
    assert c.effective_batch_reason.endswith("(wanted 300; floor 8)")


def test_an_effective_batch_the_user_set_is_kept_and_scored_on_its_updates():
    c = pick([measured()], budget_bytes=ROOM, time_budget_s=60, fixed_effective_batch=True)
    assert (c.micro_batch, c.effective_batch, c.lowered) == (16, 16, False)
    assert c.effective_batch_reason == (
        "the time budget buys 63 updates at effective batch 16 (wanted 300); "
        "set by --effective-batch: kept"
    )
    # 9 epochs of 30 wanted, 63 updates of 300 wanted.
    assert c.score == pytest.approx(MNV3S_PRIOR * math.sqrt(9 / 30) * math.sqrt(63 / 300), abs=1e-6)


def test_a_halving_that_makes_the_candidate_too_slow_is_not_taken():
    # Step time 0.4 s + 0.1 s per sample: halving the batch lengthens the epoch.
    m = measured(a=GIB)
    m = dataclasses.replace(
        m,
        trials=tuple(
            dataclasses.replace(r, step_time_s=0.4 + 0.1 * r.micro_batch) for r in m.trials
        ),
    )
    c = pick([m], budget_bytes=ROOM, time_budget_s=250)
    # 16: 7 x 2.0 x 1.15 = 16.1 s -> 15 epochs, 105 updates; 8: 13 x 1.2 x 1.15 = 17.94 s
    # -> 13 epochs (under min_epochs 15), 169 updates: more updates, but too slow.
    assert (c.effective_batch, c.epochs) == (16, 15)
    assert c.effective_batch_reason == (
        "the time budget buys 105 updates at effective batch 16; 8 buys 169 (not taken: "
        "13 epochs, under 15) (wanted 300)"
    )


# -- the plan, its verification and its view ----------------------------------------------


def _ctx(request, budget_gib=8.0):
    from planner.request import PlanContext

    return PlanContext(
        request,
        hardware={},
        budget={"device": "cpu", "bytes": int(budget_gib * GIB), "source": "user"},
        fingerprint=FINGERPRINT,
        n_train=100,
        step_headroom=0.1,
    )


def test_a_plan_for_a_lowered_batch_scales_the_rate_by_sqrt_of_b_over_16():
    from planner.build import build_plan
    from planner.request import PlanRequest

    ctx = _ctx(PlanRequest(".", budget_time_s=200))
    choice = pick([measured()], budget_bytes=ctx.budget_bytes, time_budget_s=200)
    plan = build_plan(ctx, choice, [], [], planning_time_s=0.0, children=0, traces=0)
    assert plan.effective_batch == 8
    assert (plan.optimizer.lr_scaling, plan.optimizer.reference_batch) == ("sqrt", 16)
    assert plan.evidence["effective_batch_reason"] == choice.effective_batch_reason
    # Not lowered: the rate is used as written.
    kept = pick([measured()], budget_bytes=ctx.budget_bytes, time_budget_s=300)
    plan16 = build_plan(ctx, kept, [], [], planning_time_s=0.0, children=0, traces=0)
    assert plan16.optimizer.lr_scaling == "none"
    # The trainer applies it: 1e-3 x sqrt(8 / 16).
    from trainer.train.distribute import learning_rate_for

    assert learning_rate_for(plan) == pytest.approx(1e-3 * math.sqrt(0.5))


def _verify_with_fake_runs(monkeypatch, request):
    """`choose_and_verify` on one candidate whose real run needs 0.2 + 0.1 GiB per sample."""
    from planner import verified_choice as vc
    from planner.search.candidates import Candidate
    from planner.search.choice import CandidateMeasurement
    from planner.trials.spec import TrialResult

    plans = []

    def fake_measure_one(spec, size, **kw):
        plans.append(spec.target_args["plan"])
        peak = int((0.2 + 0.1 * size) * GIB)
        return TrialResult("ok", size, peak_bytes=peak, step_time_s=0.05 * size)

    monkeypatch.setattr(vc, "measure_one", fake_measure_one)
    trials = tuple(
        TrialResult("ok", m, peak_bytes=int((0.3 + 0.1 * m) * GIB), step_time_s=0.05 * m)
        for m in (1, 4)
    )
    m = CandidateMeasurement(Candidate("unet_small", (256, 256)), trials=trials)
    choice, steps = vc.choose_and_verify([m], _ctx(request, budget_gib=4.0), children=set())
    return choice, steps, plans


def test_verification_keeps_the_lowered_effective_batch(monkeypatch):
    """The run measured well under the budget would step up to a larger micro-batch; the
    step up is capped by the chosen effective batch (8), not the request's 16."""
    from planner.request import PlanRequest

    choice, steps, plans = _verify_with_fake_runs(monkeypatch, PlanRequest(".", budget_time_s=200))
    assert (choice.micro_batch, choice.accumulation_steps, choice.effective_batch) == (8, 1, 8)
    assert [s.micro_batch for s in steps] == [8]  # no step up past the effective batch
    assert [(p["micro_batch"], p["accumulation_steps"]) for p in plans] == [(8, 1)]
    assert plans[0]["optimizer"]["lr_scaling"] == "sqrt"
    assert plans[0]["optimizer"]["reference_batch"] == 16


def test_an_explicit_effective_batch_survives_planning(monkeypatch):
    from planner.request import PlanRequest

    request = PlanRequest(".", budget_time_s=200, effective_batch=16)
    assert request.batch_fixed and not PlanRequest(".").batch_fixed
    choice, _, plans = _verify_with_fake_runs(monkeypatch, request)
    assert choice.effective_batch >= 16 and not choice.lowered
    assert "set by --effective-batch: kept" in choice.effective_batch_reason
    assert plans[-1]["optimizer"]["lr_scaling"] == "none"


def test_fitplan_plan_prints_why_the_effective_batch_is_what_it_is():
    from rich.console import Console

    from planner.app.plan_view import plan_table
    from planner.build import build_plan
    from planner.request import PlanRequest

    ctx = _ctx(PlanRequest(".", budget_time_s=200))
    choice = pick([measured()], budget_bytes=ctx.budget_bytes, time_budget_s=200)
    plan = build_plan(ctx, choice, [], [], planning_time_s=0.0, children=0, traces=0)
    console = Console(width=300, record=True)
    console.print(plan_table(plan.to_dict()))
    text = console.export_text()
    assert "the time budget buys 217 updates at effective batch 16; 8 buys 429" in text
    assert "learning rate x sqrt(8/16)" in text


def test_make_plan_lowers_the_batch_unless_the_user_set_it(data_dir, children):  # noqa: F811
    """The whole chain with fake children (0.001 s per sample): 7 training crops of 64,
    1 s budget. At 16, 54 epochs of one update; at 8 every one of the 100 epochs fits."""
    from planner.make_plan import make_plan

    kw = dict(backbones=["unet_small"], sizes=[64], budget_time_s=1.0)
    plan = make_plan(data_dir, **kw).plan
    assert (plan.micro_batch, plan.accumulation_steps, plan.epochs) == (8, 1, 100)
    assert (plan.optimizer.lr_scaling, plan.optimizer.reference_batch) == ("sqrt", 16)
    assert "8 buys 100" in plan.evidence["effective_batch_reason"]
    kept = make_plan(data_dir, effective_batch=16, **kw).plan
    assert kept.effective_batch == 16 and kept.optimizer.lr_scaling == "none"
    assert kept.evidence["effective_batch_reason"].endswith("set by --effective-batch: kept")
