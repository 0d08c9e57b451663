"""A trial child started ahead (`planner.trials.spare`): real child processes, fault
targets that never import TensorFlow, the spare's imports swapped for a light module."""

from __future__ import annotations

import os

import pytest

from planner.trials import spare
from planner.trials.trial import TrialSpec, run_trial

TARGET = "tests.planner.fault_targets:fake_measure"


@pytest.fixture
def light(monkeypatch):
    """Spares for the fake target, importing `json` instead of TensorFlow."""
    monkeypatch.setattr(spare, "PRELOAD_MODULES", ("json",))
    monkeypatch.setattr(spare, "START_FOR", {TARGET})
    monkeypatch.setattr(spare, "TAKE_FOR", {TARGET})
    yield
    spare.discard()


def _spec(mb: int = 1) -> TrialSpec:
    return TrialSpec("unet_small", (64, 64), (mb,), target=TARGET, target_args={"a": 10, "b": 1})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is not alive
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_the_next_trial_runs_in_the_spare_started_during_the_first(light):
    with spare.spare_children():
        (first,) = run_trial(_spec(1), timeout_s=60)
        waiting = spare._state["proc"]
        assert waiting is not None and waiting.pid != first.child_pid
        (second,) = run_trial(_spec(2), timeout_s=60)
        left = spare._state["proc"]  # the second child's first step started another
    assert "started_ahead" not in first.details
    assert second.child_pid == waiting.pid and second.details["started_ahead"] is True
    # The spare measured what a fresh child measures.
    assert (second.status, second.peak_bytes) == ("ok", 12)
    # Leaving planning killed the unused one.
    assert left is not None and not _alive(left.pid) and spare._state["proc"] is None


def test_no_spare_outside_planning_on_a_gpu_or_for_other_targets(light, monkeypatch):
    run_trial(_spec(), timeout_s=60)  # outside spare_children()
    assert spare._state["proc"] is None
    with spare.spare_children():
        gpu = TrialSpec("unet_small", (64, 64), (1,), device="gpu", target=TARGET)
        assert not spare.start(gpu, ["true"], {}, None)
        other = TrialSpec("unet_small", (64, 64), (1,), target="tests.planner.fault_targets:x")
        assert not spare.start(other, ["true"], {}, None)
        monkeypatch.setattr(spare, "SPARE_RESERVE_BYTES", 1 << 60)  # no memory to spare
        run_trial(_spec(), timeout_s=60)
        assert spare._state["proc"] is None


def test_a_spare_started_under_another_environment_is_not_used(light, monkeypatch):
    with spare.spare_children():
        run_trial(_spec(), timeout_s=60)
        waiting = spare._state["proc"]
        monkeypatch.setenv("MALLOC_ARENA_MAX", "7")  # changes what a child measures
        (r,) = run_trial(_spec(), timeout_s=60)
    assert r.child_pid != waiting.pid and "started_ahead" not in r.details
    assert not _alive(waiting.pid)


def test_a_spare_whose_parent_closes_the_pipe_exits_on_its_own(light):
    """A spare no one takes (its parent died) reads end-of-file and exits 0."""
    with spare.spare_children():
        run_trial(_spec(), timeout_s=60)
        proc = spare._state["proc"]
        spare._state["proc"] = None  # as if the parent forgot it
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def test_a_spare_started_before_the_first_trial_runs_it(light, monkeypatch):
    """`start_spare` as planning begins: the first trial finds the child waiting."""
    from planner.trials import trial

    monkeypatch.setattr(spare, "START_EARLY", True)
    with spare.spare_children():
        assert not trial.start_spare("gpu", None, target=TARGET)  # never on a GPU
        assert trial.start_spare("cpu", None, target=TARGET)
        waiting = spare._state["proc"]
        (first,) = run_trial(_spec(1), timeout_s=60)
    assert first.child_pid == waiting.pid and first.details["started_ahead"] is True
    assert (first.status, first.peak_bytes) == ("ok", 11)
    monkeypatch.setattr(spare, "START_EARLY", False)
    with spare.spare_children():
        assert not trial.start_spare("cpu", None, target=TARGET)


def test_make_plan_starts_a_spare_first_and_kills_it_when_unused(light, monkeypatch, tmp_path):
    """Planning starts one child ahead right after the probe; with every trial a fake
    (nothing takes it) it is killed when planning ends."""
    from planner import hardware
    from planner.app.demo import make_demo_dataset
    from planner.make_plan import make_plan
    from planner.trials import trial
    from planner.trials.spec import DEFAULT_TARGET, TrialResult

    monkeypatch.setattr(spare, "START_EARLY", True)
    monkeypatch.setattr(spare, "START_FOR", {TARGET, DEFAULT_TARGET})
    budget = {"device": "cpu", "bytes": 8 * 2**30, "source": "probe", "derivation": "fake"}
    monkeypatch.setattr(
        hardware, "probe", lambda **kw: {"budget": budget, "cpu": {"model": "fake"}, "gpus": []}
    )
    started = []
    real_start = spare.start_for

    def record(*args, **kw):
        ok = real_start(*args, **kw)
        started.append((args[0], args[1], ok, spare._state["proc"]))
        return ok

    monkeypatch.setattr(spare, "start_for", record)

    def fake_run_trial(spec, *, timeout_s, memory_limit_bytes=None, on_event=None):
        assert started, "the spare starts before the first trial"
        mb = spec.micro_batches[0]
        return [TrialResult("ok", mb, 2**30 + mb * 2**20, 0.01 * mb, 1.0, traces=1, child_pid=1)]

    monkeypatch.setattr(trial, "run_trial", fake_run_trial)
    data = make_demo_dataset(tmp_path / "data", n=8, size=(64, 64), seed=0)
    make_plan(data, backbones=["unet_small"], sizes=[64], use_cache=False)
    [(device, target, ok, proc)] = started
    assert (device, target, ok) == ("cpu", DEFAULT_TARGET, True)
    assert not _alive(proc.pid) and spare._state["proc"] is None
