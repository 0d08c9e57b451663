"""What gradient accumulation adds to the train step is in the estimate the choice uses
(issue 13: accumulation is measured; stop 28: it is also estimated before the
verification run, per backbone, instead of inside one 0.5 GiB preset)."""

from planner.request import overhead_estimate
from planner.search import presets
from planner.search.candidates import Candidate, accumulation_bytes
from planner.search.choice import CandidateMeasurement
from planner.search.choose import choose
from planner.trials.spec import TrialResult
from trainer.models.backbones import backbone_info

GIB = 2**30


def _measured(backbone="unet_small"):
    trials = (
        TrialResult("ok", 1, peak_bytes=int(1.0 * GIB), step_time_s=0.1),
        TrialResult("ok", 4, peak_bytes=int(1.25 * GIB), step_time_s=0.3),
    )
    return CandidateMeasurement(Candidate(backbone, (64, 64)), trials=trials)


def _choose(target, device):
    return choose(
        [_measured()],
        budget_bytes=int(1.5 * GIB),
        headroom=0.1,
        n_train_samples=64,
        target_effective_batch=target,
        fixed_effective_batch=True,
        device=device,
    )


def test_a_micro_batch_that_accumulates_must_also_hold_the_accumulation():
    # Allowed 1.35 GiB; the line (1.0 GiB at 1, 1.25 at 4) puts 5 at 1.33 GiB.
    plain = _choose(16, None)
    assert (plain.micro_batch, plain.accumulation_steps) == (5, 4)
    # On the CPU accumulation adds 8 float32 copies of unet_small's 1.97M parameters.
    extra = accumulation_bytes("cpu", "unet_small")
    assert extra == 8 * 4 * backbone_info("unet_small")["params"]
    held = _choose(16, "cpu")
    assert (held.micro_batch, held.accumulation_steps) == (4, 4)
    assert 1.25 * GIB + extra <= 1.35 * GIB < 1.0 * GIB + 4 * (0.25 / 3) * GIB + extra


def test_a_micro_batch_that_is_the_whole_effective_batch_holds_no_accumulation():
    # Effective batch 5: micro-batch 5 needs no accumulation, so nothing is added.
    whole = _choose(5, "cpu")
    assert (whole.micro_batch, whole.accumulation_steps) == (5, 1)


def test_the_overhead_estimate_adds_accumulation_only_to_plans_that_accumulate():
    cpu = {"device": "cpu", "bytes": 4 * GIB}
    gpu = {"device": "gpu", "bytes": 4 * GIB}
    base = presets.TRAINING_OVERHEAD_BYTES["cpu"]
    params = backbone_info("efficientnet_b0")["params"]
    assert overhead_estimate(cpu) == base
    assert overhead_estimate(cpu, "efficientnet_b0", 1) == base
    assert overhead_estimate(cpu, "efficientnet_b0", 4) == base + 8 * 4 * params
    # On a GPU: no run overhead (host RAM), the accumulators themselves (one copy).
    assert overhead_estimate(gpu, "efficientnet_b0", 4) == 4 * params
