"""Trials in real child processes: every way a child can fail becomes a result, and the caller goes on.

The fault targets (tests/planner/fault_targets.py) never import TensorFlow, so each
child here costs well under a second; one slow test measures a real model.
"""

from __future__ import annotations

import os
import time

import pytest

from planner.trials.trial import TrialResult, TrialSpec, measure_each, measure_one, run_trial
from trainer.errors import PlanError

FAULTS = "tests.planner.fault_targets:"


def spec(target: str, sizes=(1, 2, 4), **args) -> TrialSpec:
    return TrialSpec("unet_small", (64, 64), tuple(sizes), target=FAULTS + target, target_args=args)


@pytest.mark.parametrize(
    ("target", "status", "words"),
    [
        ("raise_memory_error", "oom", ["MemoryError", "at micro-batch 1"]),
        ("raise_resource_exhausted", "oom", ["ResourceExhaustedError", "OOM when allocating"]),
        ("bad_alloc_abort", "oom", ["std::bad_alloc", "at micro-batch 1"]),
        ("segfault", "error", ["crashed with SIGSEGV", "at micro-batch 1"]),
        ("garbage", "error", ["no result lines", "not a result line"]),
        ("malformed_marker", "error", ["no result lines", "not json"]),
        ("raise_value_error", "error", ["ValueError", "incompatible"]),
        ("no_such_function", "error", ["AttributeError", "no_such_function"]),
    ],
)
def test_a_failing_child_becomes_one_result(target, status, words):
    results = run_trial(spec(target), timeout_s=60)
    assert [r.status for r in results] == [status]
    r = results[0]
    assert r.micro_batch == 1 and r.child_pid is not None
    for w in words:
        assert w in r.reason, r.reason


@pytest.mark.parametrize(("measure", "children"), [(run_trial, 1), (measure_each, 4)])
def test_sizes_are_measured_ascending_and_stop_at_the_first_oom(measure, children):
    """`run_trial`: one child for all sizes; `measure_each`: a fresh child per size."""
    results = measure(
        spec("fake_measure", (16, 1, 4, 2, 8), ceiling=5, a=1000, b=100), timeout_s=60
    )
    assert [(r.micro_batch, r.status) for r in results] == [
        (1, "ok"),
        (2, "ok"),
        (4, "ok"),
        (8, "oom"),
    ]
    assert [r.peak_bytes for r in results[:3]] == [1100, 1200, 1400]
    assert "fake ceiling 5" in results[-1].reason
    assert len({r.child_pid for r in results}) == children


def test_oom_killer_after_a_good_size_keeps_the_good_result():
    results = run_trial(spec("ok_then_sigkill", (1, 4, 8)), timeout_s=60)
    assert [(r.micro_batch, r.status) for r in results] == [(1, "ok"), (4, "oom")]
    assert results[0].peak_bytes == 1000
    assert "SIGKILL" in results[1].reason and "at micro-batch 4" in results[1].reason


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return any(line.split()[1] == "Z" for line in fh if line.startswith("State:"))
    except FileNotFoundError:
        return True


def test_hang_times_out_and_the_whole_process_group_dies(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    results = run_trial(spec("hang", (2, 4), pid_file=str(pid_file)), timeout_s=3)
    assert [(r.micro_batch, r.status) for r in results] == [(2, "timeout")]
    assert "time limit of 3 s" in results[0].reason and "at micro-batch 2" in results[0].reason
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(grandchild), "the grandchild survived the process-group kill"


def test_soft_memory_limit_reports_oom_with_the_peak():
    limit = 300 * 2**20
    results = run_trial(spec("grow_until_limit", (1,)), timeout_s=60, memory_limit_bytes=limit)
    assert [r.status for r in results] == ["oom"]
    assert results[0].reason.startswith("soft OOM")
    assert results[0].peak_bytes > limit


def test_the_caller_goes_on_after_a_crash():
    first = run_trial(spec("segfault"), timeout_s=60)
    second = run_trial(spec("fake_measure", (1, 2)), timeout_s=60)
    assert first[0].status == "error"
    assert [r.status for r in second] == ["ok", "ok"]
    assert first[0].child_pid != second[0].child_pid


def test_events_reach_the_callback():
    events = []
    run_trial(spec("fake_measure", (1, 2)), timeout_s=60, on_event=events.append)
    assert [e["event"] for e in events] == ["ready", "start", "result", "start", "result", "done"]


def test_a_bad_plan_is_refused_before_any_child_starts():
    with pytest.raises(PlanError, match="input_size"):
        run_trial(TrialSpec("unet_small", (100, 100), (1,)), timeout_s=5)


def test_spec_sorts_sizes_and_refuses_bad_ones():
    assert TrialSpec("unet_small", (64, 64), (4, 1, 4)).micro_batches == (1, 4)
    with pytest.raises(ValueError, match="micro_batches"):
        TrialSpec("unet_small", (64, 64), (0, 2))
    with pytest.raises(ValueError, match="device"):
        TrialSpec("unet_small", (64, 64), (1,), device="tpu")


def test_result_round_trips_through_a_dict():
    r = TrialResult("ok", 4, 123, 0.5, 9.0, "", 1, 42, {"peak_source": "vmhwm"})
    assert TrialResult.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError, match="status"):
        TrialResult("maybe", 1)


@pytest.mark.slow
def test_real_unet_small_on_cpu(tmp_path, monkeypatch):
    """One real child: unet_small at 64x64, micro-batches 1 and 2, float32 (~35 s here).

    Started from a folder holding its own `planner/` and `trainer/` packages, as when a
    user runs `fitplan plan` there: the child must still build and measure fitplan's model.
    """
    _shadowing_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    results = run_trial(
        TrialSpec("unet_small", (64, 64), (1, 2), warmup_steps=2, measured_steps=2), timeout_s=300
    )
    assert [(r.micro_batch, r.status) for r in results] == [(1, "ok"), (2, "ok")], results
    one, two = results
    assert one.child_pid == two.child_pid
    assert one.traces >= 1 and one.trace_time_s > one.step_time_s
    assert 300 * 2**20 < one.peak_bytes < 8 * 2**30  # TF alone is ~0.5 GiB RSS
    assert two.peak_bytes > one.peak_bytes - 100 * 2**20
    expected_source = "vmhwm" if os.access("/proc/self/clear_refs", os.W_OK) else "rss_poll"
    assert one.details["peak_source"] == expected_source


def test_measure_one_runs_one_size_in_its_own_child():
    r = measure_one(spec("fake_measure", (1, 4, 8), a=10, b=1), 6, timeout_s=60)
    assert (r.status, r.micro_batch, r.peak_bytes) == ("ok", 6, 16)


def _shadowing_folder(root) -> None:
    """A working directory holding its own `planner` and `trainer` packages."""
    for name in ("planner", "trainer"):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text('raise RuntimeError("shadow")\n')


def test_the_working_directory_cannot_shadow_fitplan_in_the_child(tmp_path, monkeypatch):
    """`fitplan plan` in a folder with its own `planner/` and `trainer/`: the child imports ours."""
    _shadowing_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    results = run_trial(spec("fake_measure", (1, 2)), timeout_s=60)
    assert [(r.status, r.micro_batch) for r in results] == [("ok", 1), ("ok", 2)], results
