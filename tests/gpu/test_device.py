"""The plan's GPU end to end: chosen by the budget, recorded by UUID, pinned in every process.

Fake NVML (tests/gpu/fake_nvml.py) with two GPUs whose NVML order differs from what a
user's CUDA_VISIBLE_DEVICES shows, and a GPU in MIG mode.
"""

from __future__ import annotations

import os

import pytest

from planner import hardware
from planner.hardware.budget import default_budget
from planner.hardware.gpu import probe_gpus
from tests.gpu.fake_nvml import FakeNVML, gpu, install, mig
from tests.gpu.fake_tf import FakeTF
from tests.plans import minimal_plan
from trainer.train import preflight
from trainer.train.device import (
    CUDA_CONTEXT_BYTES,
    nvml_memory,
    pin_for_plan,
    process_uuids,
    visible_uuids,
)

GiB = 2**30
A, B = "GPU-aaaa-0000", "GPU-bbbb-1111"
M1, M2 = "MIG-1111-aaaa", "MIG-2222-bbbb"


def two_gpus():
    # NVML index 0 is busy, index 1 nearly idle.
    return FakeNVML([gpu(A, used=30 * GiB), gpu(B, name="NVIDIA L40S", total=48 * GiB)])


def mig_machine():
    return FakeNVML(
        [gpu(A, used=0, migs=[mig(M1, total=10 * GiB), mig(M2, total=20 * GiB, used=1 * GiB)])]
    )


@pytest.fixture
def clean_env(monkeypatch):
    """No CUDA variables now; whatever a test pins is removed afterwards."""
    for key in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        monkeypatch.setenv(key, "recorded")  # so that teardown restores "unset"
        monkeypatch.delenv(key)
    return monkeypatch


def report_for(nvml, env=None):
    gpus, status = probe_gpus(nvml)
    host = {"ram_available_bytes": 64 * GiB, "cgroup": {}}
    report = {"gpus": gpus, "nvml": status, "host": host, "cpu": {}, "env": env or {}}
    report["budget"] = default_budget(report)
    return report


def gpu_plan(uuids, budget=8 * GiB, **target):
    gpu = {"device": "gpu", "device_name": "NVIDIA L40S", "budget_bytes": budget}
    return minimal_plan(target={**gpu, "device_uuids": uuids, **target})


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, [A, B]),
        ({}, None),  # CUDA's default order (fastest first) is not NVML's: unknown
        ({"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, [B]),
        ({"CUDA_VISIBLE_DEVICES": "1"}, None),
        ({"CUDA_VISIBLE_DEVICES": "GPU-bbbb,GPU-aaaa"}, [B, A]),  # UUID prefixes, any order
        ({"CUDA_VISIBLE_DEVICES": B}, [B]),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, []),
        ({"CUDA_VISIBLE_DEVICES": f"{A},GPU-zzzz,{B}"}, [A]),  # stops at the unknown one
    ],
)
def test_visible_uuids_follow_cuda_rules(env, expected):
    devices = [{"uuid": A, "mig": []}, {"uuid": B, "mig": []}]
    assert visible_uuids(devices, env) == expected


def test_mig_instances_are_the_devices_cuda_shows():
    devices = [{"uuid": A, "mig": [{"uuid": M1}, {"uuid": M2}]}]
    assert visible_uuids(devices, {}) == [M1, M2]
    assert visible_uuids(devices, {"CUDA_VISIBLE_DEVICES": "MIG-2222"}) == [M2]


def test_the_budget_records_the_chosen_gpu_by_uuid_and_a_host_budget():
    budget = report_for(two_gpus())["budget"]
    assert budget["device"] == "gpu" and budget["device_index"] == 1
    assert budget["device_uuids"] == [B] and budget["memory_total_bytes"] == 48 * GiB
    assert budget["tf_device"] == "/GPU:1"
    assert budget["host_bytes"] == int(64 * GiB * 0.9)


def test_a_user_cuda_visible_devices_limits_the_choice():
    env = {"CUDA_VISIBLE_DEVICES": "0"}  # the busy one, on purpose
    budget = report_for(two_gpus(), env)["budget"]
    assert budget["device_uuids"] == [A] and budget["tf_device"] == "/GPU:0"


def test_with_mig_the_budget_is_one_instance_not_the_whole_gpu():
    report = report_for(mig_machine())
    assert [m["uuid"] for m in report["gpus"][0]["mig_devices"]] == [M1, M2]
    budget = report["budget"]
    assert budget["device_uuids"] == [M2]  # the instance with the most free memory
    assert budget["memory_total_bytes"] == 20 * GiB
    assert budget["bytes"] < 19 * GiB  # not the parent's 40 GiB


def test_planning_pins_the_process_so_every_trial_child_sees_the_chosen_gpu(clean_env, tmp_path):
    monkeypatch = clean_env
    from planner import make_plan
    from planner.request import PlanRequest
    from planner.trials.spec import TrialSpec
    from planner.trials.trial import _child_env

    nvml = two_gpus()
    monkeypatch.setattr(hardware, "probe_gpus", lambda _nvml=None: probe_gpus(nvml))
    _, budget = make_plan._probe_budget(PlanRequest(data=tmp_path), lambda line: None)
    assert budget["device_uuids"] == [B]
    env = _child_env(TrialSpec("unet_small", (64, 64), (1,), device="gpu"))
    assert env["CUDA_VISIBLE_DEVICES"] == B and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert process_uuids(nvml, env) == [B]  # the child's GPU:0 is the planned GPU


def test_training_is_pinned_to_the_plans_gpu():
    env = {}
    assert pin_for_plan(gpu_plan([B]), env, two_gpus()) is None
    assert env == {"CUDA_VISIBLE_DEVICES": B, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def test_a_user_choice_that_hides_the_planned_gpu_is_kept_with_a_warning():
    env = {"CUDA_VISIBLE_DEVICES": "GPU-aaaa"}
    note = pin_for_plan(gpu_plan([B]), env, two_gpus())
    assert env == {"CUDA_VISIBLE_DEVICES": "GPU-aaaa"}
    assert B in note and "CUDA_VISIBLE_DEVICES=GPU-aaaa shows GPU-aaaa-0000" in note
    env = {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}  # shows B: pinned
    assert pin_for_plan(gpu_plan([B]), env, two_gpus()) is None
    assert env["CUDA_VISIBLE_DEVICES"] == B


def test_a_plan_from_another_machine_warns_and_pins_nothing():
    env = {}
    note = pin_for_plan(gpu_plan(["GPU-elsewhere"]), env, two_gpus())
    assert env == {} and "which this machine does not have" in note


def test_a_mig_plan_pins_its_instance():
    env = {}
    assert pin_for_plan(gpu_plan([M2]), env, mig_machine()) is None
    assert env["CUDA_VISIBLE_DEVICES"] == M2
    assert nvml_memory(M2, mig_machine()) == {"free": 19 * GiB, "total": 20 * GiB}


def test_preflight_reads_the_pinned_gpu_not_nvml_index_0(clean_env):
    monkeypatch = clean_env
    nvml = install(monkeypatch, two_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", B)
    assert preflight.available_memory_bytes("gpu") == 47 * GiB  # not GPU 0's 10 GiB
    assert nvml.shutdowns == nvml.inits


def test_training_sets_the_plans_limit_from_free_memory_read_before_tf(clean_env):
    install(clean_env, two_gpus())
    tf = FakeTF()
    setup = preflight.prepare_device(gpu_plan([B], budget=8 * GiB), tf=tf)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == B  # pinned before TF lists devices
    assert setup.free_bytes == 47 * GiB and setup.uuids == [B]
    assert tf.limits == {"/physical_device:GPU:0": 8192}  # MiB: the plan's budget
    # Less free than the budget: the limit is what is free minus the CUDA context.
    tight = gpu_plan([B], budget=60 * GiB)
    tf = FakeTF()
    preflight.prepare_device(tight, tf=tf)
    assert tf.limits["/physical_device:GPU:0"] == (47 * GiB - CUDA_CONTEXT_BYTES) // 2**20
    warnings = preflight.plan_warnings(tight, preflight.prepare_device(tight, tf=FakeTF()))
    assert any("60.00 GiB" in w and "free GPU memory" in w for w in warnings)


def test_trial_children_configure_the_gpu_as_training_does(clean_env):
    monkeypatch = clean_env
    from planner.trials.child import configure_gpu
    from planner.trials.spec import TrialSpec

    install(monkeypatch, two_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", B)
    child, trainer = FakeTF(), FakeTF()
    configure_gpu(child, TrialSpec("unet_small", (64, 64), (1,), device="gpu"), 8 * GiB)
    preflight.prepare_device(gpu_plan([B], budget=8 * GiB), tf=trainer)
    assert child.limits == trainer.limits == {"/physical_device:GPU:0": 8192}


def test_a_gpu_plan_without_a_gpu_here_warns(clean_env):
    install(clean_env, FakeNVML([]))
    setup = preflight.prepare_device(gpu_plan([B]), tf=FakeTF(gpus=0))
    assert any("TensorFlow sees none here" in w for w in setup.warnings)


def test_the_trial_childs_nvml_cross_check_reads_its_own_gpu(clean_env):
    from types import SimpleNamespace

    from planner.trials.child import _nvml_process_bytes

    nvml = two_gpus()
    me = SimpleNamespace(pid=os.getpid(), usedGpuMemory=3 * GiB)
    nvml.gpus[0].procs = [SimpleNamespace(pid=os.getpid(), usedGpuMemory=9 * GiB)]  # not ours
    nvml.gpus[1].procs = [me]
    clean_env.setenv("CUDA_VISIBLE_DEVICES", B)  # as the planner pins a child
    assert _nvml_process_bytes(nvml) == 3 * GiB


def test_the_probe_table_names_the_budgeted_gpu_by_uuid(tmp_path):
    import io

    from rich.console import Console

    report = hardware.probe(tmp_path, with_tensorflow=False, nvml=two_gpus(), env={})
    out = io.StringIO()
    Console(width=200, file=out).print(hardware.probe_table(report))
    assert f"/GPU:1, {B})" in out.getvalue()
