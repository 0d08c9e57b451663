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


def pick(ms, *, auto, budget=8 * GIB, left=60.0):
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
    )


def test_auto_trains_the_fastest_candidate_for_one_epoch():
    slow = measured("efficientnet_b0", 2.0)  # the better prior, but the longer epoch
    fast = measured("mobilenet_v3_small", 1.0)
    c = pick([slow, fast], auto=True)
    assert c.candidate.backbone == "mobilenet_v3_small"
    assert c.epochs == 1 and c.micro_batch == 16
    assert any("no candidate trains one epoch" in w for w in c.warnings)
    verdicts = {e.candidate.backbone: e.verdict for e in c.evaluations}
    assert verdicts == {"mobilenet_v3_small": "chosen", "efficientnet_b0": "rejected"}


def test_plan_alone_still_fails_fast():
    with pytest.raises(BudgetError, match="one epoch within the time budget"):
        pick([measured("mobilenet_v3_small", 1.0)], auto=False)


def test_auto_still_fails_when_nothing_fits_in_memory():
    with pytest.raises(BudgetError, match="memory budget"):
        pick([measured("mobilenet_v3_small", 1.0, a=9 * GIB)], auto=True)
