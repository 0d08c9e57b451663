"""`train --auto` with less time left than one epoch: the fastest candidate, not an error."""

from __future__ import annotations

import pytest

from planner.search.candidates import Candidate
from planner.search.choose import CandidateMeasurement
from planner.trials.trial import TrialResult
from planner.verified_choice import choose_within_time
from trainer.errors import BudgetError

GIB, MIB = 2**30, 2**20


def measured(backbone, sec_per_sample, a=GIB):
    trials = tuple(
        TrialResult("ok", m, a + 100 * MIB * m, sec_per_sample * m, 10.0, traces=1) for m in (1, 4)
    )
    return CandidateMeasurement(Candidate(backbone, (256, 256), "float32"), trials)


def pick(ms, *, auto, budget=8 * GIB, left=60.0, **kw):
    return choose_within_time(
        ms,
        budget_bytes=budget,
        headroom=0.1,
        time_left=lambda: left,
        count_planning_time=auto,
        n_train_samples=100,
        native_hw=None,
        target_effective_batch=16,
        say=lambda _line: None,
        **kw,
    )


def test_auto_trains_the_fastest_candidate_for_one_epoch():
    slow = measured("efficientnet_b0", 2.0)  # the better prior, but the longer epoch
    fast = measured("mobilenet_v3_small", 1.0)
    c = pick([slow, fast], auto=True)
    assert c.candidate.backbone == "mobilenet_v3_small"
    # 60 s buy 3 updates at 16 (16 s steps); the partial epoch's updates lower the
    # effective batch to the floor: 4 x 1, 4 s steps, 13 updates (issue 15, item 5).
    assert c.epochs == 1 and (c.micro_batch, c.accumulation_steps) == (4, 1)
    assert c.effective_batch_reason == (
        "the time budget buys 3 updates at effective batch 16; 8 buys 6, 4 buys 13 "
        "(wanted 300; floor 4)"
    )
    assert any("no candidate trains one epoch" in w for w in c.warnings)
    verdicts = {e.candidate.backbone: e.verdict for e in c.evaluations}
    assert verdicts == {"mobilenet_v3_small": "chosen", "efficientnet_b0": "rejected"}
    chosen = next(e for e in c.evaluations if e.verdict == "chosen")
    assert chosen.micro_batch == 4 and chosen.reason.startswith("the shortest epoch")


def test_auto_keeps_an_effective_batch_the_user_set():
    fast = measured("mobilenet_v3_small", 1.0)
    c = pick([fast], auto=True, fixed_effective_batch=True)
    assert c.epochs == 1 and (c.micro_batch, c.effective_batch) == (16, 16)
    assert "set by --effective-batch: kept" in c.effective_batch_reason


def test_plan_alone_still_fails_fast():
    with pytest.raises(BudgetError, match="one epoch within the time budget"):
        pick([measured("mobilenet_v3_small", 1.0)], auto=False)


def test_auto_still_fails_when_nothing_fits_in_memory():
    with pytest.raises(BudgetError, match="memory budget"):
        pick([measured("mobilenet_v3_small", 1.0, a=9 * GIB)], auto=True)
