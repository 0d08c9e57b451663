"""The pure search, driven by fake measurements with exact expected answers."""

from __future__ import annotations

import pytest

from planner.search.candidates import Candidate
from planner.search.choose import CandidateMeasurement, Choice, choose, crops_per_epoch, epoch_steps
from planner.trials.trial import TrialResult
from trainer.errors import BudgetError, FitplanError

MIB = 2**20
GIB = 2**30
A, B = GIB, 100 * MIB  # a fake device: peak = 1 GiB + 100 MiB per sample


def measured(
    backbone="mobilenet_v3_small",
    side=256,
    *,
    a=A,
    b=B,
    sec_per_sample=0.05,
    sizes=(1, 4),
    fail=None,
    precision="float32",
):
    """Trials of a fake device with an exact memory line; `fail=(mb, status)` appends a failure."""
    trials = [TrialResult("ok", m, a + b * m, sec_per_sample * m, 10.0, traces=1) for m in sizes]
    if fail is not None:
        trials.append(TrialResult(fail[1], fail[0], reason=f"fake {fail[1]}"))
    return CandidateMeasurement(Candidate(backbone, (side, side), precision), tuple(trials))


def budget_for(mb: float, headroom=0.1, a=A, b=B) -> int:
    """A budget whose allowed part holds exactly `mb` samples (fractions round down)."""
    return int((a + b * mb) / (1 - headroom)) + 1


def pick(ms, **kw) -> Choice:
    kw.setdefault("n_train_samples", 100)
    return choose(ms, **kw)


def test_the_largest_fitting_micro_batch_exactly():
    c = pick([measured()], budget_bytes=budget_for(23.5), target_effective_batch=64)
    assert c.micro_batch == 23
    assert c.accumulation_steps == 3 and c.effective_batch == 69
    assert c.predicted_peak_bytes == A + 23 * B
    assert c.predicted_peak_bytes <= c.allowed_bytes
    assert c.headroom_bytes == c.budget_bytes - c.allowed_bytes


@pytest.mark.parametrize(
    ("fits", "mb", "accum", "norm"),
    [
        (40, 16, 1, "train"),
        (8, 8, 2, "train"),
        (7.9, 7, 3, "frozen"),
        (4, 4, 4, "frozen"),
        (2.5, 2, 8, "frozen"),
        (1, 1, 16, "frozen"),
    ],
)
def test_effective_batch_is_kept_as_the_micro_batch_shrinks(fits, mb, accum, norm):
    c = pick([measured()], budget_bytes=budget_for(fits), weights="imagenet")
    assert (c.micro_batch, c.accumulation_steps, c.normalization) == (mb, accum, norm)
    assert c.effective_batch >= 16
    # From scratch BatchNorm trains at every micro-batch (trainer.plan.normalization_for).
    c = pick([measured()], budget_bytes=budget_for(fits))
    assert (c.micro_batch, c.accumulation_steps, c.normalization) == (mb, accum, "train")


def test_a_failed_size_caps_the_micro_batch_below_it():
    c = pick([measured(sizes=(1, 4), fail=(8, "oom"))], budget_bytes=budget_for(20))
    assert c.micro_batch == 7
    c = pick([measured(sizes=(1, 4), fail=(6, "timeout"))], budget_bytes=budget_for(20))
    assert c.micro_batch == 5


def test_headroom_is_applied():
    exact = A + 10 * B
    assert pick([measured()], budget_bytes=exact, headroom=0.0).micro_batch == 10
    # 0.9 x 2024 MiB = 1821.6 MiB -> (1821.6 - 1024) / 100 = 7.97 samples
    assert pick([measured()], budget_bytes=exact, headroom=0.1).micro_batch == 7


def test_time_budget_forces_the_smaller_backbone():
    strong = measured("efficientnet_b0", sec_per_sample=0.125)
    fast = measured("mobilenet_v3_small", sec_per_sample=0.03125)
    kw = dict(budget_bytes=budget_for(40), n_train_samples=27, native_hw=(768, 1024))
    # No time budget: quality prior alone, the stronger backbone wins.
    assert pick([strong, fast], **kw).candidate.backbone == "efficientnet_b0"
    c = pick([strong, fast], time_budget_s=600, **kw)
    # 27 images x 12 crops = 324 samples, micro-batch 16 -> 21 steps per epoch;
    # efficientnet: 21 x 2.0 s x 1.15 = 48.3 s -> 12 epochs < 15: too slow.
    assert c.candidate.backbone == "mobilenet_v3_small"
    assert c.micro_batches_per_epoch == 21
    assert c.epoch_time_s == pytest.approx(21 * 0.5 * 1.15, rel=1e-6)
    assert c.epochs == 49
    rejected = {e.candidate.backbone: e for e in c.evaluations}["efficientnet_b0"]
    assert rejected.verdict == "rejected"
    assert rejected.reason == "too slow: 12 epochs in 10 min (needs 15)"


def test_larger_input_wins_when_time_allows():
    small = measured(side=256, sec_per_sample=0.05)
    large = measured(side=384, sec_per_sample=0.05 * 2.25)
    c = pick(
        [small, large],
        budget_bytes=budget_for(40),
        time_budget_s=3600,
        n_train_samples=27,
        native_hw=(768, 1024),
    )
    assert c.candidate.input_size == (384, 384)
    loser = [e for e in c.evaluations if e.verdict != "chosen"][0]
    assert loser.verdict == "feasible" and loser.reason.startswith("score ")


def test_without_a_candidate_reaching_min_epochs_the_best_score_is_taken_with_a_warning():
    slow = measured(sec_per_sample=1.0)
    kw = dict(budget_bytes=budget_for(40), time_budget_s=600, n_train_samples=100)
    c = pick([slow], fixed_effective_batch=True, **kw)
    # 100 samples / 16 = 7 steps x 16 s x 1.15 = 128.8 s -> 4 epochs
    assert c.epochs == 4
    assert any("no candidate reaches 15 epochs" in w for w in c.warnings)
    # The planner's own batch: 28 updates at 16 are too few, 4 x 1 makes 25 steps of 4 s
    # (115 s per epoch): 5 epochs, still under 15.
    c = pick([slow], **kw)
    assert (c.effective_batch, c.epochs) == (4, 5)
    assert any("no candidate reaches 15 epochs" in w for w in c.warnings)


def test_time_budget_shorter_than_one_epoch_is_a_budget_error():
    with pytest.raises(BudgetError, match="one epoch within the time budget"):
        pick([measured(sec_per_sample=1.0)], budget_bytes=budget_for(40), time_budget_s=60)


def test_nothing_fits_names_the_smallest_measured_need():
    big = measured("efficientnet_b0", a=5 * GIB, b=int(0.1 * GIB))
    bigger = measured("resnet50", a=6 * GIB, b=B)
    pruned = CandidateMeasurement(
        Candidate("resnet50", (384, 384)),
        pruned_reason="estimated 4.5 GiB",
        estimate_bytes=int(4.5 * GIB),
    )
    with pytest.raises(BudgetError) as info:
        pick([big, bigger, pruned], budget_bytes=4 * GIB)
    msg = str(info.value)
    assert "smallest measured need is 5.10 GiB" in msg
    assert "efficientnet_b0 256x256 float32, micro-batch 1" in msg
    assert "budget 4.00 GiB" in msg and "at least 5.67 GiB" in msg
    assert info.value.exit_code == 5


def test_nothing_measured_names_the_smallest_estimate():
    pruned = [
        CandidateMeasurement(
            Candidate("resnet50", (384, 384)), pruned_reason="too big", estimate_bytes=9 * GIB
        ),
        CandidateMeasurement(
            Candidate("efficientnet_b0", (256, 256)),
            pruned_reason="too big",
            estimate_bytes=7 * GIB,
        ),
    ]
    with pytest.raises(
        BudgetError, match=r"smallest estimated need is 7\.00 GiB \(efficientnet_b0"
    ):
        pick(pruned, budget_bytes=4 * GIB)


def test_every_candidate_gets_a_verdict_and_reason():
    ok = measured("mobilenet_v3_small")
    crashed = measured("efficientnet_b0", sizes=(), fail=(1, "error"))
    too_big = measured("resnet50", a=10 * GIB)
    pruned = CandidateMeasurement(
        Candidate("mobilenet_v3_large", (256, 256)),
        pruned_reason="estimated 9 GiB",
        estimate_bytes=9 * GIB,
    )
    c = pick([ok, crashed, too_big, pruned], budget_bytes=budget_for(40))
    verdicts = {e.candidate.backbone: (e.verdict, e.reason) for e in c.evaluations}
    assert verdicts["mobilenet_v3_small"][0] == "chosen"
    assert verdicts["efficientnet_b0"] == (
        "rejected",
        "trial failed: error at micro-batch 1: fake error",
    )
    assert verdicts["resnet50"][0] == "rejected" and verdicts["resnet50"][1].startswith(
        "needs 10.10 GiB at micro-batch 1 > allowed"
    )
    assert verdicts["mobilenet_v3_large"] == ("pruned", "estimated 9 GiB")
    d = c.to_dict()
    assert d["candidate"]["backbone"] == "mobilenet_v3_small" and len(d["evaluations"]) == 4


def test_all_trials_failing_is_not_blamed_on_the_budget():
    with pytest.raises(FitplanError, match="no candidate could be measured") as info:
        pick([measured(sizes=(), fail=(1, "error"))], budget_bytes=8 * GIB)
    assert not isinstance(info.value, BudgetError)


def test_a_single_measured_size_is_used_only_as_measured():
    one = measured(sizes=(2,))
    assert pick([one], budget_bytes=budget_for(40)).micro_batch == 2
    with pytest.raises(BudgetError, match="micro-batch 2"):
        pick([one], budget_bytes=budget_for(1.5))


def test_epoch_counting_mirrors_the_trainer():
    assert crops_per_epoch(27, (768, 1024), (256, 256)) == 27 * 12
    assert crops_per_epoch(27, (768, 1024), (384, 384)) == 27 * 5
    assert crops_per_epoch(10, None, (256, 256)) == 10
    assert epoch_steps(324, 4, 4) == 84  # 21 updates of 4 micro-batches
    assert epoch_steps(3, 8, 2) == 2


def test_a_measured_size_beats_the_line():
    trials = (
        TrialResult("ok", 1, 1100, 0.1),
        TrialResult("ok", 4, 1400, 0.4),
        TrialResult("ok", 6, 1500, 0.6),  # below the least-squares line (~1524)
    )
    m = CandidateMeasurement(Candidate("unet_small", (256, 256)), trials)
    c = pick([m], budget_bytes=1678)  # allowed 1510: the line says 5, the measurement says 6
    assert c.micro_batch == 6 and c.predicted_peak_bytes == 1500
