"""Planning in about a minute (issue 13, 2): measure only what can win, reuse what was measured,
stay inside the --auto planning cap. Fake children (`run_trial`), no TensorFlow."""

import dataclasses

import pytest

from planner import hardware
from planner.app.plan_view import plan_table
from planner.make_plan import make_plan, plan_from_request
from planner.request import PlanRequest
from planner.search import presets
from planner.trials import trial
from planner.trials.cache import VERIFY_TARGET
from planner.trials.spec import TrialResult

GIB, MIB = 2**30, 2**20


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from planner.app.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("speed") / "data", n=8, size=(64, 64), seed=0)


@pytest.fixture
def children(monkeypatch):
    """Fake children: an 8 GiB CPU budget; every trial and verification run is recorded.

    `children.wall` is what each child reports as its wall time; `children.clock` advances
    by it per child (for the --auto cap); `children.fail` names backbones whose
    verification runs out of memory.
    """
    budget = {"device": "cpu", "bytes": 8 * GIB, "source": "probe", "derivation": "fake"}
    monkeypatch.setattr(
        hardware, "probe", lambda **kw: {"budget": budget, "cpu": {"model": "fake"}, "gpus": []}
    )

    class Children:
        calls: list = []
        wall = 1.0
        now = 0.0
        step_s = 0.001  # a train step's seconds per sample
        fail: set = set()

        def clock(self):
            return self.now

    kids = Children()
    kids.calls = []
    kids.verify_updates = []
    pids = iter(range(5000, 6000))

    def fake_run_trial(spec, *, timeout_s, memory_limit_bytes=None, on_event=None):
        mb = spec.micro_batches[0]
        kids.calls.append((spec.backbone, mb, spec.target))
        kids.now += kids.wall
        if spec.target == VERIFY_TARGET and spec.backbone in kids.fail:
            return [TrialResult("oom", mb, reason="fake", child_pid=next(pids))]
        peak = (2 * GIB if spec.target else GIB) + 50 * MIB * mb
        details = {"child_wall_s": kids.wall}
        if spec.target == VERIFY_TARGET:  # the first step traces; the others vary
            kids.verify_updates.append(spec.target_args["updates"])
            step = kids.step_s * mb
            steps = [30.0, 2 * step, step, step, 0.5 * step][: max(2, spec.target_args["updates"])]
            details.update(
                micro_batches=len(steps),
                phases_s={"train_steps_s": sum(steps[1:])},
                train_step_s=steps,
            )
        r = TrialResult("ok", mb, peak, kids.step_s * mb, 1.0, traces=1, child_pid=next(pids))
        return [dataclasses.replace(r, details=details)]

    monkeypatch.setattr(trial, "run_trial", fake_run_trial)
    return kids


def _trials(kids, backbone):
    """The trial sizes measured for `backbone`, ascending (one size first, the leader's
    second before the choice)."""
    return sorted(mb for b, mb, target in kids.calls if b == backbone and target is None)


def test_a_candidate_that_cannot_win_is_not_measured_and_says_so(data_dir, children):
    result = make_plan(data_dir, backbones=["unet_small", "efficientnet_b0"], sizes=[64])
    # efficientnet_b0 (prior 0.95) is measured first and fits: unet_small (0.64) cannot beat it.
    assert result.plan.backbone == "efficientnet_b0"
    # One size: micro-batch 16 fits and leads even on the line through zero and size 4
    # (measure_order.second_size_moot_above).
    assert _trials(children, "efficientnet_b0") == [4]
    assert _trials(children, "unet_small") == []
    ev = {e["backbone"]: e for e in result.plan.evidence["choice"]["evaluations"]}
    assert ev["unet_small"]["reason"].startswith(
        "not measured: cannot beat efficientnet_b0 64x64 float32 (score at most 0.520 < 0.772)"
    )
    assert "unet_small" in next(iter(result.plan.evidence["planning"]["not_measured"]))
    # The chosen plan is still measured and verified.
    assert result.plan.prediction["verified"] is True


def _table(plan) -> str:
    from rich.console import Console

    console = Console(width=300, record=True)
    console.print(plan_table(plan.to_dict()))
    return console.export_text()


def test_the_table_says_never_measured(data_dir, children):
    result = make_plan(data_dir, backbones=["unet_small", "efficientnet_b0"], sizes=[64])
    table = _table(result.plan)
    assert "not measured: cannot beat efficientnet_b0" in table
    # The expected peak and, beside it, the bound a long run stays under.
    bound = result.plan.prediction["bound_bytes"] / GIB
    assert f"at most {bound:.2f} GiB" in table


def test_skipped_candidates_are_measured_when_the_winner_fails_verification(data_dir, children):
    children.fail = {"efficientnet_b0"}
    result = make_plan(data_dir, backbones=["unet_small", "efficientnet_b0"], sizes=[64])
    assert result.plan.backbone == "unet_small"
    assert _trials(children, "unet_small") == [4]  # measured after all (one size: moot)


def test_planning_again_reuses_trials_and_verification(data_dir, children):
    kw = dict(backbones=["unet_small"], sizes=[64])
    cold = make_plan(data_dir, **kw)
    n = len(children.calls)
    assert n >= 2 and cold.children == n  # a trial and the verification run
    warm = make_plan(data_dir, **kw)
    assert len(children.calls) == n and warm.children == 0  # nothing measured again
    planning = warm.plan.evidence["planning"]
    assert planning["trial_points_cached"] == planning["trial_points"] == 1
    assert planning["verification_cached"] is True
    assert warm.plan.micro_batch == cold.plan.micro_batch
    assert warm.plan.prediction["peak_bytes"] == cold.plan.prediction["peak_bytes"]
    trials = warm.plan.evidence["trials"][0]["results"]
    assert all(r["details"].get("cached") or r["details"].get("estimated") for r in trials)
    assert sum(1 for r in trials if r["details"].get("cached")) == 1
    assert "1 of 1 trial points cached, verification cached" in _table(warm.plan)
    # --no-cache measures again.
    fresh = make_plan(data_dir, use_cache=False, **kw)
    assert len(children.calls) == 2 * n and fresh.children == n
    assert fresh.plan.evidence["planning"]["trial_points_cached"] == 0


def test_auto_stays_in_its_planning_cap(data_dir, children):
    """10 minutes: 60 s of planning. Children take 40 s: with 20 minutes (a 120 s cap) one
    trial size, the analytic slope for the second point, the verification run; the other
    candidate is skipped by the cap."""
    children.wall = 40.0
    request = PlanRequest(
        data_dir,
        backbones=["efficientnet_b0", "efficientnetv2_b0"],  # equal priors: neither can
        sizes=[64],  # be skipped as unable to win
        budget_time_s=1200.0,
        count_planning_time=True,
    )
    result = plan_from_request(request, clock=children.clock)
    measured = [b for b, _, t in children.calls if t is None]
    assert len(measured) == 1, children.calls  # one trial child
    assert [t for _, _, t in children.calls][-1] == VERIFY_TARGET  # and the verification
    planning = result.plan.evidence["planning"]
    assert planning["cap_s"] == 120.0 and planning["trial_points_estimated"] == 1
    (reason,) = planning["not_measured"].values()
    assert reason.startswith("not measured: the planning cap (120 s, 10% of the time budget)")
    trials = result.plan.evidence["trials"][0]["results"]
    assert [r["micro_batch"] for r in trials] == list(presets.TRIAL_MICRO_BATCHES)
    assert trials[0]["details"]["estimated"]
    assert "time_from_verification" not in planning  # a measured trial gave the time


@pytest.mark.parametrize("step_s", [0.001, 20.0])
def test_auto_with_no_room_for_a_trial_plans_from_the_estimate_timed_by_verification(
    data_dir, children, step_s
):
    """10 minutes (a 60 s cap), a child guessed at 25 s: no trial child fits beside the
    verification run, so the plan comes from the analytic estimate and the CPU guess, the
    verification run is the only child, and its timed step replaces the guess's step time
    (a fast machine, and a slow one where the guess would have planned hundreds of epochs)."""
    children.wall, children.step_s = 40.0, step_s
    request = PlanRequest(
        data_dir,
        backbones=["efficientnet_b0"],
        sizes=[64],
        budget_time_s=600.0,
        count_planning_time=True,
    )
    result = plan_from_request(request, clock=children.clock)
    assert [t for _, _, t in children.calls] == [VERIFY_TARGET]  # the verification only
    plan = result.plan
    trials = plan.evidence["trials"][0]["results"]
    assert all("not measured: the planning cap (60 s" in r["details"]["estimated"] for r in trials)
    # Five micro-batches (accumulation 1): the median of the four after the trace.
    assert children.verify_updates == [presets.VERIFY_TIMED_MICRO_BATCHES]
    timed = plan.evidence["planning"]["time_from_verification"]
    assert timed["verified_step_time_s"] == pytest.approx(step_s * plan.micro_batch, rel=1e-3)
    assert plan.prediction["step_time_s"] == pytest.approx(timed["verified_step_time_s"], rel=1e-3)
    per_epoch = plan.prediction["epoch_time_s"]
    assert per_epoch >= plan.prediction["micro_batches_per_epoch"] * timed["verified_step_time_s"]
    if step_s > 1:  # 20 s per sample: a few epochs at most, not the guess's hundreds
        assert plan.prediction["epochs"] < presets.DEFAULT_OBJECTIVE.min_epochs


def test_auto_past_its_cap_stops_at_a_leader_even_one_short_of_min_epochs(data_dir, children):
    """A slow machine: no candidate trains `min_epochs` in 20 minutes. Once one is
    measured and feasible, the cap holds: the next candidate is not measured (before,
    "a plan needs one measured candidate" measured it anyway)."""
    children.wall, children.step_s = 40.0, 20.0  # 20 s per sample: a few epochs at most
    request = PlanRequest(
        data_dir,
        backbones=["efficientnet_b0", "efficientnetv2_b0"],
        sizes=[64],
        budget_time_s=1200.0,  # a 120 s cap: room for one trial child
        count_planning_time=True,
    )
    result = plan_from_request(request, clock=children.clock)
    chosen = [e for e in result.plan.evidence["choice"]["evaluations"] if e["verdict"] == "chosen"]
    assert chosen[0]["epochs_possible"] < presets.DEFAULT_OBJECTIVE.min_epochs
    assert len([b for b, _, t in children.calls if t is None]) == 1, children.calls
    (reason,) = result.plan.evidence["planning"]["not_measured"].values()
    assert reason.startswith("not measured: the planning cap")


def test_auto_verification_timeout_follows_the_planning_time_left():
    from planner.request import PlanContext

    req = PlanRequest(".", budget_time_s=3600.0, count_planning_time=True)
    ctx = PlanContext(req, {}, {"device": "cpu", "bytes": GIB}, {}, 1, 0.1, clock=lambda: 100.0)
    assert ctx.planning_left() == pytest.approx(260.0)  # 10% of an hour, 100 s spent
    assert ctx.verify_timeout_s() == pytest.approx(260.0)
    late = dataclasses.replace(ctx, clock=lambda: 350.0)
    assert late.verify_timeout_s() == presets.VERIFY_MIN_TIMEOUT_S  # never cut below
    plain = dataclasses.replace(ctx, request=dataclasses.replace(req, count_planning_time=False))
    assert plain.planning_left() is None and plain.verify_timeout_s() == presets.VERIFY_TIMEOUT_S


@pytest.mark.slow
def test_real_children_planning_again_starts_none(data_dir):
    """Real trial and verification children (unet_small, 64x64): the second plan of the
    same data on the same machine comes from the cache (--no-cache: tested with fakes)."""
    kw = dict(budget_memory=4 * GIB, backbones=["unet_small"], sizes=[64])
    cold = make_plan(data_dir, **kw)
    warm = make_plan(data_dir, **kw)
    assert cold.children >= 2 and warm.children == 0
    assert warm.plan.evidence["planning"]["verification_cached"] is True
    assert warm.plan.micro_batch == cold.plan.micro_batch
    assert warm.plan.prediction["peak_bytes"] == cold.plan.prediction["peak_bytes"]
