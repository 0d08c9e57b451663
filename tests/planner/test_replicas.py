"""Data-parallel planning: the smallest device's budget, replicas, and the per-replica search."""

from __future__ import annotations

import pytest

from planner.hardware.budget import CUDA_CONTEXT_BYTES
from planner.hardware.replicas import replica_budget
from tests.planner.test_search import budget_for, measured, pick
from trainer.errors import HardwareError

GIB = 2**30
RESERVE = CUDA_CONTEXT_BYTES + 1536 * 2**20  # compute capability 8.x


def report(free_gib=(40, 20, 30), env=None) -> dict:
    gpus = [
        {
            "index": i,
            "name": f"GPU {i}",
            "uuid": f"GPU-{i}000",
            "memory_free_bytes": int(f * GIB),
            "compute_capability": "8.0",
        }
        for i, f in enumerate(free_gib)
    ]
    return {
        "gpus": gpus,
        "env": env or {},
        "tensorflow": None,
        "host": {"ram_available_bytes": 16 * GIB, "cgroup": {}},
        "cpu": {"model": "test CPU"},
    }


def test_the_smallest_device_decides():
    b = replica_budget(report(), devices=2)
    assert b["bytes"] == 20 * GIB - RESERVE  # GPU 1, not the 40 GiB GPU 0
    assert b["device_index"] == 1
    assert (b["strategy"], b["replicas"], b["device_indices"]) == ("mirrored", 2, [0, 1])
    assert "smallest per-replica budget" in b["derivation"]


def test_all_visible_gpus_times_workers():
    b = replica_budget(report(), devices=None, workers=2)
    assert (b["strategy"], b["replicas"], b["devices_per_worker"]) == ("multi_worker", 6, 3)
    assert b["bytes"] == 20 * GIB - RESERVE
    assert "2 workers assumed to match this host" in b["derivation"]


def test_devices_follow_cuda_visible_devices_order():
    b = replica_budget(report(env={"CUDA_VISIBLE_DEVICES": "2,0"}), devices=1)
    assert (b["strategy"], b["replicas"], b["device_indices"]) == ("default", 1, [2])
    assert b["bytes"] == 30 * GIB - RESERVE and b["tf_device"] == "/GPU:0"


def test_more_devices_than_usable_is_refused():
    with pytest.raises(HardwareError, match=r"asks for 4 GPUs per worker but 3 are usable"):
        replica_budget(report(), devices=4)
    with pytest.raises(HardwareError, match="workers"):
        replica_budget(report(), workers=0)


def test_a_nearly_full_gpu_is_refused_by_name():
    with pytest.raises(HardwareError, match="GPU 1 has"):
        replica_budget(report(free_gib=(40, 2.5)), devices=2)


def test_cpu_hosts_are_one_replica_per_worker():
    r = report(free_gib=())
    b = replica_budget(r, workers=3)
    assert (b["device"], b["strategy"], b["replicas"]) == ("cpu", "multi_worker", 3)
    with pytest.raises(HardwareError, match="devices"):
        replica_budget(r, devices=2)


# -- the search with replicas -------------------------------------------------------------


def test_micro_batch_is_per_replica_and_the_effective_batch_counts_replicas():
    # The device holds 23.5 samples; 4 replicas reach the target 16 at micro-batch 4.
    c = pick([measured()], budget_bytes=budget_for(23.5), target_effective_batch=16, replicas=4)
    assert (c.micro_batch, c.accumulation_steps, c.replicas) == (4, 1, 4)
    assert c.effective_batch == 16
    # 100 samples per epoch in global batches of 4 x 4: 7 steps.
    assert c.micro_batches_per_epoch == 7
    assert any("all-reduce" in w for w in c.warnings)
    assert c.to_dict()["replicas"] == 4


def test_replicas_shorten_the_predicted_epoch():
    one = pick([measured()], budget_bytes=budget_for(4.5), target_effective_batch=16)
    two = pick([measured()], budget_bytes=budget_for(4.5), target_effective_batch=16, replicas=2)
    assert one.micro_batch == two.micro_batch == 4
    assert (one.accumulation_steps, two.accumulation_steps) == (4, 2)
    assert one.effective_batch == two.effective_batch == 16
    assert two.epoch_time_s == pytest.approx(one.epoch_time_s / 2, rel=0.1)


@pytest.mark.slow
def test_make_plan_for_two_workers_records_strategy_replicas_and_lr_rule(tmp_path):
    from planner.app.demo import make_demo_dataset
    from planner.make_plan import make_plan

    data = make_demo_dataset(tmp_path / "data", n=10, size=(64, 64), seed=3)
    result = make_plan(data, workers=2, backbones=["unet_small"], sizes=[32])
    plan = result.plan
    assert (plan.strategy, plan.replicas) == ("multi_worker", 2)
    assert plan.effective_batch == plan.micro_batch * 2 * plan.accumulation_steps
    assert plan.effective_batch >= 16
    assert (plan.optimizer.lr_scaling, plan.optimizer.reference_batch) == ("sqrt", 16)
    # Verified by one replica's share trained on this one device, at the plan's micro-batch.
    [run] = [s for s in plan.evidence["verification"] if s["action"] == "accepted"]
    assert run["micro_batch"] == plan.micro_batch and run["details"]["verification_run"]
