"""The measurement cache (planner.trials.cache): its key, its memory-limit rule, its files."""

import dataclasses
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from planner.trials import cache as tc
from planner.trials import trial
from planner.trials.spec import TrialResult, TrialSpec

GIB = 2**30
HW = {
    "cpu": {"model": "AMD EPYC", "flags": {"avx2": True, "avx512f": False}, "usable_cpus": 2},
    "gpus": [{"name": "H100", "uuid": "GPU-1", "driver_version": "550.1"}],
}
SPEC = TrialSpec("unet_small", (64, 64), (1,))
OK = TrialResult("ok", 1, peak_bytes=GIB, step_time_s=0.5, traces=1, child_pid=123)


def _cache(tmp_path, hw=HW, device="cpu"):
    return tc.TrialCache(tc.environment_key(hw, device), root=tmp_path)


def _path(c, spec=SPEC, mb=1):
    return c.path_for(c.key_inputs(spec, mb))


def test_cache_dir_follows_the_variable_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("FITPLAN_CACHE_DIR", str(tmp_path / "mine"))
    assert tc.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("FITPLAN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tc.cache_dir() == tmp_path / "xdg" / "fitplan"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tc.cache_dir() == tmp_path / "home" / ".cache" / "fitplan"


@pytest.mark.parametrize(
    "change",
    [
        {"backbone": "mobilenet_v3_small"},
        {"input_size": (96, 64)},
        {"precision": "mixed_bfloat16"},
        {"normalization": "frozen"},
        {"num_classes": 3},
        {"accumulation_steps": 4},
        {"warmup_steps": 4},
        {"measured_steps": 6},
        {"device": "gpu"},
        {"seed": 1},
    ],
)
def test_the_key_changes_with_each_spec_field(tmp_path, change):
    c = _cache(tmp_path)
    assert _path(c, dataclasses.replace(SPEC, **change)) != _path(c)


def test_the_key_changes_with_the_micro_batch(tmp_path):
    c = _cache(tmp_path)
    assert _path(c, mb=2) != _path(c, mb=1)


@pytest.mark.parametrize(
    "what", ["fitplan", "tensorflow", "keras", "python", "code", "cpu", "flags", "threads", "env"]
)
def test_the_key_changes_with_each_part_of_the_environment(tmp_path, monkeypatch, what):
    before = _path(_cache(tmp_path))
    hw = json.loads(json.dumps(HW))
    if what in ("fitplan", "tensorflow", "keras"):
        real = tc._version
        monkeypatch.setattr(tc, "_version", lambda d: "9.9" if d == what else real(d))
    elif what == "python":
        monkeypatch.setattr(tc.platform, "python_version", lambda: "3.99.0")
    elif what == "code":
        monkeypatch.setattr(tc, "code_digest", lambda: "another")
    elif what == "cpu":
        hw["cpu"]["model"] = "Intel Xeon"
    elif what == "flags":
        hw["cpu"]["flags"]["avx512f"] = True
    elif what == "threads":
        hw["cpu"]["usable_cpus"] = 4
    else:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert _path(_cache(tmp_path, hw)) != before


@pytest.mark.parametrize("field", ["name", "uuid", "driver_version"])
def test_a_gpu_trial_key_changes_with_the_gpu(tmp_path, field):
    spec = dataclasses.replace(SPEC, device="gpu")
    before = _path(_cache(tmp_path, device="gpu"), spec)
    hw = json.loads(json.dumps(HW))
    hw["gpus"][0][field] = "other"
    assert _path(_cache(tmp_path, hw, device="gpu"), spec) != before
    # A CPU trial does not depend on the GPUs.
    assert _path(_cache(tmp_path, hw)) == _path(_cache(tmp_path))


def test_the_verification_key_follows_the_dataset_and_the_validation_files(tmp_path):
    val = tmp_path / "val"
    val.mkdir()
    (val / "a.png").write_bytes(b"12")
    plan = {
        "backbone": "unet_small",
        "data": {"fingerprint": "sha256:a", "val": str(val)},
        "target": {"device": "cpu", "budget_bytes": 4 * GIB},
    }
    spec = dataclasses.replace(
        SPEC, target=tc.VERIFY_TARGET, target_args={"plan": plan, "updates": 2}
    )
    c = _cache(tmp_path / "cache")
    first = _path(c, spec)
    # The plan's prediction, evidence and length do not change the run: not in the key.
    noted = {**plan, "evidence": {"planning_time_s": 3}, "epochs": 7, "time_limit_s": 60.0}
    noted["target"] = {"device": "cpu", "budget_bytes": 5 * GIB}  # the limit rule's part
    assert _path(c, dataclasses.replace(spec, target_args={"plan": noted, "updates": 2})) == first
    other = {**plan, "data": {**plan["data"], "fingerprint": "sha256:b"}}
    assert _path(c, dataclasses.replace(spec, target_args={"plan": other, "updates": 2})) != first
    (val / "a.png").write_bytes(b"123")  # a validation file changed
    assert _path(c, spec) != first


def test_a_hit_returns_the_stored_result_marked_cached(tmp_path):
    c = _cache(tmp_path)
    assert c.get(SPEC, 1, 4 * GIB) is None
    assert c.put(SPEC, 1, 4 * GIB, OK)
    hit = c.get(SPEC, 1, 4 * GIB)
    assert (hit.status, hit.peak_bytes, hit.step_time_s, hit.traces) == ("ok", GIB, 0.5, 1)
    assert hit.details["cached"] is True and hit.child_pid is None
    # Another environment (a new TensorFlow, say) does not see it.
    assert _cache(tmp_path, {**HW, "cpu": {"model": "other"}}).get(SPEC, 1, 4 * GIB) is None


def test_the_memory_limit_rule(tmp_path):
    c = _cache(tmp_path)
    c.put(SPEC, 1, 4 * GIB, OK)  # peak 1 GiB, measured under 4 GiB
    assert c.get(SPEC, 1, 8 * GIB).status == "ok"  # any limit above its peak
    under = c.get(SPEC, 1, GIB // 2)
    assert under.status == "oom" and "exceeds the memory limit" in under.reason
    oom = TrialResult("oom", 4, peak_bytes=2 * GIB, reason="soft limit")
    c.put(SPEC, 4, 2 * GIB, oom)
    assert c.get(SPEC, 4, 2 * GIB).status == "oom"
    assert c.get(SPEC, 4, GIB).status == "oom"  # a smaller limit: out of memory too
    assert c.get(SPEC, 4, 3 * GIB) is None  # a larger one: unknown, measure again


def test_timeouts_errors_and_fault_targets_are_never_cached(tmp_path):
    c = _cache(tmp_path)
    assert not c.put(SPEC, 1, GIB, TrialResult("timeout", 1, reason="slow"))
    assert not c.put(SPEC, 1, GIB, TrialResult("error", 1, reason="crash"))
    fault = dataclasses.replace(SPEC, target="tests.planner.fault_targets:crash")
    assert not c.put(fault, 1, GIB, OK) and c.get(fault, 1, GIB) is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ["", "{", "not json", "[]", '{"inputs": 1}', "\x00\xff"])
def test_a_corrupt_or_partial_file_is_a_miss_and_is_overwritten(tmp_path, text):
    c = _cache(tmp_path)
    path = _path(c)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    assert c.get(SPEC, 1, GIB) is None
    assert c.put(SPEC, 1, 4 * GIB, OK)
    assert c.get(SPEC, 1, 4 * GIB).peak_bytes == GIB


def test_two_writers_at_once_leave_a_readable_entry(tmp_path):
    c = _cache(tmp_path)
    errors = []

    def write(i):
        try:
            for k in range(30):
                c.put(SPEC, 1, 4 * GIB, dataclasses.replace(OK, peak_bytes=GIB + i * 100 + k))
                got = c.get(SPEC, 1, 4 * GIB)
                assert got is None or got.status == "ok"
        except Exception as exc:  # noqa: BLE001 - any exception fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert c.get(SPEC, 1, 4 * GIB).status == "ok"
    assert [p.name for p in tmp_path.iterdir()] == [_path(c).name]  # no temporary left


_WRITER = """
import dataclasses, sys
from planner.trials import cache as tc
from planner.trials.spec import TrialResult, TrialSpec
c = tc.TrialCache({"machine": "test"}, root=sys.argv[1])
spec = TrialSpec("unet_small", (64, 64), (1,))
for k in range(60):
    c.put(spec, 1, 2**32, TrialResult("ok", 1, peak_bytes=2**30 + k, step_time_s=0.5))
    r = c.get(spec, 1, 2**32)
    assert r is None or r.status == "ok", r
print("done")
"""


def test_two_planner_processes_writing_the_same_key(tmp_path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        for _ in range(2)
    ]
    for p in procs:
        out, errs = p.communicate(timeout=60)
        assert p.returncode == 0 and out.strip() == "done", errs[-2000:]
    c = tc.TrialCache({"machine": "test"}, root=tmp_path)
    assert c.get(SPEC, 1, 2**32).status == "ok"


def test_measure_one_reuses_a_cached_point_without_a_child(tmp_path, monkeypatch):
    calls = []

    def fake_run_trial(spec, *, timeout_s, memory_limit_bytes=None, on_event=None):
        calls.append(spec.micro_batches)
        return [dataclasses.replace(OK, micro_batch=spec.micro_batches[0])]

    monkeypatch.setattr(trial, "run_trial", fake_run_trial)
    c = _cache(tmp_path)
    first = trial.measure_each(
        dataclasses.replace(SPEC, micro_batches=(1, 4)), timeout_s=9, cache=c
    )
    again = trial.measure_each(
        dataclasses.replace(SPEC, micro_batches=(1, 4)), timeout_s=9, cache=c
    )
    assert calls == [(1,), (4,)]  # the second planner started no child
    assert [r.peak_bytes for r in again] == [r.peak_bytes for r in first]
    assert all(r.details["cached"] for r in again)
    trial.measure_one(SPEC, 1, timeout_s=9)  # no cache: measured
    assert len(calls) == 3


def test_info_and_clear(tmp_path):
    c = _cache(tmp_path)
    c.put(SPEC, 1, GIB, OK)
    c.put(SPEC, 2, GIB, dataclasses.replace(OK, micro_batch=2))
    got = tc.info(tmp_path)
    assert got["entries"] == 2 and got["bytes"] > 0 and got["path"] == str(tmp_path)
    assert tc.clear(tmp_path) == 2
    assert tc.info(tmp_path)["entries"] == 0
    assert tc.clear(tmp_path / "missing") == 0


def test_fitplan_cache_command(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from planner.app.cli import app

    monkeypatch.setenv("FITPLAN_CACHE_DIR", str(tmp_path))
    _cache(tmp_path).put(SPEC, 1, GIB, OK)
    shown = CliRunner().invoke(app, ["cache", "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["entries"] == 1
    cleared = CliRunner().invoke(app, ["cache", "--clear"])
    assert cleared.exit_code == 0 and "removed 1 entries" in cleared.stdout
    assert tc.info(tmp_path)["entries"] == 0


def test_no_cache_reaches_the_planner_from_plan_and_train_auto(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import planner.app.auto as auto
    import planner.make_plan as mp
    from planner.app.cli import app

    seen = []

    class Stop(Exception):
        pass

    def fake(*args, **kw):
        seen.append(kw.get("use_cache"))
        raise Stop

    monkeypatch.setattr(mp, "make_plan", fake)
    monkeypatch.setattr(auto, "auto_train", fake)
    runner = CliRunner()
    for args in (["plan", str(tmp_path)], ["train", "--auto", str(tmp_path), "--out-dir", "r"]):
        runner.invoke(app, args)
        runner.invoke(app, [*args, "--no-cache"])
    assert seen == [True, False, True, False]
