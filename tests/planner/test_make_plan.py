"""make_plan and train --auto end to end with real child processes (tiny model and images)."""

import dataclasses
import json
import re

import pytest

from planner.make_plan import make_plan
from trainer.errors import BudgetError
from trainer.plan import load_plan

# What a scan of a 64x64 binary dataset says, as far as building a plan needs it.
FINGERPRINT = {
    "image_size": {"median": [64, 64]},
    "classes": 2,
    "mask_values": [0, 255],
    "digest": "sha256:test",
    "decoded_bytes": 0,
}


def _small_context(request):
    """A 1.5 GiB CPU budget, 10 training pairs of 64x64, 10% headroom for the train step."""
    from planner.request import PlanContext

    return PlanContext(
        request,
        hardware={},
        budget={"device": "cpu", "bytes": int(1.5 * 2**30), "source": "user"},
        fingerprint=FINGERPRINT,
        n_train=10,
        step_headroom=0.1,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from planner.app.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("mp") / "data", n=10, size=(64, 64), seed=3)


def test_budget_too_small_fails_fast_naming_the_need(data_dir, tmp_path):
    out = tmp_path / "plan.json"
    with pytest.raises(BudgetError, match=r"smallest estimated need is \d+\.\d+ GiB"):
        make_plan(data_dir, budget_memory=64 * 2**20, backbones=["unet_small"], sizes=[64], out=out)
    assert not out.exists()  # no half-written plan


@pytest.mark.parametrize(
    ("micro_batch", "peak_gib", "overhead_gib", "says"),
    [
        (16, 3.5, 0.1, None),  # 87.5% of 4 GiB: nothing to explain
        (16, 2.0, 0.1, "reached the effective batch"),
        (4, 2.0, 0.1, "estimated training overhead"),
        (4, 2.0, 0.9, "objective preferred"),
    ],
)
def test_a_plan_under_85_percent_of_its_budget_says_why(micro_batch, peak_gib, overhead_gib, says):
    from types import SimpleNamespace

    from planner.build import _unused_reason

    gib = 2**30
    reason = _unused_reason(
        SimpleNamespace(
            micro_batch=micro_batch,
            replicas=1,
            accumulation_steps=16 // micro_batch,
            candidate=SimpleNamespace(backbone="mobilenet_v3_small"),
        ),
        int(peak_gib * gib),
        {"device": "cpu", "bytes": 4 * gib},
        16,
        int(overhead_gib * gib),
    )
    assert reason is None if says is None else says in reason


def test_a_refused_step_up_is_the_reason_a_plan_leaves_budget_unused():
    from types import SimpleNamespace

    from planner.build import _unused_reason
    from planner.search.memory_model import VerifyStep

    gib = 2**30
    refused = VerifyStep(8, 3 * gib, 3 * gib, "ok", 4 * gib, "step up refused", "4 GiB over")
    args = (
        SimpleNamespace(
            micro_batch=4,
            replicas=1,
            accumulation_steps=4,
            candidate=SimpleNamespace(backbone="mobilenet_v3_small"),
        ),
        2 * gib,
        {"device": "cpu", "bytes": 4 * gib},
    )
    assert "verified and refused: 4 GiB over" in _unused_reason(*args, 16, 0, [refused])
    assert "verified and refused" not in _unused_reason(*args, 16, 0, [])


def test_the_budget_hint_adds_the_run_overhead_as_bytes(data_dir):
    """64 MiB leaves no room: the hint is the need plus the overhead over 90%, not 20x it."""
    from planner.search import presets

    with pytest.raises(BudgetError) as info:
        make_plan(data_dir, budget_memory=64 * 2**20, backbones=["unet_small"], sizes=[64])
    err = info.value
    need = float(re.search(r"smallest estimated need is (\d+\.\d+) GiB", str(err)).group(1))
    hint = float(re.search(r"at least (\d+\.\d+) GiB", err.hint).group(1))
    overhead = presets.TRAINING_OVERHEAD_BYTES["cpu"] / 2**30
    assert hint == pytest.approx((need + overhead) / (1 - presets.HEADROOM), abs=0.01)


def _fake_children(monkeypatch, trial_peak, run_peak=None):
    """An 8 GiB CPU (fake probe) and fake children: a trial at micro-batch m peaks at
    `trial_peak(m)`, a verification run at `run_peak(m)` when given. Returns the
    function that makes a result, `trial(size, peak)`, one child process each."""
    from planner import hardware
    from planner import measure as ms
    from planner import verified_choice as vc
    from planner.trials.spec import TrialResult

    budget = {"device": "cpu", "bytes": 8 * 2**30, "source": "probe", "derivation": "fake"}
    monkeypatch.setattr(
        hardware, "probe", lambda **kw: {"budget": budget, "cpu": {"model": "fake"}, "gpus": []}
    )
    pids = iter(range(1000, 1100))

    def trial(size, peak):
        return TrialResult("ok", size, int(peak), 0.01 * size, 1.0, traces=1, child_pid=next(pids))

    monkeypatch.setattr(
        ms, "measure_each", lambda spec, **kw: [trial(m, trial_peak(m)) for m in spec.micro_batches]
    )
    # The leader's second size (planner.measure: one size first, the second before the choice).
    monkeypatch.setattr(ms, "measure_one", lambda spec, m, **kw: trial(m, trial_peak(m)))
    if run_peak is not None:
        monkeypatch.setattr(vc, "measure_one", lambda spec, m, **kw: trial(m, run_peak(m)))
    return trial


def test_the_plan_predicts_the_verification_childs_peak(
    data_dir, tmp_path, monkeypatch, second_size_needed
):
    """Every stage with fake children: the plan carries what they measured, exactly."""
    from planner import verified_choice as vc
    from planner.search import presets

    gib, mib = 2**30, 2**20
    trial = _fake_children(monkeypatch, lambda m: gib + 100 * mib * m)
    verified_peak = 2 * gib + 7  # the whole run, as the verification child measured it
    runs = []

    def fake_run(spec, size, **kw):
        runs.append(spec)
        return trial(size, verified_peak)

    monkeypatch.setattr(vc, "measure_one", fake_run)
    out = tmp_path / "plan.json"
    result = make_plan(data_dir, backbones=["unet_small"], sizes=[32], out=out)

    plan = result.plan
    assert plan.micro_batch == 16 and load_plan(out).to_dict() == plan.to_dict()
    pred, ev = plan.prediction, plan.evidence
    assert pred["verified"] is True
    assert [(s["micro_batch"], s["action"]) for s in ev["verification"]] == [(16, "accepted")]
    growth = int(verified_peak * presets.RUN_GROWTH)
    assert pred["peak_bytes"] == verified_peak + growth + pred["cache_bytes"] == _run_peak(plan)
    assert pred["run_peak_bytes"] == verified_peak and pred["run_growth_bytes"] == growth
    assert pred["growth"] is None  # no tensor peaks recorded: the constant stands in
    # The prediction is the expected peak; the bound adds the highest growth measured.
    bound = verified_peak + int(verified_peak * presets.RUN_GROWTH_BOUND) + pred["cache_bytes"]
    assert pred["bound_bytes"] == bound > pred["peak_bytes"]
    # 2.2 GiB of 8: said why (micro-batch 16 is already the effective batch).
    assert pred["budget_share"] == round(pred["peak_bytes"] / (8 * gib), 3)
    assert "reached the effective batch (16)" in pred["unused_budget_reason"]
    step = gib + 100 * mib * 16  # the trial line's train step at 16
    assert pred["train_step_peak_bytes"] == step
    assert pred["training_overhead_bytes"] == verified_peak - step
    assert pred["training_overhead_source"] == "measured by the verification run"
    # The verification child trains the plan itself, on the real dataset, streamed.
    [spec] = runs
    assert spec.target == vc.VERIFY_TARGET
    run_plan = spec.target_args["plan"]
    assert (run_plan["micro_batch"], run_plan["data"]["path"]) == (16, str(data_dir))
    assert run_plan["data"]["cache"] == "stream"
    assert spec.target_args["updates"] == presets.VERIFY_UPDATES
    trials = len(presets.TRIAL_MICRO_BATCHES)
    assert result.children == ev["children"] == trials + 1  # one child each, and verification
    assert result.traces == ev["traces"] == trials + 1


def test_a_cpu_plan_predicts_the_rise_from_the_verification_runs_tensor_peaks(
    data_dir, monkeypatch
):
    """A verification run that recorded its tensor peak per step gives the plan a curve
    (`trainer.peak`): `peak_bytes` is its value at the planned steps, and a one-epoch
    run of the same plan is expected lower, by the curve, not by a constant."""
    import math

    from planner import verified_choice as vc
    from planner.search import presets
    from planner.trials.spec import TrialResult
    from trainer.peak import expected_peak_bytes, growth_bytes

    gib, mib = 2**30, 2**20
    _fake_children(monkeypatch, lambda m: gib + 100 * mib * m)
    verified_peak = 2 * gib
    details = {"tensor_step_peak_bytes": [700 * mib, 760 * mib, 730 * mib], "micro_batches": 3}
    monkeypatch.setattr(
        vc,
        "measure_one",
        lambda spec, m, **kw: TrialResult("ok", m, verified_peak, 0.1, 1.0, details=details),
    )
    plan = make_plan(data_dir, backbones=["unet_small"], sizes=[32], use_cache=False).plan
    pred = plan.prediction
    g = pred["growth"]
    assert g["tensor_bytes"] == 760 * mib and g["verified_steps"] == 3
    assert g["base_bytes"] == verified_peak + pred["cache_bytes"]
    assert (g["per_e_fold"], g["max_steps"]) == (
        presets.GROWTH_PER_E_FOLD,
        presets.GROWTH_MAX_STEPS,
    )
    steps = pred["planned_steps"]
    assert steps == pred["epochs"] * pred["micro_batches_per_epoch"] > 3
    expected_rise = int(760 * mib * presets.GROWTH_PER_E_FOLD * math.log(min(steps, 1000) / 3))
    assert pred["run_growth_bytes"] == growth_bytes(g, steps) == expected_rise > 0
    assert pred["peak_bytes"] == verified_peak + expected_rise + pred["cache_bytes"]
    assert expected_peak_bytes(pred, steps) == pred["peak_bytes"]
    assert pred["bound_bytes"] >= pred["peak_bytes"]
    one_epoch = expected_peak_bytes(pred, pred["micro_batches_per_epoch"])
    assert g["base_bytes"] <= one_epoch < pred["peak_bytes"]
    # `fitplan plan` says so, with both lengths.
    from rich.console import Console

    from planner.app.plan_view import plan_table

    console = Console(width=300, record=True)
    console.print(plan_table(plan.to_dict()))
    text = console.export_text()
    assert f"expected over the planned {steps}, " in text
    assert f"{one_epoch / gib:.2f} GiB over one epoch" in text


def test_a_size_whose_planned_run_would_pass_the_budget_steps_down(data_dir, monkeypatch):
    """Verified within the allowed bytes (87% of 8 GiB), but with its peak all tensors and a
    steeper rise than the fitted one (0.04 an e-fold: x 1.184 at 200 train steps) the
    planned run would pass the budget: verification steps down until its expected peak
    fits."""
    from planner import verified_choice as vc
    from planner.search import presets
    from planner.trials.spec import TrialResult

    monkeypatch.setattr(presets, "GROWTH_PER_E_FOLD", 0.04)
    gib, mib = 2**30, 2**20
    _fake_children(monkeypatch, lambda m: gib + 100 * mib * m)
    peak = {m: int(0.87 * 8 * gib) - (16 - m) * int(0.3 * gib) for m in range(1, 17)}

    def run(spec, m, **kw):
        details = {"tensor_step_peak_bytes": [peak[m]], "micro_batches": 2}
        return TrialResult("ok", m, peak[m], 0.1, 1.0, details=details)

    monkeypatch.setattr(vc, "measure_one", run)
    plan = make_plan(data_dir, backbones=["unet_small"], sizes=[32], use_cache=False).plan
    ev = plan.evidence["verification"]
    assert (ev[0]["micro_batch"], ev[0]["action"]) == (16, "step down")
    assert (
        "train steps > budget" in ev[0]["reason"] and ev[0]["peak_bytes"] <= ev[0]["allowed_bytes"]
    )
    assert plan.micro_batch < 16 and ev[-1]["action"] == "accepted"
    pred = plan.prediction
    assert pred["planned_steps"] == plan.epochs * pred["micro_batches_per_epoch"] >= 200
    assert plan.prediction["peak_bytes"] <= 8 * gib


def test_the_verification_run_leaves_room_for_the_highest_growth(data_dir, monkeypatch):
    """A verified peak of 89.5% of the budget passed the user's 10% headroom, but with the
    highest long-run growth measured (`RUN_GROWTH_BOUND`) the run would pass the budget:
    verification steps down, and the accepted plan's bound stays inside the budget."""
    from planner.search import presets

    gib, mib = 2**30, 2**20
    # 16 is 89.5% of the budget; every smaller size 0.35 GiB a sample less.
    run_peak = {m: int(0.895 * 8 * gib) - (16 - m) * int(0.35 * gib) for m in range(1, 17)}
    _fake_children(monkeypatch, lambda m: gib + 100 * mib * m, run_peak.__getitem__)
    headroom = presets.verified_headroom(0.1)
    assert headroom == pytest.approx(presets.RUN_GROWTH_BOUND / (1 + presets.RUN_GROWTH_BOUND))
    assert 0.1 < headroom  # the bound, not the user's 10%, decides here
    assert presets.verified_headroom(0.2) == 0.2  # a wider user headroom is kept

    plan = make_plan(data_dir, backbones=["unet_small"], sizes=[32], use_cache=False).plan
    steps = [(s["micro_batch"], s["action"]) for s in plan.evidence["verification"]]
    assert steps[0] == (16, "step down") and plan.micro_batch < 16
    assert plan.prediction["bound_bytes"] <= 8 * gib


def test_a_verified_size_other_than_the_chosen_one_counts_its_own_train_steps():
    """A step down from 16 x 1 to 4 x 4 keeps 48 crops an epoch: 12 micro-batches instead
    of 3 (the expected rise counts train steps, `trainer.peak`), at the same time per sample."""
    from types import SimpleNamespace

    from planner.request import PlanRequest
    from planner.search.candidates import Candidate
    from planner.search.choice import Choice
    from planner.verified_choice import _at_size

    choice = Choice(
        candidate=Candidate("unet_small", (32, 32), "float32"),
        micro_batch=16,
        accumulation_steps=1,
        effective_batch=16,
        normalization="batch",
        epochs=10,
        predicted_peak_bytes=2**30,
        budget_bytes=2**33,
        allowed_bytes=2**32,
        headroom_bytes=2**32,
        step_time_s=1.6,
        epoch_time_s=4.8,
        micro_batches_per_epoch=3,
        score=1.0,
        line=None,
        evaluations=(),
        target_batch=16,
    )
    ctx = SimpleNamespace(request=PlanRequest("."), replicas=1, n_train=48, native_hw=None)
    small = _at_size(choice, 4, ctx)
    assert (small.micro_batch, small.accumulation_steps, small.micro_batches_per_epoch) == (
        4,
        4,
        12,
    )
    assert small.step_time_s == pytest.approx(0.4) and small.epoch_time_s == 4.8
    assert _at_size(choice, 16, ctx).micro_batches_per_epoch == 3


def test_a_micro_batch_that_does_not_divide_the_effective_batch_scales_the_rate(
    data_dir, monkeypatch, second_size_needed
):
    """9 fits, 16 does not: 9 x 2 accumulates to 18, not 16, so the learning rate written
    for 16 is scaled by sqrt(18 / 16) (`optimizer.lr_scaling`)."""
    from trainer.train.distribute import learning_rate_for

    gib = 2**30
    line = lambda m: 2 * gib + 0.5 * gib * m  # noqa: E731
    # the verification run: 9 -> 6.9 GiB, under 8 GiB / (1 + RUN_GROWTH_BOUND)
    _fake_children(monkeypatch, line, lambda m: line(m) + 0.4 * gib)
    plan = make_plan(data_dir, backbones=["unet_small"], sizes=[32], use_cache=False).plan
    assert 16 % plan.micro_batch != 0 and plan.effective_batch > 16
    assert (plan.optimizer.lr_scaling, plan.optimizer.reference_batch) == ("sqrt", 16)
    ratio = plan.effective_batch / 16
    assert learning_rate_for(plan) == pytest.approx(plan.optimizer.learning_rate * ratio**0.5)


@pytest.mark.slow
def test_auto_plans_measures_and_trains(data_dir, tmp_path):
    from planner.app.auto import auto_train
    from planner.search import presets

    lines = []
    result, trained = auto_train(
        data_dir,
        tmp_path / "run",
        backbones=["unet_small"],
        sizes=[32],
        budget_time_s=600,
        log=lines.append,
        max_epochs=2,  # the clock would end it: under a time budget epochs is only a cap
    )
    # Under a time budget the deadline schedule ends the run: epochs is the objective's
    # cap, the estimate stays in the prediction.
    assert result.plan.epochs == presets.DEFAULT_OBJECTIVE.max_epochs
    assert 1 <= result.plan.prediction["epochs"] <= result.plan.epochs
    plan = load_plan(tmp_path / "run" / "plan.json")
    assert plan.backbone == "unet_small" and plan.input_size == (32, 32)
    assert plan.micro_batch * plan.accumulation_steps >= 16 or plan.micro_batch >= 16
    assert plan.data.mask_values == (0, 255)
    assert plan.data.fingerprint.startswith("sha256:")
    assert plan.time_limit_s == 600
    pred, ev = plan.prediction, plan.evidence
    # The plan's peak is the verification run's, which trained the plan on the real files:
    # the training set's updates, a validation pass and a checkpoint.
    assert pred["peak_bytes"] == _run_peak(plan)
    [run] = [s for s in ev["verification"] if s["action"] == "accepted"]
    d = run["details"]
    assert d["verification_run"] is True and d["updates"] >= 2
    assert d["validation_batches"] >= 1 and d["checkpoint_bytes"] > 0
    assert pred["epoch_time_s"] >= pred["step_time_s"] * pred["micro_batches_per_epoch"]
    assert ev["children"] >= 1 and ev["planning_time_s"] > 0
    chosen = [e for e in ev["choice"]["evaluations"] if e["verdict"] == "chosen"]
    assert len(chosen) == 1
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs"] >= 1
    assert any("measuring unet_small 32x32" in line for line in lines)
    # Where the budget went: planning is in it, and the parts add up to the total.
    acct = metrics["time_account"]
    assert acct["budget_s"] == 600 and acct["origin"] == "auto_train call"
    assert acct["before_training_s"]["planning_s"] == pytest.approx(
        result.planning_time_s, abs=0.01
    )
    parts = ("setup_s", "train_steps_s", "validation_s", "epoch_end_s", "final_s", "other_s")
    spent = sum(acct[k] for k in parts) + sum(acct["before_training_s"].values())
    assert acct["total_s"] == pytest.approx(spent, abs=0.1)
    assert acct["train_steps_s"] > 0 and acct["validation_s"] > 0
    assert acct["left_s"] == pytest.approx(600 - acct["total_s"], abs=0.01)
    assert result.children == ev["children"]


def _run_peak(plan):
    """The peak behind the plan: the accepted verification run's, its growth, the cache."""
    assert plan.prediction["verified"] is True
    accepted = [s for s in plan.evidence["verification"] if s["action"] == "accepted"]
    assert [s["micro_batch"] for s in accepted] == [plan.micro_batch]
    run_peak = accepted[0]["peak_bytes"]
    return run_peak + plan.prediction["run_growth_bytes"] + plan.prediction["cache_bytes"]


@pytest.mark.parametrize("trial_mode", ["frozen", "train", None])
def test_the_verification_run_trains_in_the_plans_batchnorm_mode(monkeypatch, tmp_path, trial_mode):
    """Whatever mode the trials measured in, the run verifies the plan's own: frozen at 4."""
    from planner import verified_choice as vc
    from planner.request import PlanRequest
    from planner.search.candidates import Candidate
    from planner.search.choice import CandidateMeasurement
    from planner.trials.spec import TrialResult
    from trainer.models import BACKBONE_INFO

    # A pretrained plan needs the ImageNet file (else it plans from scratch): cached here.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("FITPLAN_OFFLINE", "1")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / BACKBONE_INFO["mobilenet_v3_small"]["pretrained_file"]).touch()
    gib = 2**30
    c = Candidate("mobilenet_v3_small", (64, 64))
    trials = (
        TrialResult("ok", 1, peak_bytes=int(1.0 * gib), step_time_s=0.1),
        TrialResult("ok", 4, peak_bytes=int(1.3 * gib), step_time_s=0.3),
    )
    calls = []

    def fake_measure_one(spec, size, **kw):
        plan = spec.target_args["plan"]
        calls.append((size, spec.normalization, plan["normalization"], plan["micro_batch"]))
        return TrialResult("ok", size, peak_bytes=int(1.25 * gib), step_time_s=0.3)

    monkeypatch.setattr(vc, "measure_one", fake_measure_one)
    m = CandidateMeasurement(c, trials=trials, normalization=trial_mode)
    # effective batch 4: no accumulation at 4, so only the BatchNorm mode decides
    ctx = _small_context(PlanRequest(".", weights="imagenet", effective_batch=4))
    # allowed = 1.5 x 0.9 = 1.35 GiB: 4 fits (1.3), 5 does not (1.4): the choice is 4.
    choice, steps = vc.choose_and_verify([m], ctx, children=set())
    # Pretrained weights: a plan at micro-batch 4 freezes BatchNorm.
    assert choice.micro_batch == 4 and choice.normalization == "frozen"
    assert calls == [(4, "frozen", "frozen", 4)]  # the plan's own mode at 4
    assert [(s.action, s.peak_bytes) for s in steps] == [("accepted", int(1.25 * gib))]
    assert choice.predicted_peak_bytes == int(1.3 * gib)  # the train step's, as measured


def test_a_plan_with_accumulation_is_verified_with_that_accumulation(monkeypatch):
    """Trials step at accumulation 1; the plan's accumulators are only in a verified peak."""
    from planner import verified_choice as vc
    from planner.request import PlanRequest
    from planner.search.candidates import Candidate
    from planner.search.choice import CandidateMeasurement
    from planner.trials.spec import TrialResult

    gib = 2**30
    trials = (
        TrialResult("ok", 1, peak_bytes=int(1.0 * gib), step_time_s=0.1),
        TrialResult("ok", 4, peak_bytes=int(1.25 * gib), step_time_s=0.3),
    )
    specs = []

    def fake_measure_one(spec, size, **kw):
        specs.append((size, spec))
        return TrialResult("ok", size, peak_bytes=int(1.29 * gib), step_time_s=0.3)

    monkeypatch.setattr(vc, "measure_one", fake_measure_one)
    m = CandidateMeasurement(Candidate("unet_small", (64, 64)), trials=trials)
    ctx = _small_context(PlanRequest(".", effective_batch=16))
    # 4 was measured by a trial, but at accumulation 1; the plan runs 4 x 4. Allowed
    # 1.35 GiB: the line puts 5 at 1.33 GiB, but accumulation adds 8 float32 copies of
    # unet_small's 1.97M parameters (0.06 GiB) to the step, so 5 does not fit and 4 does.
    choice, steps = vc.choose_and_verify([m], ctx, children=set())
    assert (choice.micro_batch, choice.accumulation_steps) == (4, 4)
    [(size, spec)] = specs
    assert size == 4 and spec.target_args["plan"]["accumulation_steps"] == 4
    assert spec.target_args["updates"] >= 2  # each update is 4 micro-batches
    assert [(s.action, s.peak_bytes) for s in steps] == [("accepted", int(1.29 * gib))]


def test_a_size_between_is_measured_when_the_second_trial_size_runs_out_of_memory():
    from planner.measure import size_between as _size_between
    from planner.trials.spec import TrialResult

    ok1 = TrialResult("ok", 1, peak_bytes=10)
    assert _size_between([ok1, TrialResult("oom", 4, peak_bytes=30)]) == 2
    assert _size_between([ok1, TrialResult("oom", 8)]) == 4
    assert _size_between([ok1, TrialResult("oom", 2)]) is None  # nothing in between
    assert _size_between([ok1, TrialResult("timeout", 4)]) is None  # slow, not too big
    assert _size_between([ok1, TrialResult("ok", 4, peak_bytes=20)]) is None  # a line
    assert _size_between([TrialResult("oom", 1)]) is None  # nothing fits


def test_verification_steps_up_when_the_measured_run_leaves_the_budget_unused(monkeypatch):
    """The choice held the step to budget - headroom - an overhead estimate; once the run is
    measured well below the budget, one larger size is verified and planned (issue 13, 3)."""
    from planner import verified_choice as vc
    from planner.request import PlanRequest
    from planner.search.candidates import Candidate
    from planner.search.choice import CandidateMeasurement
    from planner.trials.spec import TrialResult

    gib = 2**30
    trials = (
        TrialResult("ok", 1, peak_bytes=int(0.30 * gib), step_time_s=0.1),
        TrialResult("ok", 4, peak_bytes=int(0.60 * gib), step_time_s=0.3),
    )
    sizes = []

    def fake_measure_one(spec, size, **kw):  # the real run: 0.2 GiB + 0.1 GiB per sample
        sizes.append(size)
        return TrialResult("ok", size, peak_bytes=int((0.2 + 0.1 * size) * gib), step_time_s=0.3)

    monkeypatch.setattr(vc, "measure_one", fake_measure_one)
    m = CandidateMeasurement(Candidate("unet_small", (64, 64)), trials=trials)
    ctx = _small_context(PlanRequest(".", effective_batch=16))
    # step_headroom 0.1 + the 0.5 GiB CPU overhead estimate: the choice is 4 (0.6 GiB step).
    ctx = dataclasses.replace(ctx, step_headroom=0.1 + 0.5 / 1.5)
    choice, steps = vc.choose_and_verify([m], ctx, children=set())
    assert len(sizes) == 2 and sizes[0] < sizes[1]  # the choice, then one step up
    assert [s.action for s in steps] == ["stepped up", "accepted"]
    # allowed 1.35 GiB: 0.2 + 0.1 x 11 = 1.3 fits, 12 would be 1.4.
    assert choice.micro_batch == 11 == sizes[1]
    assert steps[-1].peak_bytes == int(1.3 * gib)
