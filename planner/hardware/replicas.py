"""The memory budget of a plan that trains on several devices, and on several hosts.

Data parallelism puts the same model and the same per-replica micro-batch on every
device, so the device with the least free memory decides the micro-batch: the budget
is the smallest of the devices' own budgets (free memory minus CUDA's and TensorFlow's
reserve, as for one GPU). `MirroredStrategy` uses the first `devices` visible GPUs in
CUDA order (`trainer.train.distribute.get_strategy`), so those are the devices counted here.
The planner sees only its own host: the other hosts of a multi-worker run are assumed
to have the same devices (docs/distributed.md).
"""

from __future__ import annotations

from planner.hardware.budget import (
    MIN_GPU_BUDGET_BYTES,
    _cpu_budget,
    _usable_gpus,
    default_budget,
    fmt_bytes,
    gpu_identity,
    gpu_reserve_bytes,
)
from trainer.errors import HardwareError


def replica_budget(report: dict, devices: int | None = None, workers: int = 1) -> dict:
    """The budget per replica, the strategy and the replica count for a data-parallel plan.

    Args:
        report: a `probe` report.
        devices: GPUs per worker, the first `devices` visible ones. `None` (default):
            every usable visible GPU. Must be 1 (or `None`) on a host without a GPU,
            where each worker is one CPU replica.
        workers: hosts (one process each) in the run. Defaults to `1`.

    Returns:
        `default_budget`'s dict (`bytes` is the smallest device's budget) plus
        `strategy` (`"default"`, `"mirrored"` or `"multi_worker"`), `replicas`
        (devices x workers), `workers`, `devices_per_worker` and `device_indices`.

    Raises:
        HardwareError: fewer usable GPUs than `devices`, a GPU with less than
            `MIN_GPU_BUDGET_BYTES` to offer, or `devices`/`workers` below 1.
    """
    for name, value in (("devices", devices), ("workers", workers)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise HardwareError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
    env = report.get("env") or {}
    gpus, why_not = _usable_gpus(report, env)
    if not gpus:
        if devices not in (None, 1):
            reason = why_not or "no NVIDIA GPU found"
            raise HardwareError(
                f"`devices` asks for {devices} GPUs per worker but none is usable: {reason}. "
                f"Received: devices={devices}",
                hint="on a CPU each worker is one replica: leave devices at 1",
            )
        return _with_replicas(default_budget(report), [], 1, workers)
    ordered = gpus  # _usable_gpus lists them in CUDA order
    n = len(ordered) if devices is None else devices
    if n > len(ordered):
        raise HardwareError(
            f"`devices` asks for {n} GPUs per worker but {len(ordered)} are usable "
            f"(indices {[g['index'] for g in ordered]}). Received: devices={n}",
            hint="lower devices, or check CUDA_VISIBLE_DEVICES and `fitplan probe`",
        )
    used = ordered[:n]
    budget = _smallest_budget(used, env)
    budget.update(gpu_identity(used), host_bytes=_cpu_budget(report, None)["bytes"])
    return _with_replicas(budget, [g["index"] for g in used], n, workers)


def _smallest_budget(used: list[dict], env: dict) -> dict:
    """One replica's budget: the smallest of the used GPUs' (free memory minus reserve).

    `used` is in CUDA order, so a GPU's position in it is its TensorFlow device number.
    """
    per_gpu = [(g, g["memory_free_bytes"] - gpu_reserve_bytes(g, env)) for g in used]
    gpu, smallest = min(per_gpu, key=lambda p: (p[1], p[0]["index"]))
    if smallest < MIN_GPU_BUDGET_BYTES:
        raise HardwareError(
            f"GPU {gpu['index']} has {fmt_bytes(smallest)} to offer after the reserve, "
            f"less than {fmt_bytes(MIN_GPU_BUDGET_BYTES)}; every replica gets what the "
            "smallest device has",
            hint="free that GPU, or hide it with CUDA_VISIBLE_DEVICES",
        )
    listed = ", ".join(f"GPU {g['index']} {fmt_bytes(b)}" for g, b in per_gpu)
    return {
        "device": "gpu",
        "device_index": gpu["index"],
        "device_name": gpu.get("name"),
        "tf_device": f"/GPU:{used.index(gpu)}",
        "bytes": int(smallest),
        "source": "probe",
        "derivation": f"smallest per-replica budget of {listed} (free minus reserve)",
        "all_devices": [
            {
                "device_index": g["index"],
                "device_name": g.get("name"),
                "free_bytes": g["memory_free_bytes"],
                "bytes": int(b),
            }
            for g, b in per_gpu
        ],
    }


def _with_replicas(budget: dict, indices: list[int], devices: int, workers: int) -> dict:
    replicas = devices * workers
    strategy = "default" if replicas == 1 else ("multi_worker" if workers > 1 else "mirrored")
    out = dict(budget)
    out.update(
        strategy=strategy,
        replicas=replicas,
        workers=workers,
        devices_per_worker=devices,
        device_indices=indices,
    )
    if workers > 1:
        out["derivation"] += f"; {workers} workers assumed to match this host"
    return out
